// Issuance: the cluster CA, node certificates (TLS server + client), CSRs and
// CSR signing. One certificate builder holds both profiles so the CA-side signing
// of a CSR yields exactly what issue() yields.
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <algorithm>

#include "certs/detail.hpp"

namespace xmig::certs {
namespace detail {

bool valid_dns_name(const std::string& name) {
  if (name.empty() || name.size() > 253 || !canonical_ip(name).empty()) return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find('.', start);
    if (end == std::string::npos) end = name.size();
    std::size_t len = end - start;
    if (len == 0 || len > 63) return false;
    if (name[start] == '-' || name[end - 1] == '-') return false;
    for (std::size_t i = start; i < end; ++i) {
      char c = name[i];
      bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok) return false;
    }
    start = end + 1;
  }
  return true;
}

std::string canonical_ip(const std::string& ip) {
  unsigned char buf[16];
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET, ip.c_str(), buf) == 1) return inet_ntop(AF_INET, buf, text, sizeof text);
  if (inet_pton(AF_INET6, ip.c_str(), buf) == 1) return inet_ntop(AF_INET6, buf, text, sizeof text);
  return {};
}

}  // namespace detail

namespace {

using namespace detail;

// What goes into a certificate besides its key.
struct Profile {
  std::string cn;
  std::vector<std::string> dns;  // SAN DNS names (node)
  std::vector<std::string> ips;  // SAN IPs, canonical text (node)
  int days = 365;
  long start_offset_seconds = -300;
  bool ca = false;
};

void check_days(int days) {
  if (days < 1 || days > 36500)
    throw Error("days: " + std::to_string(days) + " is out of range (use 1 to 36500)");
}

void check_host_name(const std::string& name, const std::string& field) {
  if (!valid_dns_name(name))
    throw Error(field + ": '" + name +
                "' is not a valid host name (letters, digits, '-' and '.', labels of 1-63 "
                "characters; give IP addresses with --ip)");
  if (name.size() > 64)
    throw Error(field + ": '" + name + "' is longer than 64 characters, too long for a CN");
}

std::vector<std::string> check_ips(const std::vector<std::string>& ips) {
  std::vector<std::string> out;
  for (const auto& ip : ips) {
    std::string canon = canonical_ip(ip);
    if (canon.empty())
      throw Error("ip: '" + ip +
                  "' is not an IPv4 or IPv6 address (e.g. 192.0.2.10 or 2001:db8::a)");
    if (std::find(out.begin(), out.end(), canon) == out.end()) out.push_back(canon);
  }
  return out;
}

void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    fail_ssl(std::string("cannot add certificate extension ") + OBJ_nid2sn(nid));
}

std::string san_value(const std::vector<std::string>& dns, const std::vector<std::string>& ips) {
  std::string out;
  for (const auto& d : dns) out += (out.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : ips) out += (out.empty() ? "IP:" : ",IP:") + ip;
  return out;
}

void set_random_serial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) fail_ssl("cannot draw a random serial number");
  bytes[0] &= 0x7f;  // positive
  bytes[0] |= 0x40;  // full 128-bit-ish length, never zero
  BignumPtr bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  Asn1IntegerPtr serial(bn ? BN_to_ASN1_INTEGER(bn.get(), nullptr) : nullptr);
  if (!serial || X509_set_serialNumber(cert, serial.get()) != 1) fail_ssl("cannot set the serial");
}

// Builds and signs a certificate for subject_key. issuer == nullptr means
// self-signed (a CA), signed by issuer_key.
X509Ptr build(EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key, const Profile& p) {
  check_days(p.days);
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) fail_ssl("out of memory");
  set_random_serial(cert.get());

  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(p.cn.c_str()), -1, -1,
                                 0) != 1)
    fail_ssl("name: cannot use '" + p.cn + "' as common name (at most 64 characters)");
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : subject);

  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), p.start_offset_seconds) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), p.days, p.start_offset_seconds, nullptr))
    fail_ssl("cannot set the validity period");
  if (issuer && ASN1_TIME_compare(X509_get0_notAfter(cert.get()), X509_get0_notAfter(issuer)) > 0)
    X509_set1_notAfter(cert.get(), X509_get0_notAfter(issuer));  // never outlive the CA

  if (X509_set_pubkey(cert.get(), subject_key) != 1) fail_ssl("cannot set the public key");

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  X509V3_set_issuer_pkey(&ctx, issuer_key);
  if (p.ca) {
    add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    add_ext(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
    bool rsa = EVP_PKEY_get_base_id(subject_key) == EVP_PKEY_RSA;
    add_ext(cert.get(), &ctx, NID_key_usage,
            rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature");
    add_ext(cert.get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
    add_ext(cert.get(), &ctx, NID_subject_alt_name, san_value(p.dns, p.ips));
  }
  add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");

  if (X509_sign(cert.get(), issuer_key, signing_digest(issuer_key)) <= 0)
    fail_ssl("cannot sign the certificate");
  return cert;
}

struct LoadedCa {
  X509Ptr cert;
  PkeyPtr key;
};

LoadedCa load_ca(const Pem& ca) {
  LoadedCa out{parse_cert(ca.cert, "CA certificate"), parse_key(ca.key, "CA key")};
  if (!is_ca(out.cert.get()))
    throw Error("CA certificate: '" + common_name(out.cert.get()) +
                "' is not a CA (basicConstraints CA:TRUE missing); point --ca at the directory "
                "made by 'xmig-certs ca init'");
  if (EVP_PKEY_eq(X509_get0_pubkey(out.cert.get()), out.key.get()) != 1) {
    ERR_clear_error();
    throw Error(
        "CA key: does not belong to the CA certificate (ca-key.pem and ca-cert.pem are from "
        "different CAs; restore the matching pair)");
  }
  return out;
}

}  // namespace

Pem make_ca(const CaOptions& opts) {
  if (opts.name.empty() || opts.name.size() > 64)
    throw Error("name: the CA name must have 1 to 64 characters");
  PkeyPtr key = generate_key(opts.key);
  Profile p;
  p.cn = opts.name;
  p.days = opts.days;
  p.ca = true;
  X509Ptr cert = build(key.get(), nullptr, key.get(), p);
  return {cert_to_pem(cert.get()), key_to_pem(key.get())};
}

Pem issue(const Pem& ca, const IssueOptions& opts) {
  check_host_name(opts.name, "name");
  check_days(opts.days);
  LoadedCa loaded = load_ca(ca);
  Profile p;
  p.cn = opts.name;
  p.dns = {opts.name};
  p.ips = check_ips(opts.ips);
  p.days = opts.days;
  p.start_offset_seconds = opts.start_offset_seconds;
  PkeyPtr key = generate_key(opts.key);
  X509Ptr cert = build(key.get(), loaded.cert.get(), loaded.key.get(), p);
  return {cert_to_pem(cert.get()), key_to_pem(key.get())};
}

Csr make_csr(const IssueOptions& opts) {
  check_host_name(opts.name, "name");
  std::vector<std::string> ips = check_ips(opts.ips);
  PkeyPtr key = generate_key(opts.key);

  X509ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), 0) != 1) fail_ssl("out of memory");
  X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  if (X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(opts.name.c_str()), -1, -1,
                                 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1)
    fail_ssl("cannot fill the certificate request");

  ExtensionStackPtr exts(sk_X509_EXTENSION_new_null());
  X509ExtensionPtr san(X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name,
                                           san_value({opts.name}, ips).c_str()));
  if (!exts || !san || sk_X509_EXTENSION_push(exts.get(), san.get()) == 0)
    fail_ssl("cannot build the SAN request");
  san.release();  // owned by exts now
  if (X509_REQ_add_extensions(req.get(), exts.get()) != 1 ||
      X509_REQ_sign(req.get(), key.get(), signing_digest(key.get())) <= 0)
    fail_ssl("cannot sign the certificate request");

  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1)
    fail_ssl("cannot encode the certificate request");
  return {bio_text(bio.get()), key_to_pem(key.get())};
}

std::string sign_csr(const Pem& ca, const std::string& csr_pem, const SignOptions& opts,
                     const std::string& source) {
  check_days(opts.days);
  LoadedCa loaded = load_ca(ca);

  BioPtr bio = mem_bio(csr_pem);
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    ERR_clear_error();
    throw Error(source +
                ": no certificate request in PEM format found (expected '-----BEGIN "
                "CERTIFICATE REQUEST-----'; send the node.csr made by 'xmig-certs csr')");
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (!pub || X509_REQ_verify(req.get(), pub) != 1) {
    ERR_clear_error();
    throw Error(source +
                ": the request's signature does not verify (altered in transit, or not made "
                "with its key); make a new one with 'xmig-certs csr'");
  }
  int type = EVP_PKEY_get_base_id(pub);
  int bits = EVP_PKEY_get_bits(pub);
  bool key_ok = (type == EVP_PKEY_EC && bits >= 256) || (type == EVP_PKEY_RSA && bits >= 2048) ||
                type == EVP_PKEY_ED25519 || type == EVP_PKEY_ED448;
  if (!key_ok)
    throw Error(source + ": the requested key (" + std::string(OBJ_nid2sn(type)) + ", " +
                std::to_string(bits) +
                " bits) is too weak or unsupported; use ECDSA P-256 or RSA >= 2048");

  // Re-check every requested name; copy nothing else from the request.
  std::string cn;
  {
    X509_NAME* subject = X509_REQ_get_subject_name(req.get());
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx >= 0) {
      unsigned char* utf8 = nullptr;
      int len =
          ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
      if (len >= 0) cn.assign(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
      OPENSSL_free(utf8);
    }
  }
  if (cn.empty())
    throw Error(source + ": the request has no CN (make it with 'xmig-certs csr --name HOST')");
  check_host_name(cn, source + ": requested CN");
  if (opts.expect_name && *opts.expect_name != cn)
    throw Error(source + ": requests '" + cn + "' but --name says '" + *opts.expect_name +
                "'; check which host the request came from");

  Profile p;
  p.cn = cn;
  p.days = opts.days;
  ExtensionStackPtr exts(X509_REQ_get_extensions(req.get()));
  for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts.get()); ++i) {
    X509_EXTENSION* ext = sk_X509_EXTENSION_value(exts.get(), i);
    if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) != NID_subject_alt_name) continue;
    GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(ext)));
    if (!names) throw Error(source + ": the requested subjectAltName cannot be decoded");
    for (int j = 0; j < sk_GENERAL_NAME_num(names.get()); ++j) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), j);
      if (gn->type == GEN_DNS) {
        std::string dns(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                        static_cast<std::size_t>(ASN1_STRING_length(gn->d.dNSName)));
        check_host_name(dns, source + ": requested SAN DNS name");
        if (std::find(p.dns.begin(), p.dns.end(), dns) == p.dns.end()) p.dns.push_back(dns);
      } else if (gn->type == GEN_IPADD) {
        int len = ASN1_STRING_length(gn->d.iPAddress);
        if (len != 4 && len != 16)
          throw Error(source + ": a requested SAN IP address is malformed");
        char text[INET6_ADDRSTRLEN] = {};
        inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(gn->d.iPAddress), text,
                  sizeof text);
        p.ips.push_back(text);
      } else {
        throw Error(source +
                    ": the request asks for a SAN that is neither a DNS name nor an IP address "
                    "(e-mail, URI, ...); xmig signs only host names and IPs");
      }
    }
  }
  if (p.dns.empty()) p.dns.push_back(cn);
  if (std::find(p.dns.begin(), p.dns.end(), cn) == p.dns.end())
    throw Error(source + ": the requested CN '" + cn +
                "' is not among the requested SAN DNS names; make a new request with "
                "'xmig-certs csr'");
  X509Ptr cert = build(pub, loaded.cert.get(), loaded.key.get(), p);
  return cert_to_pem(cert.get());
}

}  // namespace xmig::certs
