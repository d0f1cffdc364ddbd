// tls/aead by intel-ipsec-mb: AES-GCM through its direct API (no job
// queues: one record at a time, on the pump's thread).
#include "tls/aead.hpp"

#include <openssl/crypto.h>

// Last: it defines old names (SHA1, ...) as macros that OpenSSL's headers declare.
#include <intel-ipsec-mb.h>

namespace xmig::tls {

namespace {

struct ManagerFree {
  void operator()(IMB_MGR* m) const { free_mb_mgr(m); }
};

// The library's dispatch table for this CPU: set up once, only read after,
// shared by every pump (the direct API keeps its state in the key and
// context the caller passes). Null when the library could not set it up.
const IMB_MGR* manager() {
  static const std::unique_ptr<IMB_MGR, ManagerFree> m = [] {
    std::unique_ptr<IMB_MGR, ManagerFree> mgr(alloc_mb_mgr(0));
    if (!mgr) return mgr;
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(mgr.get(), &arch);
    if (imb_get_errno(mgr.get()) != 0 || arch == IMB_ARCH_NONE || arch == IMB_ARCH_NOAESNI)
      mgr.reset();
    return mgr;
  }();
  return m.get();
}

const char* arch_name(const IMB_MGR& m) {
  switch (m.used_arch) {
    case IMB_ARCH_SSE:
      return "SSE";
    case IMB_ARCH_AVX:
      return "AVX";
    case IMB_ARCH_AVX2:
      return "AVX2";
    case IMB_ARCH_AVX512:
      return "AVX512";
    default:
      return "?";
  }
}

// The library's AES-GCM functions for one key length (its manager has a set
// for 128-bit and one for 256-bit keys).
struct GcmFunctions {
  aes_gcm_pre_t pre;
  aes_gcm_init_var_iv_t init;
  aes_gcm_enc_dec_update_t encrypt, decrypt;
  aes_gcm_enc_dec_finalize_t encrypt_final, decrypt_final;
};

GcmFunctions gcm_functions(const IMB_MGR& m, size_t key_len) {
  if (key_len == 16)
    return {.pre = m.gcm128_pre,
            .init = m.gcm128_init_var_iv,
            .encrypt = m.gcm128_enc_update,
            .decrypt = m.gcm128_dec_update,
            .encrypt_final = m.gcm128_enc_finalize,
            .decrypt_final = m.gcm128_dec_finalize};
  return {.pre = m.gcm256_pre,
          .init = m.gcm256_init_var_iv,
          .encrypt = m.gcm256_enc_update,
          .decrypt = m.gcm256_dec_update,
          .encrypt_final = m.gcm256_enc_finalize,
          .decrypt_final = m.gcm256_dec_finalize};
}

class IpsecMbGcm final : public Aead {
 public:
  IpsecMbGcm(const IMB_MGR& m, size_t key_len)
      : m_(m), key_len_(key_len), gcm_(gcm_functions(m, key_len)) {}
  ~IpsecMbGcm() override { OPENSSL_cleanse(key_.get(), sizeof *key_); }

  size_t key_length() const override { return key_len_; }

  bool set_key(const uint8_t* key, size_t len) override {
    if (len != key_len_) return false;
    gcm_.pre(key, key_.get());
    return true;
  }

  bool seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in, size_t len,
            uint8_t type, uint8_t* out) override {
    gcm_context_data ctx;
    gcm_.init(key_.get(), &ctx, nonce, kNonce, aad, aad_len);
    if (len > 0) gcm_.encrypt(key_.get(), &ctx, out, in, len);
    gcm_.encrypt(key_.get(), &ctx, out + len, &type, 1);
    gcm_.encrypt_final(key_.get(), &ctx, out + len + 1, kTag);
    OPENSSL_cleanse(&ctx, sizeof ctx);
    return true;
  }

  bool open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in, size_t len,
            const uint8_t* tag, uint8_t* out) override {
    gcm_context_data ctx;
    uint8_t computed[kTag];
    gcm_.init(key_.get(), &ctx, nonce, kNonce, aad, aad_len);
    if (len > 0) gcm_.decrypt(key_.get(), &ctx, out, in, len);
    gcm_.decrypt_final(key_.get(), &ctx, computed, kTag);
    const bool authentic = CRYPTO_memcmp(computed, tag, kTag) == 0;
    OPENSSL_cleanse(&ctx, sizeof ctx);
    OPENSSL_cleanse(computed, sizeof computed);
    return authentic;
  }

  std::string name() const override {
    return std::string("intel-ipsec-mb ") + imb_get_version_str() + " (" + arch_name(m_) + ")";
  }

 private:
  const IMB_MGR& m_;
  size_t key_len_;
  GcmFunctions gcm_;
  // Expanded AES keys and GHASH powers (about 1 KiB, 64-byte aligned).
  std::unique_ptr<gcm_key_data> key_ = std::make_unique<gcm_key_data>();
};

}  // namespace

std::unique_ptr<Aead> make_ipsec_mb_gcm(size_t key_len, std::string& why) {
  const IMB_MGR* m = manager();
  if (!m) {
    why = "intel-ipsec-mb found no AES-NI on this CPU";
    return nullptr;
  }
  if (key_len != 16 && key_len != 32) {
    why = "AES-GCM with a " + std::to_string(key_len) + "-byte key";
    return nullptr;
  }
  return std::make_unique<IpsecMbGcm>(*m, key_len);
}

bool ipsec_mb_preferred() {
  const IMB_MGR* m = manager();
  constexpr uint64_t kWide = IMB_FEATURE_VAES | IMB_FEATURE_VPCLMULQDQ;
  return m && m->used_arch == IMB_ARCH_AVX512 && (m->features & kWide) == kWide;
}

}  // namespace xmig::tls
