// Internal to the live check: what its steps share (verify/live.cpp runs
// them in order; enforcement.cpp and wire.cpp hold the longer ones).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "tls/context.hpp"
#include "tunnel/config.hpp"
#include "verify/probe.hpp"
#include "verify/verify.hpp"

namespace xmig::verify::detail {

struct LiveContext {
  const LiveOptions& opts;
  Report& report;
  tunnel::Config config;
  const tunnel::PeerConfig* peer = nullptr;
  std::shared_ptr<const tls::Context> tls;
  PeerAddress address;
  bool reachable = false;   // a TCP connection to the peer's TLS port worked
  bool control_ok = false;  // a valid handshake with the local identity was accepted
};

// What the wire check learnt, for the data-path check.
struct CanaryRun {
  bool via_route = false;    // through the local tunnel (a [[route]] with channel verify)
  std::string entry;         // the route's listen endpoint
  std::string client;        // how the tunnel names our connection to the route (/status)
  bool intact = false;       // the canary came back byte for byte
  int64_t started_unix = 0;  // wall clock before the canary was sent
  std::map<std::string, uint64_t> ktls_before;  // /proc/net/tls_stat before the canary
};

// Enforcement: each probe must be refused by the peer (enforcement.cpp).
void check_enforcement(LiveContext& c);

// On the wire: the canary through the local tunnel while capturing (wire.cpp).
CanaryRun check_wire(LiveContext& c);

}  // namespace xmig::verify::detail
