// tls/aead (internal to tls/): the AEAD that protects one direction of
// tls::Records, over a record's inner plaintext with its header as the
// additional data (RFC 8446 5.2).
//
// Two engines. OpenSSL's EVP does every suite on every CPU. Intel's
// intel-ipsec-mb does AES-GCM, and is what Auto picks where the CPU has
// AVX-512 with VAES and VPCLMULQDQ: OpenSSL 3.0's AES-GCM uses 128-bit AES-NI
// only, and there ipsec-mb seals 16 KiB records several times as fast (the
// cipher was half of the tunnel's CPU during a migration: bench/README, "AES-GCM by
// intel-ipsec-mb"). Both produce the same bytes; tests/unit/records_test.cpp
// opens what each seals with the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tls/records.hpp"  // AeadEngine

namespace xmig::tls {

class Aead {
 public:
  static constexpr size_t kNonce = 12;
  static constexpr size_t kTag = 16;
  virtual ~Aead() = default;

  // The suite's key length in bytes.
  virtual size_t key_length() const = 0;
  // Keys every record after this; `len` is key_length().
  virtual bool set_key(const uint8_t* key, size_t len) = 0;
  // Writes the ciphertext of in[0, len) followed by the inner content type
  // `type`, then the tag: len + 1 + kTag bytes at out.
  virtual bool seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in,
                    size_t len, uint8_t type, uint8_t* out) = 0;
  // Decrypts in[0, len) into out and checks `tag`; false when it does not
  // authenticate (out then holds nothing to use).
  virtual bool open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in,
                    size_t len, const uint8_t* tag, uint8_t* out) = 0;
  // The engine, for logs: "OpenSSL 3.0.19", "intel-ipsec-mb 1.3.0 (AVX512)".
  virtual std::string name() const = 0;
};

// The AEAD of a TLS 1.3 cipher suite (IANA number) for sealing or opening.
// Null, with `why`, for a suite the engine does not do.
std::unique_ptr<Aead> make_aead(uint16_t suite, bool sealing, AeadEngine engine, std::string& why);

// intel-ipsec-mb's AES-GCM with a key of `key_len` bytes (aead_ipsec_mb.cpp;
// aead_no_ipsec_mb.cpp in builds without it: null, with why).
std::unique_ptr<Aead> make_ipsec_mb_gcm(size_t key_len, std::string& why);
// Whether Auto picks intel-ipsec-mb for AES-GCM on this CPU.
bool ipsec_mb_preferred();

}  // namespace xmig::tls
