// Certificates made by GnuTLS certtool (package gnutls-bin) from template
// files, the way libvirt documents making them (libvirt docs/kbase/tlscerts.rst:
// `certtool --generate-privkey`, `--generate-self-signed` for the CA,
// `--generate-certificate` for the server and the client), for tests of xmig
// with existing /etc/pki/qemu material. Every certtool run is the real binary;
// its output goes to a log file that a failure message can show.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

namespace xmig::harness {

namespace fs = std::filesystem;

enum class CerttoolKey { Rsa, Ecdsa };  // certtool's default (RSA 3072) or --key-type ecdsa

// For test names and messages: "RSA" or "ECDSA".
inline void PrintTo(CerttoolKey type, std::ostream* os) {
  *os << (type == CerttoolKey::Rsa ? "RSA" : "ECDSA");
}

// A CA made by certtool: its certificate and its private key.
struct CerttoolCa {
  fs::path cert, key;
};

// Template lines (one setting each), as libvirt's documentation writes them:
// the CA ("cn = ...", "ca", "cert_signing_key"); the server of `host`
// (organization, cn, dns_name = host, ip_address = 127.0.0.1, tls_www_server,
// signing_key); the client, word for word libvirt's (country, state,
// locality, organization, cn = host, tls_www_client, signing_key: no
// dns_name, so it names its host only in the CN).
std::vector<std::string> libvirt_ca_template(const std::string& cn);
std::vector<std::string> libvirt_server_template(const std::string& host);
std::vector<std::string> libvirt_client_template(const std::string& host);
// libvirt's client template plus the line xmig needs (README, "Certificates
// made with certtool"): dns_name = host.
std::vector<std::string> xmig_client_template(const std::string& host);

class Certtool {
 public:
  // Keeps its templates and its log (certtool.log) in `work`.
  explicit Certtool(fs::path work);

  // certtool --generate-privkey [--key-type ecdsa] --outfile key.
  void key(const fs::path& key, CerttoolKey type);
  // A self-signed CA: a new key, then --generate-self-signed with `lines`.
  CerttoolCa self_signed_ca(const fs::path& dir, const std::vector<std::string>& lines,
                            CerttoolKey type);
  // A certificate for `key` signed by `ca` (--generate-certificate) with `lines`;
  // the CA is an intermediate when `lines` hold "ca" and "cert_signing_key".
  void certificate(const fs::path& cert, const fs::path& key, const CerttoolCa& ca,
                   const std::vector<std::string>& lines);

  // libvirt's layout in `dir`: ca-cert.pem = ca_bundle (PEM text),
  // server-key.pem + server-cert.pem from server_lines, client-key.pem +
  // client-cert.pem from client_lines, both signed by `ca`; `chain` (PEM text,
  // e.g. an intermediate CA) is appended to both certificate files.
  void node_dir(const fs::path& dir, const CerttoolCa& ca, const std::string& ca_bundle,
                const std::vector<std::string>& server_lines,
                const std::vector<std::string>& client_lines, CerttoolKey type,
                const std::string& chain = {});

  // What certtool printed, for failure messages.
  std::string log() const;

 private:
  // Runs certtool with args; throws with the log when it fails.
  void run_certtool(std::vector<std::string> args);
  fs::path write_template(const std::vector<std::string>& lines);

  fs::path work_;
  fs::path log_;
  int templates_ = 0;
};

class TunnelPair;

// Replaces the PKI of both sides of an unstarted TunnelPair by libvirt's
// layout made with certtool: one self-signed CA (libvirt's CA template); for
// each host a server certificate from libvirt's server template and a
// separate client certificate from xmig_client_template. Start the pair with
// TunnelPairOptions::client_files so that each side dials with its client
// certificate. Returns the CA.
CerttoolCa certtool_pair_pki(Certtool& certtool, TunnelPair& pair, CerttoolKey type);

}  // namespace xmig::harness
