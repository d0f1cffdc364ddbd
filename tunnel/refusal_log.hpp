// Internal to tunnel/: refusal lines that strangers can cause, rate-limited.
//
// Every refusal is logged, but a flood must not turn the log into the
// attacker's tool: of the lines with one key (a source and a kind of
// refusal), the first in a window of kWindow is written as it comes; the
// others are counted, and when the window ends one line says how many there
// were: "<the last of them> (N more like this in the last 10 s)".
// Used on the control-plane thread only.
#pragma once

#include <chrono>
#include <map>
#include <string>

namespace xmig::tunnel {

class RefusalLog {
 public:
  static constexpr std::chrono::seconds kWindow{10};
  using Clock = std::chrono::steady_clock;

  // Writes `line` (warn) unless a line with `key` was written less than
  // kWindow ago; then counts it.
  void warn(const std::string& key, const std::string& line);
  // Writes the count line of each window that has ended with lines counted,
  // and forgets windows that have ended. Call about once a second.
  void flush(Clock::time_point now = Clock::now());

 private:
  struct Window {
    Clock::time_point start;
    unsigned more = 0;  // lines counted, not written
    std::string last;   // the last of them
  };
  std::map<std::string, Window> windows_;
};

}  // namespace xmig::tunnel
