// Status of a running tunnel: the connections running now with the bytes
// they have moved so far, counters kept as connections end, and a small HTTP
// endpoint that serves them as JSON (/status) and in Prometheus' text format
// (/metrics). Metric names and JSON fields are a public interface: add, never
// rename.
//
//   xmig_connections_active                      gauge
//   xmig_connections_total{direction,result}     counter (direction out|in, result
//   ok|local-closed-early|error) xmig_connections_by_mode_total{mode}         counter (data path:
//   userspace, ...) xmig_bytes_total{direction}                  counter (to_peer|from_peer): bytes
//   of
//                                                ended connections plus what running ones
//                                                moved so far, so it grows during a
//                                                migration, not only when it ends
//   xmig_refusals_total                          counter
//   xmig_reloads_total{result}                   counter (ok|failed)
//   xmig_certificate_expiry_seconds              gauge (seconds until the loaded
//                                                certificate expires)
//   xmig_handshakes_pending                      gauge (TLS connections accepted,
//                                                not yet authenticated)
//   xmig_bans_total                              counter (sources banned, see
//                                                tunnel/admission.hpp)
//   xmig_bans_active                             gauge (bans in force)
//   xmig_peer_bytes_total{peer,channel,side,direction}  counter: xmig_bytes_total by
//                                                peer, channel (driver, qemu, nbd, port-N,
//                                                a route's name) and side (out: this host
//                                                dialled, in: the peer did), running
//                                                connections included
//   xmig_peer_connections_active{peer,channel,side}  gauge
//   xmig_tls_handshakes_total{side,kind}         counter (side out|in, kind full|resumed):
//                                                TLS handshakes completed, a resumed one
//                                                having reused a session ticket (no
//                                                certificates, no signatures)
//   xmig_peer_dials_total{peer,result}           counter (ok|failed): this host's
//                                                connections to the peer, failed ones
//                                                being those refused or unreachable
// The peer and channel labels come from the config and from what a peer
// authenticated, never from an unauthenticated client, so their number is
// bounded by the config (a channel per port of the [intercept] range at most).
//
// GET /status (JSON), besides name, certificate, counters and modes:
//   "bytes":{"to_peer","from_peer"}   the same sums as xmig_bytes_total
//   "active":[...]   connections whose pump runs, oldest first: direction, peer,
//                    channel, migration (the per-migration socket set's id, "" for
//                    the fixed set and routes), client, local, id, to_peer and
//                    from_peer (bytes so far), rate (bytes/s both ways together,
//                    averaged over its age), age_seconds
//   "pending_handshakes"   TLS connections accepted and not yet authenticated
//   "handshakes":{"out":{"full","resumed"},"in":{"full","resumed"}}   TLS handshakes
//                    completed: dialled by this host (out) and accepted (in)
//   "bans":{"total","in_force":[...]}   bans since start, and those in force:
//                    source, until_unix, seconds_left, violations, reason, refused
//   "recent":[...]   the last 32 that ended, newest last: direction, peer, channel,
//                    migration, id, tls, cipher, mode, client, to_peer, from_peer,
//                    seconds, closed_unix, error
// `id` numbers the connections of one tunnel process from 1; a connection keeps
// it from "active" to "recent", so a reader can follow one through both.
// to_peer is what went from the local side into TLS, from_peer what came out
// of TLS to the local side (for "in": the target), on either direction.
//
// The endpoint listens on `status` from the config: a UNIX socket by default
// (<run_dir>/status.sock), so nothing is exposed on the network unless asked.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

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
  // The pump's running byte counts; null for a connection not listed as active.
  std::shared_ptr<io::LiveBytes> live = nullptr;
  // When the pump was started (the age and rate in /status count from here).
  std::chrono::steady_clock::time_point started{};
};

class Stats {
 public:
  // Lists a connection as active from now until record_close, with the bytes
  // its pump counts in info.live (any thread; without info.live it does
  // nothing). Call it before the pump is started, so that the close always
  // finds the connection.
  void record_open(const ConnectionInfo& info);
  // Called once per connection when its pump is done (any thread). Removes
  // the connection from the active list (found by its live pointer) and adds
  // its final figures to the totals in the same critical section, so a
  // snapshot counts its bytes exactly once, either live or closed.
  void record_close(const ConnectionInfo& info, const io::PumpStats& stats);
  void record_refusal() { ++refusals_; }
  // One dial of this host towards a peer (an entry's connection): reached and
  // accepted, or not (the peer unreachable, the handshake or the verdict failed).
  void record_dial(const std::string& peer, bool ok);
  void record_reload(bool ok) { ++(ok ? reloads_ok_ : reloads_failed_); }
  // A TLS handshake completed: dialled by this host (`dialled`) or accepted,
  // full or resumed from a session ticket.
  void record_handshake(bool dialled, bool resumed) {
    ++(dialled ? (resumed ? handshakes_.out_resumed : handshakes_.out_full)
               : (resumed ? handshakes_.in_resumed : handshakes_.in_full));
  }

  struct Active {
    uint64_t id = 0;  // numbers connections from 1, in the order they opened
    ConnectionInfo info;
    uint64_t to_peer = 0, from_peer = 0;  // bytes so far, when the snapshot was taken
    std::chrono::steady_clock::duration age{};
  };
  struct Closed {
    uint64_t id = 0;  // the number it had while active; 0 if it never was
    ConnectionInfo info;
    io::PumpStats stats;
    int64_t closed_unix = 0;
  };
  // A peer and channel's share of the traffic (key: direction, peer, channel).
  struct Traffic {
    uint64_t to_peer = 0, from_peer = 0;  // as the totals: ended plus running so far
    size_t active = 0;                    // in a snapshot: connections running now
  };
  using TrafficKey = std::tuple<std::string, std::string, std::string>;
  struct Dials {
    uint64_t ok = 0, failed = 0;
  };
  struct Handshakes {
    uint64_t out_full = 0, out_resumed = 0, in_full = 0, in_resumed = 0;
  };
  struct Snapshot {
    std::map<std::string, uint64_t> connections;  // "out ok", "in error", ...
    std::map<std::string, uint64_t> modes;
    // Bytes of ended connections, plus (in a snapshot) those of active ones so far.
    uint64_t to_peer = 0, from_peer = 0;
    uint64_t refusals = 0, reloads_ok = 0, reloads_failed = 0;
    Handshakes handshakes;
    std::map<TrafficKey, Traffic> traffic;
    std::map<std::string, Dials> dials;  // by peer name
    std::vector<Active> active;          // oldest first
    std::deque<Closed> recent;           // newest last
  };
  Snapshot snapshot() const;

 private:
  static constexpr size_t kRecent = 32;
  mutable std::mutex mutex_;
  Snapshot totals_;  // its `active` holds the registrations, their bytes read at snapshot
  uint64_t last_id_ = 0;
  std::atomic<uint64_t> refusals_{0}, reloads_ok_{0}, reloads_failed_{0};
  struct {
    std::atomic<uint64_t> out_full{0}, out_resumed{0}, in_full{0}, in_resumed{0};
  } handshakes_;
};

// A source refused at accept for a while (tunnel/admission.hpp).
struct BanInfo {
  std::string source;  // an IPv4 address or an IPv6 /64
  int64_t until_unix = 0;
  double seconds_left = 0;
  unsigned violations = 0;  // what led to it
  std::string reason;       // the last of them
  uint64_t refused = 0;     // connections refused since it began
};

// Live facts the endpoint reports alongside the counters.
struct StatusFacts {
  std::string name;
  size_t active = 0;
  std::string cert_serial;
  int64_t cert_not_after_unix = 0;
  std::string tls_min_version;
  size_t pending_handshakes = 0;  // accepted TLS connections not yet authenticated
  uint64_t bans_total = 0;        // bans since start
  std::vector<BanInfo> bans;      // in force now
};

std::string status_json(const StatusFacts& facts, const Stats::Snapshot& s);
std::string metrics_text(const StatusFacts& facts, const Stats::Snapshot& s);

// How a connection ended, as the close line, /status and
// xmig_connections_total{result} name it: "ok"; "local-closed-early" (the
// local application closed with delivered bytes unread after the far side
// had sent everything: not a transport failure, see io/pump.hpp); "error".
std::string outcome(const io::PumpStats& stats);

// One line per connection at close (spdlog).
void log_close(const ConnectionInfo& info, const io::PumpStats& stats);

}  // namespace xmig::tunnel
