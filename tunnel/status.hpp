// Status of a running tunnel: counters kept as connections end, and a small
// HTTP endpoint that serves them as JSON (/status) and in Prometheus' text
// format (/metrics). Metric names are a public interface: do not rename them.
//
//   xmig_connections_active                      gauge
//   xmig_connections_total{direction,result}     counter (direction out|in, result ok|error)
//   xmig_connections_by_mode_total{mode}         counter (data path: userspace, ...)
//   xmig_bytes_total{direction}                  counter (to_peer|from_peer)
//   xmig_refusals_total                          counter
//   xmig_reloads_total{result}                   counter (ok|failed)
//   xmig_certificate_expiry_seconds              gauge (seconds until the loaded
//                                                certificate expires)
//
// The endpoint listens on `status` from the config: a UNIX socket by default
// (<run_dir>/status.sock), so nothing is exposed on the network unless asked.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>

#include "io/pump.hpp"

namespace xmig::tunnel {

// What the close line of a connection reports besides the pump's figures.
// (Every field has a default, so that designated initializers may name only
// what is known when the connection starts.)
struct ConnectionInfo {
  std::string direction{};  // "out": entry -> peer; "in": peer -> target
  std::string peer{};
  std::string channel{};
  std::string migration{};  // per-migration set id; "" for the fixed set
  std::string local{};      // entry socket or target
  std::string remote{};     // peer address
  std::string tls_version{};
  std::string cipher{};
  // Who connected: for "out" the local client of the entry ("ip:port" on TCP,
  // "pid N" on a UNIX socket, so a tool can find its own connection in
  // /status); for "in" the peer's address.
  std::string client{};
};

class Stats {
 public:
  // Called once per connection when its pump is done (any thread).
  void record_close(const ConnectionInfo& info, const io::PumpStats& stats);
  void record_refusal() { ++refusals_; }
  void record_reload(bool ok) { ++(ok ? reloads_ok_ : reloads_failed_); }

  struct Closed {
    ConnectionInfo info;
    io::PumpStats stats;
    int64_t closed_unix = 0;
  };
  struct Snapshot {
    std::map<std::string, uint64_t> connections;  // "out ok", "in error", ...
    std::map<std::string, uint64_t> modes;
    uint64_t to_peer = 0, from_peer = 0, refusals = 0, reloads_ok = 0, reloads_failed = 0;
    std::deque<Closed> recent;  // newest last
  };
  Snapshot snapshot() const;

 private:
  static constexpr size_t kRecent = 32;
  mutable std::mutex mutex_;
  Snapshot totals_;
  std::atomic<uint64_t> refusals_{0}, reloads_ok_{0}, reloads_failed_{0};
};

// Live facts the endpoint reports alongside the counters.
struct StatusFacts {
  std::string name;
  size_t active = 0;
  std::string cert_serial;
  int64_t cert_not_after_unix = 0;
  std::string tls_min_version;
};

std::string status_json(const StatusFacts& facts, const Stats::Snapshot& s);
std::string metrics_text(const StatusFacts& facts, const Stats::Snapshot& s);

// One line per connection at close (spdlog).
void log_close(const ConnectionInfo& info, const io::PumpStats& stats);

}  // namespace xmig::tunnel
