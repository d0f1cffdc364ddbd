// harness/process: child processes for tests and benchmarks: real binaries,
// real signals.
//
// A Process owns one child. Its stdout and stderr go to a log file so that a
// failing test can print what the child said. The destructor kills a child that
// is still running, so no test or benchmark leaves strays behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace xmig::harness {

using namespace std::chrono_literals;

class Process {
 public:
  // Starts argv[0] (a path) with the given arguments; output goes to log_path
  // (appended), or to /dev/null when log_path is empty.
  Process(std::vector<std::string> argv, std::string log_path = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // Sends a signal (no-op when the child has been reaped).
  void signal(int sig);
  // True while the child has not exited.
  bool running();
  // Waits for exit; returns the exit code, 128+signal when killed by a signal,
  // or nullopt on timeout (the child is left running).
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, then wait; SIGKILL after the timeout. Returns what wait() returned
  // for the SIGTERM (nullopt when SIGKILL was needed).
  std::optional<int> terminate(std::chrono::milliseconds timeout = 10s);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

// Runs a command to completion and returns its exit code (128+signal when
// killed); output is appended to log_path when given.
int run(std::vector<std::string> argv, std::string log_path = {},
        std::chrono::milliseconds timeout = 120s);

// A process's resident memory (VmRSS in /proc/<pid>/status), in bytes; 0
// when it cannot be read.
uint64_t rss_bytes(pid_t pid);

// Runs `body` in a forked child as another user: supplementary groups
// `groups`, gid `gid`, uid `uid` (real, effective and saved; set by the
// caller, who must be root). Returns the child's exit status: body's return
// value, 126 when the identity could not be taken, 128+signal when killed.
// The child runs nothing but `body` and system calls (the parent may have
// threads): keep it to a few calls, then return.
int run_as(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
           const std::function<int()>& body);

// Polls cond every 20 ms until it is true or the timeout passes.
bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

}  // namespace xmig::harness
