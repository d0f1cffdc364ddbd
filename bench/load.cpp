#include "bench/load.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace xmig::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kIoSize = 256 * 1024;  // per read at the sink, per sendmsg at the source
constexpr uint64_t kMagic = 0x62676d78'00000001ull;  // "xmgb" + version

uint64_t splitmix(uint64_t& x) {
  x += 0x9e3779b97f4a7c15ULL;
  uint64_t z = x;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::string errno_text(const std::string& what) {
  return what + ": " + strerror(errno);
}

// Wakes blocking socket calls every half second so that threads can notice
// that the run was abandoned.
void set_timeouts(int fd) {
  timeval tv{0, 500'000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// First error wins; later ones are usually consequences of it.
class Failure {
 public:
  void set(const std::string& why) {
    std::lock_guard lock(mu_);
    if (text_.empty()) text_ = why;
    failed_ = true;
  }
  bool failed() const { return failed_; }
  std::string text() const {
    std::lock_guard lock(mu_);
    return text_;
  }

 private:
  mutable std::mutex mu_;
  std::string text_;
  std::atomic<bool> failed_{false};
};

}  // namespace

// ---- Endpoints and sockets ---------------------------------------------------

Endpoint parse_endpoint(const std::string& text) {
  // Port 0 (listen on a free port) is the one spelling the benchmark needs
  // and a tunnel config must refuse: parse it as port 1, then set it.
  const bool free_port = text.size() > 2 && text.ends_with(":0") && !text.starts_with("unix:");
  const std::string spelled = free_port ? text.substr(0, text.size() - 1) + "1" : text;
  std::string why;
  std::optional<Endpoint> e = tunnel::parse_endpoint(spelled, &why);
  if (!e) throw std::invalid_argument("'" + text + "': " + why);
  if (free_port) e->port = 0;
  in6_addr probe{};
  if (!e->is_unix() && ::inet_pton(AF_INET, e->host.c_str(), &probe) != 1 &&
      ::inet_pton(AF_INET6, e->host.c_str(), &probe) != 1)
    throw std::invalid_argument("'" + text + "': host must be a numeric IPv4 or IPv6 address");
  return *e;
}

namespace {

// Fills storage with the socket address of e; returns its length.
socklen_t to_sockaddr(const Endpoint& e, sockaddr_storage& storage) {
  std::memset(&storage, 0, sizeof storage);
  if (e.is_unix()) {
    auto* a = reinterpret_cast<sockaddr_un*>(&storage);
    a->sun_family = AF_UNIX;
    std::strncpy(a->sun_path, e.path.c_str(), sizeof a->sun_path - 1);
    return sizeof *a;
  }
  if (e.host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(e.port);
    ::inet_pton(AF_INET6, e.host.c_str(), &a->sin6_addr);
    return sizeof *a;
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&storage);
  a->sin_family = AF_INET;
  a->sin_port = htons(e.port);
  ::inet_pton(AF_INET, e.host.c_str(), &a->sin_addr);
  return sizeof *a;
}

}  // namespace

Listener::Listener(const Endpoint& where, int backlog) : where_(where) {
  sockaddr_storage addr;
  socklen_t len = to_sockaddr(where, addr);
  // Non-blocking: several threads may poll one listener, and those that lose
  // the race for a connection must not block in accept().
  fd_ = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) throw std::runtime_error(errno_text("socket for " + where.str()));
  if (where.is_unix()) {
    ::unlink(where.path.c_str());
  } else {
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, backlog) != 0) {
    std::string why = errno_text("listen on " + where.str());
    ::close(fd_);
    throw std::runtime_error(why);
  }
  if (!where.is_unix() && where.port == 0) {
    len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    where_.port =
        ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  }
}

Listener::~Listener() {
  ::close(fd_);
  if (where_.is_unix()) ::unlink(where_.path.c_str());
}

int Listener::accept(std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return -1;
  return ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
}

int connect_to(const Endpoint& where) {
  sockaddr_storage addr;
  socklen_t len = to_sockaddr(where, addr);
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(errno_text("socket for " + where.str()));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    std::string why = errno_text("connect to " + where.str());
    ::close(fd);
    throw std::runtime_error(why);
  }
  if (!where.is_unix()) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

// ---- The data pattern --------------------------------------------------------

Pattern::Pattern(uint64_t seed, size_t pool_bytes) : pool_(pool_bytes) {
  uint64_t x = seed;
  for (size_t i = 0; i + 8 <= pool_.size(); i += 8) {
    uint64_t z = splitmix(x);
    std::memcpy(&pool_[i], &z, 8);
  }
}

Pattern::Header Pattern::header(uint32_t stream, uint64_t chunk) const {
  Header h;
  const uint64_t id = (static_cast<uint64_t>(stream) << 48) ^ chunk;
  std::memcpy(h.bytes, &kMagic, 8);
  std::memcpy(h.bytes + 8, &id, 8);
  return h;
}

size_t Pattern::window(uint32_t stream, uint64_t chunk) const {
  uint64_t x = (static_cast<uint64_t>(stream) << 40) ^ chunk;
  // Any offset works; odd ones make sure no two chunks share an alignment.
  return static_cast<size_t>(splitmix(x) % (pool_.size() - kChunk));
}

size_t Pattern::describe(uint32_t stream, uint64_t pos, uint64_t len, iovec* iov, size_t max_iov,
                         Header* headers) const {
  size_t used = 0;
  const uint64_t end = pos + len;
  while (pos < end && used < max_iov) {
    const uint64_t chunk = pos / kChunk;
    const size_t in_chunk = static_cast<size_t>(pos % kChunk);
    const size_t room = static_cast<size_t>(std::min<uint64_t>(kChunk - in_chunk, end - pos));
    size_t take = 0;
    if (in_chunk < kHeader) {
      // Part of the header; headers[] holds one per chunk touched.
      headers[used] = header(stream, chunk);
      take = std::min(room, kHeader - in_chunk);
      iov[used] = {headers[used].bytes + in_chunk, take};
      ++used;
    } else {
      const size_t w = window(stream, chunk) + (in_chunk - kHeader);
      take = room;
      iov[used++] = {const_cast<uint8_t*>(pool_.data() + w), take};
    }
    pos += take;
  }
  return used;
}

bool Pattern::check(uint32_t stream, uint64_t pos, const uint8_t* data, size_t len) const {
  while (len > 0) {
    const uint64_t chunk = pos / kChunk;
    const size_t in_chunk = static_cast<size_t>(pos % kChunk);
    const size_t room = std::min<size_t>(kChunk - in_chunk, len);
    size_t take = 0;
    if (in_chunk < kHeader) {
      const Header h = header(stream, chunk);
      take = std::min(room, kHeader - in_chunk);
      if (std::memcmp(data, h.bytes + in_chunk, take) != 0) return false;
    } else {
      take = room;
      if (std::memcmp(data, pool_.data() + window(stream, chunk) + (in_chunk - kHeader), take) != 0)
        return false;
    }
    pos += take;
    data += take;
    len -= take;
  }
  return true;
}

std::optional<uint32_t> Pattern::stream_of(const uint8_t* first_header) {
  uint64_t magic = 0, id = 0;
  std::memcpy(&magic, first_header, 8);
  std::memcpy(&id, first_header + 8, 8);
  if (magic != kMagic || (id & 0xffff'ffff'ffffull) != 0) return std::nullopt;  // chunk 0
  return static_cast<uint32_t>(id >> 48);
}

// ---- Throughput --------------------------------------------------------------

namespace {

uint64_t share_of(const StreamOptions& opts, unsigned stream) {
  uint64_t each = opts.bytes / opts.streams;
  return stream == 0 ? each + opts.bytes % opts.streams : each;
}

// Sends the stream's bytes, half-closes, then waits for the far end to close
// (so the connection is fully torn down before the run counts as done).
void send_stream(const StreamOptions& opts, const Pattern& pattern, unsigned stream,
                 Failure& failure, double& connect_seconds, std::atomic<uint64_t>& sent) {
  const auto t0 = Clock::now();
  int fd = -1;
  try {
    fd = connect_to(opts.connect);
  } catch (const std::exception& e) {
    return failure.set(e.what());
  }
  connect_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  set_timeouts(fd);
  const uint64_t total = share_of(opts, stream);
  constexpr size_t kMaxIov = 2 * (kIoSize / Pattern::kChunk + 2);
  iovec iov[kMaxIov];
  Pattern::Header headers[kMaxIov];
  uint64_t pos = 0;
  while (pos < total && !failure.failed()) {
    const uint64_t want = std::min<uint64_t>(kIoSize, total - pos);
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = pattern.describe(stream, pos, want, iov, kMaxIov, headers);
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n > 0) {
      pos += static_cast<uint64_t>(n);
      sent += static_cast<uint64_t>(n);
    } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
      failure.set(errno_text("stream " + std::to_string(stream) + ": send"));
    }
  }
  ::shutdown(fd, SHUT_WR);
  char byte;
  while (!failure.failed()) {
    ssize_t n = ::recv(fd, &byte, 1, 0);
    if (n == 0) break;
    if (n > 0) {
      failure.set("stream " + std::to_string(stream) + ": the sink sent data back");
    } else if (errno != EINTR && errno != EAGAIN) {
      failure.set(errno_text("stream " + std::to_string(stream) + ": waiting for close"));
    }
  }
  ::close(fd);
}

// Receives one connection to EOF, checking every byte; the first 16 bytes say
// which stream it is.
void receive_stream(int fd, const StreamOptions& opts, const Pattern& pattern,
                    std::vector<std::atomic<bool>>& seen, std::atomic<uint64_t>& verified,
                    Failure& failure, Clock::time_point& finished) {
  set_timeouts(fd);
  std::vector<uint8_t> buf(kIoSize);
  size_t have = 0;  // buffered bytes not yet checked (only before the id is known)
  std::optional<uint32_t> stream;
  uint64_t pos = 0, expected = 0;
  while (!failure.failed()) {
    ssize_t n = ::recv(fd, buf.data() + have, buf.size() - have, 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      failure.set(errno_text("sink: receive"));
      break;
    }
    if (n == 0) {
      if (!stream || pos != expected) {
        failure.set("sink: stream " + (stream ? std::to_string(*stream) : std::string("?")) +
                    " ended after " + std::to_string(pos + have) + " of " +
                    std::to_string(expected) + " bytes");
      }
      break;
    }
    have += static_cast<size_t>(n);
    if (!stream) {
      if (have < Pattern::kHeader) continue;
      stream = Pattern::stream_of(buf.data());
      if (!stream || *stream >= opts.streams || seen[*stream].exchange(true)) {
        failure.set("sink: a connection did not start with a fresh stream header");
        break;
      }
      expected = share_of(opts, *stream);
    }
    if (pos + have > expected || !pattern.check(*stream, pos, buf.data(), have)) {
      failure.set("sink: stream " + std::to_string(*stream) + " corrupt within bytes " +
                  std::to_string(pos) + ".." + std::to_string(pos + have));
      break;
    }
    pos += have;
    verified += have;
    have = 0;
  }
  finished = Clock::now();
  ::close(fd);
}

}  // namespace

StreamResult run_streams(const StreamOptions& opts, Listener* sink, const Pattern& pattern) {
  const bool sending = opts.role != StreamOptions::Role::SinkOnly;
  const bool receiving = opts.role != StreamOptions::Role::SourceOnly;
  if (receiving && !sink) throw std::invalid_argument("run_streams: a sink needs a listener");
  StreamResult result;
  Failure failure;
  std::atomic<uint64_t> verified{0}, sent{0};
  std::vector<std::atomic<bool>> seen(opts.streams);
  std::vector<double> connect_seconds(opts.streams, 0);
  std::vector<Clock::time_point> finished(opts.streams);
  std::vector<std::thread> receivers, senders;
  std::atomic<unsigned> senders_done{0};
  const auto deadline = Clock::now() + opts.timeout;

  auto t0 = Clock::now();
  if (sending)
    for (unsigned s = 0; s < opts.streams; ++s)
      senders.emplace_back([&, s] {
        send_stream(opts, pattern, s, failure, connect_seconds[s], sent);
        if (!receiving) finished[s] = Clock::now();
        ++senders_done;
      });

  // Accept every stream (a sink alone starts its clock at the first one), and
  // report progress while waiting.
  auto next_progress = Clock::now();
  unsigned accepted = 0;
  while (!failure.failed()) {
    if (Clock::now() > deadline) {
      failure.set("timed out after " + std::to_string(opts.timeout.count()) + " s");
      break;
    }
    if (opts.progress && Clock::now() >= next_progress) {
      opts.progress(receiving ? verified.load() : sent.load());
      next_progress += std::chrono::milliseconds(200);
    }
    if (receiving && accepted < opts.streams) {
      int fd = sink->accept(std::chrono::milliseconds(100));
      if (fd < 0) continue;
      if (!sending && accepted == 0) t0 = Clock::now();
      receivers.emplace_back(receive_stream, fd, std::cref(opts), std::cref(pattern),
                             std::ref(seen), std::ref(verified), std::ref(failure),
                             std::ref(finished[accepted]));
      ++accepted;
      continue;
    }
    if (receiving ? verified.load() >= opts.bytes : senders_done.load() == opts.streams) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& t : receivers) t.join();
  for (auto& t : senders) t.join();
  if (opts.progress) opts.progress(receiving ? verified.load() : sent.load());

  auto end = t0;
  for (unsigned s = 0; s < (receiving ? accepted : opts.streams); ++s)
    end = std::max(end, finished[s]);
  result.seconds = std::chrono::duration<double>(end - t0).count();
  result.bytes = receiving ? verified.load() : sent.load();
  result.connect_seconds = *std::max_element(connect_seconds.begin(), connect_seconds.end());
  result.error = failure.text();
  if (result.error.empty() && result.bytes != opts.bytes)
    result.error = std::string(receiving ? "sink verified " : "source sent ") +
                   std::to_string(result.bytes) + " of " + std::to_string(opts.bytes) + " bytes";
  return result;
}

// ---- Handshakes --------------------------------------------------------------

namespace {

constexpr char kHello[8] = {'x', 'm', 'i', 'g', '-', 'h', 's', '1'};

// One connection: hello + index, half-close, wait for the sink's close.
void one_handshake(const Endpoint& where, uint64_t index, Failure& failure) {
  int fd = -1;
  try {
    fd = connect_to(where);
  } catch (const std::exception& e) {
    return failure.set(e.what());
  }
  set_timeouts(fd);
  uint8_t msg[16];
  std::memcpy(msg, kHello, 8);
  std::memcpy(msg + 8, &index, 8);
  if (::send(fd, msg, sizeof msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof msg)) {
    failure.set(errno_text("handshake: send"));
  } else {
    ::shutdown(fd, SHUT_WR);
    char byte;
    while (!failure.failed()) {
      ssize_t n = ::recv(fd, &byte, 1, 0);
      if (n == 0) break;
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      failure.set(n > 0 ? "handshake: the sink sent data back"
                        : errno_text("handshake: waiting for close"));
    }
  }
  ::close(fd);
}

// Sink side: reads one message to EOF, checks it, closes.
void serve_handshake(int fd, Failure& failure) {
  set_timeouts(fd);
  uint8_t msg[32];
  size_t have = 0;
  while (!failure.failed()) {
    ssize_t n = ::recv(fd, msg + have, sizeof msg - have, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0 || (have += static_cast<size_t>(n)) >= sizeof msg) {
      if (n < 0) failure.set(errno_text("handshake sink: receive"));
      break;
    }
  }
  if (!failure.failed() && (have != 16 || std::memcmp(msg, kHello, 8) != 0))
    failure.set("handshake sink: got " + std::to_string(have) + " bytes, not the 16-byte hello");
  ::close(fd);
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

}  // namespace

HandshakeResult run_handshakes(const HandshakeOptions& opts, Listener& sink) {
  HandshakeResult result;
  Failure failure;
  std::atomic<bool> stop{false};
  std::atomic<unsigned> next{0}, completed{0};
  std::mutex mu;
  std::vector<double> latencies_ms;
  const auto deadline = Clock::now() + opts.timeout;

  std::vector<std::thread> servers, clients;
  for (unsigned i = 0; i < opts.concurrency; ++i)
    servers.emplace_back([&] {
      while (!stop && !failure.failed()) {
        int fd = sink.accept(std::chrono::milliseconds(100));
        if (fd >= 0) serve_handshake(fd, failure);
      }
    });

  const auto t0 = Clock::now();
  for (unsigned i = 0; i < opts.concurrency; ++i)
    clients.emplace_back([&] {
      std::vector<double> mine;
      for (unsigned k; (k = next++) < opts.connections && !failure.failed();) {
        if (Clock::now() > deadline) {
          failure.set("handshakes timed out");
          break;
        }
        const auto start = Clock::now();
        one_handshake(opts.connect, k, failure);
        if (failure.failed()) break;
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        ++completed;
      }
      std::lock_guard lock(mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    });
  for (auto& t : clients) t.join();
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  for (auto& t : servers) t.join();

  result.completed = completed.load();
  result.p50_ms = percentile(latencies_ms, 0.50);
  result.p90_ms = percentile(latencies_ms, 0.90);
  result.p99_ms = percentile(latencies_ms, 0.99);
  result.max_ms = percentile(latencies_ms, 1.0);
  result.error = failure.text();
  return result;
}

}  // namespace xmig::bench
