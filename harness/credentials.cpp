#include "harness/credentials.hpp"

#include <grp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace xmig::harness {

namespace fs = std::filesystem;

namespace {

bool is_credential(const std::string& key) {
  return key == "Uid" || key == "Gid" || key == "Groups" || key.rfind("Cap", 0) == 0 ||
         key == "NoNewPrivs";
}

std::string trimmed(std::string value) {
  auto blank = [](char c) { return c == '\t' || c == ' '; };
  while (!value.empty() && blank(value.front())) value.erase(0, 1);
  while (!value.empty() && blank(value.back())) value.pop_back();
  return value;
}

// "%016llx", as /proc/<pid>/status prints capability sets.
std::string cap_text(uint64_t set) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(set));
  return text;
}

std::string four_times(unsigned id) {
  const std::string one = std::to_string(id);
  return one + "\t" + one + "\t" + one + "\t" + one;
}

}  // namespace

std::vector<ThreadCredentials> thread_credentials(pid_t pid) {
  std::vector<ThreadCredentials> out;
  std::error_code ec;
  const fs::path tasks = fs::path("/proc") / std::to_string(pid) / "task";
  for (const auto& task : fs::directory_iterator(tasks, ec)) {
    ThreadCredentials t{.tid = task.path().filename().string(), .lines = {}};
    std::ifstream in(task.path() / "status");
    for (std::string line; std::getline(in, line);) {
      const auto colon = line.find(':');
      if (colon == std::string::npos || !is_credential(line.substr(0, colon))) continue;
      t.lines[line.substr(0, colon)] = trimmed(line.substr(colon + 1));
    }
    out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end(),
            [](const auto& x, const auto& y) { return std::stol(x.tid) < std::stol(y.tid); });
  return out;
}

std::vector<gid_t> groups_of(const std::string& user, gid_t gid) {
  int count = 64;
  std::vector<gid_t> groups(count);
  if (::getgrouplist(user.c_str(), gid, groups.data(), &count) < 0) {
    groups.resize(count);
    ::getgrouplist(user.c_str(), gid, groups.data(), &count);
  }
  groups.resize(count);
  return groups;
}

std::string credential_problems(pid_t pid, const ExpectedCredentials& expected) {
  const auto threads = thread_credentials(pid);
  if (threads.empty()) return "no thread of pid " + std::to_string(pid) + " to read\n";
  std::ostringstream problems;
  for (const auto& t : threads) {
    auto want = [&](const std::string& key, const std::string& value) {
      auto it = t.lines.find(key);
      const std::string seen = it == t.lines.end() ? "(missing)" : it->second;
      if (seen != value)
        problems << "thread " << t.tid << ": " << key << " is \"" << seen << "\", expected \""
                 << value << "\"\n";
    };
    want("Uid", four_times(expected.uid));
    want("Gid", four_times(expected.gid));
    for (const char* key : {"CapEff", "CapPrm", "CapBnd"})
      want(key, cap_text(expected.capabilities));
    for (const char* key : {"CapInh", "CapAmb"}) want(key, cap_text(0));
    want("NoNewPrivs", "1");
    auto groups = t.lines.find("Groups");
    std::istringstream listed(groups == t.lines.end() ? "" : groups->second);
    for (gid_t g; listed >> g;)
      if (std::find(expected.groups.begin(), expected.groups.end(), g) == expected.groups.end())
        problems << "thread " << t.tid << ": group " << g << " is not one of the user's\n";
  }
  return problems.str();
}

std::string describe_credentials(pid_t pid) {
  const auto threads = thread_credentials(pid);
  std::ostringstream out;
  out << "/proc/" << pid << ": " << threads.size() << " threads";
  if (!threads.empty())
    for (const auto& [key, value] : threads.front().lines) out << "; " << key << ": " << value;
  return out.str();
}

}  // namespace xmig::harness
