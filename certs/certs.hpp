// certs/: the cluster's certificate authority, node certificates, rotation and
// checks. Used by the `xmig-certs` command and by the tunnel (loading, checks).
//
// What it is for:
// - making a cluster CA and node certificates that work as TLS server AND client
//   (mutual TLS), in libvirt's PKI layout so QEMU-TLS setups can reuse them;
// - the CSR flow for sites whose CA lives elsewhere;
// - rotating node certificates and rolling the CA over without a flag day;
// - checking a node directory (chain, key match, SAN, usage, expiry, file modes).
//
// What it must never do:
// - log, print or put key material into an error message;
// - leave a reader (the tunnel's hot reload) a half-written file: every file is
//   written to a temporary file, fsync'ed and renamed into place;
// - write a private key readable by group or others (keys are always 0600);
// - copy extensions from a CSR blindly: the CA re-checks the requested names and
//   sets usage, constraints and validity itself;
// - prompt on a terminal (encrypted keys are refused with an error, not asked for).
//
// Every failure throws certs::Error whose message names the file (or the field)
// and says how to fix it.
#pragma once

#include <openssl/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/openssl.hpp"

namespace xmig::certs {

namespace fs = std::filesystem;

// Message names the file or field at fault and the fix.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class KeyType { EcdsaP256, Rsa3072 };

// A certificate and its private key as PEM text. key is unencrypted PKCS#8 PEM
// ("BEGIN PRIVATE KEY"); it is secret: never log it.
struct Pem {
  std::string cert{};
  std::string key{};
};

// ---------------------------------------------------------------------------
// CA and issuance (certs/issue.cpp)

struct CaOptions {
  std::string name = "xmig cluster CA";  // subject CN
  int days = 3650;
  KeyType key = KeyType::EcdsaP256;
};

// Makes a self-signed CA: CN=name, basicConstraints critical CA:TRUE pathlen:0,
// keyUsage critical keyCertSign+cRLSign, SKI/AKI, random 128-bit serial,
// not_before 5 minutes ago (clock skew), not_after = not_before + days.
Pem make_ca(const CaOptions& opts);

struct IssueOptions {
  std::string name{};              // host name: CN and SAN DNS:name
  std::vector<std::string> ips{};  // extra SAN IP addresses (v4 or v6)
  int days = 365;
  KeyType key = KeyType::EcdsaP256;
  long start_offset_seconds = -300;  // not_before = now + offset (negative backdates)
};

// Makes a new key and a certificate for it signed by ca (ca.cert must be a CA and
// ca.key its key). The certificate is usable as TLS server and client: EKU
// serverAuth+clientAuth, KU critical digitalSignature (+keyEncipherment for RSA),
// basicConstraints critical CA:FALSE, SKI/AKI, random 128-bit serial,
// SAN DNS:name plus IP:ips. not_after = now + offset + days, clamped so that the
// certificate never outlives the CA. Throws Error on a bad name, IP, or days.
Pem issue(const Pem& ca, const IssueOptions& opts);

// CSR flow (certs/issue.cpp): the node makes a key and a request, the CA signs.
struct Csr {
  std::string csr{};  // PEM "CERTIFICATE REQUEST", subject CN=name, SAN requested
  std::string key{};  // PKCS#8 PEM, secret
};
Csr make_csr(const IssueOptions& opts);

struct SignOptions {
  int days = 365;
  // When set, the CSR must request exactly this host name (CN).
  std::optional<std::string> expect_name{};
};

// Signs a CSR as a node certificate (same profile as issue()). Verifies the CSR's
// self-signature and re-checks what it requests: CN must be a valid host name,
// SAN may only hold valid DNS names and IP addresses, and CN must be among the
// DNS names. Nothing else from the CSR is copied (no CA:TRUE, no usages).
// `source` names the CSR in error messages (e.g. its file name).
std::string sign_csr(const Pem& ca, const std::string& csr_pem, const SignOptions& opts,
                     const std::string& source = "CSR");

// ---------------------------------------------------------------------------
// Inspection and verification (certs/x509.cpp, certs/key.cpp)

struct CertInfo {
  std::string subject_cn;
  std::vector<std::string> dns_names;  // SAN DNS entries
  std::vector<std::string> ips;        // SAN IP entries, textual
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
  bool is_ca = false;
  std::string serial_hex;
  std::string sha256_fingerprint;  // upper-case hex, colon separated
};
// Describes the first certificate in cert_pem. `source` names it in errors.
CertInfo describe(const std::string& cert_pem, const std::string& source = "certificate");
// Describes a certificate in memory (e.g. a peer's, during a handshake).
CertInfo describe(X509* cert);

// The one reader of certificate and CRL files (the tunnel's, tls::Context, and
// xmig-certs'): every certificate (CRL) in a PEM text, in order. Throws Error
// "SOURCE: certificate N is cut short or damaged; fix: ..." when one is (the
// text is refused, not the object dropped: a half-written bundle would lose a
// CA), "SOURCE: holds no PEM certificate; fix: ..." when there is none.
std::vector<X509Ptr> parse_certs(const std::string& pem, const std::string& source);
std::vector<X509CrlPtr> parse_crls(const std::string& pem, const std::string& source);
// A certificate as PEM text (the reverse of parse_certs, for one).
std::string cert_to_pem(X509* cert);

// Number of certificates in a PEM bundle (throws when there is none).
std::size_t count_certs(const std::string& bundle_pem, const std::string& source = "CA bundle");

// True when key_pem is the private key of the first certificate in cert_pem.
bool key_matches(const std::string& cert_pem, const std::string& key_pem);

enum class Purpose { Any, TlsServer, TlsClient };
// Verifies cert_pem's chain against the CA certificates in ca_bundle_pem with
// OpenSSL's X509_verify_cert; certificates after the first in cert_pem (a
// leaf file that carries its intermediate CAs) are offered as intermediates.
// Returns nullopt when valid, else OpenSSL's reason.
// check_time=false ignores validity periods (checks report expiry separately).
std::optional<std::string> verify_chain(const std::string& cert_pem,
                                        const std::string& ca_bundle_pem,
                                        Purpose purpose = Purpose::Any, bool check_time = true);

// ---------------------------------------------------------------------------
// Roles (certs/role.cpp): what a certificate must hold to serve as this host's
// TLS server or TLS client certificate. The one rule behind `xmig-tunnel
// --check` (and the tunnel's startup and reload: tls::Context::load) and
// `xmig-certs check`.

// The files behind a judged certificate, named in the reissue commands of a fix.
struct RoleFiles {
  fs::path cert{};  // the certificate file
  fs::path key{};   // its private key
  fs::path ca{};    // the CA bundle it chains to
  // Its certtool template; "" means libvirt's name for the role (server.info,
  // client.info). A server certificate that also serves as client certificate
  // was made from server.info.
  std::string template_file{};
};

// One thing a certificate lacks for its role.
struct RoleProblem {
  std::string check{};    // "usage" or "san", as in Finding::check
  std::string missing{};  // e.g. "extendedKeyUsage lacks clientAuth (it allows serverAuth only)"
  // The change to its certtool template that adds it, e.g. "add the line 'tls_www_client'".
  std::string template_change{};
};

struct RoleVerdict {
  std::string role{};                   // e.g. "the TLS client certificate of hv-a"
  std::vector<RoleProblem> problems{};  // empty: fit for the role
  std::string fix{};                    // how to reissue it ("" when fit)
  bool ok() const { return problems.empty(); }
  // "not usable as <role>: <missing>; <missing>" over the problems of `check`
  // ("usage" or "san"), or over all of them when `check` is empty.
  std::string message(const std::string& check = {}) const;
};

// Judges the first certificate in cert_pem as this host's certificate for
// `role`: Purpose::TlsServer, what peers that dial this host are shown;
// Purpose::TlsClient, what this host shows when it dials a peer. It must:
// - not be a CA;
// - have digitalSignature in its keyUsage, when it has one;
// - allow serverAuth (server) or clientAuth (client) in its extendedKeyUsage,
//   when it has one (without the extension every use is allowed);
// - name `host` as a DNS SAN (certs/host_name.hpp: no wildcards, never the
//   CN); a `host` that is an IP address as an IP SAN; without `host`, carry
//   at least one DNS SAN.
// The fix names `files` in the certtool command that signs the certificate
// again, with the template lines to add, and in the xmig-certs command that
// reissues the node directory. Throws Error when cert_pem holds no certificate.
RoleVerdict check_role(const std::string& cert_pem, Purpose role,
                       const std::optional<std::string>& host, const RoleFiles& files);

// ---------------------------------------------------------------------------
// Files (certs/store.cpp): reads name the file in errors; writes are atomic.

// Reads a whole file; throws Error naming it (and how to fix) when it cannot.
std::string read_file(const fs::path& path);
// Reads and parses a certificate file and its key file, checking that the key
// matches the certificate; errors name the file.
Pem load_pem_files(const fs::path& cert_file, const fs::path& key_file);

// Writes content to path atomically with the given mode: temporary file in the
// same directory, fsync, rename, fsync of the directory.
void write_file_atomic(const fs::path& path, const std::string& content, unsigned mode);

// libvirt's file names in a node directory.
inline constexpr const char* kCaCertFile = "ca-cert.pem";
inline constexpr const char* kServerCertFile = "server-cert.pem";
inline constexpr const char* kServerKeyFile = "server-key.pem";
inline constexpr const char* kClientCertFile = "client-cert.pem";
inline constexpr const char* kClientKeyFile = "client-key.pem";

// Writes libvirt's layout into dir (created 0755 if missing): ca-cert.pem
// (ca_bundle: one or more CA certs), server-cert.pem, server-key.pem,
// client-cert.pem, client-key.pem. Keys 0600, certs 0644. All five temporary files
// are written and fsync'ed first, then renamed into place (CA, keys before their
// certificates), then the directory is fsync'ed. When a file is replaced, its
// owner and group are kept where permitted.
void write_node_dir(const fs::path& dir, const std::string& ca_bundle, const Pem& node);

struct NodeWriteOptions {
  // Keep each replaced file as <name>.prev (written atomically before the swap).
  bool keep_previous = false;
};
void write_node_dir(const fs::path& dir, const std::string& ca_bundle, const Pem& node,
                    const NodeWriteOptions& opts);

// ---------------------------------------------------------------------------
// CA directory (certs/ca_dir.cpp): ca-cert.pem, ca-key.pem (0600), and during a
// rollover ca-cert.pem.old, ca-key.pem.old and ca-bundle.pem (new + old).

inline constexpr const char* kCaKeyFile = "ca-key.pem";
inline constexpr const char* kCaBundleFile = "ca-bundle.pem";

struct CaDir {
  Pem ca{};              // current CA (signs new certificates)
  std::string bundle{};  // what nodes must trust: ca-bundle.pem if present, else ca.cert
};

// Creates a CA in dir. Refuses (Error) when ca-cert.pem or ca-key.pem exists
// unless force is set.
Pem ca_init(const fs::path& dir, const CaOptions& opts, bool force = false);
// Loads and checks a CA directory (key matches, certificate is a CA, bundle
// contains the current CA).
CaDir load_ca_dir(const fs::path& dir);
// Makes a new CA; the current one is kept as *.old and ca-bundle.pem = new + old.
// Refuses while an earlier rollover has not been retired. An empty opts.name
// means "<old CN> <date>".
Pem ca_rollover(const fs::path& dir, const CaOptions& opts);
// Ends a rollover: ca-bundle.pem = current CA only; *.old become *.retired.
void ca_retire(const fs::path& dir);

// ---------------------------------------------------------------------------
// Node directory operations (certs/node_dir.cpp)

inline constexpr const char* kPendingKeyFile = "node-key.pem";
inline constexpr const char* kPendingCsrFile = "node.csr";

// Issues a node certificate from the CA directory and writes it with
// write_node_dir (CA bundle as ca-cert.pem). Refuses to replace an existing
// server-cert.pem unless force is set.
Pem issue_node_dir(const fs::path& ca_dir, const fs::path& out_dir, const IssueOptions& opts,
                   bool force = false);
// Replaces the key and certificates in a node directory that already holds them,
// keeping the previous files as *.prev. When opts.ips is empty the IP SANs of the
// current server certificate are carried over.
Pem rotate_node_dir(const fs::path& ca_dir, const fs::path& node_dir, IssueOptions opts);
// Writes a new key (node-key.pem, 0600) and CSR (node.csr) into dir. Refuses to
// replace a pending key unless force is set.
Csr csr_node_dir(const fs::path& dir, const IssueOptions& opts, bool force = false);
// Installs a certificate signed for the pending key: checks that it matches
// node-key.pem, chains to the CA file, is no CA and is usable as server and
// client; writes the libvirt layout (keeping *.prev) and removes the pending files.
void install_node_dir(const fs::path& dir, const fs::path& cert_file, const fs::path& ca_cert_file);

// ---------------------------------------------------------------------------
// Checks (certs/check.cpp)

enum class Severity { Ok, Warning, Failure };

struct Finding {
  Severity severity = Severity::Ok;
  std::string check{};    // chain, key, san, usage, expiry, mode, file
  std::string file{};     // path the finding is about
  std::string message{};  // what was found
  std::string fix{};      // what to do (empty when ok)
};

// The one rule for a private key file's mode: the tunnel loads keys by it
// (tls::Context refuses a Failure) and `xmig-certs check` reports by it.
// - accessible to all users (readable or writable): failure;
// - writable by its group: failure (a member could swap in its own key);
// - readable by its group: warning (libvirt's /etc/pki/qemu keys are commonly
//   root:qemu 0640 so that QEMU can read them; every member can read the key);
// - else ok.
struct KeyModeVerdict {
  Severity severity = Severity::Ok;
  std::string what{};  // e.g. "the private key is accessible to all users (mode 0644)"
  std::string fix{};   // empty when ok
};
KeyModeVerdict judge_key_mode(const fs::path& file, unsigned mode, const std::string& group);

// The one key reader (certs/key.cpp), by which the tunnel loads its keys
// (tls::Context) and xmig-certs reads them: the file's mode must not be a
// judge_key_mode failure, and it must hold an unencrypted PEM private key.
// Throws Error "FILE: what; fix: how" naming the cause (missing, mode,
// encrypted, cut short, no key at all), never a byte of the key; the text read
// is wiped from memory.
PkeyPtr load_key_file(const fs::path& key_file);

struct CheckOptions {
  std::optional<std::string> name{};  // host name the SAN must contain
  int warn_days = 30;                 // warn when fewer days are left
};

// Checks a node directory in libvirt layout: every file present and parseable,
// chain of server and client certificate against ca-cert.pem, each key matches its
// certificate, usage and names by check_role (server-cert.pem as the server
// certificate, client-cert.pem as the client certificate of opts.name: findings
// "usage" and "san"), validity (expired / not yet valid:
// failure; fewer than warn_days left: warning), file modes (the tunnel's rule:
// key readable or writable by others: failure; key readable by its group:
// warning, as libvirt's root:qemu 0640 keys are; any file writable by
// group/others: failure).
std::vector<Finding> check_node_dir(const fs::path& dir, const CheckOptions& opts);

// 0 when all findings are ok, 1 when the worst is a warning, 2 for a failure.
int exit_code(const std::vector<Finding>& findings);
// {"dir": ..., "status": "ok|warning|failure", "findings": [{severity, check,
// file, message, fix}, ...]}
std::string findings_json(const fs::path& dir, const std::vector<Finding>& findings);
const char* to_string(Severity s);

}  // namespace xmig::certs
