#include "bench/relay.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <memory>
#include <string>
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

// As copy_loop, each chunk written `delay` after it was read.
bool delay_loop(int from, int to, std::chrono::microseconds delay) {
  using Clock = std::chrono::steady_clock;
  std::deque<std::pair<Clock::time_point, std::string>> line;  // due, bytes
  std::vector<char> buf(kBuffer);
  bool eof = false;
  while (!eof || !line.empty()) {
    timespec wait{}, *timeout = nullptr;
    if (!line.empty()) {
      const auto left = std::max(line.front().first - Clock::now(), Clock::duration::zero());
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      wait = {.tv_sec = ns / 1'000'000'000, .tv_nsec = ns % 1'000'000'000};
      timeout = &wait;
    }
    pollfd p{.fd = eof ? -1 : from, .events = POLLIN, .revents = 0};
    if (::ppoll(&p, 1, timeout, nullptr) < 0 && errno != EINTR) return false;
    if (p.revents) {
      ssize_t n = ::read(from, buf.data(), buf.size());
      if (n < 0 && errno != EINTR) return false;
      if (n == 0) eof = true;
      if (n > 0) line.emplace_back(Clock::now() + delay, std::string(buf.data(), n));
    }
    while (!line.empty() && line.front().first <= Clock::now()) {
      const std::string& bytes = line.front().second;
      for (size_t off = 0; off < bytes.size();) {
        ssize_t w = ::send(to, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        off += static_cast<size_t>(w);
      }
      line.pop_front();
    }
  }
  ::shutdown(to, SHUT_WR);
  return true;
}

// One connection: both directions until both have ended; an error in either
// resets both sockets so neither end waits for bytes that will not come.
void serve(int client, const RelayOptions& opts) {
  // Each chunk is passed on as it comes: with Nagle's algorithm a small write
  // waits for the ACK of the one before, which the far end delays (~40 ms), and
  // the relay would add that to every exchange of small records (a TLS
  // handshake's flights, a request and its verdict). connect_to sets it on the
  // upstream socket.
  const int one = 1;
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int upstream = -1;
  try {
    upstream = connect_to(opts.connect);
  } catch (const std::exception&) {
    ::close(client);
    return;
  }
  auto pump = [&opts](int from, int to) {
    if (opts.delay.count() > 0) return delay_loop(from, to, opts.delay);
    return opts.splice ? splice_loop(from, to) : copy_loop(from, to);
  };
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
