// tls/session_cache: the dialling end's TLS 1.3 session tickets, at most one
// per peer, so that a tunnel's second and later channels to a peer resume
// (psk_dhe_ke: a fresh X25519 exchange, no certificates, no signatures)
// instead of running the full mutual handshake again.
//
// One cache belongs to one client SSL_CTX, that is to one tls::Context: a
// reload builds a new Context and with it an empty cache, so no ticket made
// under the old CA, CRL or certificate is ever offered again. Keyed by the
// peer's name as dialled (the name the server's certificate was checked
// against when the ticket was issued): a ticket is offered to that peer only.
// Used from the handshake threads: every member locks.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include "base/openssl.hpp"

namespace xmig::tls {

class SessionCache {
 public:
  explicit SessionCache(std::chrono::seconds lifetime) : lifetime_(lifetime) {}

  // Before the handshake: sets a copy of the ticket kept for `peer` on ssl,
  // unless there is none or it is older than the lifetime (then it is
  // dropped).
  void offer(SSL* ssl, const std::string& peer);
  // A ticket `peer` sent: replaces the one kept for it. Keeps a copy: the
  // SSL's own session object is marked not resumable when the SSL is freed
  // without a close_notify (OpenSSL 3.0, ssl_clear_bad_session), as every
  // kTLS hand-off does.
  void keep(const std::string& peer, const SSL_SESSION* session);

 private:
  const std::chrono::seconds lifetime_;
  std::mutex mutex_;
  std::map<std::string, SslSessionPtr> tickets_;  // by peer name
};

}  // namespace xmig::tls
