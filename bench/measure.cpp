#include "bench/measure.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace xmig::bench {

namespace {

// utime + stime in seconds from a /proc/.../stat line. The command name may
// hold spaces and parentheses; fields resume after the last ')'. From there,
// field 3 (state) is token 0, so utime (14) and stime (15) are tokens 11 and
// 12. For a process they cover every thread, dead ones too.
double stat_cpu_seconds(const std::string& line) {
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string tok;
  double ticks = 0;
  for (int i = 0; i <= 12 && fields >> tok; ++i)
    if (i == 11 || i == 12) ticks += std::stod(tok);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

ProcSample sample(pid_t pid) {
  ProcSample s;
  const std::string base = "/proc/" + std::to_string(pid);
  std::ifstream stat(base + "/stat");
  std::string line;
  if (!std::getline(stat, line))
    throw std::runtime_error("process " + std::to_string(pid) + " is gone (" + base + "/stat)");
  s.cpu_seconds = stat_cpu_seconds(line);

  std::ifstream status(base + "/status");
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) s.peak_rss_kib = std::stoull(line.substr(6));
  return s;
}

std::map<pid_t, double> thread_cpu_seconds(pid_t pid) {
  std::map<pid_t, double> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream stat(task.path() / "stat");
    std::string line;
    if (std::getline(stat, line))  // a thread that ended meanwhile is skipped
      out[static_cast<pid_t>(std::stol(task.path().filename().string()))] = stat_cpu_seconds(line);
  }
  return out;
}

double thread_balance(const std::map<pid_t, double>& before, const std::map<pid_t, double>& after,
                      size_t count, std::vector<double>* spent) {
  std::vector<double> used;
  for (const auto& [tid, cpu] : after) {
    auto it = before.find(tid);
    used.push_back(cpu - (it == before.end() ? 0 : it->second));
  }
  std::sort(used.begin(), used.end(), std::greater<>());
  if (spent) *spent = used;
  if (count == 0 || used.size() < count || used.front() <= 0) return 0;
  return used[count - 1] / used.front();
}

std::string close_line_values(const fs::path& log, const std::string& key) {
  std::ifstream in(log);
  std::vector<std::string> seen;
  const std::string needle = " " + key + "=";
  for (std::string line; std::getline(in, line);) {
    if (line.find("close: ") == std::string::npos) continue;
    size_t at = line.find(needle);
    if (at == std::string::npos) continue;
    at += needle.size();
    std::string value = line.substr(at, line.find(' ', at) - at);
    if (std::find(seen.begin(), seen.end(), value) == seen.end()) seen.push_back(value);
  }
  std::string out;
  for (const auto& v : seen) out += (out.empty() ? "" : ",") + v;
  return out;
}

}  // namespace xmig::bench
