// Fuzz target: tls::Records::open (tls/records.hpp), the userspace data
// path's reader of what the peer sends, which a broken peer or anyone on the
// path can shape.
// Pass:
// - whichever engine seals (OpenSSL or intel-ipsec-mb), the other opens;
// - arbitrary bytes never open as a record (no tag verifies without the key):
//   every step says NeedMore or Failed, and consumes nothing;
// - records sealed with the matching key open to exactly what was sealed, in
//   order, whatever chunks they arrive in: data as data, close_notify as the
//   end, a KeyUpdate as a key change (both sides follow it), any other alert
//   or handshake message, or an inner plaintext without a content type, as a
//   failure that ends the stream;
// - a sealed record with one byte changed never opens: the stream fails there;
// - open() writes nothing past kMaxInner bytes of its output (AddressSanitizer
//   sees the exact-size buffer).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/check.hpp"
#include "tls/records.hpp"

using xmig::tls::Records;

namespace {

constexpr uint8_t kData = 23, kAlert = 21, kHandshake = 22;

// One side's two fixed traffic secrets for `suite`; the peer's are swapped.
// `ipsec_mb`: AES-GCM by intel-ipsec-mb where the build has it (else, and
// for ChaCha20-Poly1305, OpenSSL), so one side may seal with one engine and
// the other open with the other.
std::unique_ptr<Records> make(uint16_t suite, bool peer, bool ipsec_mb = false) {
  const size_t size = suite == Records::kAes256GcmSha384 ? 48 : 32;
  std::vector<uint8_t> a(size, 0xA5), b(size, 0x5A);
  std::string why;
  auto engine = xmig::tls::AeadEngine::OpenSsl;
  if (ipsec_mb && suite != Records::kChacha20Poly1305Sha256 &&
      Records::from_secrets(suite, a, b, why, xmig::tls::AeadEngine::IpsecMb))
    engine = xmig::tls::AeadEngine::IpsecMb;
  auto r = peer ? Records::from_secrets(suite, b, a, why, engine)
                : Records::from_secrets(suite, a, b, why, engine);
  XMIG_FUZZ_CHECK(r != nullptr);
  return r;
}

// What opening one sealed record must give.
struct Expected {
  Records::Opened::Kind kind;
  std::vector<uint8_t> data;
};

bool is_key_update(const std::vector<uint8_t>& m) {
  return m.size() == 5 && m[0] == 24 && m[1] == 0 && m[2] == 0 && m[3] == 1 && m[4] <= 1;
}

void arbitrary_bytes(uint16_t suite, const std::vector<uint8_t>& bytes) {
  auto opener = make(suite, false);
  std::vector<uint8_t> out(Records::kMaxInner);
  Records::Opened r = opener->open(bytes.data(), bytes.size(), out.data());
  XMIG_FUZZ_CHECK(r.kind == Records::Opened::NeedMore || r.kind == Records::Opened::Failed);
  XMIG_FUZZ_CHECK(r.consumed == 0);
}

void sealed_stream(uint16_t suite, FuzzedDataProvider& in) {
  const bool seal_ipsec_mb = in.ConsumeBool();
  auto sealer = make(suite, true, seal_ipsec_mb);
  auto opener = make(suite, false, !seal_ipsec_mb);
  const size_t chunk = in.ConsumeIntegralInRange<size_t>(1, 3 * Records::kMaxRecord);
  std::vector<uint8_t> wire;
  std::vector<Expected> expected;
  std::string why;
  while (in.remaining_bytes() > 0 && expected.size() < 64) {
    const uint8_t choice = in.ConsumeIntegralInRange<uint8_t>(0, 4);
    const uint8_t type = choice == 0 ? kAlert : choice == 1 ? kHandshake : kData;
    std::vector<uint8_t> body =
        in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, Records::kMaxData));
    const size_t at = wire.size();
    wire.resize(at + body.size() + Records::kOverhead + Records::kKeyUpdateSize);
    size_t n = 0;
    Expected e{.kind = Records::Opened::Failed, .data = {}};
    if (choice == 4) {  // a KeyUpdate, which moves the sealer to its next key
      n = sealer->seal_key_update(wire.data() + at, why);
      e.kind = Records::Opened::KeyUpdated;
    } else {
      // A handshake body that happens to be a KeyUpdate would rotate only the opener.
      if (type == kHandshake && is_key_update(body)) body[0] = 1;
      n = sealer->seal(type, body.data(), body.size(), wire.data() + at, why);
      if (type == kData) e = {.kind = Records::Opened::Data, .data = body};
      if (type == kAlert && body.size() == 2 && body[1] == 0) e.kind = Records::Opened::CloseNotify;
    }
    XMIG_FUZZ_CHECK(n != 0);
    wire.resize(at + n);
    if (in.ConsumeBool() && in.ConsumeBool()) {  // one byte changed
      wire[at + in.ConsumeIntegralInRange<size_t>(0, n - 1)] ^=
          static_cast<uint8_t>(in.ConsumeIntegralInRange<int>(1, 255));
      e = {.kind = Records::Opened::Failed, .data = {}};
    }
    expected.push_back(std::move(e));
    if (expected.back().kind == Records::Opened::Failed ||
        expected.back().kind == Records::Opened::CloseNotify)
      break;  // the stream ends there
  }

  // Delivered in chunks of the size the input picked, as receives would.
  size_t delivered = 0, begin = 0;
  std::vector<uint8_t> out(Records::kMaxInner);
  for (const Expected& e : expected) {
    Records::Opened r{};
    while (true) {
      r = opener->open(wire.data() + begin, delivered - begin, out.data());
      if (r.kind != Records::Opened::NeedMore || delivered == wire.size()) break;
      delivered = std::min(wire.size(), delivered + chunk);
    }
    if (e.kind == Records::Opened::Failed) {
      // A changed length may also leave the record waiting for bytes that never come.
      XMIG_FUZZ_CHECK(r.kind == Records::Opened::Failed || r.kind == Records::Opened::NeedMore);
      return;
    }
    XMIG_FUZZ_CHECK(r.kind == e.kind);
    XMIG_FUZZ_CHECK(r.consumed > 0 && begin + r.consumed <= delivered);
    if (e.kind == Records::Opened::Data)
      XMIG_FUZZ_CHECK(r.data == e.data.size() &&
                      std::equal(e.data.begin(), e.data.end(), out.begin()));
    begin += r.consumed;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const uint16_t suites[] = {Records::kAes128GcmSha256, Records::kAes256GcmSha384,
                             Records::kChacha20Poly1305Sha256};
  const uint16_t suite = suites[in.ConsumeIntegralInRange<size_t>(0, 2)];
  if (in.ConsumeBool())
    arbitrary_bytes(suite, in.ConsumeRemainingBytes<uint8_t>());
  else
    sealed_stream(suite, in);
  return 0;
}
