// Findings and how they are printed: a checklist for terminals, JSON for tools.
#include "base/json.hpp"
#include "verify/verify.hpp"

namespace xmig::verify {

namespace {

// Findings quote what peers and capture files said: kept ASCII, whatever the bytes.
std::string quoted(const std::string& s) {
  return json_quote(s, NonAscii::Escape);
}

// Text from untrusted sources (capture files, peers) may hold anything:
// keep it printable on a terminal.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s)
    out += (c >= 0x20 && c < 0x7f) || c == '\n' ? static_cast<char>(c) : '?';
  return out;
}

}  // namespace

const char* to_string(Status s) {
  switch (s) {
    case Status::Pass:
      return "PASS";
    case Status::Warn:
      return "WARN";
    case Status::Fail:
      return "FAIL";
  }
  return "?";
}

void Report::add(std::string group, std::string check, Status status, std::string reason,
                 std::string fix) {
  findings.push_back(
      {std::move(group), std::move(check), status, std::move(reason), std::move(fix)});
}

Status Report::worst() const {
  Status w = Status::Pass;
  for (const auto& f : findings)
    if (static_cast<int>(f.status) > static_cast<int>(w)) w = f.status;
  return w;
}

int exit_code(const Report& r) {
  return r.worst() == Status::Fail ? 1 : 0;
}

std::string render_text(const Report& r) {
  std::string out = "xmig-verify: " + printable(r.title) + "\n";
  std::string group;
  int counts[3] = {0, 0, 0};
  for (const auto& f : r.findings) {
    ++counts[static_cast<int>(f.status)];
    if (f.group != group) {
      group = f.group;
      out += '\n';
      out += printable(group);
      out += '\n';
    }
    out += std::string("  ") + to_string(f.status) + "  " + printable(f.check) + ": " +
           printable(f.reason) + "\n";
    if (!f.fix.empty()) out += "        fix: " + printable(f.fix) + "\n";
  }
  out += "\nresult: " + std::string(to_string(r.worst())) + " (" + std::to_string(counts[0]) +
         " passed, " + std::to_string(counts[1]) + (counts[1] == 1 ? " warning, " : " warnings, ") +
         std::to_string(counts[2]) + " failed)\n";
  return out;
}

std::string render_json(const Report& r) {
  int counts[3] = {0, 0, 0};
  std::string items;
  for (const auto& f : r.findings) {
    ++counts[static_cast<int>(f.status)];
    std::string status = to_string(f.status);
    for (auto& c : status) c = static_cast<char>(c - 'A' + 'a');
    items += std::string(items.empty() ? "" : ",") + "{\"group\":" + quoted(f.group) +
             ",\"check\":" + quoted(f.check) + ",\"status\":" + quoted(status) +
             ",\"reason\":" + quoted(f.reason) + ",\"fix\":" + quoted(f.fix) + "}";
  }
  std::string worst = to_string(r.worst());
  for (auto& c : worst) c = static_cast<char>(c - 'A' + 'a');
  return "{\"title\":" + quoted(r.title) + ",\"status\":\"" + worst +
         "\",\"counts\":{\"pass\":" + std::to_string(counts[0]) +
         ",\"warn\":" + std::to_string(counts[1]) + ",\"fail\":" + std::to_string(counts[2]) +
         "},\"findings\":[" + items + "]}\n";
}

}  // namespace xmig::verify
