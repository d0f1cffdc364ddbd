// Fuzz target: the tools' reader of a tunnel's GET /status body
// (verify::parse_status; xmig-verify and xmig-migrate believe what it returns).
// Pass: any body parses to some status (unknown or broken fields are left
// out) without a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string>

#include "verify/status_client.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string body(reinterpret_cast<const char*>(data), size);
  (void)xmig::verify::parse_status(body);
  return 0;
}
