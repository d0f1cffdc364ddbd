#include "harness/certtool.hpp"

#include <sys/stat.h>

#include <stdexcept>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::harness {

namespace {

constexpr const char* kCerttool = "/usr/bin/certtool";

}  // namespace

std::vector<std::string> libvirt_ca_template(const std::string& cn) {
  return {"cn = " + cn, "ca", "cert_signing_key"};
}

std::vector<std::string> libvirt_server_template(const std::string& host) {
  return {"organization = xmig test", "cn = " + host,   "dns_name = " + host,
          "ip_address = 127.0.0.1",   "tls_www_server", "signing_key"};
}

std::vector<std::string> libvirt_client_template(const std::string& host) {
  return {"country = GB", "state = London", "locality = London", "organization = xmig test",
          "cn = " + host, "tls_www_client", "signing_key"};
}

std::vector<std::string> xmig_client_template(const std::string& host) {
  auto lines = libvirt_client_template(host);
  lines.push_back("dns_name = " + host);
  return lines;
}

CerttoolCa certtool_pair_pki(Certtool& certtool, TunnelPair& pair, CerttoolKey type) {
  CerttoolCa ca =
      certtool.self_signed_ca(pair.temp / "certtool-ca", libvirt_ca_template("xmig test CA"), type);
  for (TunnelSide* side : {&pair.a, &pair.b}) {
    fs::remove_all(side->pki);
    certtool.node_dir(side->pki, ca, read_file(ca.cert), libvirt_server_template(side->name),
                      xmig_client_template(side->name), type);
  }
  return ca;
}

Certtool::Certtool(fs::path work) : work_(std::move(work)), log_(work_ / "certtool.log") {
  fs::create_directories(work_);
  if (!fs::exists(kCerttool))
    throw std::runtime_error(std::string(kCerttool) +
                             " is missing: install gnutls-bin (bash tools/setup)");
}

void Certtool::run_certtool(std::vector<std::string> args) {
  args.insert(args.begin(), kCerttool);
  std::string line;
  for (const auto& a : args) line += (line.empty() ? "" : " ") + a;
  {
    std::string before = fs::exists(log_) ? read_file(log_) : "";
    write_file(log_, before + "$ " + line + "\n");
  }
  if (int code = run(args, log_.string()); code != 0)
    throw std::runtime_error("certtool exited with " + std::to_string(code) + ":\n" + log());
}

fs::path Certtool::write_template(const std::vector<std::string>& lines) {
  fs::path path = work_ / ("template-" + std::to_string(++templates_) + ".info");
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  write_file(path, text);
  return path;
}

void Certtool::key(const fs::path& key, CerttoolKey type) {
  std::vector<std::string> args{"--generate-privkey", "--outfile", key.string()};
  if (type == CerttoolKey::Ecdsa) args.insert(args.begin() + 1, {"--key-type", "ecdsa"});
  run_certtool(args);
  ::chmod(key.c_str(), 0600);
}

CerttoolCa Certtool::self_signed_ca(const fs::path& dir, const std::vector<std::string>& lines,
                                    CerttoolKey type) {
  fs::create_directories(dir);
  CerttoolCa ca{.cert = dir / "cacert.pem", .key = dir / "cakey.pem"};
  key(ca.key, type);
  run_certtool({"--generate-self-signed", "--load-privkey", ca.key.string(), "--template",
                write_template(lines).string(), "--outfile", ca.cert.string()});
  return ca;
}

void Certtool::certificate(const fs::path& cert, const fs::path& key, const CerttoolCa& ca,
                           const std::vector<std::string>& lines) {
  run_certtool({"--generate-certificate", "--load-privkey", key.string(), "--load-ca-certificate",
                ca.cert.string(), "--load-ca-privkey", ca.key.string(), "--template",
                write_template(lines).string(), "--outfile", cert.string()});
}

void Certtool::node_dir(const fs::path& dir, const CerttoolCa& ca, const std::string& ca_bundle,
                        const std::vector<std::string>& server_lines,
                        const std::vector<std::string>& client_lines, CerttoolKey type,
                        const std::string& chain) {
  fs::create_directories(dir);
  write_file(dir / "ca-cert.pem", ca_bundle);
  for (const auto& [role, lines] : {std::pair{"server", server_lines}, {"client", client_lines}}) {
    const fs::path cert = dir / (std::string(role) + "-cert.pem");
    const fs::path key_file = dir / (std::string(role) + "-key.pem");
    key(key_file, type);
    certificate(cert, key_file, ca, lines);
    if (!chain.empty()) write_file(cert, read_file(cert) + chain);
  }
}

std::string Certtool::log() const {
  return fs::exists(log_) ? read_file(log_) : "";
}

}  // namespace xmig::harness
