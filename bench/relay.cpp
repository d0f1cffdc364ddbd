#include "bench/relay.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

namespace xmig::bench {

namespace {

constexpr size_t kBuffer = 256 * 1024;

// Copies from -> to until EOF, then half-closes `to`. Returns false on error.
bool copy_loop(int from, int to) {
  std::vector<char> buf(kBuffer);
  while (true) {
    ssize_t n = ::read(from, buf.data(), buf.size());
    if (n == 0) return ::shutdown(to, SHUT_WR), true;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::send(to, buf.data() + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      off += w;
    }
  }
}

// The same through a pipe: socket -> pipe -> socket without a user-space copy.
bool splice_loop(int from, int to) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return false;
  ::fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(kBuffer));
  bool ok = true;
  while (ok) {
    ssize_t n = ::splice(from, nullptr, p[1], nullptr, kBuffer, SPLICE_F_MOVE | SPLICE_F_MORE);
    if (n == 0) {
      ::shutdown(to, SHUT_WR);
      break;
    }
    if (n < 0) {
      ok = errno == EINTR;
      continue;
    }
    while (n > 0) {
      ssize_t w = ::splice(p[0], nullptr, to, nullptr, static_cast<size_t>(n),
                           SPLICE_F_MOVE | SPLICE_F_MORE);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        ok = false;
        break;
      }
      n -= w;
    }
  }
  ::close(p[0]);
  ::close(p[1]);
  return ok;
}

// One connection: both directions until both have ended; an error in either
// resets both sockets so neither end waits for bytes that will not come.
void serve(int client, const RelayOptions& opts) {
  int upstream = -1;
  try {
    upstream = connect_to(opts.connect);
  } catch (const std::exception&) {
    ::close(client);
    return;
  }
  auto pump = opts.splice ? splice_loop : copy_loop;
  std::atomic<bool> failed{false};
  auto reset_both = [&] {
    failed = true;
    ::shutdown(client, SHUT_RDWR);
    ::shutdown(upstream, SHUT_RDWR);
  };
  std::thread down([&] {
    if (!pump(upstream, client)) reset_both();
  });
  if (!pump(client, upstream)) reset_both();
  down.join();
  ::close(client);
  ::close(upstream);
}

}  // namespace

void run_relay(const RelayOptions& opts, const std::atomic<bool>& stop) {
  Listener listener(opts.listen);
  while (!stop) {
    int fd = listener.accept(std::chrono::milliseconds(100));
    if (fd >= 0) std::thread(serve, fd, opts).detach();
  }
}

}  // namespace xmig::bench
