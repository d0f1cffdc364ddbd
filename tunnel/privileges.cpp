#include "tunnel/privileges.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace xmig::tunnel {

namespace {

[[noreturn]] void failed(const std::string& step) {
  throw std::runtime_error("dropping privileges: " + step + ": " + std::strerror(errno));
}

// The highest capability this kernel knows (it may know more than our headers).
int last_capability() {
  int last = CAP_LAST_CAP;
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  if (in) in >> last;
  return last;
}

// The calling thread's capability sets, through the system calls themselves
// (no libcap): version 3 holds 64 bits of each set in two 32-bit words.
struct CapabilitySets {
  Capabilities effective = 0, permitted = 0, inheritable = 0;
};

CapabilitySets get_capabilities() {
  __user_cap_header_struct header{.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) failed("capget");
  auto both = [&](uint32_t __user_cap_data_struct::*set) {
    return Capabilities{data[0].*set} | Capabilities{data[1].*set} << 32;
  };
  return {.effective = both(&__user_cap_data_struct::effective),
          .permitted = both(&__user_cap_data_struct::permitted),
          .inheritable = both(&__user_cap_data_struct::inheritable)};
}

void set_capabilities(const CapabilitySets& sets) {
  __user_cap_header_struct header{.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  for (int word = 0; word < _LINUX_CAPABILITY_U32S_3; ++word) {
    data[word].effective = static_cast<uint32_t>(sets.effective >> (32 * word));
    data[word].permitted = static_cast<uint32_t>(sets.permitted >> (32 * word));
    data[word].inheritable = static_cast<uint32_t>(sets.inheritable >> (32 * word));
  }
  if (::syscall(SYS_capset, &header, data) != 0) failed("capset");
}

bool in(Capabilities set, int cap) {
  return cap < 64 && (set >> cap & 1) != 0;
}

}  // namespace

std::string describe_kept(Capabilities keep) {
  if (keep == kNoCapabilities) return "no capabilities";
  if (keep == kNetAdmin) return "CAP_NET_ADMIN only";
  return "capabilities " + std::to_string(keep);
}

void settle_capabilities(Capabilities keep) {
  const CapabilitySets given = get_capabilities();
  if ((given.permitted & keep) != keep)
    throw std::runtime_error(
        "settling capabilities: " + describe_kept(keep) +
        " is needed, but the tunnel was started without it; fix: "
        "AmbientCapabilities=CAP_NET_ADMIN (tools/xmig-tunnel-transparent.conf)");
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    failed("PR_CAP_AMBIENT_CLEAR_ALL");
  // Only when something changes: the unit without the transparent drop-in
  // starts the tunnel with every set empty, and its system-call filter
  // allows capset for the drop-in's sake only.
  const CapabilitySets wanted{.effective = keep, .permitted = keep, .inheritable = 0};
  if (given.effective != wanted.effective || given.permitted != wanted.permitted ||
      given.inheritable != wanted.inheritable)
    set_capabilities(wanted);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) failed("PR_SET_NO_NEW_PRIVS");
}

std::optional<RunAs> lookup_user(const std::string& user) {
  if (user.empty()) return std::nullopt;
  const passwd* pw = ::getpwnam(user.c_str());
  if (!pw)
    throw std::runtime_error("user \"" + user +
                             "\" does not exist; fix: create it (useradd --system --no-create-home "
                             "--shell /usr/sbin/nologin " +
                             user + ") or remove the key");
  if (pw->pw_uid == 0)
    throw std::runtime_error("user \"" + user +
                             "\" is root; fix: name an unprivileged user, or remove the key");
  return RunAs{.name = user, .uid = pw->pw_uid, .gid = pw->pw_gid};
}

void drop_privileges(const RunAs& who, Capabilities keep) {
  // A capability to keep must be there to be kept: started without it (a
  // unit whose bounding set lacks it) the tunnel would fail on its first
  // dial instead of here.
  if ((get_capabilities().permitted & keep) != keep)
    throw std::runtime_error("dropping privileges: " + describe_kept(keep) +
                             " was to be kept, but the tunnel was started without it; fix: start "
                             "it as root, or with that capability (AmbientCapabilities=)");
  // While still privileged: no other capability may ever come back, in this
  // process or anything it runs.
  for (int cap = 0; cap <= last_capability(); ++cap)
    if (!in(keep, cap) && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
      failed("PR_CAPBSET_DROP " + std::to_string(cap));
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    failed("PR_CAP_AMBIENT_CLEAR_ALL");
  if (::initgroups(who.name.c_str(), who.gid) != 0) failed("initgroups(" + who.name + ")");
  if (::setresgid(who.gid, who.gid, who.gid) != 0) failed("setresgid");
  // From root to another uid the kernel clears the permitted and effective
  // sets, unless PR_SET_KEEPCAPS asks it to keep the permitted one (the
  // effective is cleared either way); set only for this one call.
  if (keep != kNoCapabilities && ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
    failed("PR_SET_KEEPCAPS");
  if (::setresuid(who.uid, who.uid, who.uid) != 0) failed("setresuid");
  if (keep != kNoCapabilities && ::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
    failed("PR_SET_KEEPCAPS 0");
  // Permitted and effective exactly `keep`, nothing inheritable.
  set_capabilities({.effective = keep, .permitted = keep, .inheritable = 0});
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) failed("PR_SET_NO_NEW_PRIVS");
  if (::setuid(0) == 0 || ::geteuid() == 0)
    throw std::runtime_error("dropping privileges: root could be regained");
  const CapabilitySets now = get_capabilities();
  if (now.effective != keep || now.permitted != keep || now.inheritable != 0)
    throw std::runtime_error("dropping privileges: capabilities left other than " +
                             describe_kept(keep));
}

}  // namespace xmig::tunnel
