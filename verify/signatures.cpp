// Plaintext migration protocol signatures (see signatures.hpp).
#include "verify/signatures.hpp"

#include <cstring>

namespace xmig::verify {

namespace {

// Bytes a position needs to be judged by every signature (libvirt's header
// is 7 words).
constexpr size_t kWindow = 28;

uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
uint16_t be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

// The protocol whose signature starts at p (with `left` bytes available), or nullptr.
const char* match_at(const uint8_t* p, size_t left) {
  if (left < 8) return nullptr;
  uint32_t w0 = be32(p), w1 = be32(p + 4);
  switch (p[0]) {
    case 'Q':
      if (w0 == 0x5145564d && w1 == 3) return "QEMU migration stream";
      break;
    case 0x11:
      if (w0 == 0x11223344 && w1 == 1) return "QEMU multifd channel";
      break;
    case 'N':
      if (std::memcmp(p, "NBDMAGIC", 8) == 0) return "NBD";
      break;
    case 'I':
      if (std::memcmp(p, "IHAVEOPT", 8) == 0) return "NBD";
      break;
    case 0x00:
      if (w0 == 0x0003e889 && w1 == 0x045565a9) return "NBD";
      break;
    case 0x25:  // request: magic, flags (u16, small), type (u16, 0..10)
      if (w0 == 0x25609513 && p[4] == 0 && be16(p + 6) <= 10) return "NBD";
      break;
    case 0x67:  // simple reply: magic, error (errno, small)
      if (w0 == 0x67446698 && w1 <= 0xff) return "NBD";
      break;
    case 0x66:  // structured reply: magic, flags (u16, <= 1), type
      if (w0 == 0x668e33ef && be16(p + 4) <= 1) {
        uint16_t t = be16(p + 6);
        if (t <= 5 || (t >= 0x8001 && t <= 0x8002)) return "NBD";
      }
      break;
  }
  // libvirt RPC: length, program, version, procedure, type, serial, status.
  if (left >= kWindow && w0 >= 28 && w0 <= (32u << 20) && be32(p + 8) == 1) {
    if (w1 == 0x20008086 || w1 == 0x20008087 || w1 == 0x6b656570) {
      uint32_t type = be32(p + 16), status = be32(p + 24);
      if (type <= 7 && status <= 2) return "libvirt RPC";
    }
  }
  return nullptr;
}

}  // namespace

void SignatureScanner::hit(const char* protocol, uint64_t offset) {
  for (auto& h : hits_)
    if (h.protocol == protocol) {
      ++h.count;
      return;
    }
  hits_.push_back({protocol, offset, 1});
}

// Judges positions [0, limit) of b (n bytes available from b).
void SignatureScanner::scan(const uint8_t* b, size_t n, size_t limit, uint64_t base) {
  for (size_t i = 0; i < limit; ++i)
    if (const char* proto = match_at(b + i, n - i)) hit(proto, base + i);
}

void SignatureScanner::feed(const uint8_t* p, size_t n) {
  if (n == 0) return;
  // Positions still in carry_ need the first bytes of p: judge those that now
  // have a full window on a joined copy (at most 2 * kWindow bytes).
  if (!carry_.empty()) {
    std::string joined = carry_;
    joined.append(reinterpret_cast<const char*>(p), std::min(n, kWindow - 1));
    const auto* j = reinterpret_cast<const uint8_t*>(joined.data());
    size_t full = joined.size() >= kWindow ? joined.size() - kWindow + 1 : 0;
    size_t limit = std::min(carry_.size(), full);
    scan(j, joined.size(), limit, carry_offset_);
    carry_offset_ += limit;
    if (limit < carry_.size()) {  // p was too short to judge them all: keep waiting
      carry_ = joined.substr(limit);
      return;
    }
    carry_.clear();
  }
  // Positions of p that have a full window in p.
  size_t limit = n >= kWindow ? n - kWindow + 1 : 0;
  scan(p, n, limit, carry_offset_);
  carry_offset_ += limit;
  carry_.assign(reinterpret_cast<const char*>(p + limit), n - limit);
}

void SignatureScanner::gap(uint64_t missing) {
  finish();
  carry_offset_ += missing;
}

void SignatureScanner::finish() {
  const auto* b = reinterpret_cast<const uint8_t*>(carry_.data());
  scan(b, carry_.size(), carry_.size(), carry_offset_);
  carry_offset_ += carry_.size();
  carry_.clear();
}

}  // namespace xmig::verify
