#include "tunnel/endpoint.hpp"

#include <charconv>

namespace xmig::tunnel {

std::string Endpoint::str() const {
  if (is_unix()) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::optional<Endpoint> parse_endpoint(const std::string& text, std::string* why) {
  Endpoint ep;
  if (text.rfind("unix:", 0) == 0) {
    ep.kind = Endpoint::Kind::Unix;
    ep.path = text.substr(5);
    if (ep.path.empty() || ep.path[0] != '/') {
      *why = "a UNIX socket path must be absolute, e.g. \"unix:/run/xmig/x.sock\"";
      return std::nullopt;
    }
    if (ep.path.size() >= 108) {
      *why = "UNIX socket paths are limited to 107 bytes";
      return std::nullopt;
    }
    return ep;
  }
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    *why = "expected \"HOST:PORT\" or \"unix:PATH\"";
    return std::nullopt;
  }
  std::string host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']') {
      *why = "an IPv6 address must be written as \"[ADDR]:PORT\"";
      return std::nullopt;
    }
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    *why = "an IPv6 address must be written as \"[ADDR]:PORT\"";
    return std::nullopt;
  }
  std::string port = text.substr(colon + 1);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || port.empty()) {
    *why = "port \"" + port + "\" is not a number";
    return std::nullopt;
  }
  if (value == 0 || value > 65535) {
    *why = "port " + port + " is out of range 1-65535";
    return std::nullopt;
  }
  if (host.empty()) {
    *why = "the host is empty";
    return std::nullopt;
  }
  ep.host = host;
  ep.port = static_cast<uint16_t>(value);
  return ep;
}

}  // namespace xmig::tunnel
