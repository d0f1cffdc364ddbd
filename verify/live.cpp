// The live check, in order: config, handshake, enforcement, wire, data path,
// interception (with [intercept]).
#include <chrono>
#include <cmath>
#include <thread>

#include "tunnel/protocol.hpp"
#include "verify/live_detail.hpp"
#include "verify/status_client.hpp"

namespace xmig::verify {

namespace {

using detail::CanaryRun;
using detail::LiveContext;
using Clock = std::chrono::system_clock;

int64_t days_until(Clock::time_point t) {
  return static_cast<int64_t>(
      std::floor(std::chrono::duration<double>(t - Clock::now()).count() / 86400.0));
}

}  // namespace

namespace detail {

bool check_config(LiveContext& c) {
  const auto& o = c.opts;
  try {
    c.config = tunnel::load_config(o.config);
  } catch (const tunnel::ConfigError& e) {
    std::string all;
    for (const auto& p : e.problems()) all += (all.empty() ? "" : "; ") + p;
    c.report.add("config", "load", Status::Fail, all, "correct the config file");
    return false;
  } catch (const std::exception& e) {
    c.report.add("config", "load", Status::Fail, e.what(), "correct the config file");
    return false;
  }
  c.peer = c.config.find_peer(o.peer);
  if (!c.peer) {
    std::string names;
    for (const auto& p : c.config.peers) names += (names.empty() ? "" : ", ") + p.name;
    c.report.add("config", "peer", Status::Fail,
                 "\"" + o.peer + "\" is not a [[peer]] in " + o.config +
                     " (peers: " + (names.empty() ? "none" : names) + ")",
                 "pass one of the configured peers with --peer");
    return false;
  }
  c.report.title =
      "live check " + c.config.name + " -> " + o.peer + " (" + c.peer->address.str() + ")";
  tls::Settings s;
  s.ca = c.config.tls.ca;
  s.cert = c.config.tls.cert;
  s.key = c.config.tls.key;
  s.client_cert = c.config.tls.client_cert;
  s.client_key = c.config.tls.client_key;
  s.crl = c.config.tls.crl;
  s.allow_tls12 = c.config.tls.min_version == "1.2";
  s.own_name = c.config.name;
  try {
    c.tls = tls::Context::load(s);
  } catch (const std::exception& e) {
    c.report.add("config", "certificates", Status::Fail, e.what());
    return false;
  }
  c.report.add("config", "local tunnel", Status::Pass,
               o.config + ": host " + c.config.name + ", peer " + o.peer + " at " +
                   c.peer->address.str() + ", TLS >= " + c.config.tls.min_version);
  const auto& cert = c.tls->cert();
  int64_t days = days_until(cert.not_after);
  c.report.add(
      "handshake", "local certificate expiry", days < o.warn_days ? Status::Warn : Status::Pass,
      c.config.tls.cert + " (serial " + cert.serial_hex + ") expires in " + std::to_string(days) +
          " days",
      days < o.warn_days ? "rotate it: xmig-certs rotate (the tunnel reloads it live)" : "");
  try {
    c.address = resolve(c.peer->address.host, c.peer->address.port);
  } catch (const std::exception& e) {
    c.report.add("config", "peer address", Status::Fail, e.what(),
                 "correct [[peer]] address for " + o.peer);
    return false;
  }
  return true;
}

void check_handshake(LiveContext& c) {
  const auto& o = c.opts;
  TlsSession s =
      open_session(c.address, c.tls->new_client(o.peer, tunnel::kVerifyChannel), o.timeout);
  bool verify_failed = s.ssl && SSL_get_verify_result(s.ssl.get()) != X509_V_OK;
  if (verify_failed) c.peer_verify_result = SSL_get_verify_result(s.ssl.get());
  c.handshake_error = s.error;
  if (!s.connected) {
    c.report.add("handshake", "mutual TLS", Status::Fail, s.error,
                 "start xmig-tunnel on " + o.peer +
                     ", check its listen address against [[peer]] "
                     "address here, and the firewall");
    return;
  }
  c.reachable = true;
  if (!s.handshake_ok) {
    c.report.add("handshake", "mutual TLS", Status::Fail, s.error,
                 verify_failed
                     ? "the peer's certificate must chain to " + c.config.tls.ca +
                           " and carry DNS:" + o.peer + " (xmig-certs issue --name " + o.peer + ")"
                     : "check that " + c.address.str() + " is an xmig-tunnel TLS port");
    if (verify_failed)
      c.report.add(
          "handshake", "peer certificate", Status::Fail,
          X509_verify_cert_error_string(SSL_get_verify_result(s.ssl.get())),
          "issue the peer's certificate from the CA in " + c.config.tls.ca + " with DNS:" + o.peer);
    return;
  }
  if (s.not_a_verdict) {
    c.report.add("handshake", "mutual TLS", Status::Fail,
                 "the handshake completed but " + s.error + ": it is not an xmig-tunnel",
                 "run xmig-tunnel on " + o.peer + " at " + c.address.str() +
                     " (not a plain TLS terminator)");
  } else if (s.verdict_timed_out) {
    c.report.add("handshake", "mutual TLS", Status::Fail,
                 "the handshake completed but the peer sent no verdict within " +
                     std::to_string(o.timeout.count()) + " ms: it is not an xmig-tunnel",
                 "run xmig-tunnel on " + o.peer + " at " + c.address.str() +
                     " (not a plain TLS terminator)");
  } else if (!s.verdict || *s.verdict != 'A') {
    std::string why = s.verdict
                          ? "verdict '" + std::string(1, *s.verdict) +
                                "': " + tunnel::describe(static_cast<tunnel::Verdict>(*s.verdict))
                          : "the peer refused this host: " + s.error;
    c.report.add(
        "handshake", "mutual TLS", Status::Fail, why,
        "the peer must trust " + c.config.tls.ca + " and list " + c.config.name + " as a [[peer]]");
  } else {
    c.control_ok = true;
    c.report.add("handshake", "mutual TLS", Status::Pass,
                 "this host's certificate was accepted and channel verify answered 'A'");
  }
  bool v13 = s.version == "TLSv1.3";
  c.report.add("handshake", "TLS version", v13 ? Status::Pass : Status::Warn, s.version,
               v13 ? "" : "set [tls] min_version = \"1.3\" on both hosts");
  c.report.add("handshake", "AEAD cipher suite", s.aead ? Status::Pass : Status::Fail, s.cipher,
               s.aead ? "" : "allow AEAD suites only (AES-GCM, ChaCha20-Poly1305)");
  X509* peer_cert = SSL_get0_peer_certificate(s.ssl.get());
  char subject[256] = "?";
  if (peer_cert) X509_NAME_oneline(X509_get_subject_name(peer_cert), subject, sizeof subject);
  c.report.add("handshake", "peer certificate", Status::Pass,
               std::string(subject) + " chains to " + c.config.tls.ca + " and names " + o.peer);
  if (auto not_after = peer_not_after(s.ssl.get())) {
    int64_t days = days_until(*not_after);
    c.report.facts["peer_certificate_days_left"] = std::to_string(days);
    c.report.facts["peer_certificate_expiry_seconds"] = std::to_string(
        std::chrono::duration_cast<std::chrono::seconds>(*not_after - Clock::now()).count());
    c.report.add("handshake", "peer certificate expiry",
                 days < o.warn_days ? Status::Warn : Status::Pass,
                 "expires in " + std::to_string(days) + " days",
                 days < o.warn_days ? "rotate it on " + o.peer + ": xmig-certs rotate" : "");
  }
}

}  // namespace detail

namespace {

// Which data path the local tunnel used for the canary, from its status endpoint.
void check_data_path(LiveContext& c, const CanaryRun& run) {
  const auto& o = c.opts;
  if (!run.via_route) {
    c.report.add(
        "data path", "mode", Status::Warn,
        "not measured: the canary did not pass through the local tunnel",
        "add a [[route]] with channel = \"verify\" and peer = \"" + o.peer + "\" to the config");
  } else if (!run.intact) {
    c.report.add("data path", "mode", Status::Warn,
                 "not measured: the canary did not make the round trip",
                 "see the canary round trip finding");
  } else {
    std::string error;
    std::optional<RecentConnection> found;
    // The tunnel records the connection when its pump ends, just after our EOF.
    for (int attempt = 0; attempt < 30 && !found; ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      try {
        TunnelStatus st = fetch_status(c.config.status, o.timeout);
        error.clear();
        for (auto it = st.recent.rbegin(); it != st.recent.rend(); ++it)
          if (it->direction == "out" && it->channel == tunnel::kVerifyChannel &&
              it->peer == o.peer && it->to_peer == o.canary_bytes &&
              (it->client.empty() || it->client == run.client) &&
              it->closed_unix + 1 >= run.started_unix) {
            found = *it;
            break;
          }
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    if (found) c.report.facts["mode"] = found->mode;
    if (found)
      c.report.add("data path", "mode", Status::Pass,
                   "the local tunnel carried the canary in mode " + found->mode + " (" +
                       found->tls + " " + found->cipher + ", " + std::to_string(found->to_peer) +
                       " bytes out, " + std::to_string(found->from_peer) + " back)");
    else
      c.report.add("data path", "mode", Status::Warn,
                   error.empty() ? "the status endpoint " + c.config.status.str() +
                                       " lists no verify connection of the canary's size"
                                 : error,
                   "check the status endpoint (status = in the config) is readable by this user");
  }
  auto counters = read_ktls_counters();
  if (counters.empty()) {
    c.report.add("data path", "kTLS counters", Status::Pass,
                 "/proc/net/tls_stat absent: the kernel TLS module is not loaded, so the tunnel "
                 "encrypts in user space (modprobe tls to allow kTLS)");
  } else {
    // Non-zero counters, with how much each moved while the canary ran.
    std::string list;
    for (const auto& [k, v] : counters) {
      if (!v) continue;
      auto before = run.ktls_before.find(k);
      uint64_t was = before == run.ktls_before.end() ? 0 : before->second;
      list += (list.empty() ? "" : ", ") + k + "=" + std::to_string(v);
      if (v > was) list += " (+" + std::to_string(v - was) + " during the canary)";
    }
    c.report.add("data path", "kTLS counters", Status::Pass,
                 "/proc/net/tls_stat: " + (list.empty() ? std::string("all zero") : list));
  }
}

}  // namespace

Report run_live(const LiveOptions& opts) {
  Report report;
  report.title = "live check of peer " + opts.peer + " with " + opts.config;
  LiveContext c{.opts = opts, .report = report};
  if (!detail::check_config(c)) return report;
  detail::check_handshake(c);
  detail::check_enforcement(c);
  CanaryRun run = detail::check_wire(c);
  check_data_path(c, run);
  detail::check_interception(c);
  return report;
}

}  // namespace xmig::verify
