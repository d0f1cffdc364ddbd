// Reads the local tunnel's status endpoint (GET /status, tunnel/status.hpp)
// and the kernel's kTLS counters, for the data-path check.
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
  std::string client;  // "out": who connected to the entry ("ip:port" or "pid N")
  uint64_t to_peer = 0, from_peer = 0;
  int64_t closed_unix = 0;
};

struct TunnelStatus {
  std::string name;
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
