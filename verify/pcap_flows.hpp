// Captured frames -> TCP flows -> in-order byte streams, per direction.
//
// Decodes the link layers tcpdump writes on Linux (Ethernet with VLAN tags,
// loopback/BSD null, raw IP, Linux cooked v1/v2), IPv4 and IPv6 (extension
// headers; fragments are counted and skipped), and TCP. Each direction of a
// flow is reassembled in sequence order: retransmitted and overlapping bytes
// are dropped, out-of-order segments wait (bounded), and what never arrives
// becomes a gap the consumers are told about. Each direction's bytes go to a
// TLS record parser and a signature scanner; a live check can also keep the
// stream (capped) to search it for the canary.
//
// Every frame is untrusted: every length is checked against what was
// captured, and memory is capped per direction, per capture and in flows.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "verify/signatures.hpp"
#include "verify/tls_records.hpp"

namespace xmig::verify {

struct Address {
  bool v6 = false;
  std::array<uint8_t, 16> ip{};
  uint16_t port = 0;
  std::string str() const;  // "10.0.0.1:7443", "[fd00::1]:7443"
  bool operator==(const Address& o) const { return v6 == o.v6 && ip == o.ip && port == o.port; }
};

struct StreamDirection {
  bool started = false;
  bool syn = false;        // the stream's start was seen
  uint32_t isn = 0;        // its SYN's sequence number
  uint32_t next_seq = 0;   // sequence number of the next in-order byte
  uint64_t offset = 0;     // stream bytes accounted for (delivered + gaps)
  uint64_t delivered = 0;  // bytes delivered in order
  uint64_t gap_bytes = 0;  // bytes never captured
  uint64_t retransmitted = 0;
  uint64_t segments = 0;  // segments with payload
  bool fin = false;       // this side sent FIN
  struct Pending {
    std::string bytes;  // what was captured
    uint32_t len = 0;   // what the segment carried
  };
  std::map<uint64_t, Pending> pending;  // out-of-order segments by stream offset
  size_t pending_bytes = 0;
  TlsRecordParser tls;
  SignatureScanner signatures;
  std::string kept;              // the stream itself, when FlowOptions::keep_streams
  bool kept_incomplete = false;  // kept is not the whole stream (cap or gap)
};

struct Flow {
  Address a, b;            // a sent the first frame seen
  int client = 0;          // index of the side that sent SYN (or 0 when unseen)
  StreamDirection dir[2];  // dir[0]: a -> b, dir[1]: b -> a
  uint64_t frames = 0;
  bool fin = false, rst = false;
  const Address& side(int i) const { return i == 0 ? a : b; }
};

struct FlowOptions {
  bool keep_streams = false;       // keep each direction's bytes (live check)
  size_t keep_limit = 256u << 20;  // per direction
  size_t max_flows = 16384;        // flows beyond are counted, not analysed
  size_t max_pending_per_direction = 8u << 20;
  size_t max_pending_total = 256u << 20;
};

struct FlowCounters {
  uint64_t frames = 0;
  uint64_t tcp_segments = 0;
  uint64_t not_tcp = 0;    // ARP, UDP, ICMP, ...
  uint64_t malformed = 0;  // headers that do not fit or contradict themselves
  uint64_t fragments = 0;  // IP fragments (skipped)
  uint64_t out_of_window = 0;
  uint64_t flows_dropped = 0;  // frames of flows beyond max_flows
  bool unsupported_link = false;
};

class FlowTable {
 public:
  explicit FlowTable(FlowOptions opts = {});
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  // One captured frame of the given libpcap link type (DLT_*); caplen bytes at data.
  void add_frame(int linktype, const uint8_t* data, size_t caplen);
  // End of capture: flushes what waits out of order (as gaps) and the scanners.
  void finish();

  const std::vector<std::unique_ptr<Flow>>& flows() const { return flows_; }
  const FlowCounters& counters() const { return counters_; }

 private:
  struct Segment;
  void on_segment(const Segment& seg);
  void place(Flow& flow, StreamDirection& dir, const Segment& seg);
  void deliver(StreamDirection& d, const uint8_t* p, size_t captured, size_t len);
  void gap(StreamDirection& d, uint64_t missing);
  void drain(StreamDirection& d);
  void flush_pending(StreamDirection& d);

  FlowOptions opts_;
  FlowCounters counters_;
  std::vector<std::unique_ptr<Flow>> flows_;
  std::unordered_map<std::string, Flow*> index_;  // canonical 4-tuple -> live flow
  size_t pending_total_ = 0;
};

}  // namespace xmig::verify
