// Data-path policy tests that run on any host (no kTLS needed): the AEAD key
// limit in user space, and ktls = "required" on a kernel without kTLS.
#include <gtest/gtest.h>

#include <future>

#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "tests/ktls/ktls_test.hpp"
#include "tls/ktls.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// Pass: with key_limit_records = 16 and user-space TLS (AES-GCM), 64 MiB to
// the target and 16 MiB back arrive intact with clean EOFs, while each sender
// rotated its key (TLS 1.3 KeyUpdate) at least once per 16 records: hv-a logs
// at least 4096/16 - 1 key updates, hv-b at least 1024/16 - 1.
TEST(DataPath, KeyUpdatesBeforeTheRecordLimitKeepDataIntact) {
  TunnelPairOptions opts;
  opts.start = false;
  TunnelPair pair(opts);
  for (TunnelSide* side : {&pair.a, &pair.b}) {
    set_tls_key(*side, "ktls", "\"off\"");
    set_tls_key(*side, "key_limit_records", "16");
  }
  pair.start(pair.a);
  pair.start(pair.b);

  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), 64 * kMiB, 31);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  auto back = std::async(std::launch::async, [&] {
    auto h = send_stream(server.get(), 16 * kMiB, 32);
    shutdown_write(server.get());
    return h;
  });
  Hashed got = recv_stream(server.get());
  Hashed returned = recv_stream(client.get());
  EXPECT_EQ(got.error, "");
  EXPECT_EQ(got.bytes, 64 * kMiB);
  EXPECT_EQ(got.sha256, sent.get().sha256);
  EXPECT_EQ(returned.error, "");
  EXPECT_EQ(returned.sha256, back.get().sha256);
  EXPECT_TRUE(wait_until(
      [&] {
        return count_in_log(pair.a.log, "result=ok") >= 1 &&
               count_in_log(pair.b.log, "result=ok") >= 1;
      },
      10s))
      << pair.logs();
  EXPECT_GE(count_in_log(pair.a.log, "key update: KeyUpdate #"), 4096 / 16 - 1);
  EXPECT_GE(count_in_log(pair.b.log, "key update: KeyUpdate #"), 1024 / 16 - 1);
  EXPECT_EQ(count_in_log(pair.a.log, "mode=userspace"), 1) << pair.logs();
}

// Pass: on a kernel without kTLS, ktls = "required" makes xmig-tunnel refuse
// to start, exit non-zero and name the file, the key and the fix.
TEST(DataPath, KtlsRequiredRefusesToStartWithoutKernelTls) {
  if (tls::ktls_unavailable_reason().empty()) GTEST_SKIP() << "this kernel has kTLS";
  TunnelPairOptions opts;
  opts.start = false;
  TunnelPair pair(opts);
  set_tls_key(pair.a, "ktls", "\"required\"");
  Process p({tool("xmig-tunnel"), "--config", pair.a.config.string()}, pair.a.log.string());
  auto code = p.wait(20s);
  ASSERT_TRUE(code.has_value()) << "still running\n" << pair.logs();
  EXPECT_NE(*code, 0);
  std::string log = read_file(pair.a.log);
  EXPECT_NE(log.find(pair.a.config.string()), std::string::npos) << log;
  EXPECT_NE(log.find("[tls].ktls"), std::string::npos) << log;
  EXPECT_NE(log.find("has no kTLS"), std::string::npos) << log;
  EXPECT_NE(log.find("fix:"), std::string::npos) << log;
}

}  // namespace
}  // namespace xmig::test
