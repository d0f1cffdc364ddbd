// Per-migration socket sets: two migrations to one host never share a socket,
// so one VM's memory can never reach another VM's QEMU.
//
//   <run_dir>/<peer>/<id>/{driver,qemu,nbd}.sock
//
// The same path on both hosts, as libvirt requires:
// - Source: `xmig-migrate` reserves a set over <run_dir>/control.sock (root
//   only). The tunnel opens the three entry sockets and every connection made
//   on them carries <id> in its Request. The set lives as long as that
//   control connection: when it closes (the migration ended, or xmig-migrate
//   was killed) the entries are closed and the folder removed; connections
//   already running go on.
// - Destination: the first connection that carries <id> (libvirt's driver
//   connection, before libvirt starts the destination QEMU) creates
//   <run_dir>/<name>/<id>/ for QEMU to listen in; qemu and nbd of that id are
//   delivered there. The folder goes when the last connection of <id> ends.
//
// The fixed set <run_dir>/<peer>/{driver,qemu,nbd}.sock stays for one
// migration at a time. What makes it safe when two use it anyway: the source
// names the guest (QEMU's -uuid) whose stream a connection carries, and the
// destination refuses to deliver it to a socket whose QEMU is another guest
// (the second destination QEMU replaces the first one's socket file).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/asio.hpp"
#include "tunnel/config.hpp"
#include "tunnel/endpoint.hpp"
#include "tunnel/sockets.hpp"

namespace xmig::tunnel {

// Who may reach what the tunnel makes under run_dir (README, "Trust model").
// The driver channel is libvirt RPC on the peer, where it runs as root: its
// entries are root's only (0600), or driver_group's when one is configured
// (0660), and never socket_group's, which QEMU belongs to.
Access entry_access(const Config& c, const std::string& channel);
// run_dir, a peer's entry folder <run_dir>/<peer>/ and its per-migration sets:
// socket_group may pass through and list, never write (0750); with a
// driver_group, everyone may pass through (0751) to the sockets, whose own
// modes decide.
Access entry_folder_access(const Config& c);
// This host's incoming folders <run_dir>/<name>/ and <run_dir>/<name>/<id>/,
// where QEMU (socket_group) creates its listening sockets: 01770, the sticky
// bit keeping the group from removing or renaming what it did not create.
// What the tunnel connects there is checked (inbound.cpp, connect_to).
Access incoming_folder_access(const Config& c);

// The guest UUID (-uuid) on the command line of the process at the other end
// of a UNIX socket (SO_PEERCRED; for a connecting socket, the listener's
// creator), or "" when it is not a QEMU started with -uuid.
std::string guest_uuid_of_peer(int unix_fd);

// Where the destination delivers `channel` of migration `id`: a target in
// <run_dir>/<name>/ moves into <run_dir>/<name>/<id>/; any other target (the
// libvirt socket, TCP) is shared by all migrations. `id` "" = the target.
Endpoint migration_target(const Config& c, const Endpoint& target, const std::string& id);

// Destination side: the folders <run_dir>/<name>/<id>/, counted by the
// connections that use them.
class IncomingFolders {
 public:
  explicit IncomingFolders(const Config& c) : config_(c) {}

  // Held by each connection of a migration; the last one removes the folder.
  class Use {
   public:
    Use(IncomingFolders& owner, std::string id) : owner_(owner), id_(std::move(id)) {}
    ~Use() { owner_.release(id_); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    IncomingFolders& owner_;
    std::string id_;
  };

  // Creates the folder when it is the first use (incoming_folder_access).
  // Throws std::runtime_error saying why not (any thread).
  std::shared_ptr<Use> acquire(const std::string& id);

 private:
  void release(const std::string& id);
  std::string folder(const std::string& id) const;

  const Config& config_;
  std::mutex mutex_;
  std::map<std::string, unsigned> uses_;
};

// Destination side: the fixed set <run_dir>/<name>/{qemu,nbd}.sock serves one
// migration at a time. While a delivery into it is open, it belongs to the
// QEMU that listens there (by pid); a delivery that would reach another
// process's socket (a second migration's QEMU replaced the socket files) is
// refused. This catches what the guest UUID check cannot see when libvirt,
// not QEMU, connected the source entry.
class FixedSetOwner {
 public:
  class Claim {
   public:
    explicit Claim(FixedSetOwner& owner) : owner_(owner) {}
    ~Claim() { owner_.release(); }
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;

   private:
    FixedSetOwner& owner_;
  };

  // A claim for a delivery to the socket that `listener_pid` listens on, or
  // nullptr when another process owns the set now (any thread).
  std::shared_ptr<Claim> claim(pid_t listener_pid, pid_t* owner_pid);

 private:
  void release();

  std::mutex mutex_;
  pid_t owner_ = 0;
  unsigned open_ = 0;
};

// The pid of the process that listens at the other end of a connected UNIX
// socket (SO_PEERCRED), or 0.
pid_t listener_pid(int unix_fd);

// Removes the sockets a migration folder may hold (driver/qemu/nbd.sock, by
// name, never following a link) and then the folder; leaves a folder that
// still holds anything else and says so in the log.
void remove_migration_folder(const std::string& folder);

}  // namespace xmig::tunnel
