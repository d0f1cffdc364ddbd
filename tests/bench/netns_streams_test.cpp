// xmig-bench --netns run tiny: the stream measurement with its source and
// hv-a in one network namespace and its sink and hv-b in another (bench/compare
// --topology netns). A correctness check, not a measurement: no speed is
// asserted.
#include <gtest/gtest.h>

#include <string>

#include "harness/files.hpp"
#include "harness/netns.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kBytes = 64ull << 20;

// Bytes hv-b's end of the veth pair has received so far (`ip -j -s link`:
// the first "bytes" is stats64.rx.bytes).
double veth_rx_bytes(const NetnsLab& lab, const fs::path& dir) {
  const fs::path out = dir / "link.json";
  Process ip({"/bin/sh", "-c", "exec \"$@\" >" + out.string(), "ip", "/usr/sbin/ip", "-j", "-s",
              "-n", lab.b, "link", "show", "dev", lab.b_link});
  EXPECT_EQ(ip.wait(std::chrono::seconds(10)), 0);
  return json_number(read_file(out), "bytes").value_or(-1);
}

}  // namespace

// Pass: xmig-bench --netns, given a lab written down by write_lab_info, runs
// its own xmig pair across the two namespaces: it exits 0 with a stream
// record saying ok (every byte verified at the sink) in the group "2 streams,
// netns + veth" and a handshake record in its netns group, and hv-b's veth end
// received at least the 64 MiB carried, i.e. the TLS link crossed the veth
// pair rather than a loopback.
TEST(BenchNetns, StreamsCrossTheVethPairWithEveryByteVerified) {
  std::string why;
  if (!can_make_namespaces(&why)) GTEST_SKIP() << why;
  TempDir dir("xmig-bench-netns");
  NetnsLab lab;
  const fs::path info = dir / "netns.info", out = dir / "result.json", log = dir / "stderr.log";
  write_lab_info(lab, info);
  const double rx_before = veth_rx_bytes(lab, dir.path());

  Process bench({"/bin/sh", "-c", "exec \"$@\" >" + out.string() + " 2>" + log.string(), "bench",
                 tool("xmig-bench"), "--netns", info.string(), "--streams", "2", "--bytes",
                 std::to_string(kBytes), "--handshakes", "8", "--json", "--tunnel",
                 tool("xmig-tunnel"), "--timeout", "120"});
  const auto code = bench.wait(std::chrono::seconds(180));
  const std::string result = read_file(out);
  ASSERT_EQ(code, 0) << result << "\n" << read_file(log);

  const auto stream_end = result.find('\n');
  const std::string stream = result.substr(0, stream_end), handshake = result.substr(stream_end);
  EXPECT_NE(stream.find("\"ok\": true"), std::string::npos) << result;
  EXPECT_NE(stream.find("\"group\": \"2 streams, netns + veth\""), std::string::npos) << result;
  EXPECT_EQ(json_number(stream, "bytes"), static_cast<double>(kBytes)) << result;
  EXPECT_NE(handshake.find("at a time, netns + veth\""), std::string::npos) << result;
  EXPECT_NE(handshake.find("\"ok\": true"), std::string::npos) << result;
  EXPECT_GE(veth_rx_bytes(lab, dir.path()) - rx_before, static_cast<double>(kBytes));
}

}  // namespace xmig::test
