// Least privilege at run time: the tunnel binds its sockets and reads its keys
// as root, then becomes the configured `user` for the rest of its life
// (parsing unauthenticated TLS included): that user's groups only, no
// capabilities left (the bounding set emptied, so none can come back), and no
// new privileges (PR_SET_NO_NEW_PRIVS: exec of a set-uid binary gains
// nothing). In transparent mode ([intercept]) one capability stays,
// CAP_NET_ADMIN: every socket the tunnel dials carries SO_MARK (so that its
// own traffic is never redirected back to it), which the kernel allows only
// with that capability, for the whole life of the process. The nftables table
// is applied before the drop.
//
// What the user needs (README, "Running as an unprivileged user"): read access
// to the keys and certificates (for reloads), membership of socket_group (its
// incoming folders get that group, and QEMU's sockets in them are the group's)
// and of the group of libvirt's socket (Debian: libvirt) for the driver
// target.
//
// It must never: keep a capability it was not asked to keep, or run a thread
// with other credentials (capabilities and no_new_privs belong to each thread:
// drop before the first thread starts).
#pragma once

#include <linux/capability.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace xmig::tunnel {

struct RunAs {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The account `user` names ("" = none: the tunnel keeps running as it was
// started). Throws std::runtime_error naming the config key and the fix.
std::optional<RunAs> lookup_user(const std::string& user);

// A set of capabilities, bit N = capability N (as /proc/<pid>/status shows
// CapEff).
using Capabilities = uint64_t;
constexpr Capabilities kNoCapabilities = 0;
// What transparent mode keeps: SO_MARK on the sockets it dials.
constexpr Capabilities kNetAdmin = Capabilities{1} << CAP_NET_ADMIN;

// Becomes `who`: supplementary groups = the user's own (initgroups), gid,
// uid; the bounding set reduced to `keep`, the ambient and inheritable sets
// emptied, permitted and effective exactly `keep` (kept across the uid change
// by PR_SET_KEEPCAPS); sets no_new_privs. Throws std::runtime_error naming
// the step that failed; on success a return to root is impossible and the
// capabilities are exactly `keep` (both checked).
void drop_privileges(const RunAs& who, Capabilities keep = kNoCapabilities);

// For a tunnel started as an unprivileged user with capabilities (systemd's
// AmbientCapabilities=, tools/xmig-tunnel-transparent.conf), once the table
// is applied: permitted and effective reduced to `keep`, the inheritable and
// ambient sets emptied (nothing the tunnel might run inherits a capability),
// no_new_privs. The bounding set stays as it was given (reducing it takes
// CAP_SETPCAP). Throws std::runtime_error naming the step that failed, or
// when a capability of `keep` is missing.
void settle_capabilities(Capabilities keep);

// "no capabilities", "CAP_NET_ADMIN only": for the ready line and --check.
std::string describe_kept(Capabilities keep);

}  // namespace xmig::tunnel
