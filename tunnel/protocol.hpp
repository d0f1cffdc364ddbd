// The one byte the tunnel adds to a stream: after the handshake, the side
// that accepted TLS answers with a Verdict before any data flows. The dialling
// side hands the connection to a pump only on Accepted, so its local client
// learns promptly when the far side refused, and connections reach the far
// target in the order they were accepted (QEMU < 8.0 tells multifd channels
// apart by arrival order).
//
// The verdict is sent inside TLS, after authentication: nothing readable
// travels before the handshake.
#pragma once

#include <cstdint>
#include <string>

namespace xmig::tunnel {

// The verify channel: the accepting tunnel echoes it back (up to a cap) to
// authenticated peers, so xmig-verify can send a canary across the wire and
// get it back. It is never delivered to a target.
inline constexpr const char* kVerifyChannel = "verify";
inline constexpr uint64_t kVerifyEchoLimit = 64ull << 20;

enum class Verdict : uint8_t {
  Accepted = 'A',
  UnknownChannel = 'C',     // the far side has no target for this channel
  TargetUnavailable = 'T',  // the far target refused or timed out
  Busy = 'B',               // the far side is at max_connections or stopping
  NotAPeer = 'P',           // the certificate is valid but names no configured [[peer]]
};

inline std::string describe(Verdict v) {
  switch (v) {
    case Verdict::Accepted:
      return "accepted";
    case Verdict::UnknownChannel:
      return "the peer has no target for this channel";
    case Verdict::TargetUnavailable:
      return "the peer could not connect to its target";
    case Verdict::Busy:
      return "the peer is busy or shutting down";
    case Verdict::NotAPeer:
      return "the peer does not list this host as a [[peer]] (check its config and this "
             "certificate's DNS name)";
  }
  return "unknown verdict";
}

}  // namespace xmig::tunnel
