// harness/qemu_vm: a real QEMU as a migration endpoint, driven over QMP (by the
// QEMU tests, the capture tests and bench's xmig-bench-qemu).
//
// QemuGuest starts qemu-system-x86_64 paused (-S) with no devices and no guest
// OS: its only state worth migrating is RAM, which lives in a file we create
// (memory-backend-file, share=on). The source's file is filled with random
// bytes before QEMU starts; the destination's starts as zeros, and QEMU writes
// the incoming RAM straight into it. Comparing the two files afterwards proves
// the migration stream arrived intact, whatever carried it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "harness/process.hpp"

namespace xmig::harness {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Guest RAM for the migration tests: $XMIG_QEMU_RAM_MIB, else 256 MiB.
inline uint64_t ram_mib_from_env() {
  if (const char* env = std::getenv("XMIG_QEMU_RAM_MIB"); env && *env) {
    const uint64_t v = std::strtoull(env, nullptr, 10);
    if (v > 0) return v;
  }
  return 256;
}

// --- Tiny JSON helpers ------------------------------------------------------
// QMP replies are small, one object per line; the tests need a handful of
// scalar fields, so scanning for "key": beats pulling in a JSON library.

// The first string value of "key" anywhere in json (unescaped), if any.
std::optional<std::string> json_string(std::string_view json, std::string_view key);
// The first numeric value of "key" anywhere in json, if any.
std::optional<double> json_number(std::string_view json, std::string_view key);

// --- QMP ---------------------------------------------------------------------

// A command QEMU refused: carries QMP's error class and description.
class QmpError : public std::runtime_error {
 public:
  QmpError(const std::string& command, const std::string& reply);
  const std::string& reply() const { return reply_; }

 private:
  std::string reply_;
};

// One QMP session over a UNIX socket. Commands are synchronous: each carries an
// id, and asynchronous events that arrive in between are skipped.
class QmpClient {
 public:
  // Connects (retrying until the socket accepts or timeout passes; alive() is
  // asked between attempts so a QEMU that died is reported at once), reads the
  // greeting and leaves capabilities negotiation mode.
  QmpClient(const fs::path& socket, std::chrono::milliseconds timeout,
            const std::function<bool()>& alive);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs a command; arguments is a JSON object or empty. Returns the whole
  // reply line; throws QmpError when QEMU answers with "error", and
  // std::runtime_error on I/O failure or timeout.
  std::string execute(std::string_view command, std::string_view arguments = {},
                      std::chrono::milliseconds timeout = 30s);
  // Sends a command without waiting for its reply (for quit, whose reply may
  // be lost when QEMU exits first).
  void send(std::string_view command, std::string_view arguments = {});

 private:
  std::string build(std::string_view command, std::string_view arguments, const std::string& id);
  void write_all(const std::string& s);
  std::string read_line(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::string buffer_;
  uint64_t next_id_ = 1;
};

// --- Migration ---------------------------------------------------------------

// What query-migrate said.
struct MigrationStatus {
  std::string status;                   // "setup", "active", "completed", "failed", ...
  std::string error;                    // error-desc when failed
  std::optional<double> total_time_ms;  // QEMU's own measure (source side)
  std::string reply;                    // the raw reply, for diagnostics

  bool completed() const { return status == "completed"; }
  // True once the migration can make no more progress.
  bool finished() const {
    return status == "completed" || status == "failed" || status == "cancelled";
  }
};

// Whom QEMU runs as when not root: libvirt starts it as libvirt-qemu, in its
// groups, with no capabilities and umask 0002 (so that the group, the
// tunnel's socket_group, may connect to the sockets QEMU creates).
struct QemuUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups{};
};

struct QemuGuestConfig {
  std::string name;   // "source", "destination": names the QMP socket and log
  fs::path work_dir;  // where the QMP socket and the log go (keep it short:
                      // UNIX socket paths are limited to 107 bytes)
  fs::path ram_file;  // must exist and be ram_mib MiB long
  uint64_t ram_mib = 0;
  bool incoming = false;  // destination: start with -incoming defer
  std::string netns{};    // when set, QEMU runs in this network namespace (NetnsLab)
  // When set, QEMU runs as this user (setpriv); work_dir and ram_file must be
  // its to write. Otherwise it runs as the test does.
  std::optional<QemuUser> user{};
  // A guest that runs code (harness/busy_guest.hpp): QEMU boots this kernel
  // (-kernel, with kernel_args as -append) at once instead of staying paused
  // (-S); a destination stays paused after the migration until resume(). The
  // guest's serial port (COM1) is written to serial_log.
  fs::path kernel{};
  std::string kernel_args{};
  fs::path serial_log{};
};

class QemuGuest {
 public:
  // Starts QEMU and connects QMP; throws with QEMU's log when it fails.
  explicit QemuGuest(QemuGuestConfig config);
  ~QemuGuest();
  QemuGuest(const QemuGuest&) = delete;
  QemuGuest& operator=(const QemuGuest&) = delete;

  // Enables multifd with the given number of channels. Both sides need the
  // same setting before migrate / migrate-incoming.
  void enable_multifd(int channels);
  // Lifts the bandwidth cap (QEMU 7.2 defaults to 32 MiB/s on the source) so
  // the transport, not the throttle, decides how fast RAM moves.
  void unlimit_bandwidth();
  // The longest the source may stop the guest for the last pass (QEMU's
  // downtime-limit; its default is 300 ms): the migration completes only once
  // what is left can be sent within it.
  void set_downtime_limit(std::chrono::milliseconds limit);
  // Source: gives up a migration that is still running (migrate_cancel); the
  // guest carries on at the source.
  void cancel_migration();
  // Runs a paused guest (cont), e.g. a destination after its migration.
  void resume();
  // Destination: start listening on uri (e.g. "unix:/path/qemu.sock").
  void migrate_incoming(const std::string& uri);
  // Source: start sending to uri.
  void migrate(const std::string& uri);

  MigrationStatus query_migration();
  // Polls query-migrate until finished() or timeout; on timeout returns the
  // last status seen (not finished()).
  MigrationStatus wait_for_migration(std::chrono::milliseconds timeout);

  // Asks QEMU to exit and waits for it; kills it when it does not go.
  void quit(std::chrono::milliseconds timeout = 20s);

  // QEMU's stderr/stdout so far, for failure messages.
  std::string log() const;
  const fs::path& log_path() const { return log_path_; }
  // QEMU's process (setpriv and ip netns exec replace themselves by it).
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  QmpClient& qmp() { return *qmp_; }

 private:
  QemuGuestConfig config_;
  fs::path log_path_;
  std::optional<Process> process_;
  std::unique_ptr<QmpClient> qmp_;
};

// --- RAM files ---------------------------------------------------------------

// Path of qemu-system-x86_64 ($XMIG_QEMU, else the first on $PATH), or empty.
std::string find_qemu();

// Creates path with bytes of fill_random(seed) output (mapped, so that 1 GiB
// does not need a 1 GiB buffer).
void create_random_file(const fs::path& path, uint64_t bytes, uint64_t seed);
// Creates path as bytes of zeros (sparse).
void create_zero_file(const fs::path& path, uint64_t bytes);

// A directory for the RAM files that removes itself: on /dev/shm when it has
// room for `bytes` plus slack (tmpfs keeps the disk out of the measurement),
// otherwise under fallback.
class RamDir {
 public:
  RamDir(uint64_t bytes, const fs::path& fallback);
  ~RamDir();
  RamDir(const RamDir&) = delete;
  RamDir& operator=(const RamDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  bool owned_ = false;
};

}  // namespace xmig::harness
