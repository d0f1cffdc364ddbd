// Helpers for the certs tests: independent OpenSSL checks (these tests do not
// trust certs/ to judge its own output) and a runner for the real xmig-certs.
#pragma once

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "base/openssl.hpp"
#include "certs/certs.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"

namespace xmig::certs::test {

namespace fs = std::filesystem;
using xmig::harness::TempDir;

using Cert = X509Ptr;

// Every certificate in a PEM text.
inline std::vector<Cert> load_certs(const std::string& pem) {
  std::vector<Cert> out;
  BioPtr bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();
  return out;
}

inline Cert load_cert(const std::string& pem) {
  auto certs = load_certs(pem);
  return certs.empty() ? Cert() : std::move(certs.front());
}

// X509_verify_cert of cert against the CAs in ca_pem with a purpose
// (X509_PURPOSE_SSL_SERVER, ..., or 0 for none). Returns the X509_V_* code.
inline int verify(const std::string& cert_pem, const std::string& ca_pem, int purpose = 0) {
  Cert cert = load_cert(cert_pem);
  if (!cert) return -1;
  X509StorePtr store(X509_STORE_new());
  for (auto& ca : load_certs(ca_pem)) X509_STORE_add_cert(store.get(), ca.get());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr);
  if (purpose) X509_STORE_CTX_set_purpose(ctx.get(), purpose);
  X509_verify_cert(ctx.get());
  ERR_clear_error();
  return X509_STORE_CTX_get_error(ctx.get());
}

inline unsigned file_mode(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 07777;
}

struct CliResult {
  int code;
  std::string out;  // stdout and stderr
};

// Runs the built xmig-certs with args; its output is kept in a log under logs.
inline CliResult xmig_certs(const TempDir& logs, std::vector<std::string> args) {
  static int n = 0;
  fs::path log = logs / ("xmig-certs-" + std::to_string(++n) + ".log");
  args.insert(args.begin(), xmig::harness::tool("xmig-certs"));
  int code = xmig::harness::run(args, log.string());
  std::string out = fs::exists(log) ? xmig::harness::read_file(log) : std::string();
  return {code, out};
}

inline const char* kNodeFiles[] = {"ca-cert.pem", "server-cert.pem", "server-key.pem",
                                   "client-cert.pem", "client-key.pem"};

}  // namespace xmig::certs::test
