#include "tunnel/status.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "base/json.hpp"
#include "base/prometheus.hpp"

namespace xmig::tunnel {

namespace {

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string human_rate(uint64_t bytes, double seconds) {
  if (seconds <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fMB/s", static_cast<double>(bytes) / seconds / 1e6);
  return buf;
}

std::string traffic_labels(const Stats::TrafficKey& key) {
  const auto& [side, peer, channel] = key;
  // Appended, not "literal" + temporary: GCC 12 -O3 warns falsely (-Wrestrict) on that.
  std::string labels = "peer=";
  labels += prometheus_label(peer);
  labels += ",channel=";
  labels += prometheus_label(channel);
  labels += ",side=";
  labels += prometheus_label(side);
  return labels;
}

}  // namespace

void Stats::record_open(const ConnectionInfo& info) {
  if (!info.live) return;  // nothing to show, and record_close could not find it
  std::lock_guard lock(mutex_);
  totals_.active.push_back({.id = ++last_id_, .info = info});
}

void Stats::record_close(const ConnectionInfo& info, const io::PumpStats& stats) {
  std::lock_guard lock(mutex_);
  uint64_t id = 0;
  if (info.live) {
    auto& active = totals_.active;
    auto it = std::find_if(active.begin(), active.end(),
                           [&](const Active& a) { return a.info.live == info.live; });
    if (it != active.end()) {
      id = it->id;
      active.erase(it);
    }
  }
  ++totals_.connections[info.direction + " " + outcome(stats)];
  Traffic& t = totals_.traffic[{info.direction, info.peer, info.channel}];
  t.to_peer += stats.plain_to_tls;
  t.from_peer += stats.tls_to_plain;
  ++totals_.modes[stats.mode];
  totals_.to_peer += stats.plain_to_tls;
  totals_.from_peer += stats.tls_to_plain;
  totals_.recent.push_back({.id = id, .info = info, .stats = stats, .closed_unix = now_unix()});
  if (totals_.recent.size() > kRecent) totals_.recent.pop_front();
}

void Stats::record_dial(const std::string& peer, bool ok) {
  std::lock_guard lock(mutex_);
  Dials& d = totals_.dials[peer];
  ++(ok ? d.ok : d.failed);
}

Stats::Snapshot Stats::snapshot() const {
  std::lock_guard lock(mutex_);
  Snapshot s = totals_;
  auto now = std::chrono::steady_clock::now();
  // Read under the lock that record_close takes: a connection's bytes are
  // either here (live, at most its final figures) or in the totals, never in
  // both, so the sums only grow from one snapshot to the next.
  for (Active& a : s.active) {
    a.to_peer = a.info.live->plain_to_tls.load(std::memory_order_relaxed);
    a.from_peer = a.info.live->tls_to_plain.load(std::memory_order_relaxed);
    a.age = now - a.info.started;
    s.to_peer += a.to_peer;
    s.from_peer += a.from_peer;
    Traffic& t = s.traffic[{a.info.direction, a.info.peer, a.info.channel}];
    t.to_peer += a.to_peer;
    t.from_peer += a.from_peer;
    ++t.active;
  }
  s.refusals = refusals_;
  s.reloads_ok = reloads_ok_;
  s.reloads_failed = reloads_failed_;
  s.handshakes = {.out_full = handshakes_.out_full,
                  .out_resumed = handshakes_.out_resumed,
                  .in_full = handshakes_.in_full,
                  .in_resumed = handshakes_.in_resumed};
  return s;
}

std::string status_json(const StatusFacts& f, const Stats::Snapshot& s) {
  std::string j = "{";
  j += "\"name\":" + json_quote(f.name);
  j += ",\"certificate\":{\"serial\":" + json_quote(f.cert_serial) +
       ",\"not_after_unix\":" + std::to_string(f.cert_not_after_unix) +
       ",\"seconds_left\":" + std::to_string(f.cert_not_after_unix - now_unix()) + "}";
  j += ",\"tls_min_version\":" + json_quote(f.tls_min_version);
  j += ",\"connections\":{\"active\":" + std::to_string(f.active);
  for (const auto& [k, v] : s.connections) {
    std::string key = k;
    key[key.find(' ')] = '_';
    j += ",\"" + key + "\":" + std::to_string(v);
  }
  j += "},\"modes\":{";
  bool first = true;
  for (const auto& [k, v] : s.modes) {
    j += (first ? "" : ",") + json_quote(k) + ":" + std::to_string(v);
    first = false;
  }
  j += "},\"bytes\":{\"to_peer\":" + std::to_string(s.to_peer) +
       ",\"from_peer\":" + std::to_string(s.from_peer) + "}";
  j += ",\"refusals\":" + std::to_string(s.refusals);
  j += ",\"reloads\":{\"ok\":" + std::to_string(s.reloads_ok) +
       ",\"failed\":" + std::to_string(s.reloads_failed) + "}";
  j += ",\"pending_handshakes\":" + std::to_string(f.pending_handshakes);
  const Stats::Handshakes& h = s.handshakes;
  j += ",\"handshakes\":{\"out\":{\"full\":" + std::to_string(h.out_full) +
       ",\"resumed\":" + std::to_string(h.out_resumed) +
       "},\"in\":{\"full\":" + std::to_string(h.in_full) +
       ",\"resumed\":" + std::to_string(h.in_resumed) + "}}";
  // Not "active": readers of /status look that key up for the running
  // connections (verify/status_client.cpp).
  j += ",\"bans\":{\"total\":" + std::to_string(f.bans_total) + ",\"in_force\":[";
  first = true;
  for (const auto& b : f.bans) {
    j += first ? "{" : ",{";
    first = false;
    j += "\"source\":" + json_quote(b.source) + ",\"until_unix\":" + std::to_string(b.until_unix) +
         ",\"seconds_left\":" + std::to_string(b.seconds_left) +
         ",\"violations\":" + std::to_string(b.violations) + ",\"reason\":" + json_quote(b.reason) +
         ",\"refused\":" + std::to_string(b.refused) + "}";
  }
  j += "]}";
  j += ",\"active\":[";
  first = true;
  for (const auto& a : s.active) {
    j += first ? "{" : ",{";
    first = false;
    double age = std::chrono::duration<double>(a.age).count();
    double rate = age > 0 ? static_cast<double>(a.to_peer + a.from_peer) / age : 0;
    j += "\"direction\":" + json_quote(a.info.direction) + ",\"peer\":" + json_quote(a.info.peer) +
         ",\"channel\":" + json_quote(a.info.channel) +
         ",\"migration\":" + json_quote(a.info.migration) +
         ",\"client\":" + json_quote(a.info.client) + ",\"local\":" + json_quote(a.info.local) +
         ",\"id\":" + std::to_string(a.id) + ",\"to_peer\":" + std::to_string(a.to_peer) +
         ",\"from_peer\":" + std::to_string(a.from_peer) +
         ",\"rate\":" + std::to_string(static_cast<uint64_t>(rate)) +
         ",\"age_seconds\":" + std::to_string(age) + "}";
  }
  j += "],\"recent\":[";
  first = true;
  for (const auto& c : s.recent) {
    j += first ? "{" : ",{";
    first = false;
    j += "\"direction\":" + json_quote(c.info.direction) + ",\"peer\":" + json_quote(c.info.peer) +
         ",\"channel\":" + json_quote(c.info.channel) +
         ",\"migration\":" + json_quote(c.info.migration) + ",\"id\":" + std::to_string(c.id) +
         ",\"result\":" + json_quote(outcome(c.stats)) +
         ",\"tls\":" + json_quote(c.info.tls_version) + ",\"cipher\":" + json_quote(c.info.cipher) +
         ",\"mode\":" + json_quote(c.stats.mode) + ",\"client\":" + json_quote(c.info.client) +
         ",\"to_peer\":" + std::to_string(c.stats.plain_to_tls) +
         ",\"from_peer\":" + std::to_string(c.stats.tls_to_plain) +
         ",\"seconds\":" + std::to_string(std::chrono::duration<double>(c.stats.duration).count()) +
         ",\"closed_unix\":" + std::to_string(c.closed_unix) +
         ",\"error\":" + json_quote(c.stats.error) + "}";
  }
  j += "]}\n";
  return j;
}

std::string metrics_text(const StatusFacts& f, const Stats::Snapshot& s) {
  std::string m;
  auto metric = [&](const char* name, const char* type, const char* help) {
    m += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  metric("xmig_connections_active", "gauge", "Connections from accept to close.");
  m += "xmig_connections_active " + std::to_string(f.active) + "\n";
  metric("xmig_connections_total", "counter", "Connections that ended, by direction and result.");
  for (const auto& [k, v] : s.connections) {
    size_t sp = k.find(' ');
    m += "xmig_connections_total{direction=\"" + k.substr(0, sp) + "\",result=\"" +
         k.substr(sp + 1) + "\"} " + std::to_string(v) + "\n";
  }
  metric("xmig_connections_by_mode_total", "counter", "Connections that ended, by data path.");
  for (const auto& [k, v] : s.modes)
    m += "xmig_connections_by_mode_total{mode=\"" + k + "\"} " + std::to_string(v) + "\n";
  metric("xmig_bytes_total", "counter",
         "Payload bytes carried, by ended connections and so far by running ones.");
  m += "xmig_bytes_total{direction=\"to_peer\"} " + std::to_string(s.to_peer) + "\n";
  m += "xmig_bytes_total{direction=\"from_peer\"} " + std::to_string(s.from_peer) + "\n";
  metric("xmig_refusals_total", "counter", "Connections refused (each is logged with its reason).");
  m += "xmig_refusals_total " + std::to_string(s.refusals) + "\n";
  metric("xmig_tls_handshakes_total", "counter",
         "TLS handshakes completed, by side (out: dialled, in: accepted) and kind (full, "
         "resumed from a session ticket).");
  const Stats::Handshakes& h = s.handshakes;
  for (const auto& [side, kind, count] :
       {std::tuple{"out", "full", h.out_full}, std::tuple{"out", "resumed", h.out_resumed},
        std::tuple{"in", "full", h.in_full}, std::tuple{"in", "resumed", h.in_resumed}})
    m += std::string("xmig_tls_handshakes_total{side=\"") + side + "\",kind=\"" + kind + "\"} " +
         std::to_string(count) + "\n";
  metric("xmig_reloads_total", "counter", "TLS material reloads, by result.");
  m += "xmig_reloads_total{result=\"ok\"} " + std::to_string(s.reloads_ok) + "\n";
  m += "xmig_reloads_total{result=\"failed\"} " + std::to_string(s.reloads_failed) + "\n";
  metric("xmig_certificate_expiry_seconds", "gauge",
         "Seconds until the loaded certificate expires.");
  m += "xmig_certificate_expiry_seconds " + std::to_string(f.cert_not_after_unix - now_unix()) +
       "\n";
  metric("xmig_handshakes_pending", "gauge", "TLS connections accepted and not yet authenticated.");
  m += "xmig_handshakes_pending " + std::to_string(f.pending_handshakes) + "\n";
  metric("xmig_bans_total", "counter",
         "Sources banned for failing authentication or exceeding their limits.");
  m += "xmig_bans_total " + std::to_string(f.bans_total) + "\n";
  metric("xmig_bans_active", "gauge", "Bans in force.");
  m += "xmig_bans_active " + std::to_string(f.bans.size()) + "\n";
  metric("xmig_peer_bytes_total", "counter",
         "Payload bytes carried by peer and channel, running connections included.");
  for (const auto& [key, t] : s.traffic) {
    const std::string labels = traffic_labels(key);
    m += "xmig_peer_bytes_total{" + labels + ",direction=\"to_peer\"} " +
         std::to_string(t.to_peer) + "\n";
    m += "xmig_peer_bytes_total{" + labels + ",direction=\"from_peer\"} " +
         std::to_string(t.from_peer) + "\n";
  }
  metric("xmig_peer_connections_active", "gauge", "Connections running now, by peer and channel.");
  for (const auto& [key, t] : s.traffic) {
    m += "xmig_peer_connections_active{" + traffic_labels(key) + "} " + std::to_string(t.active) +
         "\n";
  }
  metric("xmig_peer_dials_total", "counter",
         "This host's connections to a peer: ok, or failed (unreachable, refused).");
  for (const auto& [peer, d] : s.dials) {
    const std::string name = prometheus_label(peer);
    m += "xmig_peer_dials_total{peer=" + name + ",result=\"ok\"} " + std::to_string(d.ok) + "\n";
    m += "xmig_peer_dials_total{peer=" + name + ",result=\"failed\"} " + std::to_string(d.failed) +
         "\n";
  }
  return m;
}

std::string outcome(const io::PumpStats& stats) {
  if (!stats.error.empty()) return "error";
  return stats.local_closed_early ? "local-closed-early" : "ok";
}

void log_close(const ConnectionInfo& info, const io::PumpStats& st) {
  double seconds = std::chrono::duration<double>(st.duration).count();
  std::string line = fmt::format(
      "close: dir={} peer={} channel={}{} local={} remote={} tls={} cipher={} mode={} "
      "to_peer={} from_peer={} duration={:.3f}s throughput={} result={}{}",
      info.direction, info.peer, info.channel,
      info.migration.empty() ? "" : " migration=" + info.migration, info.local, info.remote,
      info.tls_version, info.cipher, st.mode, st.plain_to_tls, st.tls_to_plain, seconds,
      human_rate(st.plain_to_tls + st.tls_to_plain, seconds), outcome(st),
      // The same word as /status and the metric, so that a truncated stream
      // (which an application on a UNIX socket sees as a plain EOF) is never
      // read as a success; the reason after it.
      st.error.empty() ? "" : " error=\"" + st.error + "\"");
  if (st.error.empty())
    spdlog::info("{}", line);
  else
    spdlog::warn("{}", line);
}

}  // namespace xmig::tunnel
