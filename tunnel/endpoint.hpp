// Endpoint: where a socket listens or connects, as written in the config file.
//
// Two spellings: "HOST:PORT" (TCP; IPv6 as "[::1]:PORT") and "unix:PATH".
// Parsing never resolves names; connecting does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace xmig::tunnel {

struct Endpoint {
  enum class Kind { Tcp, Unix };
  Kind kind = Kind::Tcp;
  std::string host;   // Tcp: name or address, without brackets
  uint16_t port = 0;  // Tcp
  std::string path;   // Unix

  bool is_unix() const { return kind == Kind::Unix; }
  // The config spelling, e.g. "unix:/run/xmig/hv-b/qemu.sock" or "[::1]:7443".
  std::string str() const;
};

// Parses the config spelling. On failure returns nullopt and sets *why to a
// sentence that says what is wrong (e.g. "port 70000 is out of range").
std::optional<Endpoint> parse_endpoint(const std::string& text, std::string* why);

}  // namespace xmig::tunnel
