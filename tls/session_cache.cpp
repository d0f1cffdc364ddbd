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
  // SSL_set_session takes its own reference: a ticket replaced meanwhile
  // stays valid for this handshake.
  SSL_set_session(ssl, it->second.get());
}

void SessionCache::keep(const std::string& peer, const SSL_SESSION* session) {
  SslSessionPtr copy(SSL_SESSION_dup(session));
  if (!copy || !SSL_SESSION_is_resumable(copy.get())) return;
  std::lock_guard lock(mutex_);
  tickets_[peer] = std::move(copy);
}

}  // namespace xmig::tls
