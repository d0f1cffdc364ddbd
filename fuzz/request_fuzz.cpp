// Fuzz target: the Request record (tunnel/protocol.hpp), the first bytes an
// authenticated peer sends inside TLS, and the verdict byte.
// Pass: a record decode_request() accepts names a valid migration id and
// guest UUID (or none) and is exactly what encode() makes of them (one
// encoding per request); is_verdict() and describe() take any byte.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/check.hpp"
#include "tunnel/protocol.hpp"

using namespace xmig::tunnel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (auto request = decode_request(bytes)) {
    XMIG_FUZZ_CHECK(bytes.size() <= kMaxRequestSize);
    XMIG_FUZZ_CHECK(request->migration.empty() || is_valid_migration_id(request->migration));
    XMIG_FUZZ_CHECK(request->guest_uuid.empty() || is_valid_guest_uuid(request->guest_uuid));
    XMIG_FUZZ_CHECK(encode(*request) == bytes);
  }
  if (size > 0 && is_verdict(static_cast<char>(data[0])))
    XMIG_FUZZ_CHECK(describe(static_cast<Verdict>(data[0])) != "unknown verdict");
  return 0;
}
