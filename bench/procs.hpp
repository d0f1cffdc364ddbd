// bench/: the processes a benchmark measures — what they cost (CPU time and
// peak memory, read from /proc) and, for xmig itself, starting the two tunnel
// ends with fresh certificates.
//
// What it must never do: leave a child running after its owner is gone, or
// measure a process that is not the one it was given.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace xmig::bench {

namespace fs = std::filesystem;

// ---- Measuring a process -------------------------------------------------------

struct ProcSample {
  double cpu_seconds = 0;     // utime + stime of all its threads so far
  uint64_t peak_rss_kib = 0;  // VmHWM
};
// Reads /proc/<pid>/stat and /proc/<pid>/status; throws when the process is gone.
ProcSample sample(pid_t pid);

// A process under measurement, named for the report ("entry", "exit").
struct Measured {
  std::string name;
  pid_t pid = 0;
  ProcSample before, after;
  double cpu_seconds() const { return after.cpu_seconds - before.cpu_seconds; }
};

// ---- Child processes -----------------------------------------------------------

class Process {
 public:
  // Starts argv[0] (a path); stdout and stderr are appended to log (or
  // /dev/null). Throws when fork fails; an exec failure shows as exit 127.
  Process(const std::vector<std::string>& argv, const fs::path& log);
  // SIGTERM, then SIGKILL after 5 s.
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // SIGTERM and wait up to timeout, then SIGKILL. Returns the exit status
  // (128+signal when killed by one).
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// ---- xmig's two ends -----------------------------------------------------------

struct PairOptions {
  fs::path dir;        // everything goes here (certificates, configs, logs, sockets)
  fs::path tunnel;     // the xmig-tunnel binary
  std::string target;  // where hv-b delivers the channel: "HOST:PORT" or "unix:PATH"
  std::string entry;   // hv-a listens here ([[route]]); empty: its UNIX entry socket
  std::string channel = "qemu";
  unsigned workers = 0;    // [workers]; 0 = the tunnel's default (one per core)
  std::string extra_toml;  // top-level TOML lines for both configs (e.g. workers, limits)
  std::string tls_toml;    // lines for both [tls] tables (e.g. ktls = "off")
};

// Two real xmig-tunnel processes on loopback, hv-a (entry) and hv-b (exit),
// with a fresh CA and node certificates in libvirt's layout:
//   client -> entry() -> hv-a ==TLS==> hv-b -> target
class TunnelPair {
 public:
  // Writes certificates and configs and starts both ends; returns once both
  // logged "ready" (throws with the log otherwise).
  explicit TunnelPair(PairOptions opts);
  ~TunnelPair();  // stops both
  TunnelPair(const TunnelPair&) = delete;
  TunnelPair& operator=(const TunnelPair&) = delete;

  std::string entry() const { return entry_; }
  pid_t entry_pid() const { return a_->pid(); }
  pid_t exit_pid() const { return b_->pid(); }
  fs::path entry_log() const { return opts_.dir / "hv-a.log"; }
  fs::path exit_log() const { return opts_.dir / "hv-b.log"; }
  // Stops both ends (they drain and log their close lines first).
  void stop();

 private:
  PairOptions opts_;
  std::string entry_;
  std::optional<Process> a_, b_;
};

// The distinct values of `key=` on the tunnel's close lines in log (e.g. the
// data-path mode, or the cipher), comma separated, in order of appearance.
std::string close_line_values(const fs::path& log, const std::string& key);

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t free_port();

}  // namespace xmig::bench
