// xmig-bench-memory run tiny: a correctness check of the benchmark behind
// bench/compare --memory, not a measurement (no figure is asserted beyond
// what any run must show).
#include <gtest/gtest.h>

#include <string>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"

namespace xmig::test {

using namespace harness;

// Pass: xmig-bench-memory with 10 streams and 10 pending handshakes exits 0
// with one JSON line saying ok (every stream's data arrived with its SHA-256),
// named after the data path's mode, with per-item figures that are positive,
// and a stream that moved data holding more than an idle one.
TEST(BenchMemory, TenStreamsAndHandshakesGiveAWellFormedVerifiedResult) {
  TempDir dir("xmig-bench-memory");
  const fs::path out = dir / "result.json", log = dir / "stderr.log";
  Process bench({"/bin/sh", "-c", "exec \"$@\" >" + out.string() + " 2>" + log.string(), "bench",
                 tool("xmig-bench-memory"), "--counts", "10", "--tunnel", tool("xmig-tunnel")});
  const auto code = bench.wait(std::chrono::seconds(120));
  const std::string result = read_file(out);
  ASSERT_EQ(code, 0) << result << "\n" << read_file(log);

  EXPECT_NE(result.find("\"ok\": true"), std::string::npos) << result;
  EXPECT_EQ(json_number(result, "count"), 10) << result;
  EXPECT_EQ(json_string(result, "config").value_or("").rfind("xmig-", 0), 0u) << result;
  const double idle = json_number(result, "stream_idle_kib").value_or(0);
  EXPECT_GT(idle, 0) << result;
  EXPECT_GT(json_number(result, "stream_moved_kib").value_or(0), idle) << result;
  EXPECT_GT(json_number(result, "pending_partial_kib").value_or(0), 0) << result;
  EXPECT_GT(json_number(result, "a_peak_mib").value_or(0), 0) << result;
  EXPECT_GT(json_number(result, "closed_mib").value_or(0), 0) << result;
}

}  // namespace xmig::test
