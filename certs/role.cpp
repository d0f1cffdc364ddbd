// Roles: whether a certificate can serve as this host's TLS server or TLS
// client certificate, and how to reissue it when it cannot. The one rule
// behind `xmig-tunnel --check` (tls::Context::load) and `xmig-certs check`.
#include <openssl/err.h>

#include <algorithm>

#include "certs/detail.hpp"
#include "certs/host_name.hpp"

namespace xmig::certs {

namespace {

using namespace detail;

// libvirt's names for the certtool templates of a server and a client
// certificate (docs/kbase/tlscerts.rst).
constexpr const char* kServerTemplate = "server.info";
constexpr const char* kClientTemplate = "client.info";

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

// The short names of the purposes an extendedKeyUsage extension lists
// ("serverAuth", "clientAuth", "codeSigning", ...).
std::vector<std::string> eku_names(X509* cert) {
  std::vector<std::string> out;
  auto* eku =
      static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr));
  for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku); ++i) {
    const ASN1_OBJECT* oid = sk_ASN1_OBJECT_value(eku, i);
    int nid = OBJ_obj2nid(oid);
    if (nid != NID_undef) {
      out.emplace_back(OBJ_nid2sn(nid));
    } else {
      char text[80];
      OBJ_obj2txt(text, sizeof text, oid, 1);
      out.emplace_back(text);
    }
  }
  EXTENDED_KEY_USAGE_free(eku);
  return out;
}

// What the certificate says about `host`, for a message: its DNS (or IP)
// SANs, and the CN when it holds the host name.
std::string names_found(const CertInfo& info, const std::string& host, bool by_ip) {
  const auto& sans = by_ip ? info.ips : info.dns_names;
  std::string out =
      std::string(by_ip ? "IP" : "DNS") + " SANs: " + (sans.empty() ? "none" : join(sans, ", "));
  bool cn_is_host =
      !host.empty() && info.subject_cn.size() == host.size() &&
      std::equal(host.begin(), host.end(), info.subject_cn.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) ==
               std::tolower(static_cast<unsigned char>(b));
      });
  if (cn_is_host) out += "; \"" + host + "\" is only its subject CN, which peers never check";
  return out;
}

// The fix: sign it again with certtool (the template lines to change), or
// reissue the node directory with xmig-certs.
std::string reissue_fix(const RoleVerdict& v, Purpose role, const std::optional<std::string>& host,
                        const RoleFiles& files) {
  std::vector<std::string> changes;
  for (const auto& p : v.problems) changes.push_back(p.template_change);
  const std::string tmpl = !files.template_file.empty() ? files.template_file
                           : role == Purpose::TlsServer ? kServerTemplate
                                                        : kClientTemplate;
  const fs::path dir = files.cert.parent_path().empty() ? fs::path(".") : files.cert.parent_path();
  const std::string name = host.value_or("HOST");
  std::string xmig = fs::exists(dir / kServerCertFile)
                         ? "xmig-certs rotate --ca CA_DIR --dir " + dir.string() + " --name " + name
                         : "xmig-certs issue --ca CA_DIR --name " + name + " --out " + dir.string();
  return "sign it again with the missing parts: with certtool, in its template (" + tmpl + ") " +
         join(changes, ", ") + ", then: certtool --generate-certificate --load-privkey " +
         files.key.string() + " --load-ca-certificate " + files.ca.string() +
         " --load-ca-privkey CA_KEY --template " + tmpl + " --outfile " + files.cert.string() +
         "; or, with an xmig-certs CA (one certificate for both roles): " + xmig;
}

}  // namespace

bool is_leaf(X509* cert) {
  return !is_ca(cert);
}

bool allows_role(X509* cert, Purpose role) {
  // The same test OpenSSL makes when a peer verifies it for this purpose.
  const uint32_t xku = X509_get_extended_key_usage(cert);
  const uint32_t needed = role == Purpose::TlsServer ? XKU_SSL_SERVER : XKU_SSL_CLIENT;
  return role == Purpose::Any || xku == UINT32_MAX || (xku & needed);
}

namespace {

// Whether the certificate's subjectAltName carries a DNS name. Not describe():
// this runs in every handshake, which needs neither the fingerprint nor the
// serial describe() computes.
bool has_dns_name(X509* cert) {
  GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i)
    if (sk_GENERAL_NAME_value(sans.get(), i)->type == GEN_DNS) return true;
  return false;
}

}  // namespace

std::string peer_certificate_problem(X509* cert, Purpose role) {
  const bool server = role == Purpose::TlsServer;
  std::string problem;
  if (!is_leaf(cert))
    problem = "it is a CA certificate (basicConstraints CA:TRUE), not a host's";
  else if (!allows_role(cert, role))
    problem = std::string("its extendedKeyUsage lacks ") + (server ? "serverAuth" : "clientAuth");
  else if (!has_dns_name(cert))
    problem =
        "it has no DNS SAN, and a peer is known by its DNS SAN only (never by its subject "
        "CN or an IP SAN)";
  ERR_clear_error();
  if (problem.empty()) return {};
  return std::string("the ") + (server ? "server" : "client") + "'s certificate (CN \"" +
         common_name(cert) + "\") is not a peer's: " + problem;
}

std::string RoleVerdict::message(const std::string& check) const {
  std::vector<std::string> missing;
  for (const auto& p : problems)
    if (check.empty() || p.check == check) missing.push_back(p.missing);
  if (missing.empty()) return {};
  return "not usable as " + role + ": " + join(missing, "; ");
}

RoleVerdict check_role(const std::string& cert_pem, Purpose role,
                       const std::optional<std::string>& host, const RoleFiles& files) {
  const bool server = role == Purpose::TlsServer;
  X509Ptr cert = parse_cert(cert_pem, files.cert.string());
  CertInfo info = describe(cert_pem, files.cert.string());

  RoleVerdict v;
  v.role = std::string("the TLS ") + (server ? "server" : "client") + " certificate of " +
           (host ? *host : "this host");

  if (!is_leaf(cert.get()))
    v.problems.push_back({.check = "usage",
                          .missing = "it is a CA certificate (basicConstraints CA:TRUE)",
                          .template_change = "remove the lines 'ca' and 'cert_signing_key'"});

  uint32_t ku = X509_get_key_usage(cert.get());
  if (ku != UINT32_MAX && !(ku & KU_DIGITAL_SIGNATURE))
    v.problems.push_back({.check = "usage",
                          .missing = "keyUsage lacks digitalSignature",
                          .template_change = "add the line 'signing_key'"});

  // The same test OpenSSL makes when a peer verifies it for this purpose.
  if (!allows_role(cert.get(), role)) {
    std::vector<std::string> allowed = eku_names(cert.get());
    std::string allows = allowed.empty()       ? "it allows nothing"
                         : allowed.size() == 1 ? "it allows " + allowed[0] + " only"
                                               : "it allows " + join(allowed, ", ");
    v.problems.push_back({.check = "usage",
                          .missing = std::string("extendedKeyUsage lacks ") +
                                     (server ? "serverAuth" : "clientAuth") + " (" + allows + ")",
                          .template_change = std::string("add the line '") +
                                             (server ? "tls_www_server" : "tls_www_client") + "'"});
  }

  if (host && !canonical_ip(*host).empty()) {
    if (std::find(info.ips.begin(), info.ips.end(), canonical_ip(*host)) == info.ips.end())
      v.problems.push_back({.check = "san",
                            .missing = "does not name this host \"" + *host + "\" as an IP SAN (" +
                                       names_found(info, *host, true) + ")",
                            .template_change = "add the line 'ip_address = " + *host + "'"});
  } else if (host) {
    if (!names_host(cert.get(), *host))
      v.problems.push_back({.check = "san",
                            .missing = "does not name this host \"" + *host + "\" as a DNS SAN (" +
                                       names_found(info, *host, false) + ")",
                            .template_change = "add the line 'dns_name = " + *host + "'"});
  } else if (info.dns_names.empty()) {
    v.problems.push_back({.check = "san",
                          .missing = "has no DNS SAN, and peers know a host by its DNS SAN only (" +
                                     names_found(info, info.subject_cn, false) + ")",
                          .template_change = "add the line 'dns_name = HOST'"});
  }
  ERR_clear_error();

  if (!v.ok()) v.fix = reissue_fix(v, role, host, files);
  return v;
}

}  // namespace xmig::certs
