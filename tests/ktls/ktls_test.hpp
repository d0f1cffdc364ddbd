// Helpers shared by the kTLS tests (in the VM and on the host).
#pragma once

#include <map>
#include <string>

#include "harness/files.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

// Adds `key = value` (value already in TOML spelling) to a side's [tls] table.
inline void set_tls_key(const harness::TunnelSide& side, const std::string& key,
                        const std::string& value) {
  std::string text = harness::read_file(side.config);
  size_t at = text.find("[tls]\n");
  if (at == std::string::npos) throw std::runtime_error("no [tls] in " + side.config.string());
  text.insert(at + 6, key + " = " + value + "\n");
  harness::write_file(side.config, text);
}

// /proc/net/tls_stat as name -> value (empty when the kernel has no kTLS).
inline std::map<std::string, long> tls_stat() {
  std::map<std::string, long> out;
  std::string text;
  try {
    text = harness::read_file("/proc/net/tls_stat");
  } catch (const std::exception&) {
    return out;
  }
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    size_t sp = line.find_first_of(" \t");
    if (sp != std::string::npos) out[line.substr(0, sp)] = std::stol(line.substr(sp + 1));
    pos = end + 1;
  }
  return out;
}

}  // namespace xmig::test
