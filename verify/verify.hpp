// verify/: proves that migration traffic is encrypted (the library behind
// the xmig-verify command).
//
// Two checks, each a list of findings (PASS / WARN / FAIL, with reason and fix):
// - run_live(): against a running peer, with the local tunnel's config and
//   certificates: the handshake, what the peer must refuse, a canary stream
//   through the local tunnel and back while the wire is captured with
//   libpcap, and the data path the local tunnel used; with [intercept]
//   (transparent mode), that this host's nftables table is the config's, its
//   plaintext connections to the peer's ports go through the tunnel, and the
//   peer drops them when they come from the network.
// - analyze_pcap(): a capture file taken on the migration network; every TCP
//   flow is classified as TLS or plaintext, and plaintext migration protocols
//   (QEMU, multifd, NBD, libvirt RPC) are named.
//
// What it must never do:
// - print or log key material (it only ever names certificate files, subjects,
//   serials and dates);
// - trust a capture file: every length in it is bounds-checked, memory per
//   flow and per capture is capped, and a file that is not a capture gives an
//   error, never a crash;
// - report a check it could not run as passed: a capture that is impossible
//   (no CAP_NET_RAW) is a FAIL with the reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace xmig::verify {

enum class Status { Pass, Warn, Fail };
const char* to_string(Status s);  // "PASS", "WARN", "FAIL"

// One line of the checklist.
struct Finding {
  std::string
      group;  // "config", "handshake", "enforcement", "wire", "data path", "capture", "flow"
  std::string check;  // short name, e.g. "no client certificate"
  Status status = Status::Pass;
  std::string reason;  // what was seen
  std::string fix;     // what to do (empty when it passed)
};

struct Report {
  std::string title;  // e.g. "live check hv-a -> hv-b (127.0.0.1:7443)"
  std::vector<Finding> findings;
  // What the live check measured, for the fleet table (--all-peers):
  // "mode" (the data path the local tunnel used for the canary),
  // "peer_certificate_days_left" and "peer_certificate_expiry_seconds";
  // absent when not measured.
  std::map<std::string, std::string> facts;

  void add(std::string group, std::string check, Status status, std::string reason,
           std::string fix = {});
  Status worst() const;
};

// Text checklist for a terminal, one finding per line (reason and fix below).
std::string render_text(const Report& r);
// {"title":..., "status":"pass|warn|fail", "counts":{...}, "findings":[{group, check,
// status, reason, fix}, ...]}
std::string render_json(const Report& r);
// 0 when nothing failed (warnings allowed), 1 otherwise.
int exit_code(const Report& r);

// ---------------------------------------------------------------------------
// Live check (verify/live.cpp)

struct LiveOptions {
  std::string config;  // the local tunnel's TOML file
  std::string peer;    // a [[peer]] name in it
  uint64_t canary_bytes = 1 << 20;
  std::chrono::milliseconds timeout{5000};  // each probe's connect/handshake/read
  int warn_days = 30;                       // certificate expiry warning threshold
  std::string interface;                    // capture interface; "" = found from the peer address
  // With [intercept]: the port of the range the interception check connects
  // to; 0 = the range's last (libvirt takes ports from the first up).
  uint16_t intercept_port = 0;
};

// Runs every live check and returns the report; never throws for what the
// peer does (a broken config is a FAIL finding too).
Report run_live(const LiveOptions& opts);

// ---------------------------------------------------------------------------
// Fleet check (verify/fleet.cpp): the live check against every [[peer]] of
// the config, one after another (each captures the wire on its own).

struct PeerResult {
  std::string peer;
  Report report;
};
struct FleetReport {
  std::string title;  // e.g. "all peers of hv-a (/etc/xmig/tunnel.toml)"
  std::vector<PeerResult> peers;
  Status worst() const;
};

// opts.peer is ignored; throws std::runtime_error when the config cannot be
// read (there are no peers to check then).
FleetReport run_all_peers(const LiveOptions& opts);
// One table, a row per peer: handshake, enforcement (with interception),
// wire, mode, days left on the peer's certificate, its result; then every
// finding that is not a PASS, with its fix; then the overall result.
std::string render_fleet_text(const FleetReport& r);
// {"title", "status", "peers":[{"peer", "status", "handshake", "enforcement",
// "wire", "mode", "certificate_days_left", "findings":[...]}]}
std::string render_fleet_json(const FleetReport& r);
// Prometheus text format for node_exporter's textfile collector:
// xmig_verify_peer_status{peer,group} (0 pass, 1 warn, 2 fail; group
// handshake, enforcement, wire, all), xmig_verify_peer_certificate_expiry_seconds{peer},
// xmig_verify_last_run_timestamp_seconds.
std::string render_fleet_prometheus(const FleetReport& r, int64_t now_unix);
// 0 when no peer failed, 1 otherwise.
int exit_code(const FleetReport& r);

// ---------------------------------------------------------------------------
// Test migration (verify/test_migration.cpp): the operator's smoke test for
// real. A throwaway transient domain (TCG, 32 MiB of RAM filled with a known
// pattern, paused, no disk) goes to the peer the way operators migrate
// (xmig-migrate; nova's qemu+tcp:// with [intercept]) and comes back, started
// on the peer's libvirt through the tunnel's driver channel, while the wire
// towards the peer is captured and judged (only TLS to the tunnels' ports, no
// plaintext migration protocol, the pattern nowhere); its RAM must hash alike
// after the round trip; this host's tunnel's connections of it are listed;
// the domain is removed on both hosts whatever happens. Needs root.

struct TestMigrationOptions {
  LiveOptions live;                             // config, peer, probe timeout, capture interface
  std::chrono::seconds migration_timeout{300};  // for the whole round trip
  std::string virsh = "virsh";
  std::string xmig_migrate = "xmig-migrate";  // the operator's command, run for the way there
  // The domain gets a small raw disk filled with the pattern, migrated with
  // it (--copy-storage-all: NBD through the tunnel's nbd channel) both ways.
  bool storage = false;
  // A signalfd for SIGINT and SIGTERM (blocked by the caller), or -1: when it
  // becomes readable the running migration is cancelled, the domain removed,
  // and the report says so.
  int cancel_fd = -1;
};

// The first failure is named with its cause and fix: a certificate (chain,
// name, expiry: on which host), the peer's tunnel unreachable, the
// destination's sockets not usable by QEMU, libvirt refusing, a timeout.
Report run_test_migration(const TestMigrationOptions& opts);

// ---------------------------------------------------------------------------
// Offline check (verify/offline.cpp)

// The file could not be read as a capture at all (not pcap/pcapng, truncated
// header, unreadable): the message says which file and why.
struct CaptureError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Reads a pcap/pcapng file and reports every TCP flow. Throws CaptureError
// when the file is not a readable capture; a capture that ends in the middle
// of a packet is reported (what was read is analysed) as a FAIL finding.
Report analyze_pcap(const std::string& path);

}  // namespace xmig::verify
