// Frames -> TCP flows -> in-order streams (see pcap_flows.hpp).
#include "verify/pcap_flows.hpp"

#include <arpa/inet.h>
#include <pcap/dlt.h>

#include <cstring>

namespace xmig::verify {

namespace {

// A segment's payload may run at most this far ahead of the next expected
// byte to be kept for later; beyond, it is counted and ignored.
constexpr uint32_t kMaxAhead = 64u << 20;

uint16_t be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kAck = 0x10;

}  // namespace

struct FlowTable::Segment {
  Address src, dst;
  uint32_t seq = 0;
  uint8_t flags = 0;
  const uint8_t* payload = nullptr;
  size_t captured = 0;  // payload bytes present in the frame
  size_t len = 0;       // payload bytes the segment carried
};

std::string Address::str() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  inet_ntop(v6 ? AF_INET6 : AF_INET, ip.data(), buf, sizeof buf);
  return v6 ? std::string("[") + buf + "]:" + std::to_string(port)
            : std::string(buf) + ":" + std::to_string(port);
}

FlowTable::FlowTable(FlowOptions opts) : opts_(opts) {}

void FlowTable::add_frame(int linktype, const uint8_t* p, size_t n) {
  ++counters_.frames;
  // Link layer -> the network protocol (ethertype) and where it starts.
  uint16_t proto = 0;
  size_t off = 0;
  switch (linktype) {
    case DLT_EN10MB:
      if (n < 14) return void(++counters_.malformed);
      proto = be16(p + 12);
      off = 14;
      for (int tags = 0; (proto == 0x8100 || proto == 0x88a8) && tags < 2; ++tags) {
        if (n < off + 4) return void(++counters_.malformed);
        proto = be16(p + off + 2);
        off += 4;
      }
      break;
    case DLT_NULL:
    case DLT_LOOP: {
      if (n < 4) return void(++counters_.malformed);
      uint32_t fam = linktype == DLT_LOOP
                         ? be32(p)
                         : (p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24);
      if (fam > 0xffff) fam = be32(p);  // written on a host of the other byte order
      proto = fam == 2 ? 0x0800 : (fam == 10 || fam == 24 || fam == 28 || fam == 30) ? 0x86dd : 0;
      off = 4;
      break;
    }
    case DLT_RAW:
#if DLT_RAW != 12
    case 12:
#endif
    case 101:  // LINKTYPE_RAW as stored in files
    case DLT_IPV4:
    case DLT_IPV6:
      if (n < 1) return void(++counters_.malformed);
      proto = (p[0] >> 4) == 4 ? 0x0800 : (p[0] >> 4) == 6 ? 0x86dd : 0;
      break;
    case DLT_LINUX_SLL:
      if (n < 16) return void(++counters_.malformed);
      proto = be16(p + 14);
      off = 16;
      break;
    case DLT_LINUX_SLL2:
      if (n < 20) return void(++counters_.malformed);
      proto = be16(p);
      off = 20;
      break;
    default:
      counters_.unsupported_link = true;
      return;
  }
  p += off;
  n -= off;

  // Network layer -> TCP header offset and the TCP bytes the packet carried.
  Segment seg;
  size_t l4 = 0, l4_len = 0;  // offset of TCP in p; TCP bytes declared
  if (proto == 0x0800) {
    if (n < 20 || (p[0] >> 4) != 4) return void(++counters_.malformed);
    size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
    size_t total = be16(p + 2);
    if (total == 0) total = n;  // segmentation offload: the length is not filled in
    if (ihl < 20 || total < ihl || n < ihl) return void(++counters_.malformed);
    if (be16(p + 6) & 0x3fff) return void(++counters_.fragments);  // MF or offset
    if (p[9] != 6) return void(++counters_.not_tcp);
    seg.src.v6 = seg.dst.v6 = false;
    std::memcpy(seg.src.ip.data(), p + 12, 4);
    std::memcpy(seg.dst.ip.data(), p + 16, 4);
    l4 = ihl;
    l4_len = total - ihl;
  } else if (proto == 0x86dd) {
    if (n < 40 || (p[0] >> 4) != 6) return void(++counters_.malformed);
    size_t payload = be16(p + 4);
    uint8_t next = p[6];
    seg.src.v6 = seg.dst.v6 = true;
    std::memcpy(seg.src.ip.data(), p + 8, 16);
    std::memcpy(seg.dst.ip.data(), p + 24, 16);
    l4 = 40;
    // Extension headers: hop-by-hop, routing, destination options; fragments skipped.
    for (int hops = 0; hops < 8 && (next == 0 || next == 43 || next == 60 || next == 44); ++hops) {
      if (next == 44) return void(++counters_.fragments);
      if (n < l4 + 8) return void(++counters_.malformed);
      size_t ext = (static_cast<size_t>(p[l4 + 1]) + 1) * 8;
      next = p[l4];
      l4 += ext;
    }
    if (next != 6) return void(++counters_.not_tcp);
    if (payload == 0 || payload + 40 < l4) return void(++counters_.malformed);  // jumbo or short
    l4_len = payload + 40 - l4;
  } else {
    return void(++counters_.not_tcp);
  }
  if (n < l4 + 20 || l4_len < 20) return void(++counters_.malformed);
  const uint8_t* tcp = p + l4;
  size_t doff = static_cast<size_t>(tcp[12] >> 4) * 4;
  if (doff < 20 || doff > l4_len || n < l4 + doff) return void(++counters_.malformed);
  seg.src.port = be16(tcp);
  seg.dst.port = be16(tcp + 2);
  seg.seq = be32(tcp + 4);
  seg.flags = tcp[13];
  seg.payload = tcp + doff;
  seg.len = l4_len - doff;
  seg.captured = std::min(seg.len, n - l4 - doff);
  ++counters_.tcp_segments;
  on_segment(seg);
}

void FlowTable::on_segment(const Segment& seg) {
  // Canonical key: the smaller endpoint first, so both directions find the flow.
  auto bytes_of = [](const Address& x) {
    std::string k(reinterpret_cast<const char*>(x.ip.data()), 16);
    k += static_cast<char>(x.port >> 8);
    k += static_cast<char>(x.port & 0xff);
    k += static_cast<char>(x.v6);
    return k;
  };
  std::string s = bytes_of(seg.src), d = bytes_of(seg.dst);
  std::string key = s < d ? s + d : d + s;
  auto it = index_.find(key);
  Flow* flow = it == index_.end() ? nullptr : it->second;

  bool opening = (seg.flags & kSyn) && !(seg.flags & kAck);
  if (flow && opening) {
    // A new connection on the same addresses (port reuse) starts a new flow;
    // a retransmitted SYN does not.
    int di = flow->a == seg.src ? 0 : 1;
    const StreamDirection& sd = flow->dir[di];
    if (sd.started && !(sd.syn && sd.isn == seg.seq)) flow = nullptr;
  }
  if (!flow) {
    if (flows_.size() >= opts_.max_flows) return void(++counters_.flows_dropped);
    flows_.push_back(std::make_unique<Flow>());
    flow = flows_.back().get();
    flow->a = seg.src;
    flow->b = seg.dst;
    index_[key] = flow;
  }
  ++flow->frames;
  int di = flow->a == seg.src ? 0 : 1;
  StreamDirection& dir = flow->dir[di];
  if (seg.flags & kRst) flow->rst = true;
  if (seg.flags & kFin) flow->fin = dir.fin = true;
  place(*flow, dir, seg);
  // A connection that has ended sends no more bytes worth waiting for: what
  // still waits out of order is delivered now (with gaps), freeing it.
  if (flow->rst || (flow->dir[0].fin && flow->dir[1].fin))
    for (auto& d : flow->dir)
      if (!d.pending.empty()) flush_pending(d);
}

// Puts one segment's payload in its place in the direction's stream.
void FlowTable::place(Flow& flow, StreamDirection& dir, const Segment& seg) {
  uint32_t seq = seg.seq;
  if (seg.flags & kSyn) {
    if (!dir.started) {
      dir.started = dir.syn = true;
      dir.isn = seg.seq;
      dir.next_seq = seg.seq + 1;
      if (!(seg.flags & kAck)) flow.client = &dir == &flow.dir[0] ? 0 : 1;
    }
    seq += 1;  // data on a SYN (fast open) starts after it
  }
  if (seg.len == 0) return;
  ++dir.segments;
  if (!dir.started) {  // joined in the middle of the stream
    dir.started = true;
    dir.next_seq = seq;
    dir.tls.start_unknown();
    dir.kept_incomplete = true;
  }

  const uint8_t* payload = seg.payload;
  size_t captured = seg.captured, len = seg.len;
  uint32_t ahead = seq - dir.next_seq;  // modulo 2^32
  if (ahead >= 0x80000000u) {
    // Starts before the next expected byte: retransmission or overlap.
    uint32_t behind = dir.next_seq - seq;
    if (behind >= len) {
      dir.retransmitted += len;
      return;
    }
    dir.retransmitted += behind;
    len -= behind;
    size_t cut = std::min<size_t>(behind, captured);
    payload += cut;
    captured -= cut;
    ahead = 0;
  }
  if (ahead > 0) {
    if (ahead > kMaxAhead) return void(++counters_.out_of_window);
    uint64_t at = dir.offset + ahead;
    auto& slot = dir.pending[at];
    if (slot.len < len) {  // keep the longer of two segments at one offset
      dir.pending_bytes -= slot.bytes.size();
      pending_total_ -= slot.bytes.size();
      slot.bytes.assign(reinterpret_cast<const char*>(payload), captured);
      slot.len = static_cast<uint32_t>(len);
      dir.pending_bytes += captured;
      pending_total_ += captured;
    }
    if (dir.pending_bytes > opts_.max_pending_per_direction ||
        pending_total_ > opts_.max_pending_total || dir.pending.size() > 65536)
      flush_pending(dir);  // the missing bytes are not coming: go on with gaps
    return;
  }
  deliver(dir, payload, captured, len);
  drain(dir);
}

void FlowTable::deliver(StreamDirection& d, const uint8_t* p, size_t captured, size_t len) {
  if (captured > 0) {
    d.tls.feed(p, captured);
    d.signatures.feed(p, captured);
    if (opts_.keep_streams && !d.kept_incomplete) {
      if (d.kept.size() + captured <= opts_.keep_limit)
        d.kept.append(reinterpret_cast<const char*>(p), captured);
      else
        d.kept_incomplete = true;
    }
    d.delivered += captured;
    d.offset += captured;
    d.next_seq += static_cast<uint32_t>(captured);
  }
  if (len > captured) gap(d, len - captured);  // cut by the capture's snap length
}

void FlowTable::gap(StreamDirection& d, uint64_t missing) {
  d.tls.gap(missing);
  d.signatures.gap(missing);
  d.kept_incomplete = true;
  d.gap_bytes += missing;
  d.offset += missing;
  d.next_seq += static_cast<uint32_t>(missing);
}

void FlowTable::drain(StreamDirection& d) {
  while (!d.pending.empty()) {
    auto it = d.pending.begin();
    if (it->first > d.offset) break;
    StreamDirection::Pending seg = std::move(it->second);
    uint64_t skip = d.offset - it->first;
    d.pending_bytes -= seg.bytes.size();
    pending_total_ -= seg.bytes.size();
    d.pending.erase(it);
    if (skip >= seg.len) {
      d.retransmitted += seg.len;
      continue;
    }
    size_t cut = std::min<size_t>(skip, seg.bytes.size());
    deliver(d, reinterpret_cast<const uint8_t*>(seg.bytes.data()) + cut, seg.bytes.size() - cut,
            seg.len - skip);
  }
}

void FlowTable::flush_pending(StreamDirection& d) {
  while (!d.pending.empty()) {
    uint64_t first = d.pending.begin()->first;
    if (first > d.offset) gap(d, first - d.offset);
    drain(d);
  }
}

void FlowTable::finish() {
  for (auto& f : flows_)
    for (auto& d : f->dir) {
      flush_pending(d);
      d.signatures.finish();
    }
  index_.clear();
}

}  // namespace xmig::verify
