// xmig-bench-qemu's concurrent mode, run tiny: a correctness check of the
// benchmark (bench/compare --concurrent), not a measurement. Speed is never
// asserted here; that the result is well formed and the RAM arrived is.
#include <gtest/gtest.h>

#include <string>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

// Pass: two 32 MiB migrations at once (multifd 2 each) through one xmig pair
// that xmig-bench-qemu starts itself exit 0 with one JSON line saying ok
// (both destinations' RAM compared equal to their sources'), 2 migrations, a
// drain time, a Jain fairness index in [0.5, 1] (1/K .. 1), a least/most share
// in [0, 1], CPU measured at both tunnel ends, and a worker-thread balance in
// [0, 1]; the config is named after the data-path mode of the close lines.
TEST(BenchConcurrent, TwoMigrationsThroughOneXmigPairGiveAWellFormedVerifiedResult) {
  if (find_qemu().empty()) GTEST_SKIP() << "qemu-system-x86_64 not installed";
  TempDir dir("xmig-bench-concurrent");
  const fs::path out = dir / "result.json", log = dir / "stderr.log";
  Process bench({"/bin/sh",
                 "-c",
                 "exec \"$@\" >" + out.string() + " 2>" + log.string(),
                 "bench",
                 tool("xmig-bench-qemu"),
                 "--ram-mib",
                 "32",
                 "--multifd",
                 "2",
                 "--suite",
                 "qemu-concurrent",
                 "--listen-uri",
                 "tcp:127.0.0.1:" + std::to_string(free_port()),
                 "--listen-uri",
                 "tcp:127.0.0.1:" + std::to_string(free_port()),
                 "--xmig",
                 tool("xmig-tunnel"),
                 "--balance-threads",
                 "2",
                 "--timeout",
                 "120",
                 "--ram-dir",
                 dir.path().string()});
  const auto code = bench.wait(std::chrono::seconds(240));
  const std::string result = read_file(out);
  ASSERT_EQ(code, 0) << result << "\n" << read_file(log);

  EXPECT_NE(result.find("\"ok\": true"), std::string::npos) << result;
  EXPECT_EQ(json_number(result, "migrations"), 2) << result;
  EXPECT_GT(json_number(result, "seconds").value_or(0), 0) << result;
  const double jain = json_number(result, "fairness_jain").value_or(-1);
  EXPECT_GE(jain, 0.5) << result;
  EXPECT_LE(jain, 1.0 + 1e-9) << result;
  const double share = json_number(result, "share_min_max").value_or(-1);
  EXPECT_GE(share, 0) << result;
  EXPECT_LE(share, 1) << result;
  EXPECT_GT(json_number(result, "entry_cpu_s").value_or(0), 0) << result;
  EXPECT_GT(json_number(result, "exit_cpu_s").value_or(0), 0) << result;
  const double balance = json_number(result, "thread_balance").value_or(-1);
  EXPECT_GE(balance, 0) << result;
  EXPECT_LE(balance, 1) << result;
  EXPECT_EQ(json_string(result, "config").value_or("").rfind("xmig-", 0), 0u) << result;
}

}  // namespace xmig::test
