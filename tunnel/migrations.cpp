#include "tunnel/migrations.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <vector>

#include "base/fd.hpp"
#include "tunnel/privileges.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/sockets.hpp"

namespace xmig::tunnel {

namespace {

// The value after "-uuid" in a NUL-separated command line, if valid.
std::string uuid_in_cmdline(const std::string& cmdline) {
  std::vector<std::string> args;
  size_t start = 0;
  while (start < cmdline.size()) {
    size_t end = cmdline.find('\0', start);
    if (end == std::string::npos) end = cmdline.size();
    args.push_back(cmdline.substr(start, end - start));
    start = end + 1;
  }
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "-uuid" && is_valid_guest_uuid(args[i + 1])) return args[i + 1];
  return "";
}

}  // namespace

std::string guest_uuid_of_peer(int unix_fd) {
  auto cred = peer_credentials(unix_fd);
  if (!cred || cred->pid <= 0) return "";
  std::ifstream in("/proc/" + std::to_string(cred->pid) + "/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return uuid_in_cmdline(cmdline);
}

Endpoint migration_target(const Config& c, const Endpoint& target, const std::string& id) {
  const std::string own = c.run_dir + "/" + c.name + "/";
  if (id.empty() || !target.is_unix() || target.path.rfind(own, 0) != 0 ||
      target.path.find('/', own.size()) != std::string::npos)
    return target;
  Endpoint moved = target;
  moved.path = own + id + "/" + target.path.substr(own.size());
  return moved;
}

Access entry_access(const Config& c, const std::string& channel) {
  if (channel == "driver")
    return c.driver_group.empty()
               ? Access{.mode = 0600}
               : Access{.mode = 0660, .group = lookup_group(c.driver_group, "driver_group")};
  return {.mode = c.socket_mode, .group = lookup_group(c.socket_group)};
}

namespace {

// The user the tunnel runs as (config user), who owns its folders.
uid_t folder_owner(const Config& c) {
  auto user = lookup_user(c.user);
  return user ? user->uid : static_cast<uid_t>(-1);
}

}  // namespace

Access entry_folder_access(const Config& c) {
  unsigned mode = 0750;
  if (!c.driver_group.empty()) mode |= 0001;
  if (c.socket_mode & 0007) mode |= 0005;  // sockets open to all users
  return {.mode = mode, .group = lookup_group(c.socket_group), .owner = folder_owner(c)};
}

Access incoming_folder_access(const Config& c) {
  return {.mode = 01770, .group = lookup_group(c.socket_group), .owner = folder_owner(c)};
}

std::string IncomingFolders::folder(const std::string& id) const {
  return config_.run_dir + "/" + config_.name + "/" + id;
}

std::shared_ptr<IncomingFolders::Use> IncomingFolders::acquire(const std::string& id) {
  std::lock_guard lock(mutex_);
  unsigned& count = uses_[id];
  if (count == 0) {
    try {
      // QEMU (socket_group) creates its listening sockets here.
      make_owned_directory(folder(id), incoming_folder_access(config_));
    } catch (...) {
      uses_.erase(id);
      throw;
    }
    spdlog::info("migration {}: created {}", id, folder(id));
  }
  ++count;
  return std::make_shared<Use>(*this, id);
}

void IncomingFolders::release(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = uses_.find(id);
  if (it == uses_.end() || --it->second > 0) return;
  uses_.erase(it);
  remove_migration_folder(folder(id));
  spdlog::info("migration {}: its last connection ended; removed {}", id, folder(id));
}

pid_t listener_pid(int unix_fd) {
  auto cred = peer_credentials(unix_fd);
  return cred ? cred->pid : 0;
}

std::shared_ptr<FixedSetOwner::Claim> FixedSetOwner::claim(pid_t listener, pid_t* owner) {
  std::lock_guard lock(mutex_);
  if (open_ > 0 && listener != owner_) {
    *owner = owner_;
    return nullptr;
  }
  owner_ = listener;
  ++open_;
  return std::make_shared<Claim>(*this);
}

void FixedSetOwner::release() {
  std::lock_guard lock(mutex_);
  if (open_ > 0) --open_;
}

void remove_migration_folder(const std::string& folder) {
  Fd dir(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return;
  for (const auto& channel : kMigrationChannels) {
    std::string name = channel + ".sock";
    struct stat st {};
    // Only sockets: a file someone else put there is not ours to delete.
    if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode))
      ::unlinkat(dir.get(), name.c_str(), 0);
  }
  if (::rmdir(folder.c_str()) != 0 && errno != ENOENT)
    spdlog::warn("could not remove {}: {} (it holds files xmig did not create)", folder,
                 std::strerror(errno));
}

}  // namespace xmig::tunnel
