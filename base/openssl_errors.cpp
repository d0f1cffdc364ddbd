#include "base/openssl_errors.hpp"

#include <openssl/err.h>

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
