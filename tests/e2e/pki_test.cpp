// Certificates made by the PKI tools sites already use, the way those tools
// are documented: GnuTLS certtool from libvirt's templates (libvirt's
// /etc/pki/qemu layout, a separate server and client certificate per host),
// an intermediate CA, the openssl command line, and xmig-certs' own layout
// with client_cert/client_key mapped as the Quick start says. Each one either
// carries a transfer through two real tunnels (SHA-256 at both ends) or is
// refused by `xmig-tunnel --check` and `xmig-certs check` with the same
// message, naming the file, what is missing and how to reissue it
// (issue #19).
#include <gtest/gtest.h>

#include <future>

#include "harness/certtool.hpp"
#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;
namespace {

constexpr uint64_t kMiB = 1 << 20;

struct CommandRun {
  int exit_code;
  std::string output;
};

// Runs a command to completion; its output (stdout and stderr) is returned.
CommandRun run_logged(const TunnelPair& pair, std::vector<std::string> argv) {
  static int n = 0;
  fs::path log = pair.temp / ("command-" + std::to_string(++n) + ".log");
  int code = run(std::move(argv), log.string());
  return {code, fs::exists(log) ? read_file(log) : ""};
}

// `xmig-tunnel --config <side's config> --check`.
CommandRun tunnel_check(const TunnelPair& pair, const TunnelSide& side) {
  return run_logged(pair, {tool("xmig-tunnel"), "--config", side.config.string(), "--check"});
}

// `xmig-certs check --dir <side's pki> --name <side's name>`, without the
// expiry warning (TunnelPair's own certificates are valid for 30 days).
CommandRun certs_check(const TunnelPair& pair, const TunnelSide& side) {
  return run_logged(pair, {tool("xmig-certs"), "check", "--dir", side.pki.string(), "--name",
                           side.name, "--warn-days", "0"});
}

// 32 MiB from hv-a's qemu entry to where hv-b delivers qemu and 4 MiB back at
// the same time, each followed by EOF. "" when both arrived with the SHA-256
// they were sent with, else what went wrong (with both tunnels' logs).
std::string transfer(TunnelPair& pair) {
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = std::async(std::launch::async, [&] {
    Hashed h = send_stream(client.get(), 32 * kMiB, 19);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(10s);
  if (!server) {
    sent.wait();
    return "the connection never reached hv-b's qemu target\n" + pair.logs();
  }
  auto back = std::async(std::launch::async, [&] {
    Hashed h = send_stream(server.get(), 4 * kMiB, 20);
    shutdown_write(server.get());
    return h;
  });
  Hashed got = recv_stream(server.get());
  Hashed returned = recv_stream(client.get());
  Hashed s = sent.get(), b = back.get();
  if (got.bytes != 32 * kMiB || got.sha256 != s.sha256)
    return "hv-b received " + std::to_string(got.bytes) + " bytes, SHA-256 " + got.sha256 +
           " (sent " + s.sha256 + ")\n" + pair.logs();
  if (returned.bytes != 4 * kMiB || returned.sha256 != b.sha256)
    return "hv-a received " + std::to_string(returned.bytes) + " bytes back, SHA-256 " +
           returned.sha256 + " (sent " + b.sha256 + ")\n" + pair.logs();
  return "";
}

TunnelPairOptions unstarted_with_client_files() {
  return TunnelPairOptions{.client_files = true, .start = false};
}

// Replaces `from` by `to` in each line of a template.
std::vector<std::string> replaced(std::vector<std::string> lines, const std::string& from,
                                  const std::string& to) {
  for (auto& l : lines)
    if (l == from) l = to;
  return lines;
}

// ---------------------------------------------------------------------------
// certtool, libvirt's layout

class CerttoolKeys : public ::testing::TestWithParam<CerttoolKey> {};

// Setup: a CA, and for hv-a and hv-b a server certificate (libvirt's server
// template: dns_name = host, tls_www_server) and a separate client
// certificate (libvirt's client template, tls_www_client, plus dns_name =
// host), all made by certtool with keys of the parameter's type (certtool's
// default RSA, and ECDSA), in libvirt's layout; each tunnel's config maps
// cert/key to server-cert.pem/server-key.pem and client_cert/client_key to
// client-cert.pem/client-key.pem, as the Quick start does.
// Action: --check on both configs, then both tunnels start and a transfer
// runs from hv-a to hv-b and back.
// Pass: --check exits 0 on both and lists the client certificate as its own
// file; 32 MiB arrive at hv-b and 4 MiB back with the SHA-256 they were sent
// with. (Dialling with server-cert.pem, whose extendedKeyUsage allows
// serverAuth only, would be refused by the peer: the transfer proves the
// client certificate was presented.)
TEST_P(CerttoolKeys, CerttoolServerAndClientCertificatesCarryATransfer) {
  TunnelPair pair(unstarted_with_client_files());
  Certtool certtool(pair.temp / "certtool");
  ASSERT_NO_THROW(certtool_pair_pki(certtool, pair, GetParam())) << certtool.log();
  for (const TunnelSide* side : {&pair.a, &pair.b}) {
    CommandRun check = tunnel_check(pair, *side);
    EXPECT_EQ(check.exit_code, 0) << check.output;
    EXPECT_NE(check.output.find("client certificate " + (side->pki / "client-cert.pem").string() +
                                ": serial"),
              std::string::npos)
        << check.output;
  }
  pair.start(pair.a);
  pair.start(pair.b);
  EXPECT_EQ(transfer(pair), "");
}

INSTANTIATE_TEST_SUITE_P(Pki, CerttoolKeys, ::testing::Values(CerttoolKey::Rsa, CerttoolKey::Ecdsa),
                         [](const auto& info) {
                           return info.param == CerttoolKey::Rsa ? "Rsa" : "Ecdsa";
                         });

// Setup: issue #19 as reported: libvirt's layout made by certtool, and the
// config of the Quick start before this fix, cert = server-cert.pem and key =
// server-key.pem with no client_cert: the tunnel would dial its peers with
// server-cert.pem, whose extendedKeyUsage allows serverAuth only.
// Action: --check on hv-a's config; then starting hv-a.
// Pass: --check exits 1 with "<pki>/server-cert.pem: not usable as the TLS
// client certificate of hv-a: extendedKeyUsage lacks clientAuth (it allows
// serverAuth only)" and a fix naming client_cert = "<pki>/client-cert.pem";
// the tunnel refuses to start (exits non-zero) with the same message.
TEST(Pki, ServerOnlyCertificateAsTheDefaultClientCertificateIsRefused) {
  TunnelPair pair(TunnelPairOptions{.client_files = false, .start = false});
  Certtool certtool(pair.temp / "certtool");
  ASSERT_NO_THROW(certtool_pair_pki(certtool, pair, CerttoolKey::Rsa)) << certtool.log();
  const std::string message =
      (pair.a.pki / "server-cert.pem").string() +
      ": not usable as the TLS client certificate of hv-a: "
      "extendedKeyUsage lacks clientAuth (it allows serverAuth only); fix: ";
  const std::string config_fix =
      "client_cert = \"" + (pair.a.pki / "client-cert.pem").string() + "\"";
  CommandRun check = tunnel_check(pair, pair.a);
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_NE(check.output.find(message), std::string::npos) << check.output;
  EXPECT_NE(check.output.find(config_fix), std::string::npos) << check.output;

  CommandRun started = run_logged(pair, {tool("xmig-tunnel"), "--config", pair.a.config.string()});
  EXPECT_NE(started.exit_code, 0) << started.output;
  EXPECT_NE(started.output.find(message), std::string::npos) << started.output;
}

// The refusal tests below: hv-a's PKI made by certtool with one defect, its
// config mapping libvirt's layout (client_files). Both judges must refuse it
// with the same text: `xmig-tunnel --check` (exit 1) prints
// "<file>: <message>; fix: <fix>", `xmig-certs check` (exit 2) prints
// "[failure] <check>: <file>: <message>" and "fix: <fix>".
void expect_both_refuse(const TunnelPair& pair, const std::string& file, const std::string& check,
                        const std::string& message, const std::string& template_change) {
  CommandRun tunnel = tunnel_check(pair, pair.a);
  EXPECT_EQ(tunnel.exit_code, 1) << tunnel.output;
  EXPECT_NE(tunnel.output.find(file + ": " + message + "; fix: "), std::string::npos)
      << tunnel.output;
  CommandRun certs = certs_check(pair, pair.a);
  EXPECT_EQ(certs.exit_code, 2) << certs.output;
  EXPECT_NE(certs.output.find("[failure] " + check + ": " + file + ": " + message + "\n"),
            std::string::npos)
      << certs.output;
  // The fix: the template line to add and the command that signs it again.
  const std::string certtool_fix = "certtool --generate-certificate --load-privkey ";
  for (const CommandRun* out : {&tunnel, &certs}) {
    EXPECT_NE(out->output.find(template_change), std::string::npos) << out->output;
    EXPECT_NE(out->output.find(certtool_fix), std::string::npos) << out->output;
    EXPECT_NE(out->output.find("xmig-certs rotate --ca CA_DIR --dir " + pair.a.pki.string() +
                               " --name hv-a"),
              std::string::npos)
        << out->output;
  }
}

// Makes hv-a's PKI with certtool from the given server and client templates.
void certtool_hv_a(TunnelPair& pair, Certtool& certtool, const std::vector<std::string>& server,
                   const std::vector<std::string>& client) {
  CerttoolCa ca = certtool.self_signed_ca(pair.temp / "certtool-ca",
                                          libvirt_ca_template("xmig test CA"), CerttoolKey::Rsa);
  fs::remove_all(pair.a.pki);
  certtool.node_dir(pair.a.pki, ca, read_file(ca.cert), server, client, CerttoolKey::Rsa);
}

// Setup: hv-a's client certificate made from a template with tls_www_server
// instead of tls_www_client (extendedKeyUsage serverAuth only).
// Action: `xmig-tunnel --check` and `xmig-certs check --dir <pki> --name hv-a`.
// Pass: both refuse it with "<pki>/client-cert.pem: not usable as the TLS
// client certificate of hv-a: extendedKeyUsage lacks clientAuth (it allows
// serverAuth only)" and a fix that adds the line 'tls_www_client'.
TEST(Pki, CheckRefusesClientCertificateWithoutClientAuth) {
  TunnelPair pair(unstarted_with_client_files());
  Certtool certtool(pair.temp / "certtool");
  ASSERT_NO_THROW(
      certtool_hv_a(pair, certtool, libvirt_server_template("hv-a"),
                    replaced(xmig_client_template("hv-a"), "tls_www_client", "tls_www_server")))
      << certtool.log();
  expect_both_refuse(pair, (pair.a.pki / "client-cert.pem").string(), "usage",
                     "not usable as the TLS client certificate of hv-a: extendedKeyUsage lacks "
                     "clientAuth (it allows serverAuth only)",
                     "in its template (client.info) add the line 'tls_www_client'");
}

// Setup: hv-a's server certificate made from a template with tls_www_client
// instead of tls_www_server (extendedKeyUsage clientAuth only).
// Action: both checks, as above.
// Pass: both refuse it with "<pki>/server-cert.pem: not usable as the TLS
// server certificate of hv-a: extendedKeyUsage lacks serverAuth (it allows
// clientAuth only)" and a fix that adds the line 'tls_www_server'.
TEST(Pki, CheckRefusesServerCertificateWithoutServerAuth) {
  TunnelPair pair(unstarted_with_client_files());
  Certtool certtool(pair.temp / "certtool");
  ASSERT_NO_THROW(certtool_hv_a(
      pair, certtool, replaced(libvirt_server_template("hv-a"), "tls_www_server", "tls_www_client"),
      xmig_client_template("hv-a")))
      << certtool.log();
  expect_both_refuse(pair, (pair.a.pki / "server-cert.pem").string(), "usage",
                     "not usable as the TLS server certificate of hv-a: extendedKeyUsage lacks "
                     "serverAuth (it allows clientAuth only)",
                     "in its template (server.info) add the line 'tls_www_server'");
}

// Setup: hv-a's client certificate made from libvirt's client template word
// for word: cn = hv-a and no dns_name, so it names its host only in the CN.
// Action: both checks, as above.
// Pass: both refuse it with "<pki>/client-cert.pem: not usable as the TLS
// client certificate of hv-a: does not name this host "hv-a" as a DNS SAN
// (DNS SANs: none; "hv-a" is only its subject CN, which peers never check)"
// and a fix that adds the line 'dns_name = hv-a'.
TEST(Pki, CheckRefusesClientCertificateNamingItsHostOnlyInTheCn) {
  TunnelPair pair(unstarted_with_client_files());
  Certtool certtool(pair.temp / "certtool");
  ASSERT_NO_THROW(certtool_hv_a(pair, certtool, libvirt_server_template("hv-a"),
                                libvirt_client_template("hv-a")))
      << certtool.log();
  expect_both_refuse(pair, (pair.a.pki / "client-cert.pem").string(), "san",
                     "not usable as the TLS client certificate of hv-a: does not name this host "
                     "\"hv-a\" as a DNS SAN (DNS SANs: none; \"hv-a\" is only its subject CN, "
                     "which peers never check)",
                     "in its template (client.info) add the line 'dns_name = hv-a'");
}

// ---------------------------------------------------------------------------
// An intermediate CA

// A root CA and an intermediate CA signed by it, both by certtool.
struct TwoLevelCa {
  CerttoolCa root, intermediate;
};

TwoLevelCa certtool_two_level_ca(Certtool& certtool, const fs::path& dir) {
  TwoLevelCa ca;
  ca.root = certtool.self_signed_ca(dir / "root", libvirt_ca_template("xmig test root CA"),
                                    CerttoolKey::Rsa);
  fs::create_directories(dir / "intermediate");
  ca.intermediate = {.cert = dir / "intermediate" / "cacert.pem",
                     .key = dir / "intermediate" / "cakey.pem"};
  certtool.key(ca.intermediate.key, CerttoolKey::Ecdsa);
  certtool.certificate(ca.intermediate.cert, ca.intermediate.key, ca.root,
                       libvirt_ca_template("xmig test intermediate CA"));
  return ca;
}

// Setup: a root CA and an intermediate CA (certtool); hv-a's and hv-b's server
// and client certificates signed by the intermediate, each file holding the
// leaf only; ca-cert.pem = root + intermediate (the README's way: libvirt and
// QEMU read the same bundle).
// Action: --check with ca-cert.pem holding the root only (control), then with
// the bundle; start both tunnels; a transfer.
// Pass: with the root only --check exits 1 ("unable to get local issuer
// certificate": the intermediate matters); with the bundle --check and
// xmig-certs check pass and the transfer arrives intact both ways.
TEST(Pki, IntermediateCaInTheCaBundleCarriesATransfer) {
  TunnelPair pair(unstarted_with_client_files());
  Certtool certtool(pair.temp / "certtool");
  TwoLevelCa ca;
  ASSERT_NO_THROW({
    ca = certtool_two_level_ca(certtool, pair.temp / "certtool-ca");
    for (TunnelSide* side : {&pair.a, &pair.b}) {
      fs::remove_all(side->pki);
      certtool.node_dir(side->pki, ca.intermediate, read_file(ca.root.cert),
                        libvirt_server_template(side->name), xmig_client_template(side->name),
                        CerttoolKey::Ecdsa);
    }
  }) << certtool.log();

  CommandRun root_only = tunnel_check(pair, pair.a);
  EXPECT_EQ(root_only.exit_code, 1) << root_only.output;
  EXPECT_NE(root_only.output.find("unable to get local issuer certificate"), std::string::npos)
      << root_only.output;

  const std::string bundle = read_file(ca.root.cert) + read_file(ca.intermediate.cert);
  for (TunnelSide* side : {&pair.a, &pair.b}) {
    write_file(side->pki / "ca-cert.pem", bundle);
    CommandRun check = tunnel_check(pair, *side);
    EXPECT_EQ(check.exit_code, 0) << check.output;
    CommandRun certs = certs_check(pair, *side);
    EXPECT_EQ(certs.exit_code, 0) << certs.output;
  }
  pair.start(pair.a);
  pair.start(pair.b);
  EXPECT_EQ(transfer(pair), "");
}

// Setup: as above, but ca-cert.pem holds the root CA only and each
// certificate file holds its leaf followed by the intermediate CA (the chain
// a peer is sent).
// Action: --check and xmig-certs check on both; start both; a transfer.
// Pass: both checks pass on both hosts and the transfer arrives intact both
// ways (each side verifies the other's chain through the intermediate it sent).
TEST(Pki, IntermediateCaInTheCertificateFileCarriesATransfer) {
  TunnelPair pair(unstarted_with_client_files());
  Certtool certtool(pair.temp / "certtool");
  ASSERT_NO_THROW({
    TwoLevelCa ca = certtool_two_level_ca(certtool, pair.temp / "certtool-ca");
    for (TunnelSide* side : {&pair.a, &pair.b}) {
      fs::remove_all(side->pki);
      certtool.node_dir(side->pki, ca.intermediate, read_file(ca.root.cert),
                        libvirt_server_template(side->name), xmig_client_template(side->name),
                        CerttoolKey::Rsa, read_file(ca.intermediate.cert));
    }
  }) << certtool.log();
  for (TunnelSide* side : {&pair.a, &pair.b}) {
    CommandRun check = tunnel_check(pair, *side);
    EXPECT_EQ(check.exit_code, 0) << check.output;
    CommandRun certs = certs_check(pair, *side);
    EXPECT_EQ(certs.exit_code, 0) << certs.output;
  }
  pair.start(pair.a);
  pair.start(pair.b);
  EXPECT_EQ(transfer(pair), "");
}

// ---------------------------------------------------------------------------
// The openssl command line, and xmig-certs

// Makes libvirt's layout in each side's pki with the openssl command line: a
// CA (`openssl req -x509`), then per host an ECDSA server certificate
// (extendedKeyUsage serverAuth) and an RSA client certificate (clientAuth),
// each `openssl req -new` signed with `openssl x509 -req -extfile`, SAN
// DNS:host. Returns "" or the failing command's output.
std::string openssl_pair_pki(TunnelPair& pair) {
  const fs::path dir = pair.temp / "openssl-ca";
  fs::create_directories(dir);
  const std::string openssl = "/usr/bin/openssl";
  auto step = [&](std::vector<std::string> args) {
    args.insert(args.begin(), openssl);
    CommandRun r = run_logged(pair, args);
    return r.exit_code == 0 ? std::string() : r.output;
  };
  if (auto e =
          step({"req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout",
                (dir / "ca.key").string(), "-out", (dir / "ca.crt").string(), "-days", "30",
                "-subj", "/CN=xmig test openssl CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
      !e.empty())
    return e;
  for (TunnelSide* side : {&pair.a, &pair.b}) {
    fs::remove_all(side->pki);
    fs::create_directories(side->pki);
    std::filesystem::copy_file(dir / "ca.crt", side->pki / "ca-cert.pem");
    for (const auto& [role, eku, key] :
         {std::tuple{"server", "serverAuth", "ec"}, {"client", "clientAuth", "rsa:3072"}}) {
      const fs::path ext = dir / (side->name + "-" + role + ".ext");
      write_file(ext,
                 "basicConstraints=critical,CA:FALSE\n"
                 "keyUsage=critical,digitalSignature,keyEncipherment\n"
                 "extendedKeyUsage=" +
                     std::string(eku) +
                     "\n"
                     "subjectAltName=DNS:" +
                     side->name + ",IP:127.0.0.1\n");
      const fs::path csr = dir / (side->name + "-" + role + ".csr");
      const std::string prefix = (side->pki / role).string();
      std::vector<std::string> req{"req",        "-new",    "-newkey",           key,
                                   "-nodes",     "-keyout", prefix + "-key.pem", "-out",
                                   csr.string(), "-subj",   "/CN=" + side->name};
      if (std::string(key) == "ec")
        req.insert(req.begin() + 4, {"-pkeyopt", "ec_paramgen_curve:P-256"});
      if (auto e = step(req); !e.empty()) return e;
      if (auto e = step({"x509", "-req", "-in", csr.string(), "-CA", (dir / "ca.crt").string(),
                         "-CAkey", (dir / "ca.key").string(), "-CAcreateserial", "-days", "30",
                         "-extfile", ext.string(), "-out", prefix + "-cert.pem"});
          !e.empty())
        return e;
      fs::permissions(prefix + "-key.pem", fs::perms::owner_read | fs::perms::owner_write);
    }
  }
  return "";
}

// Setup: libvirt's layout made with the openssl command line (ECDSA server
// certificate with serverAuth, RSA client certificate with clientAuth, both
// naming the host as a DNS SAN), client_cert/client_key mapped.
// Action: --check on both; start both; a transfer.
// Pass: --check exits 0 on both; the transfer arrives intact both ways.
TEST(Pki, OpensslServerAndClientCertificatesCarryATransfer) {
  TunnelPair pair(unstarted_with_client_files());
  ASSERT_EQ(openssl_pair_pki(pair), "");
  for (const TunnelSide* side : {&pair.a, &pair.b}) {
    CommandRun check = tunnel_check(pair, *side);
    EXPECT_EQ(check.exit_code, 0) << check.output;
  }
  pair.start(pair.a);
  pair.start(pair.b);
  EXPECT_EQ(transfer(pair), "");
}

// Setup: the node directories xmig-certs writes (client-cert.pem and
// client-key.pem are the server certificate and key: extendedKeyUsage
// serverAuth and clientAuth), with client_cert/client_key mapped to them as
// the Quick start says.
// Action: --check and xmig-certs check on both; start both; a transfer.
// Pass: both checks pass on both hosts; the transfer arrives intact both ways.
TEST(Pki, XmigCertsNodeDirectoryWithClientFilesCarriesATransfer) {
  TunnelPair pair(unstarted_with_client_files());
  for (const TunnelSide* side : {&pair.a, &pair.b}) {
    CommandRun check = tunnel_check(pair, *side);
    EXPECT_EQ(check.exit_code, 0) << check.output;
    CommandRun certs = certs_check(pair, *side);
    EXPECT_EQ(certs.exit_code, 0) << certs.output;
  }
  pair.start(pair.a);
  pair.start(pair.b);
  EXPECT_EQ(transfer(pair), "");
}

}  // namespace
}  // namespace xmig::test
