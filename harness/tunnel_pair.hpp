// harness/tunnel_pair: two real xmig-tunnel processes on loopback, as hv-a and hv-b, with a fresh
// cluster CA and node certificates made by certs/ in libvirt's layout.
//
//   client -> <a.run_dir>/hv-b/<channel>.sock -> hv-a ==TLS==> hv-b -> target
//
// hv-b delivers qemu and nbd to <b.run_dir>/hv-b/{qemu,nbd}.sock (the
// defaults), and any other channel, or one given in b_targets, to what
// b_targets says. The end-to-end tests drive it, and so does xmig-bench (the
// pair it measures, and `xmig-bench pair` for bench/compare).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.hpp"
#include "certs/certs.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"

namespace xmig::harness {

// Filled by field name; every field has a default.
struct TunnelPairOptions {
  std::map<std::string, std::string> b_targets{};  // [targets] of hv-b: channel -> endpoint
  // [[route]]s on hv-a towards hv-b: listen endpoint -> channel.
  std::map<std::string, std::string> a_routes{};
  std::string a_extra{}, b_extra{};  // TOML appended to each config (e.g. a [limits] table)
  std::string top_toml{};            // top-level keys for both configs (e.g. "workers = 2")
  std::string tls_toml{};            // lines for both [tls] tables (e.g. ktls = "off")
  std::string log_level = "debug";
  fs::path dir{};     // where both sides live; empty: a fresh temporary directory
  fs::path tunnel{};  // the xmig-tunnel binary; empty: the one built with the harness
  // [tls] client_cert and client_key = the pki's client-cert.pem and
  // client-key.pem, as the Quick start maps libvirt's layout; when false they
  // are not set (cert and key serve both roles).
  bool client_files = false;
  bool start = true;  // start both processes in the constructor
  // Each side's TLS listener address (and the other side's [[peer]] address),
  // and the network namespace it runs in ("": this one); see NetnsLab.
  std::string a_host = "127.0.0.1", b_host = "127.0.0.1";
  std::string a_netns{}, b_netns{};
  // hv-a's [[peer]] address for hv-b, when something stands between them
  // (a relay that delays or holds connections); "": hv-b's own listener.
  std::string a_dials{};
};

struct TunnelSide {
  std::string name;                // "hv-a" / "hv-b"
  fs::path dir;                    // everything of this side lives here
  fs::path run_dir;                // its run_dir
  fs::path pki;                    // ca-cert.pem, server-cert.pem, server-key.pem, ...
  fs::path config;                 // tunnel.toml
  fs::path log;                    // the process's stdout+stderr
  uint16_t port = 0;               // its TLS listener
  std::string host = "127.0.0.1";  // and its address
  std::string netns;               // the network namespace it runs in, "" for this one
  std::optional<Process> process;
};

class TunnelPair {
 public:
  explicit TunnelPair(TunnelPairOptions opts = {});
  ~TunnelPair();  // stop(5s)

  // Starts one side and waits until its log says ready (throws on timeout,
  // with the log).
  void start(TunnelSide& side);
  // SIGTERM to hv-a, then hv-b (they drain and log their close lines first);
  // SIGKILL to one that is still running after `timeout`.
  void stop(std::chrono::milliseconds timeout = 10s);

  // hv-a's entry socket towards hv-b for a channel.
  fs::path entry(const std::string& channel) const;
  // Where hv-b delivers qemu/nbd by default.
  fs::path delivery(const std::string& channel) const;
  // Both logs, for failure messages.
  std::string logs() const;

  TempDir temp;
  certs::Pem ca;
  TunnelSide a, b;

 private:
  fs::path tunnel_;
};

// A [limits] table that lets `count` handshakes pend at once, from one
// source as from all, none timing out for two minutes: for measuring what
// pending handshakes cost (TunnelPairOptions::b_extra).
std::string pending_limits_toml(unsigned count);

// A TCP port that was free a moment ago on 127.0.0.1.
uint16_t free_port();

// Issues a node certificate for `name` from `ca` and writes libvirt's layout
// into dir. start_offset/days as in certs::IssueOptions.
void make_node_pki(const fs::path& dir, const certs::Pem& ca, const std::string& name,
                   int days = 30, long start_offset_seconds = -300);

// GET `path` (/status or /metrics) from side's status socket
// (<run_dir>/status.sock): the body, or what went wrong (for messages).
std::string status_request(const TunnelSide& side, const std::string& path);
// A whole-number field of side's /status JSON ("pending_handshakes",
// "active", "total"...); -1 if absent.
long status_number(const TunnelSide& side, const std::string& field);
// side's /status "handshakes": the TLS handshakes it completed, dialled (out)
// and accepted (in), full and resumed from a session ticket; -1 where absent.
struct HandshakeCounts {
  long out_full = -1, out_resumed = -1, in_full = -1, in_resumed = -1;
  std::string json;  // the "handshakes" object as read, for failure messages
};
HandshakeCounts status_handshakes(const TunnelSide& side);
// GET `target` from an HTTP server on 127.0.0.1:port (a status endpoint on
// TCP, Prometheus): the body, or what went wrong.
std::string http_get(uint16_t port, const std::string& target);

// A per-migration socket set held over side's control socket, as
// xmig-migrate holds it: the set lives while `control` is open.
struct Reservation {
  Fd control;
  std::string reply;  // "ok <folder>" or "error <reason>"
};
Reservation reserve(const TunnelSide& side, const std::string& peer, const std::string& id);

// Counts lines of `log` that contain `needle`.
int count_in_log(const fs::path& log, const std::string& needle);
// Counts lines of `log` that contain every one of `needles`.
int count_lines_with_all(const fs::path& log, std::initializer_list<std::string> needles);

}  // namespace xmig::harness
