// Strict peer identity (issue 13): only a real peer certificate passes, on
// either side of a connection, and the key exchange is an elliptic curve.
//
// The certificates are made by GnuTLS certtool from templates (as libvirt
// documents), signed by the pair's own cluster CA, so that each one chains
// correctly and only the property under test is wrong:
//   - CN only: the peer's name as subject CN, no SAN at all;
//   - IP SAN only: the peer's name as CN and 127.0.0.1 as IP SAN, no DNS SAN
//     (X509_check_host would fall back to the CN unless told never to);
//   - CA:TRUE: the peer's name as DNS SAN, but basicConstraints CA:TRUE;
//   - the other role's EKU only: the peer's name as DNS SAN, but an
//     extendedKeyUsage of serverAuth alone on a client's certificate, or
//     clientAuth alone on a server's.
// A certificate that allows both roles, or lists no extendedKeyUsage at all,
// passes on both sides (a real migration stream crosses).
// Inbound, a TLS probe presents them to hv-b; outbound, `openssl s_server`
// presents them to hv-a where hv-b should be. Each must be refused during the
// handshake, with the reason in the refusing tunnel's log, and nothing
// delivered.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdint>
#include <future>
#include <string>
#include <vector>

#include "harness/certtool.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tls_probe.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

using namespace std::chrono_literals;

constexpr uint64_t kStreamBytes = 4 << 20;

struct NotAPeer {
  std::string what;
  std::vector<std::string> lines;  // certtool template
  std::string reason;              // what the log must say about it
};

const std::string kNoDnsSan =
    "it has no DNS SAN, and a peer is known by its DNS SAN only (never by its subject CN or an "
    "IP SAN)";
const std::string kCa = "it is a CA certificate (basicConstraints CA:TRUE), not a host's";

// certtool's template lines for the two extendedKeyUsage purposes.
constexpr const char* kServerUsage = "tls_www_server";
constexpr const char* kClientUsage = "tls_www_client";

// The four certificates for `host`, with `usage` (kServerUsage or
// kClientUsage) so that only the property under test is wrong; the fourth
// allows only the other role.
std::vector<NotAPeer> not_a_peer(const std::string& host, const std::string& usage) {
  const bool server = usage == kServerUsage;
  return {
      {"CN only", {"cn = " + host, usage, "signing_key"}, kNoDnsSan},
      {"IP SAN only, the peer's CN",
       {"cn = " + host, "ip_address = 127.0.0.1", usage, "signing_key"},
       kNoDnsSan},
      {"CA:TRUE",
       {"cn = " + host, "dns_name = " + host, "ca", "cert_signing_key", usage, "signing_key"},
       kCa},
      {server ? "clientAuth only" : "serverAuth only",
       {"cn = " + host, "dns_name = " + host, server ? kClientUsage : kServerUsage, "signing_key"},
       std::string("its extendedKeyUsage lacks ") + (server ? "serverAuth" : "clientAuth")},
  };
}

struct Made {
  fs::path cert, key;
};

// certtool makes `lines`' certificate with a new key, signed by the pair's CA.
Made make(TunnelPair& pair, Certtool& certtool, const std::string& stem,
          const std::vector<std::string>& lines) {
  const fs::path dir = pair.temp / "made";
  fs::create_directories(dir);
  const CerttoolCa ca{.cert = dir / "ca-cert.pem", .key = dir / "ca-key.pem"};
  write_file(ca.cert, pair.ca.cert);
  write_file(ca.key, pair.ca.key);
  Made m{.cert = dir / (stem + "-cert.pem"), .key = dir / (stem + "-key.pem")};
  certtool.key(m.key, CerttoolKey::Ecdsa);
  certtool.certificate(m.cert, m.key, ca, lines);
  return m;
}

std::string stem_of(const std::string& what) {
  std::string s;
  for (char c : what) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  return s;
}

// Setup: hv-a and hv-b; hv-b delivers channel bench to a listener of the
// test. For each of the four certificates of "hv-a" (usage tls_www_client,
// or tls_www_server alone):
// Action: a TLS probe presents it to hv-b, verifying hv-b, ALPN xmig/bench.
// Pass: no 'A' verdict; hv-b logs one `refused:` line for the probe's port
// with "certificate verify failed: the client's certificate (CN "hv-a") is
// not a peer's: " and the reason (no DNS SAN; a CA certificate; its
// extendedKeyUsage lacks clientAuth); the bench
// listener never gets a connection.
TEST(Identity, ServerRefusesClientCertificatesThatAreNotAPeers) {
  Listener bench = Listener::tcp();
  TunnelPair pair(TunnelPairOptions{.b_targets = {{"bench", bench.endpoint()}}});
  Certtool certtool(pair.temp / "certtool");
  for (const auto& bad : not_a_peer("hv-a", kClientUsage)) {
    SCOPED_TRACE(bad.what);
    Made m;
    ASSERT_NO_THROW(m = make(pair, certtool, "client-" + stem_of(bad.what), bad.lines))
        << certtool.log();
    TlsProbeOptions o;
    o.cert_file = m.cert.string();
    o.key_file = m.key.string();
    o.ca_pem = pair.ca.cert;
    o.server_name = "hv-b";
    o.alpn = {"xmig/bench"};
    TlsProbe probe(o);
    auto r = probe.connect(pair.b.port);
    EXPECT_NE(r.verdict, std::optional<char>('A'));
    ASSERT_NE(r.local_port, 0) << r.error;
    const std::string from = "refused: from 127.0.0.1:" + std::to_string(r.local_port);
    EXPECT_TRUE(wait_until(
        [&] {
          return count_lines_with_all(pair.b.log,
                                      {from,
                                       "certificate verify failed: the client's certificate (CN "
                                       "\"hv-a\") is not a peer's: " +
                                           bad.reason}) == 1;
        },
        5s))
        << pair.logs();
  }
  EXPECT_FALSE(bench.accept(500ms)) << pair.logs();
  EXPECT_EQ(count_in_log(pair.b.log, "open: "), 0) << pair.logs();
}

// Setup: hv-a alone; where its [[peer]] hv-b should listen, `openssl
// s_server` presents, in turn, each of the four certificates of "hv-b"
// (usage tls_www_server, or tls_www_client alone).
// Action: a local client writes into hv-a's qemu entry for hv-b.
// Pass: the client sees the end (EOF or reset) and no data; hv-a logs
// "-> peer hv-b channel qemu: TLS handshake: certificate verify failed: the
// server's certificate (CN "hv-b") is not a peer's: " with the reason, once
// per certificate.
TEST(Identity, ClientRefusesServerCertificatesThatAreNotAPeers) {
  TunnelPair pair(TunnelPairOptions{.start = false});
  pair.start(pair.a);
  Certtool certtool(pair.temp / "certtool");
  for (const auto& bad : not_a_peer("hv-b", kServerUsage)) {
    SCOPED_TRACE(bad.what);
    Made m;
    ASSERT_NO_THROW(m = make(pair, certtool, "server-" + stem_of(bad.what), bad.lines))
        << certtool.log();
    Process server(
        {"/usr/bin/openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(pair.b.port),
         "-cert", m.cert.string(), "-key", m.key.string(), "-quiet"},
        (pair.temp / "s_server.log").string());
    ASSERT_TRUE(wait_until(
        [&] {
          try {
            return static_cast<bool>(connect_tcp(pair.b.port));
          } catch (const std::exception&) {
            return false;
          }
        },
        5s));
    const std::string reason =
        "-> peer hv-b channel qemu: TLS handshake: certificate verify failed: the server's "
        "certificate (CN \"hv-b\") is not a peer's: " +
        bad.reason;
    const int before = count_lines_with_all(pair.a.log, {"refused: entry ", reason});
    Fd client = connect_unix(pair.entry("qemu").string());
    ::send(client.get(), "QEVM", 4, MSG_NOSIGNAL);
    ASSERT_TRUE(wait_readable(client.get(), 5s)) << pair.logs();
    char byte;
    EXPECT_LE(::recv(client.get(), &byte, 1, 0), 0);
    EXPECT_TRUE(wait_until(
        [&] {
          return count_lines_with_all(pair.a.log, {"refused: entry ", reason}) == before + 1;
        },
        5s))
        << pair.logs();
  }
}

// Pass: for both kinds, both tunnels start, a 4 MiB stream sent into hv-a's
// qemu entry arrives at hv-b's qemu delivery socket with the SHA-256 it was
// sent with, and neither tunnel logs a `refused:` line.
// Setup: for each kind, serverAuth and clientAuth both, and no
// extendedKeyUsage at all: hv-a's client certificate and hv-b's server
// certificate of that kind (certtool, DNS SAN the host's name, signed by the
// pair's CA) replace the pair's own; hv-a dials with its client certificate
// (client_cert), hv-b serves its server certificate.
// Action: start both, send the stream.
TEST(Identity, CertificatesAllowingBothRolesOrNamingNoneAreAccepted) {
  struct Kind {
    std::string what;
    std::vector<std::string> usages;
  };
  for (const Kind& kind : {Kind{"serverAuth and clientAuth", {kServerUsage, kClientUsage}},
                           Kind{"no extendedKeyUsage", {}}}) {
    SCOPED_TRACE(kind.what);
    TunnelPair pair(TunnelPairOptions{.client_files = true, .start = false});
    Certtool certtool(pair.temp / "certtool");
    auto lines = [&](const std::string& host) {
      std::vector<std::string> l = {"cn = " + host, "dns_name = " + host, "signing_key"};
      l.insert(l.end(), kind.usages.begin(), kind.usages.end());
      return l;
    };
    Made client, server;
    ASSERT_NO_THROW(client = make(pair, certtool, "client-" + stem_of(kind.what), lines("hv-a")))
        << certtool.log();
    ASSERT_NO_THROW(server = make(pair, certtool, "server-" + stem_of(kind.what), lines("hv-b")))
        << certtool.log();
    fs::copy_file(client.cert, pair.a.pki / certs::kClientCertFile,
                  fs::copy_options::overwrite_existing);
    fs::copy_file(client.key, pair.a.pki / certs::kClientKeyFile,
                  fs::copy_options::overwrite_existing);
    fs::copy_file(server.cert, pair.b.pki / certs::kServerCertFile,
                  fs::copy_options::overwrite_existing);
    fs::copy_file(server.key, pair.b.pki / certs::kServerKeyFile,
                  fs::copy_options::overwrite_existing);
    ASSERT_NO_THROW(pair.start(pair.a)) << pair.logs();
    ASSERT_NO_THROW(pair.start(pair.b)) << pair.logs();

    Listener qemu = Listener::unix_socket(pair.delivery("qemu").string());
    Fd entry = connect_unix(pair.entry("qemu").string());
    auto sent = std::async(std::launch::async, [&] {
      Hashed h = send_stream(entry.get(), kStreamBytes, 19);
      shutdown_write(entry.get());
      return h;
    });
    Fd delivered = qemu.accept(10s);
    if (!delivered) {
      sent.wait();
      FAIL() << "nothing was delivered\n" << pair.logs();
    }
    Hashed got = recv_stream(delivered.get());
    EXPECT_EQ(got.bytes, kStreamBytes);
    EXPECT_EQ(got.sha256, sent.get().sha256) << pair.logs();
    EXPECT_EQ(count_in_log(pair.a.log, "refused:") + count_in_log(pair.b.log, "refused:"), 0)
        << pair.logs();
  }
}

// Setup: hv-a and hv-b; hv-b delivers bench to a listener of the test.
// Action: a probe with hv-a's valid certificate offers only the finite-field
// group ffdhe2048; then one offering only X25519 (control).
// Pass: the ffdhe2048 handshake fails and hv-b logs a `refused:` line for it
// with "TLS handshake:"; the X25519 one gets verdict 'A'.
TEST(Identity, FiniteFieldKeyExchangeIsNotNegotiated) {
  Listener bench = Listener::tcp();
  TunnelPair pair(TunnelPairOptions{.b_targets = {{"bench", bench.endpoint()}}});
  TlsProbeOptions o;
  o.cert_file = (pair.a.pki / certs::kClientCertFile).string();
  o.key_file = (pair.a.pki / certs::kClientKeyFile).string();
  o.ca_pem = pair.ca.cert;
  o.server_name = "hv-b";
  o.alpn = {"xmig/bench"};
  o.groups = "ffdhe2048";
  TlsProbe ffdhe(o);
  auto r = ffdhe.connect(pair.b.port);
  EXPECT_FALSE(r.handshake_ok) << "negotiated ffdhe2048";
  EXPECT_NE(r.verdict, std::optional<char>('A'));
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.b.log,
                                    {"refused: from 127.0.0.1:" + std::to_string(r.local_port),
                                     ": TLS handshake: "}) == 1;
      },
      5s))
      << pair.logs();

  o.groups = "X25519";
  TlsProbe x25519(o);
  auto ok = x25519.connect(pair.b.port);
  EXPECT_EQ(ok.verdict, std::optional<char>('A')) << ok.error << pair.logs();
}

}  // namespace
}  // namespace xmig::test
