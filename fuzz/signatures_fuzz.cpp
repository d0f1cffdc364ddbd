// Fuzz target: the plaintext-protocol signature scanner (verify/signatures.hpp)
// on one direction of a captured stream.
// Pass: the hits (protocol, first offset, count) are the same whether the
// stream is fed in one piece or in the chunks the input chooses: every
// position is looked at exactly once, matches straddling two feeds included.
// A run with gaps inserted ends without a sanitizer report.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "fuzz/check.hpp"
#include "verify/signatures.hpp"

using namespace xmig::verify;

namespace {

bool same(const std::vector<SignatureHit>& a, const std::vector<SignatureHit>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].protocol != b[i].protocol || a[i].offset != b[i].offset || a[i].count != b[i].count)
      return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  uint32_t seed = in.ConsumeIntegral<uint32_t>();
  std::vector<uint8_t> stream = in.ConsumeRemainingBytes<uint8_t>();

  SignatureScanner whole, chunked, gapped;
  whole.feed(stream.data(), stream.size());
  whole.finish();

  std::minstd_rand rng(seed);
  for (size_t at = 0; at < stream.size();) {
    size_t n = std::min<size_t>(stream.size() - at, 1 + rng() % (rng() % 4 == 0 ? 4096 : 17));
    chunked.feed(stream.data() + at, n);
    if (rng() % 8 == 0)
      gapped.gap(1 + rng() % 100);
    else
      gapped.feed(stream.data() + at, n);
    at += n;
  }
  chunked.finish();
  gapped.finish();

  XMIG_FUZZ_CHECK(same(whole.hits(), chunked.hits()));
  for (const SignatureHit& h : whole.hits())
    XMIG_FUZZ_CHECK(h.count > 0 && h.offset < stream.size());
  return 0;
}
