// Certificates: PEM parsing (single and bundles), inspection, and chain
// verification with OpenSSL's own verifier (X509_verify_cert).
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <cstdio>

#include "certs/detail.hpp"

namespace xmig::certs {

std::string cert_to_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1)
    detail::fail_ssl("cannot encode a certificate");
  return detail::bio_text(bio.get());
}

namespace detail {

X509Ptr parse_cert(const std::string& pem, const std::string& source) {
  BioPtr bio = mem_bio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    throw Error(source +
                ": no certificate in PEM format found (expected '-----BEGIN CERTIFICATE-----'; "
                "check the file name and that it was copied whole)");
  }
  return cert;
}

bool is_ca(X509* cert) {
  return X509_check_ca(cert) != 0;
}

std::string common_name(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return {};
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return {};
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

namespace {

std::chrono::system_clock::time_point to_time_point(const ASN1_TIME* t) {
  struct tm tm {};
  ASN1_TIME_to_tm(t, &tm);
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string ip_text(const ASN1_OCTET_STRING* ip) {
  char buf[INET6_ADDRSTRLEN] = {};
  int len = ASN1_STRING_length(ip);
  const unsigned char* data = ASN1_STRING_get0_data(ip);
  if (len == 4) inet_ntop(AF_INET, data, buf, sizeof buf);
  if (len == 16) inet_ntop(AF_INET6, data, buf, sizeof buf);
  return buf;
}

}  // namespace
}  // namespace detail

namespace {

// Every object of one kind in a PEM text, read with `read` (PEM_read_bio_X509,
// ...). A clean end of the text is "no start line"; anything else is object
// count+1 cut short or damaged, and the text is refused rather than that
// object dropped silently (a half-written CA bundle would lose a CA, a
// half-written CRL file a CRL).
template <class Owner, class Read>
std::vector<Owner> read_all(const std::string& pem, const std::string& source,
                            const std::string& what, Read read) {
  std::vector<Owner> out;
  BioPtr bio = detail::mem_bio(pem);
  ERR_clear_error();
  while (Owner object{read(bio.get(), nullptr, nullptr, nullptr)}) out.push_back(std::move(object));
  unsigned long last = ERR_peek_last_error();
  ERR_clear_error();
  if (last != 0 &&
      !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE))
    throw Error(source + ": " + what + " " + std::to_string(out.size() + 1) +
                " is cut short or damaged; fix: write the whole file again (to a temporary "
                "name, then rename it into place)");
  if (out.empty())
    throw Error(source + ": holds no PEM " + what + "; fix: give a PEM file of " + what +
                "s (-----BEGIN ...-----), copied whole");
  return out;
}

}  // namespace

std::vector<X509Ptr> parse_certs(const std::string& pem, const std::string& source) {
  return read_all<X509Ptr>(pem, source, "certificate", PEM_read_bio_X509);
}

std::vector<X509CrlPtr> parse_crls(const std::string& pem, const std::string& source) {
  return read_all<X509CrlPtr>(pem, source, "CRL", PEM_read_bio_X509_CRL);
}

CertInfo describe(const std::string& cert_pem, const std::string& source) {
  return describe(detail::parse_cert(cert_pem, source).get());
}

CertInfo describe(X509* cert) {
  using namespace detail;
  CertInfo info;
  info.subject_cn = common_name(cert);
  info.is_ca = is_ca(cert);
  info.not_before = to_time_point(X509_get0_notBefore(cert));
  info.not_after = to_time_point(X509_get0_notAfter(cert));

  GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type == GEN_DNS) {
      const ASN1_IA5STRING* s = gn->d.dNSName;
      info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                  static_cast<std::size_t>(ASN1_STRING_length(s)));
    } else if (gn->type == GEN_IPADD) {
      info.ips.push_back(ip_text(gn->d.iPAddress));
    }
  }

  BignumPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (serial) {
    char* hex = BN_bn2hex(serial.get());
    if (hex) info.serial_hex = hex;
    OPENSSL_free(hex);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &md_len) == 1) {
    for (unsigned int i = 0; i < md_len; ++i) {
      char byte[4];
      std::snprintf(byte, sizeof byte, i ? ":%02X" : "%02X", md[i]);
      info.sha256_fingerprint += byte;
    }
  }
  return info;
}

std::size_t count_certs(const std::string& bundle_pem, const std::string& source) {
  return parse_certs(bundle_pem, source).size();
}

std::optional<std::string> verify_chain(const std::string& cert_pem,
                                        const std::string& ca_bundle_pem, Purpose purpose,
                                        bool check_time) {
  using namespace detail;
  // The leaf, then the intermediates a certificate file may carry after it.
  std::vector<X509Ptr> chain = parse_certs(cert_pem, "certificate");
  std::vector<X509Ptr> cas = parse_certs(ca_bundle_pem, "CA bundle");
  X509StackPtr untrusted(sk_X509_new_null());
  if (!untrusted) fail_ssl("out of memory");
  for (std::size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());

  X509StorePtr store(X509_STORE_new());
  if (!store) fail_ssl("out of memory");
  for (auto& ca : cas)
    if (X509_STORE_add_cert(store.get(), ca.get()) != 1) ERR_clear_error();  // duplicates

  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), chain[0].get(), untrusted.get()) != 1)
    fail_ssl("cannot set up certificate verification");
  if (purpose == Purpose::TlsServer) X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);
  if (purpose == Purpose::TlsClient) X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  if (!check_time) X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_NO_CHECK_TIME);

  int ok = X509_verify_cert(ctx.get());
  ERR_clear_error();
  if (ok == 1) return std::nullopt;
  return std::string(X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get())));
}

}  // namespace xmig::certs
