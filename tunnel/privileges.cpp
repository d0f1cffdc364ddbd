#include "tunnel/privileges.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
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

}  // namespace

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

void drop_privileges(const RunAs& who) {
  // While still privileged: no capability may ever come back, in this
  // process or anything it runs.
  for (int cap = 0; cap <= last_capability(); ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
      failed("PR_CAPBSET_DROP " + std::to_string(cap));
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    failed("PR_CAP_AMBIENT_CLEAR_ALL");
  if (::initgroups(who.name.c_str(), who.gid) != 0) failed("initgroups(" + who.name + ")");
  if (::setresgid(who.gid, who.gid, who.gid) != 0) failed("setresgid");
  // From root to another uid without PR_SET_KEEPCAPS: the kernel clears the
  // permitted and effective capabilities.
  if (::setresuid(who.uid, who.uid, who.uid) != 0) failed("setresuid");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) failed("PR_SET_NO_NEW_PRIVS");
  if (::setuid(0) == 0 || ::geteuid() == 0)
    throw std::runtime_error("dropping privileges: root could be regained");
}

}  // namespace xmig::tunnel
