// The canary: a recognisable plaintext stream sent through the tunnel, and a
// search for any 16-byte window of it in captured bytes.
//
// The canary is lines of text carrying a random per-run nonce and a line
// number, so it is unmistakable, low in entropy (a plaintext leak also fails
// the entropy test) and free of the runs of digits that DER certificates hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace xmig::verify {

// "xmig-verify canary <32 hex nonce> line 000000001\n"... exactly `bytes` long.
std::string make_canary(uint64_t bytes);

inline constexpr size_t kCanaryWindow = 16;

// Memory: 8 bytes per canary byte (the live check caps the canary at 8 MiB).
class CanaryMatcher {
 public:
  explicit CanaryMatcher(std::string canary);
  // Offset in haystack of the first 16-byte window that also occurs in the
  // canary, or npos.
  size_t find_in(std::string_view haystack) const;

 private:
  std::string canary_;
  // (upper 32 bits of the rolling hash, offset), sorted: 8 bytes per window;
  // a hash hit is confirmed with memcmp.
  std::vector<std::pair<uint32_t, uint32_t>> windows_;
  // A filter in front of the sorted list: one bit per low-hash value, about
  // 16 bits per window, so most positions of a haystack cost one lookup.
  std::vector<uint64_t> filter_;
  uint64_t filter_mask_ = 0;
};

}  // namespace xmig::verify
