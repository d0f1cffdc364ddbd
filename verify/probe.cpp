// Blocking probe clients (see probe.hpp).
#include "verify/probe.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "base/openssl.hpp"
#include "base/openssl_errors.hpp"
#include "base/socket.hpp"
#include "tunnel/protocol.hpp"

namespace xmig::verify {

std::string PeerAddress::str() const {
  return v6 ? "[" + ip + "]:" + std::to_string(port) : ip + ":" + std::to_string(port);
}

PeerAddress resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || !res)
    throw std::runtime_error("cannot resolve \"" + host + "\": " + gai_strerror(rc));
  PeerAddress p;
  std::memcpy(&p.addr, res->ai_addr, res->ai_addrlen);
  p.len = static_cast<socklen_t>(res->ai_addrlen);
  p.port = port;
  p.v6 = res->ai_family == AF_INET6;
  char buf[INET6_ADDRSTRLEN] = "";
  if (p.v6)
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr, buf, sizeof buf);
  else
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
  p.ip = buf;
  ::freeaddrinfo(res);
  return p;
}

Fd connect_with_timeout(const PeerAddress& peer, std::chrono::milliseconds timeout,
                        std::string* error, const std::string& source) {
  Fd fd(::socket(peer.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    *error = std::string("socket: ") + strerror(errno);
    return fd;
  }
  try {
    bind_source(fd.get(), source);
  } catch (const std::exception& e) {
    *error = e.what();
    fd.reset();
    return fd;
  }
  set_timeouts(fd.get(), timeout);  // SO_SNDTIMEO also bounds connect()
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&peer.addr), peer.len) != 0) {
    *error = "connect to " + peer.str() + ": " +
             (errno == EINPROGRESS || errno == EAGAIN ? std::string("timed out") : strerror(errno));
    fd.reset();
  }
  return fd;
}

TlsSession open_session(const PeerAddress& peer, SslPtr ssl, std::chrono::milliseconds timeout,
                        std::optional<std::string> request, const std::string& source) {
  TlsSession s;
  s.ssl = std::move(ssl);
  s.fd = connect_with_timeout(peer, timeout, &s.error, source);
  if (!s.fd) return s;
  s.connected = true;
  s.local_port = local_port_of(s.fd.get());
  SSL* ssl_ = s.ssl.get();
  if (SSL_set_fd(ssl_, s.fd.get()) != 1) {
    s.error = "SSL_set_fd: " + openssl_errors();
    return s;
  }
  ERR_clear_error();
  errno = 0;
  int ret = SSL_connect(ssl_);
  if (ret != 1) {
    s.error = "handshake: " + blocking_ssl_failure(ssl_, ret, errno);
    return s;
  }
  s.handshake_ok = true;
  s.version = SSL_get_version(ssl_);
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  s.cipher = cipher ? SSL_CIPHER_get_name(cipher) : "";
  s.aead = cipher && SSL_CIPHER_is_aead(cipher);
  const unsigned char* proto = nullptr;
  unsigned proto_len = 0;
  SSL_get0_alpn_selected(ssl_, &proto, &proto_len);
  if (proto) s.alpn.assign(reinterpret_cast<const char*>(proto), proto_len);
  // The tunnel answers only after the Request record. A peer that refuses
  // this client's certificate sends its alert after the client's side of the
  // handshake is done and may reset the connection before the request goes
  // out: the alert is still there to read, and it is the answer that counts.
  if (!request) request = tunnel::encode(tunnel::Request{});
  if (!request->empty()) {
    ERR_clear_error();
    SSL_write(ssl_, request->data(), static_cast<int>(request->size()));
  }
  char verdict = 0;
  ERR_clear_error();
  errno = 0;
  ret = SSL_read(ssl_, &verdict, 1);
  int saved = errno;
  if (ret == 1 && !tunnel::is_verdict(verdict)) {
    s.not_a_verdict = true;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(verdict));
    s.error =
        std::string("the peer answered with data (first byte ") + hex + ") instead of a verdict";
  } else if (ret == 1) {
    s.verdict = verdict;
  } else {
    int err = SSL_get_error(ssl_, ret);
    s.verdict_timed_out = (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_WANT_READ) &&
                          (saved == EAGAIN || saved == EWOULDBLOCK);
    s.error = "reading the verdict: " + blocking_ssl_failure(ssl_, ret, saved);
  }
  return s;
}

bool TlsSession::write_all(std::string_view bytes) {
  while (!bytes.empty()) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_write(ssl.get(), bytes.data(), static_cast<int>(bytes.size()));
    if (ret <= 0) {
      error = "write: " + blocking_ssl_failure(ssl.get(), ret, errno);
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(ret));
  }
  return true;
}

size_t TlsSession::read_some(char* buf, size_t n) {
  ERR_clear_error();
  errno = 0;
  int ret = SSL_read(ssl.get(), buf, static_cast<int>(n));
  if (ret > 0) return static_cast<size_t>(ret);
  if (SSL_get_error(ssl.get(), ret) != SSL_ERROR_ZERO_RETURN)
    error = "read: " + blocking_ssl_failure(ssl.get(), ret, errno);
  return 0;
}

SslPtr probe_session(const ProbeSpec& spec) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) throw tls::Error("SSL_CTX_new: " + openssl_errors());
  if ((spec.min_version && SSL_CTX_set_min_proto_version(ctx.get(), spec.min_version) != 1) ||
      (spec.max_version && SSL_CTX_set_max_proto_version(ctx.get(), spec.max_version) != 1))
    throw tls::Error("probe TLS version range unusable: " + openssl_errors());
  if (!spec.groups.empty() && SSL_CTX_set1_groups_list(ctx.get(), spec.groups.c_str()) != 1)
    throw tls::Error("probe groups \"" + spec.groups + "\" unusable: " + openssl_errors());
  if (!spec.cert_pem.empty() || !spec.key_pem.empty()) {
    BioPtr cb(BIO_new_mem_buf(spec.cert_pem.data(), static_cast<int>(spec.cert_pem.size())));
    X509Ptr cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    BioPtr kb(BIO_new_mem_buf(spec.key_pem.data(), static_cast<int>(spec.key_pem.size())));
    PkeyPtr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
    if (!cert || !key || SSL_CTX_use_certificate(ctx.get(), cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1)
      throw tls::Error("probe identity unusable: " + openssl_errors());
    // Intermediate CAs that follow the leaf in the certificate file.
    while (X509Ptr extra{PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr)})
      SSL_CTX_add1_chain_cert(ctx.get(), extra.get());
    ERR_clear_error();  // the loop ends on "no start line"
  }
  SSL_CTX_set_verify(ctx.get(), spec.ca_pem.empty() ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nullptr);
  if (!spec.ca_pem.empty()) {
    BioPtr bio(BIO_new_mem_buf(spec.ca_pem.data(), static_cast<int>(spec.ca_pem.size())));
    int n = 0;
    while (X509Ptr ca{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
      X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca.get());
      ++n;
    }
    ERR_clear_error();
    if (n == 0) throw tls::Error("probe CA holds no PEM certificate");
  }
  if (!spec.alpn.empty()) {
    std::string wire;
    for (const auto& p : spec.alpn) (wire += static_cast<char>(p.size())) += p;
    SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
  }
  SslPtr ssl(SSL_new(ctx.get()));  // holds its own reference to ctx
  if (!ssl) throw tls::Error("SSL_new: " + openssl_errors());
  SSL_set_connect_state(ssl.get());
  if (!spec.ca_pem.empty() && !spec.server_name.empty()) {
    SSL_set_hostflags(ssl.get(), X509_CHECK_FLAG_NO_WILDCARDS);
    SSL_set1_host(ssl.get(), spec.server_name.c_str());
  }
  return ssl;
}

PlaintextReply send_plaintext(const PeerAddress& peer, std::string_view bytes,
                              std::chrono::milliseconds timeout) {
  PlaintextReply r;
  Fd fd = connect_with_timeout(peer, timeout, &r.error);
  if (!fd) return r;
  r.local_port = local_port_of(fd.get());
  if (::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(bytes.size())) {
    r.closed = true;
    return r;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (r.reply.size() < 65536) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    ssize_t got = ::recv(fd.get(), buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      r.closed = true;
      break;
    }
    r.reply.append(buf, static_cast<size_t>(got));
  }
  return r;
}

std::optional<std::chrono::system_clock::time_point> peer_not_after(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) return std::nullopt;
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace xmig::verify
