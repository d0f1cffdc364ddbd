#include "tunnel/refusal_log.hpp"

#include <spdlog/spdlog.h>

namespace xmig::tunnel {

void RefusalLog::warn(const std::string& key, const std::string& line) {
  const auto now = Clock::now();
  auto it = windows_.find(key);
  if (it != windows_.end() && now - it->second.start < kWindow) {
    ++it->second.more;
    it->second.last = line;
    return;
  }
  if (it != windows_.end()) flush(now);  // a window that ended: its count first
  spdlog::warn("{}", line);
  windows_[key] = Window{.start = now, .more = 0, .last = line};
}

void RefusalLog::flush(Clock::time_point now) {
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (now - it->second.start < kWindow) {
      ++it;
      continue;
    }
    if (it->second.more > 0)
      spdlog::warn("{} ({} more like this in the last {} s)", it->second.last, it->second.more,
                   kWindow.count());
    it = windows_.erase(it);
  }
}

}  // namespace xmig::tunnel
