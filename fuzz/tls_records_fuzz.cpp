// Fuzz target: verify's TLS record framing (verify/tls_records.hpp) on one
// direction of a captured stream, and only_tls_alerts() on a peer's reply.
// Pass: the parser's summary, entropy and offset are the same whether the
// stream arrives in one piece or in the chunks the input chooses (a capture
// splits it anywhere); a run with gaps inserted ends without a sanitizer
// report.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "fuzz/check.hpp"
#include "verify/tls_records.hpp"

using namespace xmig::verify;

namespace {

bool same(const TlsDirectionSummary& a, const TlsDirectionSummary& b) {
  for (size_t i = 0; i < std::size(a.records); ++i)
    if (a.records[i] != b.records[i]) return false;
  return a.framed == b.framed && a.desync == b.desync && a.desync_at == b.desync_at &&
         a.resynced == b.resynced && a.bad_versions == b.bad_versions &&
         a.client_hello == b.client_hello && a.server_hello == b.server_hello &&
         a.hello_version == b.hello_version && a.cipher_suite == b.cipher_suite && a.sni == b.sni &&
         a.alpn == b.alpn;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  bool joined_midway = in.ConsumeBool();
  uint32_t seed = in.ConsumeIntegral<uint32_t>();
  std::vector<uint8_t> stream = in.ConsumeRemainingBytes<uint8_t>();

  TlsRecordParser whole, chunked, gapped;
  if (joined_midway) {
    whole.start_unknown();
    chunked.start_unknown();
    gapped.start_unknown();
  }
  whole.feed(stream.data(), stream.size());

  std::minstd_rand rng(seed);
  for (size_t at = 0; at < stream.size();) {
    size_t n = std::min<size_t>(stream.size() - at, 1 + rng() % (rng() % 4 == 0 ? 4096 : 9));
    chunked.feed(stream.data() + at, n);
    if (rng() % 8 == 0)
      gapped.gap(1 + rng() % 3000);
    else
      gapped.feed(stream.data() + at, n);
    at += n;
  }

  XMIG_FUZZ_CHECK(same(whole.summary(), chunked.summary()));
  XMIG_FUZZ_CHECK(whole.offset() == stream.size() && chunked.offset() == stream.size());
  XMIG_FUZZ_CHECK(whole.app_data().bytes() == chunked.app_data().bytes());
  XMIG_FUZZ_CHECK(whole.app_data().bits_per_byte() == chunked.app_data().bits_per_byte());
  double bits = gapped.app_data().bits_per_byte();
  XMIG_FUZZ_CHECK(bits >= 0 && bits <= 8);

  std::string_view reply(reinterpret_cast<const char*>(stream.data()), stream.size());
  (void)only_tls_alerts(reply);
  return 0;
}
