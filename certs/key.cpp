// Private keys: generation, PKCS#8 PEM encoding, parsing without prompts, and
// matching a key to a certificate. Key bytes never reach an error message.
#include <openssl/err.h>
#include <openssl/pem.h>

#include "base/openssl_errors.hpp"
#include "certs/detail.hpp"

namespace xmig::certs {
namespace detail {

void fail_ssl(const std::string& what) {
  std::string errors = openssl_errors();
  throw Error(errors.empty() ? what : what + " (" + errors + ")");
}

BioPtr mem_bio(const std::string& text) {
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) fail_ssl("out of memory");
  return bio;
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

PkeyPtr generate_key(KeyType type) {
  PkeyPtr key(type == KeyType::Rsa3072 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{3072})
                                       : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) fail_ssl("cannot generate a private key");
  return key;
}

std::string key_to_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) bio.reset(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail_ssl("cannot encode a private key as PEM");
  return bio_text(bio.get());
}

namespace {

// Password callback that refuses: encrypted keys fail instead of prompting.
int no_password(char*, int, int, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

}  // namespace

PkeyPtr parse_key(const std::string& pem, const std::string& source) {
  BioPtr bio = mem_bio(pem);
  bool asked = false;
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, &asked));
  if (!key) {
    ERR_clear_error();  // the message below is the useful part
    if (asked)
      throw Error(source +
                  ": the private key is encrypted; xmig needs an unencrypted key kept at mode "
                  "0600 (decrypt it with: openssl pkey -in FILE -out FILE.plain)");
    throw Error(source +
                ": no private key in PEM format found (expected '-----BEGIN PRIVATE KEY-----'; "
                "check that the file is a key and not a certificate)");
  }
  return key;
}

const EVP_MD* signing_digest(EVP_PKEY* key) {
  int nid = NID_undef;
  if (EVP_PKEY_get_default_digest_nid(key, &nid) == 2 && nid == NID_undef) return nullptr;
  return EVP_sha256();
}

}  // namespace detail

bool key_matches(const std::string& cert_pem, const std::string& key_pem) {
  X509Ptr cert = detail::parse_cert(cert_pem, "certificate");
  PkeyPtr key = detail::parse_key(key_pem, "private key");
  EVP_PKEY* pub = X509_get0_pubkey(cert.get());
  bool same = pub != nullptr && EVP_PKEY_eq(pub, key.get()) == 1;
  ERR_clear_error();
  return same;
}

}  // namespace xmig::certs
