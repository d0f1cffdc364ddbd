#include "tls/aead.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base/openssl.hpp"
#include "tls/records.hpp"

namespace xmig::tls {

namespace {

// OpenSSL's EVP: one context per direction, keyed once per traffic secret;
// each record only sets its nonce.
class OpenSslAead final : public Aead {
 public:
  OpenSslAead(const EVP_CIPHER* cipher, bool sealing) : cipher_(cipher), sealing_(sealing) {}

  size_t key_length() const override {
    return static_cast<size_t>(EVP_CIPHER_get_key_length(cipher_));
  }

  bool set_key(const uint8_t* key, size_t len) override {
    EVP_CIPHER_CTX* c = ctx_.get();
    return c && len == key_length() &&
           EVP_CipherInit_ex(c, cipher_, nullptr, nullptr, nullptr, sealing_) == 1 &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, kNonce, nullptr) == 1 &&
           EVP_CipherInit_ex(c, nullptr, nullptr, key, nullptr, sealing_) == 1;
  }

  bool seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in, size_t len,
            uint8_t type, uint8_t* out) override {
    EVP_CIPHER_CTX* c = ctx_.get();
    int n = 0;
    return EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, nonce) == 1 &&
           EVP_EncryptUpdate(c, nullptr, &n, aad, static_cast<int>(aad_len)) == 1 &&
           (len == 0 || EVP_EncryptUpdate(c, out, &n, in, static_cast<int>(len)) == 1) &&
           EVP_EncryptUpdate(c, out + len, &n, &type, 1) == 1 &&
           EVP_EncryptFinal_ex(c, out + len + 1, &n) == 1 &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, kTag, out + len + 1) == 1;
  }

  bool open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in, size_t len,
            const uint8_t* tag, uint8_t* out) override {
    EVP_CIPHER_CTX* c = ctx_.get();
    int n = 0;
    return EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, nonce) == 1 &&
           EVP_DecryptUpdate(c, nullptr, &n, aad, static_cast<int>(aad_len)) == 1 &&
           EVP_DecryptUpdate(c, out, &n, in, static_cast<int>(len)) == 1 &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, kTag, const_cast<uint8_t*>(tag)) == 1 &&
           EVP_DecryptFinal_ex(c, out + len, &n) == 1;
  }

  std::string name() const override {
    return std::string("OpenSSL ") + OpenSSL_version(OPENSSL_VERSION_STRING);
  }

 private:
  const EVP_CIPHER* cipher_;
  bool sealing_;
  CipherCtxPtr ctx_{EVP_CIPHER_CTX_new()};
};

}  // namespace

std::unique_ptr<Aead> make_aead(uint16_t suite, bool sealing, AeadEngine engine, std::string& why) {
  const EVP_CIPHER* cipher = nullptr;
  size_t gcm_key = 0;  // AES-GCM's key length, 0 for ChaCha20-Poly1305
  switch (suite) {
    case Records::kAes128GcmSha256:
      cipher = EVP_aes_128_gcm();
      gcm_key = 16;
      break;
    case Records::kAes256GcmSha384:
      cipher = EVP_aes_256_gcm();
      gcm_key = 32;
      break;
    case Records::kChacha20Poly1305Sha256:
      cipher = EVP_chacha20_poly1305();
      break;
    default:
      why = "no record protection for cipher suite " + std::to_string(suite);
      return nullptr;
  }
  const bool ipsec_mb =
      engine == AeadEngine::IpsecMb || (engine == AeadEngine::Auto && ipsec_mb_preferred());
  if (ipsec_mb && gcm_key) return make_ipsec_mb_gcm(gcm_key, why);
  if (engine == AeadEngine::IpsecMb) {
    why = "intel-ipsec-mb does not do cipher suite " + std::to_string(suite) + " here";
    return nullptr;
  }
  return std::make_unique<OpenSslAead>(cipher, sealing);
}

}  // namespace xmig::tls
