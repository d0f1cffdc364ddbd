// tls::Records' two AEAD engines (tls/aead.hpp): OpenSSL's EVP and
// intel-ipsec-mb's AES-GCM must put the same bytes on the wire, and each must
// refuse what does not authenticate. The pump tests (tests/io) run the
// product's choice against a real OpenSSL peer; these cross the engines
// directly. Each test states its pass criterion first.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "tls/records.hpp"

namespace xmig::test {
namespace {

using tls::AeadEngine;
using tls::Records;

constexpr uint8_t kData = 23, kAlert = 21;

struct Pair {
  std::unique_ptr<Records> sealer, opener;
};

// A sealer and the matching opener for `suite` (fixed secrets: the peer's
// sending secret is our receiving one), each with its own engine.
Pair make_pair(uint16_t suite, AeadEngine seal_with, AeadEngine open_with) {
  const size_t size = suite == Records::kAes256GcmSha384 ? 48 : 32;
  std::vector<uint8_t> a(size, 0x3C), b(size, 0xC3);
  std::string why;
  Pair p{.sealer = Records::from_secrets(suite, a, b, why, seal_with),
         .opener = Records::from_secrets(suite, b, a, why, open_with)};
  EXPECT_TRUE(p.sealer && p.opener) << why;
  return p;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 131 + (i >> 8));
  return v;
}

// Whether this CPU has what intel-ipsec-mb's AVX-512 VAES AES-GCM needs
// (what AeadEngine::Auto looks for), read from /proc/cpuinfo's flags.
bool cpu_has_avx512_vaes() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    line += ' ';
    for (const char* f : {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "vaes",
                          "vpclmulqdq", "aes", "pclmulqdq"})
      if (line.find(std::string(" ") + f + " ") == std::string::npos) return false;
    return true;
  }
  return false;
}

// Pass: for both AES-GCM suites and record lengths 0 to 2^14, a record sealed
// by either engine is byte for byte the one the other seals, and the other
// opens it to the same data and type.
TEST(Records, EitherAeadEngineOpensWhatTheOtherSealed) {
  for (uint16_t suite : {Records::kAes128GcmSha256, Records::kAes256GcmSha384}) {
    for (auto [seal_with, open_with] : {std::pair{AeadEngine::IpsecMb, AeadEngine::OpenSsl},
                                        std::pair{AeadEngine::OpenSsl, AeadEngine::IpsecMb}}) {
      Pair p = make_pair(suite, seal_with, open_with);
      Pair same = make_pair(suite, open_with, seal_with);  // the other engine sealing
      ASSERT_TRUE(p.sealer && same.sealer);
      for (size_t len : {0, 1, 15, 16, 17, 255, 4096, 16383, 16384}) {
        SCOPED_TRACE("suite " + std::to_string(suite) + ", sealed by " + p.sealer->aead_name() +
                     ", " + std::to_string(len) + " bytes");
        const std::vector<uint8_t> data = pattern(len, static_cast<uint8_t>(len));
        std::vector<uint8_t> wire(len + Records::kOverhead), other(wire.size());
        std::string why;
        ASSERT_EQ(p.sealer->seal_data(data.data(), len, wire.data(), why), wire.size()) << why;
        ASSERT_EQ(same.sealer->seal_data(data.data(), len, other.data(), why), other.size());
        EXPECT_EQ(wire, other);
        std::vector<uint8_t> out(Records::kMaxInner);
        Records::Opened r = p.opener->open(wire.data(), wire.size(), out.data());
        ASSERT_EQ(r.kind, Records::Opened::Data) << r.why;
        EXPECT_EQ(r.consumed, wire.size());
        ASSERT_EQ(r.data, len);
        EXPECT_TRUE(std::equal(data.begin(), data.end(), out.begin()));
      }
      // An alert's inner content type comes through too.
      std::vector<uint8_t> wire(Records::kAlertSize), out(Records::kMaxInner);
      std::string why;
      ASSERT_EQ(p.sealer->seal_close_notify(wire.data(), why), wire.size()) << why;
      EXPECT_EQ(p.opener->open(wire.data(), wire.size(), out.data()).kind,
                Records::Opened::CloseNotify);
    }
  }
}

// Pass: one bit changed in the header (the additional data), the ciphertext,
// the inner content type or the tag of a sealed 1000-byte record makes each
// engine refuse it as a bad record MAC.
TEST(Records, EachAeadEngineRefusesAChangedBit) {
  for (AeadEngine engine : {AeadEngine::OpenSsl, AeadEngine::IpsecMb}) {
    // The version and the length's low byte (a record 1 byte shorter), the
    // first and a middle ciphertext byte, the inner content type, the tag.
    for (size_t at : {size_t{2}, size_t{4}, size_t{5}, size_t{500}, size_t{1005}, size_t{1021}}) {
      Pair p = make_pair(Records::kAes128GcmSha256, engine, engine);
      ASSERT_TRUE(p.sealer);
      SCOPED_TRACE(p.opener->aead_name() + ", byte " + std::to_string(at));
      const std::vector<uint8_t> data = pattern(1000, 7);
      std::vector<uint8_t> wire(data.size() + Records::kOverhead), out(Records::kMaxInner);
      std::string why;
      ASSERT_EQ(p.sealer->seal_data(data.data(), data.size(), wire.data(), why), wire.size());
      wire[at] ^= 0x01;
      Records::Opened r = p.opener->open(wire.data(), wire.size(), out.data());
      EXPECT_EQ(r.kind, Records::Opened::Failed);
      EXPECT_NE(r.why.find("bad record MAC"), std::string::npos) << r.why;
    }
  }
}

// Pass: Auto seals AES-GCM with intel-ipsec-mb exactly when /proc/cpuinfo
// shows AVX-512 (F, DQ, CD, BW, VL) with VAES and VPCLMULQDQ, else with
// OpenSSL; ChaCha20-Poly1305 always goes through OpenSSL, and asking
// intel-ipsec-mb for it is refused with the reason.
TEST(Records, AutoPicksIntelIpsecMbForAesGcmOnAvx512VaesCpus) {
  Pair aes = make_pair(Records::kAes128GcmSha256, AeadEngine::Auto, AeadEngine::Auto);
  ASSERT_TRUE(aes.sealer);
  const bool ipsec_mb = aes.sealer->aead_name().rfind("intel-ipsec-mb", 0) == 0;
  EXPECT_EQ(ipsec_mb, cpu_has_avx512_vaes()) << aes.sealer->aead_name();
  if (ipsec_mb) {
    EXPECT_NE(aes.sealer->aead_name().find("(AVX512)"), std::string::npos);
  }

  Pair chacha = make_pair(Records::kChacha20Poly1305Sha256, AeadEngine::Auto, AeadEngine::Auto);
  ASSERT_TRUE(chacha.sealer);
  EXPECT_EQ(chacha.sealer->aead_name().rfind("OpenSSL", 0), 0u) << chacha.sealer->aead_name();
  std::vector<uint8_t> secret(32, 1);
  std::string why;
  EXPECT_FALSE(Records::from_secrets(Records::kChacha20Poly1305Sha256, secret, secret, why,
                                     AeadEngine::IpsecMb));
  EXPECT_NE(why.find("intel-ipsec-mb does not do cipher suite 4867"), std::string::npos) << why;
}

}  // namespace
}  // namespace xmig::test
