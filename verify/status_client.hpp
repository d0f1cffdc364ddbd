// Reads the local tunnel's status endpoint (GET /status, tunnel/status.hpp)
// and the kernel's kTLS counters, for the data-path check.
//
// The one client of the status endpoint in the tools: xmig-verify reads its
// canary connection from it, xmig-migrate a migration's progress. It is its
// own small library (xmig_status_client: this file, the config's Endpoint and
// a socket), so a tool that only reads a tunnel's status links neither the
// data path nor libpcap.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tunnel/endpoint.hpp"

namespace xmig::verify {

// One entry of the status JSON's "recent" list (connections that ended).
struct RecentConnection {
  std::string direction, peer, channel, tls, cipher, mode, error;
  std::string result;     // "ok", "local-closed-early" or "error"
  std::string client;     // "out": who connected to the entry ("ip:port" or "pid N")
  std::string migration;  // the per-migration socket set's id; "" for the fixed set
  uint64_t id = 0;        // the number it had in "active" (0 from a tunnel without ids)
  uint64_t to_peer = 0, from_peer = 0;
  int64_t closed_unix = 0;
};

// One entry of the "active" list: a connection whose pump is running, with
// the bytes it has moved so far.
struct ActiveConnection {
  std::string direction, peer, channel, migration, client, local;
  uint64_t id = 0;
  uint64_t to_peer = 0, from_peer = 0;
  uint64_t rate = 0;  // bytes/s both ways, averaged over its age
  double age_seconds = 0;
};

struct TunnelStatus {
  std::string name;
  std::vector<ActiveConnection> active;  // oldest first; empty from a tunnel before live progress
  std::vector<RecentConnection> recent;  // oldest first
};

// GET /status over the endpoint (UNIX or TCP). Throws std::runtime_error
// naming the endpoint when it cannot be read.
TunnelStatus fetch_status(const tunnel::Endpoint& endpoint, std::chrono::milliseconds timeout);

// Parses the body of GET /status (tolerates fields it does not know).
TunnelStatus parse_status(const std::string& json);

// /proc/net/tls_stat as name -> value; empty when the file is absent (no tls module).
std::map<std::string, uint64_t> read_ktls_counters(const std::string& path = "/proc/net/tls_stat");

}  // namespace xmig::verify
