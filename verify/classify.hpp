// What a reassembled TCP flow is: TLS (version, suite, records, entropy) or
// plaintext, and which plaintext migration protocol it carries. Shared by the
// offline check (one finding per flow) and the live wire check.
#pragma once

#include <string>

#include "verify/pcap_flows.hpp"
#include "verify/verify.hpp"

namespace xmig::verify {

// Entropy (bits/byte) below which application data does not look like ciphertext.
inline constexpr double kCiphertextEntropy = 7.5;

struct FlowVerdict {
  bool has_payload = false;
  bool tls = false;  // every direction with payload is TLS framing throughout
  Status status = Status::Pass;
  std::string name;    // "client:port -> server:port"
  std::string reason;  // one line: what was seen
  std::string fix;
};

FlowVerdict classify_flow(const Flow& flow);

// "1.5 MiB"
std::string human_bytes(uint64_t bytes);
// "1 TCP flow", "3 TCP flows"
std::string count(uint64_t n, const std::string& noun);

}  // namespace xmig::verify
