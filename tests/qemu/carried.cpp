#include "tests/qemu/carried.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <vector>

#include "harness/files.hpp"
#include "harness/process.hpp"

namespace xmig::test {

using namespace harness;

namespace {

// The values of `field` (e.g. "to_peer=") on the lines holding `needle`, sorted.
std::vector<uint64_t> byte_counts(const fs::path& log, const std::string& needle,
                                  const std::string& field) {
  std::vector<uint64_t> out;
  std::istringstream lines(read_file(log));
  for (std::string line; std::getline(lines, line);) {
    size_t at = line.find(field);
    if (line.find(needle) == std::string::npos || at == std::string::npos) continue;
    out.push_back(std::stoull(line.substr(at + field.size())));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void expect_qemu_connections_carried(const TunnelPair& pair, int connections,
                                     const std::string& context) {
  const fs::path& a_log = pair.a.log;
  const fs::path& b_log = pair.b.log;
  // Entry side: close: dir=out peer=hv-b channel=qemu ... result=ok.
  const std::string out = "close: dir=out peer=hv-b channel=qemu ";
  // Delivery side: close: dir=in peer=hv-a channel=qemu ... result=ok.
  const std::string in = "close: dir=in peer=hv-a channel=qemu ";
  // A close line appears once its pump has seen both ends finish, which may
  // lag QEMU closing the connection (or exiting) a little.
  wait_until(
      [&] {
        return count_in_log(a_log, out) >= connections && count_in_log(b_log, in) >= connections;
      },
      10s);
  EXPECT_EQ(count_lines_with_all(a_log, {out, "result=ok"}), connections)
      << "hv-a did not carry " << connections << " qemu connection(s) cleanly\n"
      << context;
  EXPECT_EQ(count_in_log(a_log, out), connections) << context;
  EXPECT_EQ(count_lines_with_all(b_log, {in, "result=ok"}) +
                count_lines_with_all(b_log, {in, "result=local-closed-early"}),
            connections)
      << "hv-b did not deliver " << connections << " qemu connection(s) without an error\n"
      << context;
  EXPECT_EQ(count_in_log(b_log, in), connections) << context;
  EXPECT_EQ(count_in_log(a_log, "refused:") + count_in_log(b_log, "refused:"), 0) << context;
  EXPECT_EQ(byte_counts(a_log, out, "to_peer="), byte_counts(b_log, in, "from_peer=")) << context;
}

}  // namespace xmig::test
