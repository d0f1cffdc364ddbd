// Fuzz target: the canary search (verify/canary.hpp) over captured bytes,
// against the plain definition.
// Pass: find_in() returns the first offset of the haystack whose 16-byte
// window occurs anywhere in the canary, exactly as a naive search finds it
// (rolling hash, filter and sorted windows must never miss or invent one).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/check.hpp"
#include "verify/canary.hpp"

using namespace xmig::verify;

namespace {

// Bounds that keep the naive search quick (haystack x canary).
constexpr size_t kMaxCanary = 2048;
constexpr size_t kMaxHaystack = 4096;

size_t naive_find(const std::string& canary, std::string_view haystack) {
  for (size_t at = 0; at + kCanaryWindow <= haystack.size(); ++at)
    if (canary.find(haystack.substr(at, kCanaryWindow)) != std::string::npos) return at;
  return std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::string canary = in.ConsumeRandomLengthString(kMaxCanary);
  std::string haystack = in.ConsumeRemainingBytesAsString();
  if (haystack.size() > kMaxHaystack) haystack.resize(kMaxHaystack);
  CanaryMatcher matcher(canary);
  XMIG_FUZZ_CHECK(matcher.find_in(haystack) == naive_find(canary, haystack));
  return 0;
}
