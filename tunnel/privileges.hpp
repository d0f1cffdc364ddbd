// Least privilege at run time: the tunnel binds its sockets and reads its keys
// as root, then becomes the configured `user` for the rest of its life
// (parsing unauthenticated TLS included): that user's groups only, no
// capabilities left (the bounding set emptied, so none can come back), and no
// new privileges (PR_SET_NO_NEW_PRIVS: exec of a set-uid binary gains
// nothing).
//
// What the user needs (README, "Running as an unprivileged user"): read access
// to the keys and certificates (for reloads), membership of socket_group (its
// incoming folders get that group, and QEMU's sockets in them are the group's)
// and of the group of libvirt's socket (Debian: libvirt) for the driver
// target.
//
// It must never: keep a capability, or run a thread with other credentials
// (capabilities and no_new_privs belong to each thread: drop before the first
// thread starts).
#pragma once

#include <sys/types.h>

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

// Becomes `who`: supplementary groups = the user's own (initgroups), gid,
// uid; empties the capability bounding and ambient sets; sets no_new_privs.
// Throws std::runtime_error naming the step that failed; on success a return
// to root is impossible (checked).
void drop_privileges(const RunAs& who);

}  // namespace xmig::tunnel
