// Fuzz target: captured frames -> link layer, IPv4/IPv6, TCP -> flows and
// per-direction reassembly (verify/pcap_flows.hpp), then each flow's verdict
// (verify/classify.hpp), with caps small enough that the input reaches them.
// Input: a link type choice, then frames as [2-byte length][bytes].
// Pass: in every direction, offset == delivered + gap bytes and equals what
// the TLS parser counted, nothing waits out of order after finish(), the
// kept stream and the pending bytes stay within their caps, the flow count
// within max_flows; classify_flow() judges every flow.
#include <fuzzer/FuzzedDataProvider.h>
#include <pcap/dlt.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz/check.hpp"
#include "verify/classify.hpp"
#include "verify/pcap_flows.hpp"

using namespace xmig::verify;

namespace {

// What tcpdump writes on Linux (pcap_flows.cpp decodes these), and 12/101,
// the raw-IP numbers as stored in files.
constexpr int kLinkTypes[] = {DLT_EN10MB, DLT_NULL, DLT_LOOP, DLT_RAW,       12,
                              101,        DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL, DLT_LINUX_SLL2};
constexpr size_t kMaxFrame = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  uint8_t pick = in.ConsumeIntegral<uint8_t>();
  int linktype = pick < std::size(kLinkTypes) ? kLinkTypes[pick] : pick;
  FlowOptions opts{
      .keep_streams = in.ConsumeBool(),
      .keep_limit = 4096,
      .max_flows = 8,
      .max_pending_per_direction = 8192,
      .max_pending_total = 16384,
  };
  FlowTable table(opts);
  while (in.remaining_bytes() > 0) {
    size_t n = in.ConsumeIntegralInRange<size_t>(0, kMaxFrame);
    std::vector<uint8_t> frame = in.ConsumeBytes<uint8_t>(n);
    table.add_frame(linktype, frame.data(), frame.size());
  }
  table.finish();

  XMIG_FUZZ_CHECK(table.flows().size() <= opts.max_flows);
  for (const auto& flow : table.flows()) {
    for (const StreamDirection& d : flow->dir) {
      XMIG_FUZZ_CHECK(d.offset == d.delivered + d.gap_bytes);
      XMIG_FUZZ_CHECK(d.tls.offset() == d.offset);
      XMIG_FUZZ_CHECK(d.pending.empty() && d.pending_bytes == 0);
      XMIG_FUZZ_CHECK(d.kept.size() <= opts.keep_limit);
    }
    FlowVerdict v = classify_flow(*flow);
    XMIG_FUZZ_CHECK(!v.name.empty());
  }
  return 0;
}
