#include "tunnel/log_format.hpp"

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <set>
#include <utility>
#include <vector>

#include "base/json.hpp"

namespace xmig::tunnel {

namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

// Fields a line's own words may not take.
const std::set<std::string, std::less<>> kReserved = {"time", "level", "event", "message"};
// The words of a refusal that name who and what (tunnel/inbound, outbound,
// intercept, control): each is followed by its value.
const std::set<std::string, std::less<>> kRefusalWords = {
    "entry", "from", "peer", "channel", "migration", "intercept", "to"};

// One or two lower-case words ("close", "ban lifted"): a sentence before a
// colon ("socket_group is not set: ...") is a message, not an event.
bool is_event_text(std::string_view s) {
  if (s.empty() || s.front() < 'a' || s.front() > 'z' || s.back() == ' ') return false;
  int spaces = 0;
  for (char c : s) {
    if (c == ' ')
      ++spaces;
    else if (!((c >= 'a' && c <= 'z') || c == '-'))
      return false;
  }
  return spaces <= 1;
}

// The line's event and where its details start; "log" and 0 for none.
std::pair<std::string, size_t> event_of(std::string_view text, Fields& fields) {
  size_t colon = text.find(':');
  if (colon != std::string_view::npos && is_event_text(text.substr(0, colon)))
    return {std::string(text.substr(0, colon)), colon + 1};
  // "reload (SIGHUP): ..." and "reload (SIGHUP) refused, ...": the reason in
  // parentheses is a field.
  size_t paren = text.find(" (");
  if (paren != std::string_view::npos && is_event_text(text.substr(0, paren))) {
    size_t close = text.find(')', paren);
    if (close != std::string_view::npos) {
      fields.emplace_back("why", std::string(text.substr(paren + 2, close - paren - 2)));
      size_t after = close + 1;
      if (after < text.size() && text[after] == ':') ++after;
      return {std::string(text.substr(0, paren)), after};
    }
  }
  return {"log", 0};
}

// key=value and key="quoted value" tokens anywhere in the details.
void key_values(std::string_view details, Fields& fields) {
  size_t i = 0;
  while (i < details.size()) {
    while (i < details.size() && details[i] == ' ') ++i;
    size_t start = i;
    while (i < details.size() && ((details[i] >= 'a' && details[i] <= 'z') || details[i] == '_'))
      ++i;
    if (i > start && i < details.size() && details[i] == '=') {
      std::string key(details.substr(start, i - start));
      ++i;
      std::string value;
      if (i < details.size() && details[i] == '"') {
        size_t end = details.find('"', i + 1);
        // An unterminated quote takes the rest of the line.
        if (end == std::string_view::npos) end = details.size();
        value = details.substr(i + 1, end - i - 1);
        i = end + 1;
      } else {
        size_t end = details.find(' ', i);
        if (end == std::string_view::npos) end = details.size();
        value = details.substr(i, end - i);
        i = end;
      }
      if (!kReserved.count(key)) fields.emplace_back(std::move(key), std::move(value));
      continue;
    }
    size_t end = details.find(' ', i);
    i = end == std::string_view::npos ? details.size() : end;
  }
}

// "from 10.0.0.1:5 peer hv-a channel qemu: <reason>": the named words, then
// everything after the first ": " as the reason.
void refusal_words(std::string_view details, Fields& fields) {
  size_t sep = details.find(": ");
  std::string_view head = details.substr(0, sep);
  if (sep != std::string_view::npos)
    fields.emplace_back("reason", std::string(details.substr(sep + 2)));
  std::vector<std::string_view> words;
  for (size_t i = 0; i < head.size();) {
    while (i < head.size() && head[i] == ' ') ++i;
    size_t end = head.find(' ', i);
    if (end == std::string_view::npos) end = head.size();
    if (end > i) words.push_back(head.substr(i, end - i));
    i = end;
  }
  for (size_t w = 0; w + 1 < words.size(); ++w) {
    if (kRefusalWords.count(words[w])) {
      fields.emplace_back(std::string(words[w]), std::string(words[w + 1]));
      ++w;
    }
  }
}

}  // namespace

std::string json_log_line(std::string_view time, std::string_view level, std::string_view text) {
  Fields fields;
  auto [event, at] = event_of(text, fields);
  std::string_view details = text.substr(at);
  if (event == "refused")
    refusal_words(details, fields);
  else
    key_values(details, fields);

  // Log lines quote what peers and clients sent (names, reasons): escaped,
  // so that every line is ASCII and valid JSON whatever came in.
  auto quote = [](std::string_view s) { return json_quote(s, NonAscii::Escape); };
  std::string line = "{\"time\":";
  line += quote(time);
  line += ",\"level\":";
  line += quote(level);
  line += ",\"event\":";
  line += quote(event);
  std::set<std::string, std::less<>> seen;
  for (const auto& [key, value] : fields) {
    if (!seen.insert(key).second) continue;  // the first of a repeated key
    line += ',';
    line += quote(key);
    line += ':';
    line += quote(value);
  }
  line += ",\"message\":";
  line += quote(text);
  line += '}';
  return line;
}

namespace {

class JsonLogFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto since_epoch = msg.time.time_since_epoch();
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
    const std::time_t t = seconds.count();
    std::tm utc{};
    gmtime_r(&t, &utc);
    char time[64];  // room for any int the compiler can imagine in each field
    std::snprintf(time, sizeof time, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                  utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                  static_cast<int>(millis));
    const auto level = spdlog::level::to_string_view(msg.level);
    std::string line = json_log_line(time, std::string_view(level.data(), level.size()),
                                     std::string_view(msg.payload.data(), msg.payload.size()));
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLogFormatter>();
  }
};

}  // namespace

std::unique_ptr<spdlog::formatter> json_log_formatter() {
  return std::make_unique<JsonLogFormatter>();
}

}  // namespace xmig::tunnel
