// Internal to tls/: the application traffic secrets the key log keeps for a
// session until its data path takes them (kTLS RX in tls/ktls.cpp, the
// userspace record layer in tls/records.cpp), and the key schedule step both
// derive keys with.
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace xmig::tls {

// The two application traffic secrets of one session (RFC 8446 7.1); wiped
// when destroyed.
struct Secrets {
  std::vector<uint8_t> client, server;
  Secrets() = default;
  Secrets(const Secrets&) = delete;
  Secrets& operator=(const Secrets&) = delete;
  ~Secrets();
};

// The secrets the key log kept for `ssl`, or null.
Secrets* kept_secrets(const SSL* ssl);

// HKDF-Expand-Label(secret, label, "", length) with the suite's hash (RFC 8446 7.1).
bool expand_label(const EVP_MD* md, const std::vector<uint8_t>& secret, const char* label,
                  uint8_t* out, size_t length);

}  // namespace xmig::tls
