// The fleet check: the live check against every [[peer]] of the config, and
// the table an operator reads after a roll-out (or a cron job / Prometheus
// textfile collector reads every hour).
#include <algorithm>
#include <cstdio>

#include "base/json.hpp"
#include "base/prometheus.hpp"
#include "tunnel/config.hpp"
#include "verify/verify.hpp"

namespace xmig::verify {

namespace {

// The table's columns: which finding groups each one sums up.
struct Column {
  const char* name;
  std::vector<std::string> groups;
};
const std::vector<Column> kColumns = {
    {"handshake", {"handshake"}},
    {"enforcement", {"enforcement", "interception"}},
    {"wire", {"wire"}},
};

// The worst status among a report's findings of these groups; nullopt when
// none ran (e.g. the handshake failed and the rest was skipped).
std::optional<Status> worst_of(const Report& r, const std::vector<std::string>& groups) {
  std::optional<Status> worst;
  for (const auto& f : r.findings) {
    if (std::find(groups.begin(), groups.end(), f.group) == groups.end()) continue;
    if (!worst || static_cast<int>(f.status) > static_cast<int>(*worst)) worst = f.status;
  }
  return worst;
}

std::string cell(const std::optional<Status>& s) {
  return s ? to_string(*s) : "-";
}

std::string fact(const Report& r, const std::string& key) {
  auto it = r.facts.find(key);
  return it == r.facts.end() ? "-" : it->second;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s;
}

}  // namespace

Status FleetReport::worst() const {
  Status w = Status::Pass;
  for (const auto& p : peers)
    if (static_cast<int>(p.report.worst()) > static_cast<int>(w)) w = p.report.worst();
  return w;
}

int exit_code(const FleetReport& r) {
  return r.worst() == Status::Fail ? 1 : 0;
}

FleetReport run_all_peers(const LiveOptions& opts) {
  const tunnel::Config config = tunnel::load_config(opts.config);
  FleetReport fleet{.title = "all peers of " + config.name + " (" + opts.config + ")", .peers = {}};
  for (const auto& peer : config.peers) {
    LiveOptions one = opts;
    one.peer = peer.name;
    fleet.peers.push_back({.peer = peer.name, .report = run_live(one)});
  }
  return fleet;
}

std::string render_fleet_text(const FleetReport& r) {
  std::vector<std::vector<std::string>> rows = {
      {"peer", "handshake", "enforcement", "wire", "mode", "cert days", "result"}};
  for (const auto& p : r.peers) {
    std::vector<std::string> row = {p.peer};
    for (const auto& column : kColumns) row.push_back(cell(worst_of(p.report, column.groups)));
    row.push_back(fact(p.report, "mode"));
    row.push_back(fact(p.report, "peer_certificate_days_left"));
    row.push_back(to_string(p.report.worst()));
    rows.push_back(std::move(row));
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::string out = "xmig-verify: " + r.title + "\n\n";
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += '\n';
  }
  size_t failed = 0;
  for (const auto& p : r.peers) {
    if (p.report.worst() == Status::Fail) ++failed;
    if (p.report.worst() == Status::Pass) continue;
    // What is not a PASS, with its fix, in the live check's own layout.
    Report details{.title = "peer " + p.peer + ": what did not pass", .findings = {}, .facts = {}};
    for (const auto& f : p.report.findings)
      if (f.status != Status::Pass) details.findings.push_back(f);
    out += '\n';
    out += render_text(details);
  }
  out += "\nresult: " + std::string(to_string(r.worst())) + " (" + std::to_string(r.peers.size()) +
         " peers, " + std::to_string(failed) + " failed)\n";
  return out;
}

std::string render_fleet_json(const FleetReport& r) {
  std::string j = "{\"title\":" + json_quote(r.title, NonAscii::Escape) + ",\"status\":\"" +
                  lower(to_string(r.worst())) + "\",\"peers\":[";
  bool first = true;
  for (const auto& p : r.peers) {
    j += first ? "{" : ",{";
    first = false;
    j += "\"peer\":" + json_quote(p.peer, NonAscii::Escape) + ",\"status\":\"" +
         lower(to_string(p.report.worst())) + "\"";
    for (const auto& column : kColumns) {
      auto s = worst_of(p.report, column.groups);
      j += ",\"";
      j += column.name;
      j += "\":";
      j += s ? json_quote(lower(to_string(*s))) : "null";
    }
    j += ",\"mode\":" + json_quote(fact(p.report, "mode"), NonAscii::Escape);
    const std::string days = fact(p.report, "peer_certificate_days_left");
    j += ",\"certificate_days_left\":" + (days == "-" ? std::string("null") : days);
    std::string report = render_json(p.report);
    if (!report.empty() && report.back() == '\n') report.pop_back();
    j += ",\"report\":" + report + "}";
  }
  j += "]}\n";
  return j;
}

std::string render_fleet_prometheus(const FleetReport& r, int64_t now_unix) {
  std::string m =
      "# HELP xmig_verify_peer_status xmig-verify's live check of a peer by group: 0 pass, 1 "
      "warn, 2 fail.\n# TYPE xmig_verify_peer_status gauge\n";
  for (const auto& p : r.peers) {
    const std::string peer = prometheus_label(p.peer);
    for (const auto& column : kColumns)
      if (auto s = worst_of(p.report, column.groups))
        m += "xmig_verify_peer_status{peer=" + peer + ",group=\"" + column.name + "\"} " +
             std::to_string(static_cast<int>(*s)) + "\n";
    m += "xmig_verify_peer_status{peer=" + peer + ",group=\"all\"} " +
         std::to_string(static_cast<int>(p.report.worst())) + "\n";
  }
  m += "# HELP xmig_verify_peer_certificate_expiry_seconds Seconds until the peer's certificate "
       "expires, as the live check saw it.\n# TYPE xmig_verify_peer_certificate_expiry_seconds "
       "gauge\n";
  for (const auto& p : r.peers) {
    const std::string seconds = fact(p.report, "peer_certificate_expiry_seconds");
    if (seconds != "-")
      m += "xmig_verify_peer_certificate_expiry_seconds{peer=" + prometheus_label(p.peer) + "} " +
           seconds + "\n";
  }
  m += "# HELP xmig_verify_last_run_timestamp_seconds When this check ran.\n"
       "# TYPE xmig_verify_last_run_timestamp_seconds gauge\n"
       "xmig_verify_last_run_timestamp_seconds " +
       std::to_string(now_unix) + "\n";
  return m;
}

}  // namespace xmig::verify
