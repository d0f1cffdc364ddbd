#include "bench/record.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include "base/json.hpp"

namespace xmig::bench {

// ---- Record --------------------------------------------------------------------

Record& Record::put(const std::string& key, Value value) {
  for (auto& [k, v] : fields_)
    if (k == key) return v = std::move(value), *this;
  fields_.emplace_back(key, std::move(value));
  return *this;
}

std::optional<double> Record::number(const std::string& key) const {
  for (const auto& [k, v] : fields_)
    if (k == key && std::holds_alternative<double>(v)) return std::get<double>(v);
  return std::nullopt;
}

std::optional<std::string> Record::text(const std::string& key) const {
  for (const auto& [k, v] : fields_)
    if (k == key && std::holds_alternative<std::string>(v)) return std::get<std::string>(v);
  return std::nullopt;
}

std::optional<bool> Record::flag(const std::string& key) const {
  for (const auto& [k, v] : fields_)
    if (k == key && std::holds_alternative<bool>(v)) return std::get<bool>(v);
  return std::nullopt;
}

namespace {

std::string number_text(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  // Integers print as integers; everything else with 6 significant digits,
  // more than any of these measurements can claim.
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// A cursor over one line of flat JSON.
struct Parser {
  const std::string& s;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& what) {
    throw std::invalid_argument(what + " at column " + std::to_string(i + 1));
  }
  void ws() {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  std::string string() {
    if (!eat('"')) fail("expected a string");
    std::string out;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) break;
      char e = s[i++];
      if (e == 'n') {
        out += '\n';
      } else if (e == 't') {
        out += '\t';
      } else if (e == 'u' && i + 4 <= s.size()) {
        out += static_cast<char>(std::stoi(s.substr(i, 4), nullptr, 16));
        i += 4;
      } else {
        out += e;
      }
    }
    if (!eat('"')) fail("unterminated string");
    return out;
  }
  std::optional<Record::Value> value() {
    ws();
    if (i >= s.size()) fail("expected a value");
    if (s[i] == '"') return string();
    for (const char* word : {"true", "false", "null"})
      if (s.compare(i, std::strlen(word), word) == 0) {
        i += std::strlen(word);
        if (word[0] == 'n') return std::nullopt;
        return Record::Value(word[0] == 't');
      }
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s.substr(i), &used);
    } catch (const std::exception&) {
      fail("expected a string, number or boolean (records are flat)");
    }
    i += used;
    return v;
  }
};

}  // namespace

std::string Record::json() const {
  std::string out = "{";
  for (const auto& [k, v] : fields_) {
    if (out.size() > 1) out += ", ";
    out += json_quote(k) + ": ";
    if (const auto* s = std::get_if<std::string>(&v))
      out += json_quote(*s);
    else if (const auto* d = std::get_if<double>(&v))
      out += number_text(*d);
    else
      out += std::get<bool>(v) ? "true" : "false";
  }
  return out + "}";
}

Record Record::parse(const std::string& line) {
  Record r;
  Parser p{line};
  if (!p.eat('{')) p.fail("expected '{'");
  if (p.eat('}')) return r;
  do {
    std::string key = p.string();
    if (!p.eat(':')) p.fail("expected ':'");
    if (auto v = p.value()) r.put(key, *v);
  } while (p.eat(','));
  if (!p.eat('}')) p.fail("expected ',' or '}'");
  return r;
}

std::vector<Record> read_records(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read");
  std::vector<Record> out;
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.push_back(Record::parse(line));
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ":" + std::to_string(n) + ": " + e.what());
    }
  }
  return out;
}

// ---- Report --------------------------------------------------------------------

namespace {

struct Stats {
  size_t n = 0;
  double median = 0, min = 0, max = 0;
};

Stats stats(std::vector<double> v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  return s;
}

std::string fmt(double v, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string range_text(const Stats& s, int digits) {
  if (s.n == 0) return "–";
  if (s.n == 1) return fmt(s.median, digits);
  return fmt(s.median, digits) + " (" + fmt(s.min, digits) + "–" + fmt(s.max, digits) + ")";
}

// One config of one group: its records by round.
struct Series {
  std::string config;
  std::map<int, const Record*> by_round;  // successful rounds only
  size_t runs = 0, failed = 0;
  // Busy guests: runs that converged, of those that say (a run that did not
  // converge is a result, listed with its reason, not a failure).
  size_t converged = 0, convergence_known = 0;
  std::vector<std::string> errors, notes;
  std::string unit;
  bool higher_is_better = true;

  std::vector<double> values(const std::string& key) const {
    std::vector<double> out;
    for (const auto& [round, r] : by_round)
      if (auto v = r->number(key)) out.push_back(*v);
    return out;
  }
};

struct Group {
  std::string suite, name;
  std::vector<Series> series;
  Series& of(const std::string& config) {
    for (auto& s : series)
      if (s.config == config) return s;
    series.push_back(Series{config, {}, 0, 0, 0, 0, {}, {}, "", true});
    return series.back();
  }
  const Series* find(const std::string& config) const {
    for (const auto& s : series)
      if (s.config == config) return &s;
    return nullptr;
  }
};

// Per-round ratio of key between a and ref, rounds where both succeeded.
std::vector<double> ratios(const Series& a, const Series& ref, const std::string& key) {
  std::vector<double> out;
  for (const auto& [round, r] : a.by_round) {
    auto it = ref.by_round.find(round);
    if (it == ref.by_round.end()) continue;
    auto x = r->number(key), y = it->second->number(key);
    if (x && y && *y > 0) out.push_back(*x / *y);
  }
  return out;
}

std::string ratio_text(const std::vector<double>& v) {
  if (v.empty()) return "–";
  std::string rounds;
  for (double x : v) {
    if (!rounds.empty()) rounds += ' ';
    rounds += fmt(x, 2);
  }
  return fmt(stats(v).median, 2) + "x [" + rounds + "]";
}

std::string json_stats(const Stats& s) {
  if (s.n == 0) return "null";
  return "{\"median\": " + number_text(s.median) + ", \"min\": " + number_text(s.min) +
         ", \"max\": " + number_text(s.max) + ", \"n\": " + std::to_string(s.n) + "}";
}

std::string json_list(const std::vector<double>& v) {
  std::string out = "[";
  for (double x : v) out += (out.size() > 1 ? ", " : "") + number_text(x);
  return out + "]";
}

// Columns a group shows when any of its records carries the field (e.g. the
// concurrent migrations' aggregate rate and fairness): field, header, digits.
struct OptionalColumn {
  const char* key;
  const char* header;
  int digits;
};
constexpr OptionalColumn kOptionalColumns[] = {
    {"gbps_aggregate", "GB/s, all together", 3},
    {"fairness_jain", "fairness (Jain)", 3},
    {"share_min_max", "share least/most", 2},
    {"thread_balance", "worker threads least/most CPU", 2},
    // xmig-bench-memory (KiB per item; MiB of a whole process)
    {"stream_idle_kib", "KiB per idle stream, both ends", 1},
    {"pending_idle_kib", "KiB per silent pending handshake", 1},
    {"pending_partial_kib", "KiB per pending handshake mid-ClientHello", 1},
    {"a_peak_mib", "hv-a peak RSS MiB", 1},
    {"b_peak_mib", "hv-b peak RSS MiB", 1},
    {"closed_mib", "RSS MiB both ends after close", 1},
    {"returned_pct", "% of the streams' RSS returned", 0},
    // busy guests (xmig-bench-qemu --busy-mib): QEMU's query-migrate, and the guest's own rate
    {"downtime_ms", "downtime ms", 0},
    {"transferred_mib", "MiB sent", 0},
    {"dirty_mibps", "dirty MiB/s (QEMU)", 0},
    {"guest_dirty_mibps", "dirty MiB/s (guest)", 0},
    {"dirty_syncs", "dirty syncs", 0},
};

}  // namespace

void report(const std::vector<Record>& records, const std::vector<std::string>& references,
            std::ostream& out, const std::string& json_path) {
  std::vector<Group> groups;
  for (const Record& r : records) {
    const std::string suite = r.text("suite").value_or("?"), name = r.text("group").value_or("");
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const Group& g) { return g.suite == suite && g.name == name; });
    if (it == groups.end()) it = groups.insert(groups.end(), Group{suite, name, {}});
    Series& s = it->of(r.text("config").value_or("?"));
    ++s.runs;
    s.unit = r.text("unit").value_or(s.unit);
    s.higher_is_better = r.flag("higher_is_better").value_or(s.higher_is_better);
    if (const auto converged = r.flag("converged"); converged && r.flag("ok").value_or(false)) {
      ++s.convergence_known;
      s.converged += *converged ? 1 : 0;
    }
    if (r.flag("ok").value_or(false) && r.number("value")) {
      s.by_round[static_cast<int>(r.number("round").value_or(0))] = &r;
    } else if (r.flag("ok").value_or(false) && r.flag("converged") == false) {
      s.notes.push_back(r.text("error").value_or("not converged"));
    } else {
      ++s.failed;
      s.errors.push_back(r.text("error").value_or("failed"));
    }
  }

  std::string json = "{\n\"machine\": ";
  const Machine m = this_machine();
  json += "{\"cpus\": " + std::to_string(m.cpus) + ", \"cpu_model\": " + json_quote(m.cpu_model) +
          ", \"kernel\": " + json_quote(m.kernel) + "},\n\"summary\": [";
  bool first_summary = true;

  for (const Group& g : groups) {
    const std::string unit = g.series.empty() ? "" : g.series.front().unit;
    // What the CPU column counts: per GB carried (streams, migrations) or per
    // connection (handshakes), both ends together.
    std::string cost_key = "cpu_s_per_gb", cost_label = "CPU-s/GB, both ends";
    bool any_cpu = false, any_latency = false;
    std::vector<OptionalColumn> extra;
    for (const auto& s : g.series) {
      if (!s.values("cpu_ms_per_conn").empty())
        cost_key = "cpu_ms_per_conn", cost_label = "CPU-ms/conn, both ends";
      any_latency = any_latency || !s.values("p50_ms").empty();
    }
    for (const auto& s : g.series) any_cpu = any_cpu || !s.values(cost_key).empty();
    const bool any_convergence = std::any_of(
        g.series.begin(), g.series.end(), [](const Series& s) { return s.convergence_known > 0; });
    for (const auto& column : kOptionalColumns)
      if (std::any_of(g.series.begin(), g.series.end(),
                      [&](const Series& s) { return !s.values(column.key).empty(); }))
        extra.push_back(column);
    std::vector<std::string> refs, cpu_refs;
    for (const auto& name : references)
      if (const Series* ref = g.find(name)) {
        refs.push_back(name);
        if (!ref->values(cost_key).empty()) cpu_refs.push_back(name);
      }

    out << "\n### " << g.suite << ": " << g.name << "\n\n| config | " << unit
        << " median (min–max) |";
    if (any_convergence) out << " converged |";
    if (any_cpu) out << " " << cost_label << " |";
    if (any_latency) out << " latency p50 / p99 ms |";
    for (const auto& column : extra) out << " " << column.header << " |";
    for (const auto& ref : refs) out << " vs " << ref << " [per round] |";
    for (const auto& ref : cpu_refs) out << " CPU vs " << ref << " |";
    out << " failed |\n|---|---|";
    if (any_convergence) out << "---|";
    if (any_cpu) out << "---|";
    if (any_latency) out << "---|";
    for (size_t i = 0; i < extra.size(); ++i) out << "---|";
    for (size_t i = 0; i < refs.size() + cpu_refs.size(); ++i) out << "---|";
    out << "---|\n";

    for (const Series& s : g.series) {
      const Stats value = stats(s.values("value"));
      const Stats cpu = stats(s.values(cost_key));
      out << "| " << s.config << " | " << range_text(value, 2) << " |";
      if (any_convergence) out << " " << s.converged << "/" << s.convergence_known << " |";
      if (any_cpu) out << " " << range_text(cpu, 2) << " |";
      if (any_latency)
        out << " " << range_text(stats(s.values("p50_ms")), 2) << " / "
            << range_text(stats(s.values("p99_ms")), 2) << " |";
      for (const auto& column : extra)
        out << " " << range_text(stats(s.values(column.key)), column.digits) << " |";
      std::string json_ratios, json_cpu_ratios;
      for (const auto& ref : refs) {
        const auto v = ratios(s, *g.find(ref), "value");
        out << " " << (ref == s.config ? "1" : ratio_text(v)) << " |";
        json_ratios += (json_ratios.empty() ? "" : ", ") + json_quote(ref) + ": " + json_list(v);
      }
      for (const auto& ref : cpu_refs) {
        const auto v = ratios(s, *g.find(ref), cost_key);
        out << " " << (ref == s.config ? "1" : ratio_text(v)) << " |";
        json_cpu_ratios +=
            (json_cpu_ratios.empty() ? "" : ", ") + json_quote(ref) + ": " + json_list(v);
      }
      out << " " << s.failed << "/" << s.runs - s.notes.size() << " |\n";

      json += std::string(first_summary ? "\n" : ",\n") + "  {\"suite\": " + json_quote(g.suite) +
              ", \"group\": " + json_quote(g.name) + ", \"config\": " + json_quote(s.config) +
              ", \"unit\": " + json_quote(s.unit) +
              ", \"higher_is_better\": " + (s.higher_is_better ? "true" : "false") +
              ", \"value\": " + json_stats(value) + ", " + json_quote(cost_key) + ": " +
              json_stats(cpu) + ", \"ratios\": {" + json_ratios + "}, \"cpu_ratios\": {" +
              json_cpu_ratios + "}, \"runs\": " + std::to_string(s.runs) +
              ", \"failed\": " + std::to_string(s.failed) + "}";
      first_summary = false;
    }
    for (const Series& s : g.series)
      for (std::string e : s.errors) {
        std::replace(e.begin(), e.end(), '\n', ' ');
        out << "\n- " << s.config << " failed: " << e.substr(0, 300);
      }
    for (const Series& s : g.series)
      for (const std::string& note : s.notes) out << "\n- " << s.config << ": " << note;
    out << "\n";
  }
  out.flush();

  if (json_path.empty()) return;
  json += "\n],\n\"records\": [";
  for (size_t i = 0; i < records.size(); ++i)
    json += std::string(i ? ",\n  " : "\n  ") + records[i].json();
  json += "\n]\n}\n";
  std::ofstream f(json_path);
  f << json;
  if (!f) throw std::runtime_error(json_path + ": cannot write");
}

Machine this_machine() {
  Machine m;
  m.cpus = static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN));
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      m.cpu_model = line.substr(line.find(':') + 2);
      break;
    }
  utsname u{};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.version;
  return m;
}

}  // namespace xmig::bench
