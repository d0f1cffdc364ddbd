// Private keys: generation, PKCS#8 PEM encoding, parsing without prompts (the
// one reader, also the tunnel's: load_key_file), and matching a key to a
// certificate. Key bytes never reach an error message.
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

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
  if (key) return key;
  ERR_clear_error();  // the cause below is the useful part
  // Say which of the usual causes it is: the three need different fixes. Only
  // markers are looked for in the text, which is (part of) a key.
  if (asked || pem.find("ENCRYPTED") != std::string::npos)
    throw Error(source +
                ": holds an encrypted private key, which xmig cannot unlock unattended; fix: "
                "give an unencrypted PEM key (mode 0600), e.g. the server-key.pem written by "
                "xmig-certs, or decrypt it: openssl pkey -in FILE -out FILE.plain");
  if (pem.find("PRIVATE KEY-----") != std::string::npos)
    throw Error(source +
                ": private key is cut short or damaged; fix: write the whole file again (to a "
                "temporary name, then rename it into place), or restore server-key.pem.prev");
  throw Error(source +
              ": holds no PEM private key (expected '-----BEGIN PRIVATE KEY-----'); fix: give "
              "an unencrypted PEM key, e.g. the server-key.pem written by xmig-certs, and check "
              "that the file is a key and not a certificate");
}

const EVP_MD* signing_digest(EVP_PKEY* key) {
  int nid = NID_undef;
  if (EVP_PKEY_get_default_digest_nid(key, &nid) == 2 && nid == NID_undef) return nullptr;
  return EVP_sha256();
}

}  // namespace detail

namespace {

// Key text, wiped from memory when it goes, whichever way it goes.
struct WipedOnExit {
  std::string& text;
  ~WipedOnExit() { OPENSSL_cleanse(text.data(), text.size()); }
};

}  // namespace

PkeyPtr load_key_file(const fs::path& key_file) {
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0)
    throw Error(key_file.string() + ": " + std::strerror(errno) +
                "; fix: check the path or create the key (xmig-certs issue)");
  const KeyModeVerdict mode = judge_key_mode(key_file, st.st_mode & 07777, "");
  if (mode.severity == Severity::Failure)
    throw Error(key_file.string() + ": " + mode.what + "; fix: " + mode.fix);
  std::string pem = read_file(key_file);
  const WipedOnExit wipe{pem};
  return detail::parse_key(pem, key_file.string());
}

bool key_matches(const std::string& cert_pem, const std::string& key_pem) {
  X509Ptr cert = detail::parse_cert(cert_pem, "certificate");
  PkeyPtr key = detail::parse_key(key_pem, "private key");
  EVP_PKEY* pub = X509_get0_pubkey(cert.get());
  bool same = pub != nullptr && EVP_PKEY_eq(pub, key.get()) == 1;
  ERR_clear_error();
  return same;
}

}  // namespace xmig::certs
