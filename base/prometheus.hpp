// base/prometheus: the one writer of Prometheus label values, for the
// tunnel's /metrics and xmig-verify's textfile output.
#pragma once

#include <string>
#include <string_view>

namespace xmig {

// v as a label value in Prometheus' text format, quotes included: '\', '"'
// and newline escaped.
std::string prometheus_label(std::string_view v);

}  // namespace xmig
