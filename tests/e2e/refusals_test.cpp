// End-to-end refusals: what xmig-tunnel must refuse, refuses, says why in its
// log, and lets not one byte through to a target.
//
// Every test starts two real xmig-tunnel processes (TunnelPair: hv-a, hv-b,
// fresh CA). hv-b delivers channel "bench" to a TCP listener the test owns.
// A TlsProbe (a plain OpenSSL client) then knocks on hv-b's TLS port with
// something wrong. Each refusal must hold three things:
//   - the probe is refused (an alert, a close, or a refusal verdict);
//   - hv-b logs a `refused:` line for the probe's source port with the
//     specific reason (checked by its text, so another failure cannot pass);
//   - the bench listener never gets a connection, and hv-b never logs "open:".
// The positive control (AcceptsValidPeerAndDeliversToTarget) shows that the
// same probe with a valid certificate does get through, so each refusal test
// can fail.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>

#include "base/socket.hpp"
#include "certs/certs.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tls_probe.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

using namespace std::chrono_literals;
using namespace std::string_literals;

// How long a refusal may take to show up in a log; far below the tunnel's
// handshake_timeout (10 s), so a refusal by timeout does not pass as one.
constexpr auto kPrompt = 5s;
// How long the target listener is watched for a connection after a refusal
// has been logged (the tunnel logs only after it has decided).
constexpr auto kQuiet = 500ms;

::testing::AssertionResult contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << needle << "\" not found in: " << text;
}

// The first line of `log` containing `needle`, waiting up to kPrompt for it; "".
std::string wait_for_line(const fs::path& log, const std::string& needle) {
  std::string found;
  wait_until(
      [&] {
        std::ifstream in(log);
        for (std::string line; std::getline(in, line);)
          if (line.find(needle) != std::string::npos) {
            found = line;
            return true;
          }
        return false;
      },
      kPrompt);
  return found;
}

class Tunnel : public ::testing::Test {
 protected:
  // Starts hv-a and hv-b; hv-b's [targets] bench = the test's listener.
  void start_pair() {
    TunnelPairOptions opts;
    opts.b_targets["bench"] = bench_.endpoint();
    pair_ = std::make_unique<TunnelPair>(opts);
  }

  // A probe that presents `id`, verifies hv-b against the cluster CA and asks
  // for channel bench.
  TlsProbeOptions probe_as(const certs::Pem& id) const {
    TlsProbeOptions o;
    o.cert_pem = id.cert;
    o.key_pem = id.key;
    o.ca_pem = pair_->ca.cert;
    o.server_name = "hv-b";
    o.alpn = {"xmig/bench"};
    return o;
  }

  // A certificate for `name` from the cluster CA.
  certs::Pem issue(const std::string& name, int days = 30, long start_offset = -300) const {
    certs::IssueOptions o;
    o.name = name;
    o.ips = {"127.0.0.1"};
    o.days = days;
    o.start_offset_seconds = start_offset;
    return certs::issue(pair_->ca, o);
  }

  // hv-b's refusal line for a connection from 127.0.0.1:source_port ("" if none).
  std::string refusal_of(uint16_t source_port) const {
    return wait_for_line(pair_->b.log, "refused: from 127.0.0.1:" + std::to_string(source_port));
  }

  // Nothing reached the target: no connection to the bench listener, no
  // connection opened by hv-b.
  void expect_target_untouched() {
    Fd stray = bench_.accept(kQuiet);
    EXPECT_FALSE(stray) << "the target got a connection\n" << pair_->logs();
    EXPECT_EQ(count_in_log(pair_->b.log, "open: "), 0) << pair_->logs();
  }

  // One refused probe: exactly one refusal line for its source port, carrying
  // `reason`; the target untouched.
  void expect_refused_with(const TlsProbeResult& r, const std::string& reason) {
    ASSERT_NE(r.local_port, 0) << r.error;
    std::string line = refusal_of(r.local_port);
    EXPECT_TRUE(contains(line, reason)) << pair_->logs();
    EXPECT_EQ(count_in_log(pair_->b.log, "from 127.0.0.1:" + std::to_string(r.local_port)), 1)
        << pair_->logs();
    expect_target_untouched();
  }

  Listener bench_ = Listener::tcp();
  std::unique_ptr<TunnelPair> pair_;
};

// Setup: pair; probe with the CA and ALPN xmig/bench but no client certificate.
// Action: handshake, read the verdict.
// Pass: TLS 1.3 lets the client finish its handshake, then the server's
// "certificate required" alert arrives instead of a verdict; hv-b logs
// "peer did not return a certificate"; nothing reaches bench.
TEST_F(Tunnel, RefusesClientWithoutCertificate) {
  start_pair();
  TlsProbeOptions o = probe_as({});
  TlsProbe probe(o);
  auto r = probe.connect(pair_->b.port);
  EXPECT_FALSE(r.verdict) << "verdict " << *r.verdict;
  EXPECT_TRUE(contains(r.error, "certificate required"));
  expect_refused_with(r, ": TLS handshake: peer did not return a certificate");
}

// Setup: pair; a certificate for "hv-a" (the configured peer's very name)
// issued by a different CA.
// Action: handshake with it, read the verdict.
// Pass: refused with an "unknown ca" alert; hv-b logs "certificate verify
// failed: unable to get local issuer certificate"; nothing reaches bench.
TEST_F(Tunnel, RefusesCertificateFromAnotherCa) {
  start_pair();
  certs::Pem other_ca = certs::make_ca({.name = "some other CA"});
  certs::Pem forged = certs::issue(other_ca, {.name = "hv-a", .ips = {"127.0.0.1"}});
  TlsProbe probe(probe_as(forged));
  auto r = probe.connect(pair_->b.port);
  EXPECT_FALSE(r.verdict) << "verdict " << *r.verdict;
  EXPECT_TRUE(contains(r.error, "unknown ca"));
  expect_refused_with(
      r, ": TLS handshake: certificate verify failed: unable to get local issuer certificate");
}

// Setup: pair; a valid certificate from the cluster CA for "hv-c", a host hv-b
// has no [[peer]] for.
// Action: handshake, read the verdict.
// Pass: the handshake completes (the certificate is genuine), then hv-b
// closes without a verdict and logs that the certificate names no configured
// peer; nothing reaches bench.
TEST_F(Tunnel, RefusesCertificateNamingNoConfiguredPeer) {
  start_pair();
  TlsProbe probe(probe_as(issue("hv-c")));
  auto r = probe.connect(pair_->b.port);
  EXPECT_TRUE(r.handshake_ok) << r.error;
  EXPECT_EQ(r.verdict, std::optional<char>('P')) << r.error;
  expect_refused_with(r, ": certificate /CN=hv-c names no configured [[peer]]");
}

// Setup: pair; a certificate for "hv-a" from the cluster CA whose validity
// ended a day ago.
// Action: handshake, read the verdict.
// Pass: refused with a "certificate expired" alert; hv-b logs
// "certificate verify failed: certificate has expired"; nothing reaches bench.
TEST_F(Tunnel, RefusesExpiredCertificate) {
  start_pair();
  TlsProbe probe(probe_as(issue("hv-a", 1, -2 * 86400)));
  auto r = probe.connect(pair_->b.port);
  EXPECT_FALSE(r.verdict) << "verdict " << *r.verdict;
  EXPECT_TRUE(contains(r.error, "certificate expired"));
  expect_refused_with(r, ": TLS handshake: certificate verify failed: certificate has expired");
}

// Setup: pair.
// Action: send plaintext to hv-b's TLS port: the first bytes of a QEMU
// migration stream (QEVM magic, version 3), binary garbage, and an HTTP
// request; collect what comes back.
// Pass: each connection is closed promptly with nothing but TLS alert
// records sent back (no echo, no banner); hv-b logs each with OpenSSL's
// reason ("wrong version number" / "http request"); nothing reaches bench.
TEST_F(Tunnel, RefusesPlaintextOnTlsPort) {
  start_pair();
  struct Case {
    std::string what, bytes, reason;
  };
  const Case cases[] = {
      {"QEMU migration stream", "QEVM\0\0\0\3"s, ": TLS handshake: wrong version number"},
      {"garbage", "\x7f\x01\xfe\x00garbage\r\n"s, ": TLS handshake: wrong version number"},
      {"HTTP request", "GET / HTTP/1.1\r\nHost: hv-b\r\n\r\n"s, ": TLS handshake: http request"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto r = send_plaintext(pair_->b.port, c.bytes, kPrompt);
    ASSERT_NE(r.local_port, 0) << r.error;
    EXPECT_TRUE(r.closed) << "hv-b kept the connection open";
    EXPECT_TRUE(only_tls_alerts(r.reply))
        << "hv-b answered with " << r.reply.size() << " bytes that are not TLS alerts";
    EXPECT_TRUE(contains(refusal_of(r.local_port), c.reason)) << pair_->logs();
  }
  expect_target_untouched();
}

// Setup: pair; a probe with hv-a's valid certificate that speaks TLS 1.2 only.
// Action: handshake.
// Pass: the handshake fails with a "protocol version" alert (hv-b is
// TLS 1.3 only by default); hv-b logs "unsupported protocol"; nothing
// reaches bench.
TEST_F(Tunnel, RefusesTls12OnlyClient) {
  start_pair();
  TlsProbeOptions o = probe_as(issue("hv-a"));
  o.min_version = TLS1_2_VERSION;
  o.max_version = TLS1_2_VERSION;
  TlsProbe probe(o);
  auto r = probe.connect(pair_->b.port);
  EXPECT_FALSE(r.handshake_ok);
  EXPECT_TRUE(contains(r.error, "protocol version"));
  expect_refused_with(r, ": TLS handshake: unsupported protocol");
}

// Setup: pair; a probe with hv-a's valid certificate asking for channel
// "nosuch", which hv-b has no target for.
// Action: handshake, read the verdict.
// Pass: verdict 'C' (unknown channel); hv-b logs the peer, the channel
// and "unknown channel"; nothing reaches bench.
TEST_F(Tunnel, RefusesUnknownChannel) {
  start_pair();
  TlsProbeOptions o = probe_as(issue("hv-a"));
  o.alpn = {"xmig/nosuch"};
  TlsProbe probe(o);
  auto r = probe.connect(pair_->b.port);
  ASSERT_TRUE(r.handshake_ok) << r.error;
  EXPECT_EQ(r.alpn, "xmig/nosuch");
  EXPECT_EQ(r.verdict, std::optional<char>('C')) << r.error;
  expect_refused_with(r, " peer hv-a channel nosuch: unknown channel \"nosuch\"");
}

// Setup: pair; probes with hv-a's valid certificate that name no xmig channel:
// one offers only ALPN "h2", one offers no ALPN at all.
// Action: handshake, read the verdict.
// Pass: "h2" fails the handshake with a "no application protocol"
// alert, logged as such; without ALPN the channel is empty and refused with
// verdict 'C' as unknown channel ""; nothing reaches bench.
TEST_F(Tunnel, RefusesClientNamingNoXmigChannel) {
  start_pair();
  {
    TlsProbeOptions o = probe_as(issue("hv-a"));
    o.alpn = {"h2"};
    TlsProbe probe(o);
    auto r = probe.connect(pair_->b.port);
    EXPECT_FALSE(r.handshake_ok);
    EXPECT_TRUE(contains(r.error, "no application protocol"));
    expect_refused_with(r, ": TLS handshake: no application protocol");
  }
  {
    TlsProbeOptions o = probe_as(issue("hv-a"));
    o.alpn = {};
    TlsProbe probe(o);
    auto r = probe.connect(pair_->b.port);
    ASSERT_TRUE(r.handshake_ok) << r.error;
    EXPECT_EQ(r.verdict, std::optional<char>('C')) << r.error;
    expect_refused_with(r,
                        " peer hv-a channel : the client named no channel (ALPN xmig/<channel>)");
  }
}

// Positive control, so that the refusals above can fail. Setup: pair; a probe
// with hv-a's own certificate and key files, verifying hv-b, ALPN xmig/bench.
// Action: handshake, read the verdict, write bytes, close.
// Pass: TLS 1.3, verdict 'A'; the bench listener gets exactly one
// connection carrying exactly the bytes written; hv-b logs no refusal.
TEST_F(Tunnel, AcceptsValidPeerAndDeliversToTarget) {
  start_pair();
  TlsProbeOptions o;
  o.cert_file = (pair_->a.pki / certs::kClientCertFile).string();
  o.key_file = (pair_->a.pki / certs::kClientKeyFile).string();
  o.ca_file = (pair_->a.pki / certs::kCaCertFile).string();
  o.server_name = "hv-b";
  o.alpn = {"xmig/bench"};
  TlsProbe probe(o);
  auto r = probe.connect(pair_->b.port);
  ASSERT_TRUE(r.handshake_ok) << r.error;
  EXPECT_EQ(r.version, "TLSv1.3");
  ASSERT_EQ(r.verdict, std::optional<char>('A')) << r.error << "\n" << pair_->logs();

  Fd target = bench_.accept(kPrompt);
  ASSERT_TRUE(target) << pair_->logs();
  set_timeouts(target.get(), kPrompt);
  const std::string payload = "QEVM\0\0\0\3 through the tunnel"s;
  EXPECT_EQ(probe.write(payload), "");
  probe.close();
  Hashed got = recv_stream(target.get());
  EXPECT_EQ(got.error, "");
  EXPECT_EQ(got.bytes, payload.size());
  EXPECT_EQ(got.sha256,
            sha256_hex({reinterpret_cast<const uint8_t*>(payload.data()), payload.size()}));
  EXPECT_FALSE(bench_.accept(kQuiet)) << "a second connection reached the target";
  EXPECT_EQ(count_in_log(pair_->b.log, "refused:"), 0) << pair_->logs();
}

// The entry side refuses a server that is not the peer it dialled.
// Setup: pair whose hv-b process is made into "hv-c": same port (so hv-a's
// [[peer]] "hv-b" points at it), a valid certificate for hv-c from the same
// CA, its qemu target = the test's listener.
// Action: a local client connects to hv-a's entry <run_dir>/hv-b/qemu.sock and
// writes the start of a migration stream.
// Pass: the client sees EOF or a reset well before any timeout; hv-a logs
// `refused: entry ... -> peer hv-b channel qemu:` with a hostname mismatch
// that names what the server presented (hv-c) and what was expected (hv-b);
// hv-c opens nothing and its target never gets a connection.
TEST_F(Tunnel, ClientRefusesServerNamingAnotherPeer) {
  TunnelPairOptions opts;
  opts.start = false;
  opts.b_targets["qemu"] = bench_.endpoint();
  pair_ = std::make_unique<TunnelPair>(opts);
  make_node_pki(pair_->b.pki, pair_->ca, "hv-c");
  std::string config = read_file(pair_->b.config);
  ASSERT_EQ(config.rfind("name = \"hv-b\"\n", 0), 0u) << config;
  write_file(pair_->b.config, "name = \"hv-c\"\n" + config.substr(config.find('\n') + 1));
  pair_->start(pair_->a);
  pair_->start(pair_->b);

  Fd client = connect_unix(pair_->entry("qemu").string());
  const std::string stream_start = "QEVM\0\0\0\3"s;
  ::send(client.get(), stream_start.data(), stream_start.size(), MSG_NOSIGNAL);
  ASSERT_TRUE(wait_readable(client.get(), kPrompt)) << "no EOF/reset\n" << pair_->logs();
  char byte;
  ssize_t n = ::recv(client.get(), &byte, 1, 0);
  EXPECT_LE(n, 0) << "the entry delivered data from a server that is not hv-b";

  std::string line = wait_for_line(pair_->a.log, "refused: entry ");
  EXPECT_TRUE(contains(line,
                       " -> peer hv-b channel qemu: TLS handshake: certificate verify "
                       "failed: hostname mismatch: the server's certificate names hv-c, not "
                       "hv-b (is the [[peer]] address right?)"))
      << pair_->logs();
  expect_target_untouched();
}

}  // namespace
}  // namespace xmig::test
