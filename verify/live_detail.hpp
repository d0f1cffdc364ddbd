// Internal to the live check: what its steps share (verify/live.cpp runs
// them in order; enforcement.cpp and wire.cpp hold the longer ones).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tls/context.hpp"
#include "tunnel/config.hpp"
#include "verify/canary.hpp"
#include "verify/capture.hpp"
#include "verify/pcap_flows.hpp"
#include "verify/probe.hpp"
#include "verify/verify.hpp"

namespace xmig::verify::detail {

struct LiveContext {
  const LiveOptions& opts;
  Report& report;
  tunnel::Config config{};
  const tunnel::PeerConfig* peer = nullptr;
  std::shared_ptr<const tls::Context> tls{};
  PeerAddress address{};
  bool reachable = false;   // a TCP connection to the peer's TLS port worked
  bool control_ok = false;  // a valid handshake with the local identity was accepted
  // The positive control's failure, for the test migration's cause: why the
  // session failed, and the verification error of the peer's certificate
  // (X509_V_OK when it verified or was never seen).
  std::string handshake_error{};
  long peer_verify_result = 0;  // X509_V_OK
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

// A capture of the traffic towards the peer, started for one live step.
struct CaptureStart {
  std::unique_ptr<LiveCapture> capture;  // null when it could not start
  std::string interface;
  std::string error;  // why not (with its fix when capture.cpp knows it)
};

// Starts capturing `filter` on the interface that reaches every address in
// `towards` (--interface when given; "any" when they leave on different
// interfaces), before the step's first connection, so it is seen from its SYN.
CaptureStart start_capture(const LiveContext& c, const std::vector<PeerAddress>& towards,
                           const std::string& filter);
// The fix for a capture that could not start (none when the error holds one).
std::string capture_fix(const std::string& error);

// Feeds every captured frame to `table` and finishes it.
void read_capture(const LiveCapture& cap, FlowTable& table);

// Where a 16-byte window of the canary occurs in the streams of `table`
// (kept) or the raw frames of `cap`, as a phrase; "" when nowhere.
std::string find_canary(const CanaryMatcher& matcher, const FlowTable& table,
                        const LiveCapture& cap);

// Loads the config and this host's TLS material (group config, and this
// host's certificate expiry); false when the check cannot go on (live.cpp).
bool check_config(LiveContext& c);

// The positive control: this host's identity on channel verify must be
// accepted; the peer's certificate must chain to the CA and name the peer
// (live.cpp). Sets reachable, control_ok, handshake_error, peer_verify_result.
void check_handshake(LiveContext& c);

// Enforcement: each probe must be refused by the peer (enforcement.cpp).
void check_enforcement(LiveContext& c);

// On the wire: the canary through the local tunnel while capturing (wire.cpp).
CanaryRun check_wire(LiveContext& c);

// Transparent mode, when the config has [intercept]: this host's table, its
// plaintext connections to the peer's ports going into the tunnel, and the
// peer dropping them from the network (interception.cpp).
void check_interception(LiveContext& c);

}  // namespace xmig::verify::detail
