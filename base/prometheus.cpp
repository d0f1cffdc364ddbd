#include "base/prometheus.hpp"

namespace xmig {

std::string prometheus_label(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace xmig
