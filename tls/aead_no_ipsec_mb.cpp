// tls/aead in a build without intel-ipsec-mb (not x86-64, or XMIG_IPSEC_MB=OFF):
// every suite goes through OpenSSL.
#include "tls/aead.hpp"

namespace xmig::tls {

std::unique_ptr<Aead> make_ipsec_mb_gcm(size_t, std::string& why) {
  why = "this xmig was built without intel-ipsec-mb";
  return nullptr;
}

bool ipsec_mb_preferred() {
  return false;
}

}  // namespace xmig::tls
