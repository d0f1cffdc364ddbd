// Fuzz target: tunnel::parse_config, the whole config file (toml++'s parser,
// then every section's checks) on arbitrary text.
// Pass: every input either parses or is refused with ConfigError whose
// message names the file; nothing else is thrown, no sanitizer report (toml++'s
// issue #295 was found this way: fuzz/corpus/config/toml-issue-295-*).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/check.hpp"
#include "tunnel/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    xmig::tunnel::parse_config(text, "fuzz.toml");
  } catch (const xmig::tunnel::ConfigError& e) {
    XMIG_FUZZ_CHECK(std::string(e.what()).find("fuzz.toml") != std::string::npos);
  }
  return 0;
}
