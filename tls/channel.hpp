// The channel travels in the TLS handshake as ALPN "xmig/<channel>", so no
// plaintext and no extra round trip precede the data.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace xmig::tls {

// A channel name is [a-z0-9_-]{1,32}, starting with a letter or digit.
inline bool is_valid_channel(std::string_view s) {
  if (s.empty() || s.size() > 32 || s.front() == '-' || s.front() == '_') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  return true;
}

inline std::string alpn_for(std::string_view channel) {
  return "xmig/" + std::string(channel);
}

// "xmig/qemu" -> "qemu"; nullopt for anything else.
inline std::optional<std::string_view> channel_from_alpn(std::string_view proto) {
  if (proto.substr(0, 5) != "xmig/") return std::nullopt;
  std::string_view ch = proto.substr(5);
  if (!is_valid_channel(ch)) return std::nullopt;
  return ch;
}

// What the server picks from a ClientHello's ALPN list (untrusted bytes, as
// they travel: each protocol is one length byte and that many bytes, RFC 7301):
// the first "xmig/<channel>" offered, as a view into `wire`. nullopt when none
// is, or when a length runs past the end before one is found.
inline std::optional<std::string_view> first_channel_offer(std::string_view wire) {
  while (!wire.empty()) {
    size_t len = static_cast<unsigned char>(wire.front());
    if (1 + len > wire.size()) return std::nullopt;
    std::string_view proto = wire.substr(1, len);
    if (channel_from_alpn(proto)) return proto;
    wire.remove_prefix(1 + len);
  }
  return std::nullopt;
}

}  // namespace xmig::tls
