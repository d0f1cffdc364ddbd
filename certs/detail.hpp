// Internal to certs/: RAII owners for OpenSSL objects and helpers shared by the
// .cpp files. Not part of the public API (include certs/certs.hpp instead).
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include "certs/certs.hpp"

namespace xmig::certs::detail {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};

using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;
using AsnIntPtr = std::unique_ptr<ASN1_INTEGER, Deleter<ASN1_INTEGER, ASN1_INTEGER_free>>;

inline void free_general_names(GENERAL_NAMES* g) {
  GENERAL_NAMES_free(g);
}
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, free_general_names>>;
// A stack that borrows its certificates (frees the stack, not them).
inline void free_x509_stack(STACK_OF(X509) * s) {
  sk_X509_free(s);
}
using X509StackPtr = std::unique_ptr<STACK_OF(X509), Deleter<STACK_OF(X509), free_x509_stack>>;
inline void free_ext_stack(STACK_OF(X509_EXTENSION) * s) {
  sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
}
using ExtStackPtr =
    std::unique_ptr<STACK_OF(X509_EXTENSION), Deleter<STACK_OF(X509_EXTENSION), free_ext_stack>>;

// Throws Error(what + ": " + the OpenSSL error queue), clearing the queue.
[[noreturn]] void fail_ssl(const std::string& what);
// The OpenSSL error queue as one line (and clears it); empty when none.
std::string ssl_errors();

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
std::vector<X509Ptr> parse_certs(const std::string& pem, const std::string& source);
std::string cert_to_pem(X509* cert);
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
