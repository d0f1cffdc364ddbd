// xmig-verify's live check, run as the real binary (as root: capture on lo).
//
// The positive case is two real tunnels (TunnelPair) where hv-a has a
// [[route]] for channel "verify": every check must pass. The negative cases
// point hv-a's config at a misconfigured peer on loopback, one fault each,
// and the check matching that fault must FAIL with the fault's reason while
// the checks that do not concern it still pass (so a test cannot pass because
// everything fails).
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/tunnel_pair.hpp"
#include "tests/verify/helpers.hpp"

namespace xmig::test {

using namespace harness;

namespace {

::testing::AssertionResult contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << needle << "\" not found in: " << text;
}

// The status of `check` in the JSON output ("" when absent).
std::string status_of(const VerifyRun& r, const std::string& check) {
  auto f = find_check(r.output, check);
  return f ? f->status : "";
}
std::string reason_of(const VerifyRun& r, const std::string& check) {
  auto f = find_check(r.output, check);
  return f ? f->reason : "";
}

// A pair whose tunnels are not started: its configs and certificates serve
// the fake peers.
TunnelPairOptions unstarted() {
  TunnelPairOptions o;
  o.start = false;
  return o;
}

class VerifyLive : public ::testing::Test {
 protected:
  // hv-a's config, with hv-b's address replaced by 127.0.0.1:port (a fake peer).
  fs::path config_pointing_at(uint16_t port) {
    std::string text = read_file(pair_->a.config);
    std::string from = "127.0.0.1:" + std::to_string(pair_->b.port);
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << text;
    text.replace(at, from.size(), "127.0.0.1:" + std::to_string(port));
    fs::path p = pair_->temp.path() / "fake-peer.toml";
    write_file(p, text);
    return p;
  }

  VerifyRun verify(const fs::path& config) {
    return run_verify({"--config", config.string(), "--peer", "hv-b", "--json", "--warn-days", "7",
                       "--timeout-ms", "3000", "--canary-bytes", "262144"},
                      pair_->temp.path());
  }

  FakePeerOptions fake_with_b_identity() {
    FakePeerOptions o;
    o.cert_file = (pair_->b.pki / "server-cert.pem").string();
    o.key_file = (pair_->b.pki / "server-key.pem").string();
    o.ca_file = (pair_->b.pki / "ca-cert.pem").string();
    return o;
  }

  std::unique_ptr<TunnelPair> pair_;
};

// Setup: hv-a and hv-b (real tunnels, fresh CA); hv-a has a [[route]]
// unix:<run>/verify.sock -> hv-b channel verify.
// Action: xmig-verify --config hv-a.toml --peer hv-b --json.
// Pass: exit 0 and every finding PASS, in particular the canary came
// back through the route, the capture on lo saw it cross as TLS with high
// entropy and no canary bytes, and the data path names the mode hv-a used.
TEST_F(VerifyLive, LiveCheckPassesAgainstTunnelPair) {
  ASSERT_EQ(geteuid(), 0u) << "the wire check captures on lo: run as root";
  TunnelPairOptions opts;
  TempDir run("xmig-verify-route");
  std::string route = "unix:" + (run.path() / "verify.sock").string();
  opts.a_routes[route] = "verify";
  pair_ = std::make_unique<TunnelPair>(opts);

  VerifyRun r = verify(pair_->a.config);
  EXPECT_EQ(r.exit_code, 0) << r.output << pair_->logs();
  for (const auto& [check, status] : all_checks(r.output))
    EXPECT_EQ(status, "pass") << check << "\n" << r.output;
  for (const char* check :
       {"mutual TLS", "TLS version", "AEAD cipher suite", "peer certificate",
        "no client certificate", "self-signed certificate", "certificate of another CA",
        "plaintext bytes", "TLS 1.2", "unknown channel", "canary round trip", "capture",
        "no canary bytes on the wire", "TLS records", "entropy", "mode"})
    EXPECT_EQ(status_of(r, check), "pass") << check << "\n" << r.output;
  EXPECT_TRUE(contains(reason_of(r, "canary round trip"), "through the local tunnel"));
  // The mode reported is the one hv-a logged when the canary connection closed.
  std::string mode;
  {
    std::string log = read_file(pair_->a.log);
    size_t at = log.find("close: dir=out peer=hv-b channel=verify ");
    ASSERT_NE(at, std::string::npos) << log;
    size_t m = log.find(" mode=", at);
    ASSERT_NE(m, std::string::npos) << log;
    mode = log.substr(m + 6, log.find(' ', m + 6) - (m + 6));
  }
  EXPECT_TRUE(contains(reason_of(r, "mode"), "carried the canary in mode " + mode + " "));
  EXPECT_TRUE(contains(reason_of(r, "TLS records"), "TLS 1.3"));
  EXPECT_TRUE(contains(reason_of(r, "TLS version"), "TLSv1.3"));
  // hv-b refused each enforcement probe itself (its log says so).
  EXPECT_GE(count_in_log(pair_->b.log, "refused:"), 5) << pair_->logs();
}

// Setup: a tunnel pair without a verify route on hv-a.
// Action: xmig-verify against hv-b.
// Pass: the canary still crosses (directly, with hv-a's certificate)
// and the output says so: the round trip and the data path are WARN, not
// PASS, and nothing FAILs (exit 0).
TEST_F(VerifyLive, WithoutRouteSaysItConnectedDirectly) {
  pair_ = std::make_unique<TunnelPair>();
  VerifyRun r = verify(pair_->a.config);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(status_of(r, "canary round trip"), "warn") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "canary round trip"), "directly to hv-b"));
  EXPECT_EQ(status_of(r, "mode"), "warn") << r.output;
  EXPECT_EQ(status_of(r, "no canary bytes on the wire"), "pass") << r.output;
}

// Setup: hv-a's config points at a plaintext echo relay instead of hv-b.
// Action: xmig-verify.
// Pass: exit 1; "mutual TLS" FAILs; "plaintext bytes" FAILs saying the
// peer echoed the probe; the canary does not come back (FAIL).
TEST_F(VerifyLive, PlaintextRelayFailsHandshakePlaintextAndWire) {
  pair_ = std::make_unique<TunnelPair>(unstarted());
  EchoRelay relay;
  VerifyRun r = verify(config_pointing_at(relay.port()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(status_of(r, "mutual TLS"), "fail") << r.output;
  EXPECT_EQ(status_of(r, "plaintext bytes"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "plaintext bytes"), "echoed the probe"));
  EXPECT_EQ(status_of(r, "canary round trip"), "fail") << r.output;
}

// Setup: a TLS server with hv-b's genuine certificate that verifies no
// client and answers 'A' to every channel.
// Action: xmig-verify.
// Pass: exit 1; the handshake checks PASS (it is hv-b's certificate);
// "no client certificate", "self-signed certificate", "certificate of
// another CA" and "unknown channel" FAIL, each saying what was accepted;
// "plaintext bytes" and "TLS 1.2" still PASS (it is TLS 1.3 only).
TEST_F(VerifyLive, LenientTlsPeerFailsEveryClientIdentityCheck) {
  pair_ = std::make_unique<TunnelPair>(unstarted());
  FakePeerOptions o = fake_with_b_identity();
  o.verify_clients = false;
  o.accept_any_channel = true;
  FakeTlsPeer fake(o);
  VerifyRun r = verify(config_pointing_at(fake.port()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(status_of(r, "mutual TLS"), "pass") << r.output;
  EXPECT_EQ(status_of(r, "peer certificate"), "pass") << r.output;
  EXPECT_EQ(status_of(r, "no client certificate"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "no client certificate"),
                       "accepted a client without a "
                       "certificate"));
  EXPECT_EQ(status_of(r, "self-signed certificate"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "self-signed certificate"), "accepted a self-signed"));
  EXPECT_EQ(status_of(r, "certificate of another CA"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "certificate of another CA"), "issued by another CA"));
  EXPECT_EQ(status_of(r, "unknown channel"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "unknown channel"), "accepted channel"));
  EXPECT_EQ(status_of(r, "plaintext bytes"), "pass") << r.output;
  EXPECT_EQ(status_of(r, "TLS 1.2"), "pass") << r.output;
}

// Setup: a TLS server with hv-b's certificate that verifies no client and,
// like a plain TLS terminator forwarding to QEMU, never sends a verdict:
// it reads what the client sends and echoes it.
// Action: xmig-verify (probe timeout 1.5 s).
// Pass: exit 1; "mutual TLS" FAILs as "sent no verdict"; the client
// identity probes FAIL as "kept the connection open", not WARN or PASS as
// if they had been refused.
TEST_F(VerifyLive, SilentTlsTerminatorFailsInsteadOfLookingLikeRefusals) {
  pair_ = std::make_unique<TunnelPair>(unstarted());
  FakePeerOptions o = fake_with_b_identity();
  o.verify_clients = false;
  o.accept_any_channel = true;
  o.silent = true;
  FakeTlsPeer fake(o);
  VerifyRun r = run_verify({"--config", config_pointing_at(fake.port()).string(), "--peer", "hv-b",
                            "--json", "--timeout-ms", "1500", "--canary-bytes", "65536"},
                           pair_->temp.path());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(status_of(r, "mutual TLS"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "mutual TLS"), "sent no verdict"));
  for (const char* check :
       {"no client certificate", "self-signed certificate", "certificate of another CA"}) {
    EXPECT_EQ(status_of(r, check), "fail") << check << "\n" << r.output;
    EXPECT_TRUE(contains(reason_of(r, check), "kept the connection open")) << check;
  }
}

// Setup: a TLS server with hv-b's certificate that checks clients against
// the cluster CA like the tunnel does, but allows TLS 1.2.
// Action: xmig-verify (hv-a's config requires TLS 1.3).
// Pass: exit 1; "TLS 1.2" FAILs with "accepted TLS 1.2"; the other
// enforcement checks PASS.
TEST_F(VerifyLive, PeerAllowingTls12FailsOnlyTheTls12Check) {
  pair_ = std::make_unique<TunnelPair>(unstarted());
  FakePeerOptions o = fake_with_b_identity();
  o.allow_tls12 = true;
  FakeTlsPeer fake(o);
  VerifyRun r = verify(config_pointing_at(fake.port()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(status_of(r, "TLS 1.2"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "TLS 1.2"), "accepted TLS 1.2"));
  for (const char* check : {"mutual TLS", "no client certificate", "self-signed certificate",
                            "certificate of another CA", "plaintext bytes", "unknown channel"})
    EXPECT_EQ(status_of(r, check), "pass") << check << "\n" << r.output;
}

// Setup: a TLS server presenting hv-a's certificate (genuine, same CA, but
// naming hv-a) where hv-b should be.
// Action: xmig-verify --peer hv-b.
// Pass: exit 1; "mutual TLS" and "peer certificate" FAIL, the latter
// with OpenSSL's "hostname mismatch".
TEST_F(VerifyLive, PeerPresentingAnotherHostsCertificateFailsPeerCertificate) {
  pair_ = std::make_unique<TunnelPair>(unstarted());
  FakePeerOptions o = fake_with_b_identity();
  o.cert_file = (pair_->a.pki / "server-cert.pem").string();
  o.key_file = (pair_->a.pki / "server-key.pem").string();
  FakeTlsPeer fake(o);
  VerifyRun r = verify(config_pointing_at(fake.port()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(status_of(r, "mutual TLS"), "fail") << r.output;
  EXPECT_EQ(status_of(r, "peer certificate"), "fail") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "peer certificate"), "hostname mismatch"));
}

// Setup: the pair's certificates are valid for 30 days; a strict fake peer
// with hv-b's certificate (nothing else wrong).
// Action: xmig-verify with the default --warn-days (30), then with 7.
// Pass: with 30, "local certificate expiry" and "peer certificate
// expiry" WARN ("expires in 29 days") and the exit is still 0 unless
// something failed; with 7 both PASS.
TEST_F(VerifyLive, WarnsWhenCertificatesExpireWithinWarnDays) {
  pair_ = std::make_unique<TunnelPair>(unstarted());
  FakeTlsPeer fake(fake_with_b_identity());
  fs::path config = config_pointing_at(fake.port());
  VerifyRun r = run_verify(
      {"--config", config.string(), "--peer", "hv-b", "--json", "--canary-bytes", "65536"},
      pair_->temp.path());
  EXPECT_EQ(status_of(r, "local certificate expiry"), "warn") << r.output;
  EXPECT_TRUE(contains(reason_of(r, "local certificate expiry"), "expires in 29 days"));
  EXPECT_EQ(status_of(r, "peer certificate expiry"), "warn") << r.output;
  VerifyRun relaxed = verify(config);
  EXPECT_EQ(status_of(relaxed, "local certificate expiry"), "pass") << relaxed.output;
  EXPECT_EQ(status_of(relaxed, "peer certificate expiry"), "pass") << relaxed.output;
}

// Setup: hv-a's config has a verify [[route]] on a UNIX socket, but what
// listens there is a plaintext forwarder (a hand-made "tunnel") to an echo
// relay at the peer's address; a second run wraps the plaintext in TLS
// record headers, so the bytes look like TLS framing.
// Action: xmig-verify, once per forwarder.
// Pass: the canary comes back intact both times (the round trip alone
// proves nothing), yet "no canary bytes on the wire" FAILs with the place
// it was found; without framing "TLS records" FAILs; with framing
// "entropy" FAILs as low entropy.
TEST_F(VerifyLive, WireCheckCatchesPlaintextForwarderPosingAsTunnel) {
  pair_ = std::make_unique<TunnelPair>(unstarted());
  EchoRelay relay;
  fs::path sock = pair_->temp.path() / "verify.sock";
  fs::path config = config_pointing_at(relay.port());
  write_file(config, read_file(config) + "\n[[route]]\nlisten = \"unix:" + sock.string() +
                         "\"\npeer = \"hv-b\"\nchannel = \"verify\"\n");
  for (bool framing : {false, true}) {
    SCOPED_TRACE(framing ? "TLS-framed plaintext" : "plaintext");
    PlaintextForwarder forwarder(sock, relay.port(), framing);
    VerifyRun r = verify(config);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(status_of(r, "canary round trip"), "pass") << r.output;
    EXPECT_EQ(status_of(r, "no canary bytes on the wire"), "fail") << r.output;
    EXPECT_TRUE(contains(reason_of(r, "no canary bytes on the wire"), "canary plaintext found in"));
    if (!framing) {
      EXPECT_EQ(status_of(r, "TLS records"), "fail") << r.output;
      EXPECT_TRUE(contains(reason_of(r, "TLS records"), "not TLS records"));
    } else {
      // (TLS records may still fail here: the relay also answers the
      // enforcement probes in plaintext, and their ends can reach the capture.)
      EXPECT_EQ(status_of(r, "entropy"), "fail") << r.output;
      EXPECT_TRUE(contains(reason_of(r, "entropy"), "low entropy"));
    }
  }
}

// Setup: a tunnel pair with the verify route; xmig-verify runs without
// CAP_NET_RAW and CAP_NET_ADMIN (setpriv drops them from every set).
// Action: xmig-verify.
// Pass: exit 1 and the "capture" finding FAILs naming the missing
// permission: an impossible capture is never skipped silently.
TEST_F(VerifyLive, WireCheckFailsWhenCaptureIsNotPermitted) {
  TunnelPairOptions opts;
  TempDir run("xmig-verify-route");
  opts.a_routes["unix:" + (run.path() / "verify.sock").string()] = "verify";
  pair_ = std::make_unique<TunnelPair>(opts);
  fs::path out = pair_->temp.path() / "nocap.out";
  int code = xmig::harness::run(
      {"/usr/bin/setpriv", "--inh-caps=-net_raw,-net_admin", "--bounding-set=-net_raw,-net_admin",
       tool("xmig-verify"), "--config", pair_->a.config.string(), "--peer", "hv-b", "--json",
       "--canary-bytes", "65536"},
      out.string(), 120s);
  std::string output = read_file(out);
  EXPECT_EQ(code, 1) << output;
  auto f = find_check(output, "capture");
  ASSERT_TRUE(f) << output;
  EXPECT_EQ(f->status, "fail") << output;
  EXPECT_TRUE(contains(f->reason, "no permission to capture"));
}

}  // namespace

// Setup: hv-a and hv-b as in LiveCheckPassesAgainstTunnelPair; hv-a's
// config has a second peer, hv-c, whose address nothing listens on.
// Action: xmig-verify --config hv-a.toml --all-peers, as text, --json and
// --prometheus.
// Pass: exit 1 each time; the table has a row per peer, hv-b PASS in
// every column with its mode and certificate days, hv-c FAIL with "-" for
// what was not measured, hv-c's failing findings below with their fix, and
// "result: FAIL (2 peers, 1 failed)"; the JSON and the metrics say the same,
// and promtool accepts the metrics.
TEST_F(VerifyLive, AllPeersTablesEveryPeerAndFailsForTheOneThatIsDown) {
  ASSERT_EQ(geteuid(), 0u) << "the wire check captures on lo: run as root";
  TunnelPairOptions opts;
  TempDir run("xmig-verify-route");
  opts.a_routes["unix:" + (run.path() / "verify.sock").string()] = "verify";
  opts.a_extra =
      "[[peer]]\nname = \"hv-c\"\naddress = \"127.0.0.1:" + std::to_string(free_port()) + "\"\n";
  pair_ = std::make_unique<TunnelPair>(opts);
  const std::vector<std::string> base = {
      "--config", pair_->a.config.string(), "--all-peers", "--warn-days", "7", "--timeout-ms",
      "3000",     "--canary-bytes",         "262144"};
  auto with = [&](const char* extra) {
    std::vector<std::string> args = base;
    if (extra) args.push_back(extra);
    return run_verify(args, pair_->temp.path());
  };

  VerifyRun text = with(nullptr);
  EXPECT_EQ(text.exit_code, 1) << text.output;
  EXPECT_TRUE(contains(text.output, "peer  handshake  enforcement  wire  mode"));
  EXPECT_TRUE(
      contains(text.output, "hv-b  PASS       PASS         PASS  userspace  29         PASS"))
      << pair_->logs();
  // Unreachable: nothing could be probed or carried either, and nothing measured.
  EXPECT_TRUE(
      contains(text.output, "hv-c  FAIL       FAIL         FAIL  -          -          FAIL"));
  EXPECT_TRUE(contains(text.output, "peer hv-c: what did not pass"));
  EXPECT_TRUE(contains(text.output, "fix:"));
  EXPECT_TRUE(contains(text.output, "result: FAIL (2 peers, 1 failed)"));

  VerifyRun json = with("--json");
  EXPECT_EQ(json.exit_code, 1) << json.output;
  EXPECT_TRUE(contains(json.output,
                       "\"peer\":\"hv-b\",\"status\":\"pass\",\"handshake\":\"pass\","
                       "\"enforcement\":\"pass\",\"wire\":\"pass\",\"mode\":\"userspace\","
                       "\"certificate_days_left\":29"));
  EXPECT_TRUE(contains(json.output,
                       "\"peer\":\"hv-c\",\"status\":\"fail\",\"handshake\":\"fail\","
                       "\"enforcement\":\"fail\",\"wire\":\"fail\",\"mode\":\"-\","
                       "\"certificate_days_left\":null"));

  VerifyRun metrics = with("--prometheus");
  EXPECT_EQ(metrics.exit_code, 1) << metrics.output;
  EXPECT_TRUE(contains(metrics.output, "xmig_verify_peer_status{peer=\"hv-b\",group=\"all\"} 0\n"));
  EXPECT_TRUE(contains(metrics.output, "xmig_verify_peer_status{peer=\"hv-c\",group=\"all\"} 2\n"));
  EXPECT_TRUE(
      contains(metrics.output, "xmig_verify_peer_certificate_expiry_seconds{peer=\"hv-b\"} 25"));
  EXPECT_TRUE(contains(metrics.output, "xmig_verify_last_run_timestamp_seconds "));
  const fs::path prom = pair_->temp.path() / "xmig.prom";
  write_file(prom, metrics.output);
  const fs::path lint = pair_->temp.path() / "promtool.log";
  EXPECT_EQ(
      harness::run({"/bin/sh", "-c", "promtool check metrics < " + prom.string()}, lint.string()),
      0)
      << read_file(lint) << metrics.output;
}

}  // namespace xmig::test
