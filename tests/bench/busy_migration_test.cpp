// xmig-bench-qemu's busy mode, run tiny: a correctness check of the benchmark
// (bench/compare --busy), not a measurement. Speed is never asserted here; that
// the guest arrived whole and alive is.
#include <gtest/gtest.h>

#include <string>

#include "harness/busy_guest.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

// Pass: a guest dirtying 32 MiB at 8 MiB/s, migrated through an xmig pair that
// xmig-bench-qemu starts itself (single stream), converges well within the
// 120 s timeout: exit 0, one JSON line saying ok and converged, the RAM of the
// paused destination equal to the paused source's (else not ok), QEMU's
// downtime and bytes sent present (more than the 32 MiB dirtied), the guest's
// counter on the destination past the source's last one, no stale page found
// after a whole pass on the destination, CPU measured at both tunnel ends, and
// the config named after the data-path mode.
TEST(BenchBusy, LowDirtyRateThroughXmigConvergesAndTheGuestCarriesOn) {
  if (find_qemu().empty()) GTEST_SKIP() << "qemu-system-x86_64 not installed";
  TempDir dir("xmig-bench-busy");
  const fs::path out = dir / "result.json", log = dir / "stderr.log";
  Process bench({"/bin/sh", "-c", "exec \"$@\" >" + out.string() + " 2>" + log.string(), "bench",
                 tool("xmig-bench-qemu"), "--busy-mib", "32", "--dirty-rate", "8", "--listen-uri",
                 "tcp:127.0.0.1:" + std::to_string(free_port()), "--xmig", tool("xmig-tunnel"),
                 "--timeout", "120", "--ram-dir", dir.path().string()});
  const auto code = bench.wait(std::chrono::seconds(240));
  const std::string result = read_file(out);
  ASSERT_EQ(code, 0) << result << "\n" << read_file(log);

  EXPECT_NE(result.find("\"ok\": true"), std::string::npos) << result;
  EXPECT_NE(result.find("\"converged\": true"), std::string::npos) << result;
  EXPECT_GT(json_number(result, "seconds").value_or(0), 0) << result;
  EXPECT_GE(json_number(result, "downtime_ms").value_or(-1), 0) << result;
  EXPECT_GT(json_number(result, "transferred_mib").value_or(0), 32) << result;
  EXPECT_GT(json_number(result, "destination_counter").value_or(0),
            json_number(result, "source_counter").value_or(0))
      << result;
  EXPECT_EQ(json_number(result, "stale_pages"), 0) << result;
  EXPECT_GT(json_number(result, "entry_cpu_s").value_or(0), 0) << result;
  EXPECT_GT(json_number(result, "exit_cpu_s").value_or(0), 0) << result;
  EXPECT_EQ(json_string(result, "config").value_or("").rfind("xmig-", 0), 0u) << result;
}

// Pass: the destination check of the busy guest's serial lines accepts a
// counter that goes on from the source's (also one past a line the source was
// stopped in the middle of) and refuses each way a guest can arrive wrong: too
// few lines, a counter that restarts or skips, a guest that booted afresh, and
// pages found stale.
TEST(BenchBusy, DestinationCountersMustCarryOnFromTheSource) {
  const BusyCounters source = busy_counters(
      "xmig-busy start mib=8 rate=8\nxmig-busy n=1 pages=2048 stale=0\n"
      "xmig-busy n=2 pages=4096 stale=0\nxmig-busy n=3 pa");
  ASSERT_EQ(source.last, 2u);
  const auto dest = [](const std::string& text) { return busy_counters(text); };
  EXPECT_EQ(busy_continues(source,
                           dest("xmig-busy n=3 pages=6144 stale=0\n"
                                "xmig-busy n=4 pages=8192 stale=0\n"),
                           2),
            "");
  EXPECT_EQ(busy_continues(source,
                           dest("ges=6000 stale=0\nxmig-busy n=4 pages=8192 stale=0\n"
                                "xmig-busy n=5 pages=10240 stale=0\n"),
                           2),
            "");
  EXPECT_NE(busy_continues(source, dest("xmig-busy n=3 pages=6144 stale=0\n"), 2), "");
  EXPECT_NE(busy_continues(source,
                           dest("xmig-busy n=1 pages=2048 stale=0\n"
                                "xmig-busy n=2 pages=4096 stale=0\n"),
                           2),
            "");
  EXPECT_NE(busy_continues(source,
                           dest("xmig-busy n=3 pages=6144 stale=0\n"
                                "xmig-busy n=5 pages=8192 stale=0\n"),
                           2),
            "");
  EXPECT_NE(busy_continues(source,
                           dest("xmig-busy start mib=8 rate=8\n"
                                "xmig-busy n=3 pages=6144 stale=0\n"
                                "xmig-busy n=4 pages=8192 stale=0\n"),
                           2),
            "");
  EXPECT_NE(busy_continues(source,
                           dest("xmig-busy n=3 pages=6144 stale=0\n"
                                "xmig-busy n=4 pages=8192 stale=7\n"),
                           2),
            "");
}

}  // namespace xmig::test
