#include "harness/streams.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/ssl3.h>
#include <openssl/tls1.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <memory>
#include <stdexcept>
#include <vector>

#include "base/openssl.hpp"
#include "base/socket.hpp"
#include "harness/files.hpp"

namespace xmig::harness {

struct Sha256 {
  Sha256() : ctx(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr); }
  void update(const void* p, size_t n) { EVP_DigestUpdate(ctx.get(), p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &n);
    static const char* d = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < n; ++i) (s += d[md[i] >> 4]) += d[md[i] & 15];
    return s;
  }
  MdCtxPtr ctx;
};

namespace {

constexpr size_t kChunk = 1 << 20;

// The n-th chunk of a stream: fill_random seeded by (seed, n).
void chunk_of(std::vector<uint8_t>& buf, uint64_t seed, uint64_t index, size_t len) {
  buf.resize(len);
  fill_random(buf, seed * 1000003 + index);
}

sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return addr;
}

}  // namespace

Fd connect_unix(const std::string& path) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto addr = unix_addr(path);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error("connect " + path + ": " + strerror(errno));
  return fd;
}

Fd connect_tcp(uint16_t port, const std::string& source) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  bind_source(fd.get(), source);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error("connect 127.0.0.1:" + std::to_string(port) + ": " + strerror(errno));
  return fd;
}

std::vector<Fd> partial_client_hellos(uint16_t port, const std::string& source, unsigned count) {
  // A handshake record with the legacy version ClientHellos carry (TLS 1.0),
  // its length, and the first byte of its body: the handshake's type.
  constexpr unsigned kAnnounced = 16 * 1024;
  static constexpr unsigned char kPartialHello[] = {SSL3_RT_HANDSHAKE,   TLS1_VERSION >> 8,
                                                    TLS1_VERSION & 0xff, kAnnounced >> 8,
                                                    kAnnounced & 0xff,   SSL3_MT_CLIENT_HELLO};
  std::vector<Fd> held;
  held.reserve(count);
  for (unsigned i = 0; i < count; ++i) {
    held.push_back(connect_tcp(port, source));
    if (::send(held.back().get(), kPartialHello, sizeof kPartialHello, MSG_NOSIGNAL) !=
        static_cast<ssize_t>(sizeof kPartialHello))
      throw std::runtime_error("partial ClientHello to 127.0.0.1:" + std::to_string(port) + ": " +
                               strerror(errno));
  }
  return held;
}

Listener Listener::unix_socket(const std::string& path) {
  Listener l;
  l.path_ = path;
  ::unlink(path.c_str());
  l.fd_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto addr = unix_addr(path);
  if (::bind(l.fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(l.fd_.get(), 64) != 0)
    throw std::runtime_error("listen " + path + ": " + strerror(errno));
  return l;
}

Listener Listener::tcp(uint16_t port) {
  Listener l;
  l.fd_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(l.fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(l.fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(l.fd_.get(), 64) != 0 ||
      ::getsockname(l.fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error(std::string("listen tcp: ") + strerror(errno));
  l.port_ = ntohs(addr.sin_port);
  return l;
}

std::string Listener::endpoint() const {
  return path_.empty() ? "127.0.0.1:" + std::to_string(port_) : "unix:" + path_;
}

Fd Listener::accept(std::chrono::milliseconds timeout) {
  if (!wait_readable(fd_.get(), timeout)) return Fd();
  return Fd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
}

Hashed send_stream(int fd, uint64_t bytes, uint64_t seed) {
  Hashed h;
  Sha256 sha;
  std::vector<uint8_t> buf;
  for (uint64_t index = 0; h.bytes < bytes; ++index) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - h.bytes));
    chunk_of(buf, seed, index, len);
    size_t off = 0;
    while (off < len) {
      ssize_t n = ::send(fd, buf.data() + off, len - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        h.error = std::string("send: ") + strerror(errno);
        sha.update(buf.data(), off);
        h.bytes += off;
        h.sha256 = sha.hex();
        return h;
      }
      off += static_cast<size_t>(n);
    }
    sha.update(buf.data(), len);
    h.bytes += len;
  }
  h.sha256 = sha.hex();
  return h;
}

Hashed recv_stream(int fd) {
  return StreamReceiver(fd).finish();
}

StreamReceiver::StreamReceiver(int fd) : fd_(fd), sha_(std::make_unique<Sha256>()) {}
StreamReceiver::~StreamReceiver() = default;

uint64_t StreamReceiver::receive_until(uint64_t total) {
  std::vector<uint8_t> buf(kChunk);
  while (!ended_ && h_.bytes < total) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - h_.bytes));
    ssize_t n = ::recv(fd_, buf.data(), want, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) h_.error = std::string("recv: ") + strerror(errno);
    if (n <= 0) {
      ended_ = true;
      break;
    }
    sha_->update(buf.data(), static_cast<size_t>(n));
    h_.bytes += static_cast<uint64_t>(n);
  }
  return h_.bytes;
}

Hashed StreamReceiver::finish() {
  receive_until(std::numeric_limits<uint64_t>::max());
  h_.sha256 = sha_->hex();
  return h_;
}

std::string expected_sha256(uint64_t bytes, uint64_t seed) {
  Sha256 sha;
  std::vector<uint8_t> buf;
  uint64_t done = 0;
  for (uint64_t index = 0; done < bytes; ++index) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - done));
    chunk_of(buf, seed, index, len);
    sha.update(buf.data(), len);
    done += len;
  }
  return sha.hex();
}

void shutdown_write(int fd) {
  ::shutdown(fd, SHUT_WR);
}

void reset(Fd& fd) {
  reset_on_close(fd.get());
  fd.reset();
}

bool wait_readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

}  // namespace xmig::harness
