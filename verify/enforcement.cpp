// Enforcement: what the peer must refuse. Each probe knocks on the peer's TLS
// port with one thing wrong; the check passes only when the peer refuses it.
// A refusal proves something only if the same peer accepts this host's valid
// identity (the handshake check): otherwise a PASS becomes a WARN.
#include <openssl/rand.h>

#include <cstdio>

#include "certs/certs.hpp"
#include "tunnel/protocol.hpp"
#include "verify/live_detail.hpp"

namespace xmig::verify::detail {

namespace {

const char* kGroup = "enforcement";

std::string hex_prefix(const std::string& bytes, size_t n = 16) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < bytes.size() && i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(bytes[i]));
    out += buf;
  }
  return out + (bytes.size() > n ? "..." : "");
}

// Records a refusal as PASS (WARN without the control), an acceptance as FAIL.
void judge_refusal(LiveContext& c, const std::string& check, const TlsSession& s,
                   const std::string& accepted_means, const std::string& fix) {
  if (!s.connected) {
    c.report.add(kGroup, check, Status::Fail, "could not probe: " + s.error,
                 "make the peer's TLS port reachable from this host");
    return;
  }
  bool accepted = s.handshake_ok && s.verdict && *s.verdict == 'A';
  if (s.handshake_ok && s.not_a_verdict) {
    c.report.add(kGroup, check, Status::Fail,
                 accepted_means +
                     ": it completed the handshake and kept the connection open, "
                     "answering with data instead of a verdict (" +
                     s.error + ")",
                 fix);
    return;
  }
  if (s.handshake_ok && s.verdict_timed_out) {
    // Neither a verdict nor an alert: a TLS terminator that took the client
    // and is forwarding it somewhere, or waiting for it to speak.
    c.report.add(kGroup, check, Status::Fail,
                 accepted_means + ": it completed the handshake and kept the connection open " +
                     std::to_string(c.opts.timeout.count()) + " ms without a verdict or alert",
                 fix);
    return;
  }
  if (accepted) {
    c.report.add(kGroup, check, Status::Fail,
                 accepted_means + " (handshake " + s.version + ", verdict 'A')", fix);
    return;
  }
  std::string how = s.verdict ? "verdict '" + std::string(1, *s.verdict) + "'" : s.error;
  if (c.control_ok)
    c.report.add(kGroup, check, Status::Pass, "refused: " + how);
  else
    c.report.add(kGroup, check, Status::Warn,
                 "refused (" + how +
                     "), but this host's valid handshake failed too, so the "
                     "refusal proves nothing",
                 "fix the handshake first");
}

TlsSession probe(LiveContext& c, const ProbeSpec& spec) {
  return open_session(c.address, probe_session(spec), c.opts.timeout);
}

std::string random_channel() {
  unsigned char r[4] = {1, 2, 3, 4};
  RAND_bytes(r, sizeof r);
  char buf[32];
  std::snprintf(buf, sizeof buf, "no-such-channel-%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
  return buf;
}

}  // namespace

void check_enforcement(LiveContext& c) {
  if (!c.reachable) {
    c.report.add(kGroup, "refusals", Status::Fail,
                 "not probed: the peer's TLS port " + c.address.str() + " is unreachable",
                 "see the mutual TLS finding");
    return;
  }
  const std::string alpn = "xmig/" + std::string(tunnel::kVerifyChannel);
  const std::string& me = c.config.name;
  const std::string others_fix =
      "whatever listens on " + c.address.str() +
      " must require a client certificate from the cluster CA: run xmig-tunnel there, not a "
      "TLS terminator that verifies nothing";

  // 1. No client certificate at all.
  judge_refusal(c, "no client certificate", probe(c, {.alpn = {alpn}}),
                "the peer accepted a client without a certificate", others_fix);

  // 2. A self-signed certificate naming this host.
  try {
    certs::Pem self_signed = certs::make_ca({.name = me, .days = 1});
    judge_refusal(
        c, "self-signed certificate",
        probe(c, {.cert_pem = self_signed.cert, .key_pem = self_signed.key, .alpn = {alpn}}),
        "the peer accepted a self-signed certificate for " + me, others_fix);
  } catch (const std::exception& e) {
    c.report.add(kGroup, "self-signed certificate", Status::Fail,
                 std::string("could not make the probe's certificate: ") + e.what());
  }

  // 3. A certificate for this very host from another (throwaway) CA.
  try {
    certs::Pem other_ca = certs::make_ca({.name = "xmig-verify throwaway CA", .days = 1});
    certs::Pem forged = certs::issue(other_ca, {.name = me, .days = 1});
    judge_refusal(c, "certificate of another CA",
                  probe(c, {.cert_pem = forged.cert, .key_pem = forged.key, .alpn = {alpn}}),
                  "the peer accepted a certificate for " + me + " issued by another CA",
                  others_fix);
  } catch (const std::exception& e) {
    c.report.add(kGroup, "certificate of another CA", Status::Fail,
                 std::string("could not make the probe's certificate: ") + e.what());
  }

  // 4. Plaintext bytes, as a misdirected client sends them. (Not a QEMU
  // header: a capture taken during this check would rightly flag one.)
  {
    std::string bytes = "XMIG-VERIFY PLAINTEXT PROBE\r\n\r\nxmig-verify plaintext probe\n";
    PlaintextReply r = send_plaintext(c.address, bytes, c.opts.timeout);
    const std::string check = "plaintext bytes";
    if (!r.error.empty()) {
      c.report.add(kGroup, check, Status::Fail, "could not probe: " + r.error,
                   "make the peer's TLS port reachable from this host");
    } else if (!only_tls_alerts(r.reply)) {
      bool echoed = r.reply.find("xmig-verify plaintext probe") != std::string::npos;
      c.report.add(kGroup, check, Status::Fail,
                   std::string("the peer answered plaintext with ") +
                       std::to_string(r.reply.size()) + " bytes that are not TLS alerts" +
                       (echoed ? " (it echoed the probe: a plaintext relay?)" : "") + ": " +
                       hex_prefix(r.reply),
                   "the peer's port must be xmig-tunnel's TLS listener, not a plaintext relay");
    } else if (!r.closed) {
      c.report.add(kGroup, check, Status::Fail,
                   "the peer kept a plaintext connection open for " +
                       std::to_string(c.opts.timeout.count()) +
                       " ms without a TLS alert (a plaintext forwarder?)",
                   "the peer's port must be xmig-tunnel's TLS listener");
    } else {
      c.report.add(
          kGroup, check, Status::Pass,
          r.reply.empty() ? "refused: closed without a reply" : "refused: closed with a TLS alert");
    }
  }

  // 5. TLS 1.2 with this host's valid identity (the one it dials with), when
  // the config requires 1.3.
  std::string cert_pem, key_pem;
  try {
    cert_pem = certs::read_file(c.config.tls.client_cert);
    key_pem = certs::read_file(c.config.tls.client_key);
  } catch (const std::exception& e) {
    c.report.add(kGroup, "identity", Status::Fail, e.what());
    return;
  }
  if (c.config.tls.min_version == "1.3") {
    TlsSession s = probe(c, {.cert_pem = cert_pem,
                             .key_pem = key_pem,
                             .alpn = {alpn},
                             .min_version = TLS1_2_VERSION,
                             .max_version = TLS1_2_VERSION});
    if (s.connected && s.handshake_ok) {
      c.report.add(kGroup, "TLS 1.2", Status::Fail,
                   "the peer accepted TLS 1.2 (" + s.version + ", " + s.cipher +
                       ") although this host requires 1.3",
                   "set [tls] min_version = \"1.3\" on " + c.opts.peer);
    } else {
      judge_refusal(c, "TLS 1.2", s, "", "");
    }
  } else {
    c.report.add(kGroup, "TLS 1.2", Status::Warn,
                 "not probed: [tls] min_version = \"1.2\" here, so TLS 1.2 is allowed",
                 "set min_version = \"1.3\" on every host once all of them support it");
  }

  // 6. An unknown channel, with this host's valid identity: verdict 'C'.
  {
    std::string channel = random_channel();
    TlsSession s =
        probe(c, {.cert_pem = cert_pem, .key_pem = key_pem, .alpn = {"xmig/" + channel}});
    const std::string check = "unknown channel";
    if (!s.connected) {
      c.report.add(kGroup, check, Status::Fail, "could not probe: " + s.error);
    } else if (s.verdict && *s.verdict == 'C') {
      c.report.add(kGroup, check, c.control_ok ? Status::Pass : Status::Warn,
                   "refused: verdict 'C' for channel " + channel);
    } else if (s.verdict && *s.verdict == 'A') {
      c.report.add(
          kGroup, check, Status::Fail,
          "the peer accepted channel " + channel + ", for which it has no target",
          "the peer must refuse channels it has no [targets] entry for (xmig-tunnel does)");
    } else {
      c.report.add(kGroup, check, Status::Fail,
                   "expected verdict 'C' for channel " + channel + ", got " +
                       (s.verdict ? "verdict '" + std::string(1, *s.verdict) + "'" : s.error),
                   "run xmig-tunnel on the peer");
    }
  }
}

}  // namespace xmig::verify::detail
