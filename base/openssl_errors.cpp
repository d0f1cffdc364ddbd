#include "base/openssl_errors.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>

namespace xmig {

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    // Keep the reason only: "error:0A000086:SSL routines::certificate verify failed".
    std::string s = buf;
    size_t cut = s.rfind(':');
    if (cut != std::string::npos) s = s.substr(cut + 1);
    if (out.find(s) == std::string::npos) out += (out.empty() ? "" : "; ") + s;
  }
  return out;
}

}  // namespace xmig

namespace xmig {

std::string blocking_ssl_failure(SSL* ssl, int ret, int saved_errno) {
  int err = SSL_get_error(ssl, ret);
  std::string why = openssl_errors();
  // A client that does not verify its server still gets a verify result:
  // only report it when verification was asked for.
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER))
    why +=
        std::string(why.empty() ? "" : "; ") + "verify: " + X509_verify_cert_error_string(verify);
  if (!why.empty()) return why;
  switch (err) {
    case SSL_ERROR_ZERO_RETURN:
      return "the peer sent close_notify";
    case SSL_ERROR_SYSCALL:
      if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) return "timed out";
      return saved_errno ? strerror(saved_errno) : "the peer closed the connection";
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return "timed out";
    default:
      return "SSL error " + std::to_string(err);
  }
}

}  // namespace xmig
