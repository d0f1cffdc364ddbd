// bench/: what the processes a benchmark measures cost (CPU time and peak
// memory, read from /proc), and what xmig's close lines say it did. Starting
// the processes is harness/'s (harness/process.hpp, harness/tunnel_pair.hpp).
//
// What it must never do: measure a process that is not the one it was given.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace xmig::bench {

namespace fs = std::filesystem;

struct ProcSample {
  double cpu_seconds = 0;     // utime + stime of all its threads so far
  uint64_t peak_rss_kib = 0;  // VmHWM
};
// Reads /proc/<pid>/stat and /proc/<pid>/status; throws when the process is gone.
ProcSample sample(pid_t pid);

// CPU seconds (utime + stime) of each thread of pid now, by thread id: how
// evenly a process spreads its work over its threads. Threads that ended are
// missing (their time is in sample()'s total).
std::map<pid_t, double> thread_cpu_seconds(pid_t pid);

// How evenly the busiest `count` threads between two thread_cpu_seconds()
// samples shared the work: the least busy one's CPU over the busiest one's
// (1 = even; 0 when fewer than `count` threads ran). The CPU of each thread,
// busiest first, goes to `spent`.
double thread_balance(const std::map<pid_t, double>& before, const std::map<pid_t, double>& after,
                      size_t count, std::vector<double>* spent = nullptr);

// A process under measurement, named for the report ("entry", "exit").
struct Measured {
  std::string name;
  pid_t pid = 0;
  ProcSample before, after;
  double cpu_seconds() const { return after.cpu_seconds - before.cpu_seconds; }
};

// The distinct values of `key=` on the tunnel's close lines in log (e.g. the
// data-path mode, or the cipher), comma separated, in order of appearance.
std::string close_line_values(const fs::path& log, const std::string& key);

}  // namespace xmig::bench
