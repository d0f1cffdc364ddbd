// What the tunnel adds to a stream, both inside TLS after the handshake: the
// dialling side sends one Request record (which migration, which guest), and
// the side that accepted TLS answers with a one-byte Verdict before any data
// flows. The dialling
// side hands the connection to a pump only on Accepted, so its local client
// learns promptly when the far side refused, and connections reach the far
// target in the order they were accepted (QEMU < 8.0 tells multifd channels
// apart by arrival order).
//
// Both are sent inside TLS, after authentication: nothing readable travels
// before the handshake.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace xmig::tunnel {

// The verify channel: the accepting tunnel echoes it back (up to a cap) to
// authenticated peers, so xmig-verify can send a canary across the wire and
// get it back. It is never delivered to a target.
inline constexpr const char* kVerifyChannel = "verify";
inline constexpr uint64_t kVerifyEchoLimit = 64ull << 20;

// Transparent mode's channels (tunnel/intercept.hpp), named in the ALPN
// ("xmig/driver", "xmig/port-49153") that xmig-verify looks for on the wire:
// a connection to a peer's driver_port, and one to a port of the range.
inline constexpr const char* kDriverChannel = "driver";
inline constexpr std::string_view kPortChannelPrefix = "port-";

enum class Verdict : uint8_t {
  Accepted = 'A',
  UnknownChannel = 'C',     // the far side has no target for this channel
  TargetUnavailable = 'T',  // the far target refused or timed out
  Busy = 'B',               // the far side is at max_connections or stopping
  NotAPeer = 'P',           // the certificate is valid but names no configured [[peer]]
  BadRequest = 'R',         // the Request record is malformed or names an invalid migration
  OtherGuest = 'G',         // the target socket belongs to another guest's QEMU
};

// True for the bytes a tunnel sends as its verdict.
inline bool is_verdict(char byte) {
  switch (static_cast<Verdict>(byte)) {
    case Verdict::Accepted:
    case Verdict::UnknownChannel:
    case Verdict::TargetUnavailable:
    case Verdict::Busy:
    case Verdict::NotAPeer:
    case Verdict::BadRequest:
    case Verdict::OtherGuest:
      return true;
  }
  return false;
}

inline std::string describe(Verdict v) {
  switch (v) {
    case Verdict::Accepted:
      return "accepted";
    case Verdict::UnknownChannel:
      return "the peer has no target for this channel";
    case Verdict::TargetUnavailable:
      return "the peer could not connect to its target";
    case Verdict::Busy:
      return "the peer is busy or shutting down";
    case Verdict::NotAPeer:
      return "the peer does not list this host as a [[peer]] (check its config and this "
             "certificate's DNS name)";
    case Verdict::BadRequest:
      return "the peer refused the connection's request (malformed, or an invalid migration id)";
    case Verdict::OtherGuest:
      return "the peer's target socket belongs to another guest's QEMU: another migration is "
             "using the same socket set (use per-migration sets: xmig-migrate)";
  }
  return "unknown verdict";
}

// A migration id names a per-migration socket set, <run_dir>/<peer>/<id>/,
// on both hosts: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}, not ending in ".sock" (so
// it never collides with the fixed set's socket names in the same folder).
inline constexpr size_t kMaxMigrationId = 64;

inline bool is_valid_migration_id(std::string_view id) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (id.empty() || id.size() > kMaxMigrationId || !alnum(id.front())) return false;
  for (char c : id)
    if (!alnum(c) && c != '_' && c != '.' && c != '-') return false;
  return !(id.size() >= 5 && id.substr(id.size() - 5) == ".sock");
}

// A guest UUID as QEMU's -uuid carries it: 36 characters, hex and dashes.
inline bool is_valid_guest_uuid(std::string_view uuid) {
  if (uuid.size() != 36) return false;
  for (size_t i = 0; i < uuid.size(); ++i) {
    char c = uuid[i];
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (dash ? c != '-' : !hex) return false;
  }
  return true;
}

// What the dialling side says about a connection, in one TLS record right
// after the handshake (inside TLS: the migration id, typically a domain name,
// never travels in the clear, unlike the ALPN offer in the ClientHello).
// The accepting side reads exactly one record: the kernel's RX sequence for
// kTLS starts after it.
struct Request {
  std::string migration;   // per-migration set id; "" = the fixed socket set
  std::string guest_uuid;  // -uuid of the QEMU that connected the entry; "" when unknown
};

inline constexpr uint8_t kRequestVersion = 1;
inline constexpr size_t kMaxRequestSize = 3 + kMaxMigrationId + 36;

// [version][length][migration][length][guest_uuid]
inline std::string encode(const Request& r) {
  std::string out(1, static_cast<char>(kRequestVersion));
  out += static_cast<char>(r.migration.size());
  out += r.migration;
  out += static_cast<char>(r.guest_uuid.size());
  out += r.guest_uuid;
  return out;
}

// The Request in `bytes`, or nullopt when it is malformed or names an
// invalid id or UUID.
inline std::optional<Request> decode_request(std::string_view bytes) {
  auto take = [&bytes](std::string& field) {
    if (bytes.empty()) return false;
    size_t n = static_cast<uint8_t>(bytes.front());
    if (bytes.size() < 1 + n) return false;
    field.assign(bytes.substr(1, n));
    bytes.remove_prefix(1 + n);
    return true;
  };
  if (bytes.empty() || static_cast<uint8_t>(bytes.front()) != kRequestVersion) return std::nullopt;
  bytes.remove_prefix(1);
  Request r;
  if (!take(r.migration) || !take(r.guest_uuid) || !bytes.empty()) return std::nullopt;
  if (!r.migration.empty() && !is_valid_migration_id(r.migration)) return std::nullopt;
  if (!r.guest_uuid.empty() && !is_valid_guest_uuid(r.guest_uuid)) return std::nullopt;
  return r;
}

}  // namespace xmig::tunnel
