// What the tunnel adds to a stream, both inside TLS after the handshake: the
// dialling side sends one Request record (which migration, which guest), and
// the side that accepted TLS answers with a one-byte Verdict before any data
// flows. The dialling side hands the connection to a pump only on Accepted, so
// its local client learns promptly when the far side refused.
//
// An entry dials its connections at once, and their handshakes may finish in
// any order; yet they must reach the far target in the order the entry
// accepted them (QEMU < 8.0 tells multifd channels apart by arrival order). So
// each Request names its place in its entry's accept order (ArrivalOrder), and
// the accepting side connects a target only once the connections before it
// have been delivered or have failed (tunnel/order.hpp).
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
  OutOfOrder = 'O',         // cannot be delivered in its entry's accept order (tunnel/order.hpp)
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
    case Verdict::OutOfOrder:
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
      return "the peer refused the connection's request (malformed, an invalid migration id, or "
             "another protocol version: upgrade xmig on both hosts; the peer's log says which)";
    case Verdict::OtherGuest:
      return "the peer's target socket belongs to another guest's QEMU: another migration is "
             "using the same socket set (use per-migration sets: xmig-migrate)";
    case Verdict::OutOfOrder:
      return "the peer could not deliver this connection in the order this host accepted it "
             "(it came after its successors, twice, or too far out of its entry's window; the "
             "peer's log says which)";
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

// Where a connection stands in the accept order of the entry that dialled it.
// The accepting side delivers the connections of one entry in this order.
struct ArrivalOrder {
  // A random id for one entry's order, drawn by the dialling tunnel (a new one
  // after a restart, so sequences never mix); 0 = no order (xmig-verify's
  // probes): then sequence and waits_for are 0.
  uint64_t entry = 0;
  // Its place in that order: 0, 1, 2, ... in accept order.
  uint64_t sequence = 0;
  // Bit i set: connection sequence-1-i of the same entry was still being
  // dialled (no verdict yet) when this request was sent, so the accepting side
  // must deliver that one first, or see it fail. Predecessors the dialling side
  // already saw delivered or fail are not named: nothing to wait for.
  uint64_t waits_for = 0;
};

// At most this many connections of one entry are dialled at once: a
// predecessor is always within the 64 bits of waits_for.
inline constexpr uint64_t kMaxDialsInFlight = 64;

// What the dialling side says about a connection, in one TLS record right
// after the handshake (inside TLS: the migration id, typically a domain name,
// never travels in the clear, unlike the ALPN offer in the ClientHello).
// The accepting side reads exactly one record: the kernel's RX sequence for
// kTLS starts after it.
struct Request {
  std::string migration;   // per-migration set id; "" = the fixed socket set
  std::string guest_uuid;  // -uuid of the QEMU that connected the entry; "" when unknown
  ArrivalOrder order{};
};

// Version 2 added the ArrivalOrder. Both ends are upgraded together; a
// request of another version is refused (verdict BadRequest) with the two
// versions in the log, never guessed at.
inline constexpr uint8_t kRequestVersion = 2;
inline constexpr size_t kOrderSize = 3 * sizeof(uint64_t);
inline constexpr size_t kMaxRequestSize = 3 + kMaxMigrationId + 36 + kOrderSize;

namespace detail {
inline void put_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}
inline uint64_t get_u64(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(uint64_t); ++i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}
}  // namespace detail

// [version][length][migration][length][guest_uuid][entry][sequence][waits_for]
// (the last three big-endian, 8 bytes each)
inline std::string encode(const Request& r) {
  std::string out(1, static_cast<char>(kRequestVersion));
  out += static_cast<char>(r.migration.size());
  out += r.migration;
  out += static_cast<char>(r.guest_uuid.size());
  out += r.guest_uuid;
  detail::put_u64(out, r.order.entry);
  detail::put_u64(out, r.order.sequence);
  detail::put_u64(out, r.order.waits_for);
  return out;
}

// The Request in `bytes`, or nullopt when it is of another version, malformed,
// or names an invalid id, UUID or order; then *why (when given) says which.
inline std::optional<Request> decode_request(std::string_view bytes, std::string* why = nullptr) {
  auto fail = [why](std::string reason) -> std::optional<Request> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  auto take = [&bytes](std::string& field) {
    if (bytes.empty()) return false;
    size_t n = static_cast<uint8_t>(bytes.front());
    if (bytes.size() < 1 + n) return false;
    field.assign(bytes.substr(1, n));
    bytes.remove_prefix(1 + n);
    return true;
  };
  if (bytes.empty()) return fail("empty");
  if (const auto version = static_cast<uint8_t>(bytes.front()); version != kRequestVersion)
    return fail("protocol version " + std::to_string(version) +
                ", while this tunnel speaks version " + std::to_string(kRequestVersion) +
                " (fix: run the same xmig version on both hosts)");
  bytes.remove_prefix(1);
  Request r;
  if (!take(r.migration) || !take(r.guest_uuid) || bytes.size() != kOrderSize)
    return fail("malformed (its fields do not add up to one record)");
  r.order = {.entry = detail::get_u64(bytes),
             .sequence = detail::get_u64(bytes.substr(8)),
             .waits_for = detail::get_u64(bytes.substr(16))};
  if (!r.migration.empty() && !is_valid_migration_id(r.migration))
    return fail("a migration id that is not [A-Za-z0-9][A-Za-z0-9_.-]{0,63} (not ending in .sock)");
  if (!r.guest_uuid.empty() && !is_valid_guest_uuid(r.guest_uuid))
    return fail("a guest UUID that is not 36 hex digits and dashes");
  // Predecessors exist only from sequence 0 on; an unordered request names none.
  const bool unordered_with_order = r.order.entry == 0 && (r.order.sequence || r.order.waits_for);
  const bool before_the_first =
      r.order.sequence < kMaxDialsInFlight && (r.order.waits_for >> r.order.sequence) != 0;
  if (unordered_with_order || before_the_first)
    return fail("an arrival order that names connections before the entry's first");
  return r;
}

}  // namespace xmig::tunnel
