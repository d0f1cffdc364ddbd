// Internal to certs/: helpers shared by the .cpp files (the owners of OpenSSL
// objects are base/openssl.hpp's). Not part of the public API (include certs/certs.hpp instead).
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include "base/openssl.hpp"
#include "certs/certs.hpp"

namespace xmig::certs::detail {

// Throws Error(what + ": " + the OpenSSL error queue), clearing the queue.
[[noreturn]] void fail_ssl(const std::string& what);

// Memory BIO holding a copy of text.
BioPtr mem_bio(const std::string& text);
// Everything written to a memory BIO, as a string.
std::string bio_text(BIO* bio);

// Keys (key.cpp)
PkeyPtr generate_key(KeyType type);
std::string key_to_pem(EVP_PKEY* key);  // PKCS#8, unencrypted
// Parses a private key; never prompts. source names it in errors.
PkeyPtr parse_key(const std::string& pem, const std::string& source);
// Digest to sign with for this key (nullptr for keys with a built-in digest).
const EVP_MD* signing_digest(EVP_PKEY* key);

// Certificates (x509.cpp)
X509Ptr parse_cert(const std::string& pem, const std::string& source);
bool is_ca(X509* cert);
std::string common_name(X509* cert);

// Names (issue.cpp): host name and IP validation shared with checks.
bool valid_dns_name(const std::string& name);
// Canonical text of an IP address, or empty when ip is not one.
std::string canonical_ip(const std::string& ip);

// Files (store.cpp)
// A file written next to its destination (temporary name, given mode, content
// fsync'ed) but not yet renamed into place. The destructor removes the temporary
// file unless commit() renamed it.
class Staged {
 public:
  Staged(fs::path final_path, const std::string& content, unsigned mode);
  ~Staged();
  Staged(const Staged&) = delete;
  Staged& operator=(const Staged&) = delete;
  void commit();  // rename(2) over the destination
  const fs::path& path() const { return final_; }

 private:
  fs::path final_;
  std::string tmp_;
};
void fsync_dir(const fs::path& dir);
// Creates dir (and parents) when missing; throws Error naming it.
void ensure_dir(const fs::path& dir);

}  // namespace xmig::certs::detail
