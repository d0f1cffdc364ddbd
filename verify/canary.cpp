// The canary stream and its window search (see canary.hpp).
#include "verify/canary.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace xmig::verify {

namespace {

constexpr uint64_t kBase = 1099511628211ull;  // FNV prime as polynomial base (mod 2^64)

uint64_t base_pow_window() {
  uint64_t p = 1;
  for (size_t i = 0; i < kCanaryWindow; ++i) p *= kBase;
  return p;
}

// Calls f(hash, offset) for every 16-byte window of s.
template <class F>
void for_each_window(std::string_view s, F&& f) {
  if (s.size() < kCanaryWindow) return;
  static const uint64_t top = base_pow_window();
  uint64_t h = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    h = h * kBase + static_cast<uint8_t>(s[i]);
    if (i >= kCanaryWindow) h -= top * static_cast<uint8_t>(s[i - kCanaryWindow]);
    if (i + 1 >= kCanaryWindow) f(h, i + 1 - kCanaryWindow);
  }
}

}  // namespace

std::string make_canary(uint64_t bytes) {
  unsigned char nonce[16];
  if (RAND_bytes(nonce, sizeof nonce) != 1)
    for (size_t i = 0; i < sizeof nonce; ++i) nonce[i] = static_cast<unsigned char>(i * 37 + 11);
  char hex[33];
  for (size_t i = 0; i < sizeof nonce; ++i) std::snprintf(hex + 2 * i, 3, "%02x", nonce[i]);
  std::string out;
  out.reserve(bytes + 64);
  for (uint64_t line = 1; out.size() < bytes; ++line) {
    char buf[96];
    int n = std::snprintf(buf, sizeof buf, "xmig-verify canary %s line %09llu\n", hex,
                          static_cast<unsigned long long>(line));
    out.append(buf, static_cast<size_t>(n));
  }
  out.resize(bytes);
  return out;
}

CanaryMatcher::CanaryMatcher(std::string canary) : canary_(std::move(canary)) {
  windows_.reserve(canary_.size());
  for_each_window(canary_, [&](uint64_t h, size_t off) {
    windows_.emplace_back(static_cast<uint32_t>(h >> 32), static_cast<uint32_t>(off));
  });
  std::sort(windows_.begin(), windows_.end());
  // Equal windows (the repeated text) need one representative each.
  windows_.erase(std::unique(windows_.begin(), windows_.end(),
                             [&](const auto& a, const auto& b) {
                               return a.first == b.first &&
                                      std::memcmp(canary_.data() + a.second,
                                                  canary_.data() + b.second, kCanaryWindow) == 0;
                             }),
                 windows_.end());
  size_t bits = 1 << 16;
  while (bits < windows_.size() * 16) bits <<= 1;
  filter_.assign(bits / 64, 0);
  filter_mask_ = bits - 1;
  for_each_window(canary_, [&](uint64_t h, size_t) {
    uint64_t b = h & filter_mask_;
    filter_[b >> 6] |= uint64_t{1} << (b & 63);
  });
}

size_t CanaryMatcher::find_in(std::string_view haystack) const {
  size_t found = std::string_view::npos;
  for_each_window(haystack, [&](uint64_t full, size_t off) {
    if (found != std::string_view::npos) return;
    uint64_t b = full & filter_mask_;
    if (!(filter_[b >> 6] & (uint64_t{1} << (b & 63)))) return;
    auto h = static_cast<uint32_t>(full >> 32);
    auto it = std::lower_bound(windows_.begin(), windows_.end(), std::make_pair(h, uint32_t{0}));
    for (; it != windows_.end() && it->first == h; ++it)
      if (std::memcmp(canary_.data() + it->second, haystack.data() + off, kCanaryWindow) == 0) {
        found = off;
        return;
      }
  });
  return found;
}

}  // namespace xmig::verify
