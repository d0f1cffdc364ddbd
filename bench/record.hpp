// bench/: results — one flat JSON object per measurement, and the report that
// bench/compare prints from a file of them.
//
// A Record is flat on purpose (strings, numbers, booleans; no nesting): every
// tool writes one line per measurement, the report reads them back without a
// JSON library, and `jq` or a spreadsheet can read them too.
//
// Fields every measurement carries, so that the report needs no knowledge of
// what was measured:
//   suite, group, config   what ran ("stream", "4 streams", "stunnel")
//   round                  which round of the interleaved comparison
//   ok, error              a failed measurement is counted, never averaged
//   converged              busy guests: false with ok is a migration that did not
//                          converge (a result: listed with its reason, not failed)
//   value, unit, higher_is_better   the headline figure ("gbps"/"GB/s"/true,
//                          or QEMU's "seconds"/"s"/false)
//   cpu_s_per_gb           CPU seconds of the measured relay processes per GB
//                          (absent when there is no relay, e.g. direct)
#pragma once

#include <concepts>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace xmig::bench {

class Record {
 public:
  using Value = std::variant<std::string, double, bool>;

  Record& set(const std::string& key, std::string text) { return put(key, std::move(text)); }
  Record& set(const std::string& key, const char* text) { return put(key, std::string(text)); }
  Record& set(const std::string& key, bool flag) { return put(key, flag); }
  Record& set(const std::string& key, double number) { return put(key, number); }
  template <std::integral T>
  requires(!std::same_as<T, bool>) Record& set(const std::string& key, T number) {
    return put(key, static_cast<double>(number));
  }

  std::optional<double> number(const std::string& key) const;
  std::optional<std::string> text(const std::string& key) const;
  std::optional<bool> flag(const std::string& key) const;

  // One line of JSON, keys in the order they were first set.
  std::string json() const;
  // Parses what json() wrote (a flat object); throws std::invalid_argument.
  static Record parse(const std::string& line);

 private:
  Record& put(const std::string& key, Value value);
  std::vector<std::pair<std::string, Value>> fields_;
};

// Reads one Record per non-empty line; throws naming the file and line.
std::vector<Record> read_records(const std::string& path);

// Prints, per suite and group, each config's median, min–max, CPU per GB and
// the per-round ratios against each reference config present (e.g. "relay",
// "stunnel", "direct"); then writes the same summary, the machine and every
// record as one JSON document to json_path (when not empty).
void report(const std::vector<Record>& records, const std::vector<std::string>& references,
            std::ostream& out, const std::string& json_path);

// nproc, CPU model, kernel: the machine a table came from.
struct Machine {
  unsigned cpus = 0;
  std::string cpu_model;
  std::string kernel;
};
Machine this_machine();

}  // namespace xmig::bench
