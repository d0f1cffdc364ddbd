#include "tls/session_cache.hpp"

#include <ctime>

namespace xmig::tls {

void SessionCache::offer(SSL* ssl, const std::string& peer) {
  std::lock_guard lock(mutex_);
  auto it = tickets_.find(peer);
  if (it == tickets_.end()) return;
  const auto age = std::time(nullptr) - SSL_SESSION_get_time(it->second.get());
  if (age < 0 || age >= lifetime_.count()) {
    tickets_.erase(it);
    return;
  }
  // A copy for each handshake: OpenSSL marks the session object of an SSL
  // freed without close_notify not resumable, and this one must stay usable
  // for the next channel (the server renews no ticket on resumption).
  SslSessionPtr copy(SSL_SESSION_dup(it->second.get()));
  if (copy) SSL_set_session(ssl, copy.get());  // takes its own reference
}

void SessionCache::keep(const std::string& peer, const SSL_SESSION* session) {
  SslSessionPtr copy(SSL_SESSION_dup(session));
  if (!copy || !SSL_SESSION_is_resumable(copy.get())) return;
  std::lock_guard lock(mutex_);
  tickets_[peer] = std::move(copy);
}

}  // namespace xmig::tls
