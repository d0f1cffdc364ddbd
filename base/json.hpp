// base/json: the one JSON string writer. Status endpoints, reports, benchmark
// records and QMP commands build their JSON by hand from a few fields; every
// string among them goes through json_quote, so none can break the document.
#pragma once

#include <string>
#include <string_view>

namespace xmig {

// What json_quote does with the bytes 0x7f and above.
enum class NonAscii {
  Keep,    // copied as they are: UTF-8 text stays UTF-8
  Escape,  // written as \u00XX, so the output is ASCII whatever came in (text from
           // untrusted sources: capture files, peers)
};

// s as a JSON string literal, quotes included: '"' and '\' escaped, newline
// and tab as \n and \t, the other control characters as \u00XX.
std::string json_quote(std::string_view s, NonAscii non_ascii = NonAscii::Keep);

}  // namespace xmig
