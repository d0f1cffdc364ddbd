#include "harness/tls_probe.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "base/openssl_errors.hpp"
#include "harness/files.hpp"

namespace xmig::harness {

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

// Why an SSL call returned `ret`, in words: the error queue, a verification
// failure, a close_notify, an EOF, a timeout or an errno.
std::string describe_failure(SSL* ssl, int ret, int saved_errno) {
  int err = SSL_get_error(ssl, ret);
  std::string why = openssl_errors();
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK)
    why +=
        std::string(why.empty() ? "" : "; ") + "verify: " + X509_verify_cert_error_string(verify);
  if (!why.empty()) return why;
  switch (err) {
    case SSL_ERROR_ZERO_RETURN:
      return "peer sent close_notify";
    case SSL_ERROR_SYSCALL:
      if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) return "timed out";
      return saved_errno ? strerror(saved_errno) : "peer closed the connection (EOF)";
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return "timed out";
    default:
      return "SSL error " + std::to_string(err);
  }
}

std::string pem_text(const std::string& text, const std::string& file) {
  if (!text.empty() || file.empty()) return text;
  return read_file(file);
}

BioPtr memory_bio(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) throw std::runtime_error("TlsProbe: BIO_new_mem_buf failed");
  return bio;
}

Fd connect_loopback(uint16_t port, std::chrono::milliseconds timeout, std::string& error) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = std::string("socket: ") + strerror(errno);
    return fd;
  }
  set_socket_timeouts(fd.get(), timeout);  // SO_SNDTIMEO also bounds connect()
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    error = "connect 127.0.0.1:" + std::to_string(port) + ": " + strerror(errno);
    fd.reset();
  }
  return fd;
}

uint16_t local_port_of(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  return ntohs(addr.sin_port);
}

}  // namespace

void set_socket_timeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

TlsProbe::TlsProbe(TlsProbeOptions opts) : opts_(std::move(opts)) {
  // It writes to servers that may have reset the connection (a refusal):
  // that is a write error to report, not a signal that ends the test binary.
  ::signal(SIGPIPE, SIG_IGN);
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  if (!ctx_) throw std::runtime_error("TlsProbe: SSL_CTX_new: " + openssl_errors());
  SSL_CTX* ctx = ctx_.get();
  if (!opts_.groups.empty() && SSL_CTX_set1_groups_list(ctx, opts_.groups.c_str()) != 1)
    throw std::runtime_error("TlsProbe: bad groups: " + openssl_errors());
  if (opts_.min_version && SSL_CTX_set_min_proto_version(ctx, opts_.min_version) != 1)
    throw std::runtime_error("TlsProbe: bad min_version: " + openssl_errors());
  if (opts_.max_version && SSL_CTX_set_max_proto_version(ctx, opts_.max_version) != 1)
    throw std::runtime_error("TlsProbe: bad max_version: " + openssl_errors());

  std::string cert = pem_text(opts_.cert_pem, opts_.cert_file);
  std::string key = pem_text(opts_.key_pem, opts_.key_file);
  if (!cert.empty() || !key.empty()) {
    auto cbio = memory_bio(cert);
    std::unique_ptr<X509, X509Free> x(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
    auto kbio = memory_bio(key);
    std::unique_ptr<EVP_PKEY, PkeyFree> k(
        PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
    if (!x || !k) throw std::runtime_error("TlsProbe: unreadable client certificate or key");
    if (SSL_CTX_use_certificate(ctx, x.get()) != 1 || SSL_CTX_use_PrivateKey(ctx, k.get()) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
      throw std::runtime_error("TlsProbe: client key does not match its certificate: " +
                               openssl_errors());
  }

  std::string ca = pem_text(opts_.ca_pem, opts_.ca_file);
  if (!ca.empty()) {
    auto bio = memory_bio(ca);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    int n = 0;
    while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, x);
      X509_free(x);
      ++n;
    }
    ERR_clear_error();  // the loop ends on "no start line"
    if (n == 0) throw std::runtime_error("TlsProbe: the CA holds no PEM certificate");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }

  if (!opts_.alpn.empty()) {
    std::string wire;
    for (const auto& p : opts_.alpn) (wire += static_cast<char>(p.size())) += p;
    SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
  }
}

TlsProbe::~TlsProbe() {
  close();
}

TlsProbeResult TlsProbe::connect(uint16_t port) {
  TlsProbeResult r;
  fd_ = connect_loopback(port, opts_.timeout, r.error);
  if (!fd_) return r;
  r.local_port = local_port_of(fd_.get());

  ssl_.reset(SSL_new(ctx_.get()));
  SSL* ssl = ssl_.get();
  if (!ssl || SSL_set_fd(ssl, fd_.get()) != 1) {
    r.error = "SSL_new/SSL_set_fd: " + openssl_errors();
    return r;
  }
  if (!opts_.server_name.empty() && (SSL_CTX_get_verify_mode(ctx_.get()) & SSL_VERIFY_PEER)) {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_WILDCARDS);
    SSL_set1_host(ssl, opts_.server_name.c_str());
  }

  ERR_clear_error();
  errno = 0;
  int ret = SSL_connect(ssl);
  if (ret != 1) {
    r.error = "handshake: " + describe_failure(ssl, ret, errno);
    return r;
  }
  r.handshake_ok = true;
  r.version = SSL_get_version(ssl);
  const unsigned char* proto = nullptr;
  unsigned proto_len = 0;
  SSL_get0_alpn_selected(ssl, &proto, &proto_len);
  if (proto) r.alpn.assign(reinterpret_cast<const char*>(proto), proto_len);

  // A server that refuses the client's certificate sends its alert after
  // the client's side of the handshake is done, and may reset the
  // connection before the request goes out: the alert is still there to
  // read, and it is the answer that counts.
  if (!opts_.request.empty()) {
    ERR_clear_error();
    SSL_write(ssl, opts_.request.data(), static_cast<int>(opts_.request.size()));
  }
  char verdict = 0;
  ERR_clear_error();
  errno = 0;
  ret = SSL_read(ssl, &verdict, 1);
  if (ret == 1)
    r.verdict = verdict;
  else
    r.error = "reading the verdict: " + describe_failure(ssl, ret, errno);
  return r;
}

std::string TlsProbe::write(std::string_view bytes) {
  if (!ssl_) return "not connected";
  while (!bytes.empty()) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_write(ssl_.get(), bytes.data(), static_cast<int>(bytes.size()));
    if (ret <= 0) return describe_failure(ssl_.get(), ret, errno);
    bytes.remove_prefix(static_cast<size_t>(ret));
  }
  return "";
}

std::string TlsProbe::read(size_t n) {
  std::string out;
  if (!ssl_) return out;
  char buf[16384];
  while (out.size() < n) {
    ERR_clear_error();
    int ret = SSL_read(ssl_.get(), buf, static_cast<int>(std::min(sizeof buf, n - out.size())));
    if (ret <= 0) break;
    out.append(buf, static_cast<size_t>(ret));
  }
  return out;
}

void TlsProbe::close() {
  if (ssl_) {
    ERR_clear_error();
    SSL_shutdown(ssl_.get());  // close_notify, without waiting for the peer's
    ERR_clear_error();
  }
  ssl_.reset();
  fd_.reset();
}

PlaintextResult send_plaintext(uint16_t port, std::string_view bytes,
                               std::chrono::milliseconds timeout) {
  PlaintextResult r;
  Fd fd = connect_loopback(port, timeout, r.error);
  if (!fd) return r;
  r.local_port = local_port_of(fd.get());
  if (::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(bytes.size())) {
    r.error = std::string("send: ") + strerror(errno);
    return r;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r.closed = true;
      r.error = std::string("recv: ") + strerror(errno);
      break;
    }
    if (n == 0) {
      r.closed = true;
      break;
    }
    r.reply.append(buf, static_cast<size_t>(n));
  }
  return r;
}

bool is_only_tls_alerts(std::string_view reply) {
  while (!reply.empty()) {
    if (reply.size() < 5) return false;
    auto type = static_cast<uint8_t>(reply[0]);
    auto major = static_cast<uint8_t>(reply[1]);
    size_t len = static_cast<uint8_t>(reply[3]) * 256u + static_cast<uint8_t>(reply[4]);
    if (type != 21 || major != 3 || reply.size() < 5 + len) return false;
    reply.remove_prefix(5 + len);
  }
  return true;
}

}  // namespace xmig::harness
