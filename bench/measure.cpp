#include "bench/measure.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace xmig::bench {

ProcSample sample(pid_t pid) {
  ProcSample s;
  const std::string base = "/proc/" + std::to_string(pid);
  std::ifstream stat(base + "/stat");
  std::string line;
  if (!std::getline(stat, line))
    throw std::runtime_error("process " + std::to_string(pid) + " is gone (" + base + "/stat)");
  // The command name may hold spaces and parentheses; fields resume after the
  // last ')'. From there, field 3 (state) is token 0, so utime (14) and
  // stime (15) are tokens 11 and 12. They cover every thread, dead ones too.
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string tok;
  double ticks = 0;
  for (int i = 0; i <= 12 && fields >> tok; ++i)
    if (i == 11 || i == 12) ticks += std::stod(tok);
  s.cpu_seconds = ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));

  std::ifstream status(base + "/status");
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) s.peak_rss_kib = std::stoull(line.substr(6));
  return s;
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
