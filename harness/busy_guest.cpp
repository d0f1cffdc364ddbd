#include "harness/busy_guest.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "harness/files.hpp"

namespace xmig::harness {

namespace {

constexpr uint64_t kBufferStartMib = 16;  // guest.c's BUFFER_START
constexpr uint64_t kHeadroomMib = 16;     // above the buffer: nothing, but QEMU's pc needs some
constexpr std::string_view kCounterPrefix = "xmig-busy n=";
constexpr std::string_view kPagesKey = " pages=";
constexpr std::string_view kStaleKey = " stale=";

std::optional<uint64_t> number_at(std::string_view text, size_t pos) {
  if (pos >= text.size() || text[pos] < '0' || text[pos] > '9') return std::nullopt;
  uint64_t v = 0;
  for (; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos)
    v = v * 10 + static_cast<uint64_t>(text[pos] - '0');
  return v;
}

}  // namespace

fs::path busy_guest_kernel() {
  const char* env = std::getenv("XMIG_BUSY_GUEST");
  const fs::path path = env && *env ? fs::path(env) : fs::path(XMIG_BUSY_GUEST);
  if (!fs::exists(path))
    throw std::runtime_error("busy guest image " + path.string() +
                             " missing: build the xmig-busy-guest target (or set XMIG_BUSY_GUEST)");
  return path;
}

std::string busy_guest_args(const BusyLoad& load) {
  return "mib=" + std::to_string(load.mib) + " rate=" + std::to_string(load.rate_mib_per_s);
}

uint64_t busy_pass_seconds(const BusyLoad& load) {
  if (load.rate_mib_per_s == 0) return 1;
  return std::max<uint64_t>(1, (load.mib + load.rate_mib_per_s - 1) / load.rate_mib_per_s);
}

uint64_t busy_guest_ram_mib(const BusyLoad& load) {
  return kBufferStartMib + load.mib + kHeadroomMib;
}

BusyCounters busy_counters(std::string_view serial) {
  BusyCounters c;
  size_t begin = 0;
  for (size_t end = serial.find('\n'); end != std::string_view::npos;
       begin = end + 1, end = serial.find('\n', begin)) {
    const std::string_view line = serial.substr(begin, end - begin);
    if (line.find("xmig-busy start") != std::string_view::npos) c.started = true;
    const size_t at = line.find(kCounterPrefix);
    if (at == std::string_view::npos) continue;
    const auto n = number_at(line, at + kCounterPrefix.size());
    if (!n) continue;
    if (c.last && *n != *c.last + 1) c.consecutive = false;
    if (!c.first) c.first = n;
    c.last = n;
    const size_t pages = line.find(kPagesKey, at);
    c.last_pages =
        pages == std::string_view::npos ? std::nullopt : number_at(line, pages + kPagesKey.size());
    if (!c.first_pages) c.first_pages = c.last_pages;
    const size_t stale = line.find(kStaleKey, at);
    if (stale != std::string_view::npos)
      c.stale = number_at(line, stale + kStaleKey.size()).value_or(0);
    ++c.lines;
  }
  return c;
}

BusyCounters wait_for_busy_counters(const fs::path& serial_log, size_t lines,
                                    std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  BusyCounters c;
  while (true) {
    std::string text;
    try {
      text = read_file(serial_log);
    } catch (const std::exception&) {
      // QEMU creates the file when it starts its serial port.
    }
    c = busy_counters(text);
    if (c.lines >= lines || std::chrono::steady_clock::now() >= deadline) return c;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string busy_continues(const BusyCounters& source, const BusyCounters& destination,
                           size_t min_lines) {
  if (!source.last) return "the source's guest printed no counter";
  if (destination.lines < min_lines)
    return "the destination's guest printed " + std::to_string(destination.lines) +
           " counter lines, not " + std::to_string(min_lines);
  if (destination.started) return "the destination's guest booted afresh instead of arriving";
  if (!destination.consecutive) return "the destination's counters skip or repeat";
  if (*destination.first <= *source.last || *destination.first > *source.last + 2)
    return "the destination's counter starts at " + std::to_string(*destination.first) +
           ", the source's ended at " + std::to_string(*source.last);
  if (source.stale > 0 || destination.stale > 0)
    return "the guest found " + std::to_string(destination.stale) +
           " stale pages (writes the migration lost; " + std::to_string(source.stale) +
           " at the source)";
  if (destination.last_pages.value_or(0) <= source.last_pages.value_or(0) &&
      source.last_pages.value_or(0) > 0)
    return "the destination's guest wrote no pages after the source's last count";
  return {};
}

}  // namespace xmig::harness
