// Data-path policy tests that run on any host (no kTLS needed): the AEAD key
// limit in user space, and ktls = "required" on a kernel without kTLS.
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <set>
#include <vector>

#include "tests/ktls/ktls_test.hpp"
#include "tests/support/process.hpp"
#include "tests/support/streams.hpp"
#include "tls/ktls.hpp"

namespace xmig::test {
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

// The value of an unlabelled counter in a /metrics body, or -1.
long metric(const std::string& body, const std::string& name) {
  size_t at = body.find("\n" + name + " ");
  return at == std::string::npos ? -1
                                 : std::strtol(body.c_str() + at + name.size() + 2, nullptr, 10);
}

// Pass: with one worker per tunnel lending a single receive buffer
// (receive_buffers = 1), four connections at once, each carrying 32 MiB to
// the target and 8 MiB back at the same time, arrive intact (SHA-256) with
// clean closes, and the tunnels' /metrics count receives that waited for the
// buffer (xmig_receive_buffer_waits_total > 0): the wait path ran and lost
// nothing.
TEST(DataPath, ConnectionsSharingOneReceiveBufferWaitAndStayIntact) {
  TunnelPairOptions opts;
  opts.start = false;
  TunnelPair pair(opts);
  for (TunnelSide* side : {&pair.a, &pair.b}) {
    set_tls_key(*side, "ktls", "\"off\"");
    write_file(side->config, "workers = 1\nreceive_buffers = 1\n" + read_file(side->config));
  }
  pair.start(pair.a);
  pair.start(pair.b);

  constexpr int kStreams = 4;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  struct Ends {
    std::string sent, got;
  };
  std::vector<std::future<Ends>> clients, servers;
  for (int i = 0; i < kStreams; ++i)
    clients.push_back(std::async(std::launch::async, [&, i] {
      Fd fd = connect_unix(pair.entry("qemu").string());
      auto sending = std::async(std::launch::async, [&] {
        auto h = send_stream(fd.get(), 32 * kMiB, 200 + i);
        shutdown_write(fd.get());
        return h;
      });
      Hashed back = recv_stream(fd.get());
      return Ends{sending.get().sha256, back.error.empty() ? back.sha256 : back.error};
    }));
  for (int i = 0; i < kStreams; ++i) {
    Fd server = sink.accept(20s);
    ASSERT_TRUE(server) << "connection " << i << " never arrived\n" << pair.logs();
    servers.push_back(std::async(std::launch::async, [fd = std::move(server), i]() mutable {
      auto sending = std::async(std::launch::async, [&] {
        auto h = send_stream(fd.get(), 8 * kMiB, 300 + i);
        shutdown_write(fd.get());
        return h;
      });
      Hashed got = recv_stream(fd.get());
      return Ends{sending.get().sha256, got.error.empty() ? got.sha256 : got.error};
    }));
  }
  std::multiset<std::string> to_target_sent, to_target_got, back_sent, back_got;
  for (auto& c : clients) {
    Ends e = c.get();
    to_target_sent.insert(e.sent);
    back_got.insert(e.got);
  }
  for (auto& s : servers) {
    Ends e = s.get();
    back_sent.insert(e.sent);
    to_target_got.insert(e.got);
  }
  EXPECT_EQ(to_target_sent, to_target_got);
  EXPECT_EQ(back_sent, back_got);
  EXPECT_TRUE(wait_until(
      [&] {
        return count_in_log(pair.a.log, "result=ok") >= kStreams &&
               count_in_log(pair.b.log, "result=ok") >= kStreams;
      },
      10s))
      << pair.logs();
  long waits_a = metric(status_request(pair.a, "/metrics"), "xmig_receive_buffer_waits_total");
  long waits_b = metric(status_request(pair.b, "/metrics"), "xmig_receive_buffer_waits_total");
  EXPECT_GE(waits_a, 0);
  EXPECT_GE(waits_b, 0);
  EXPECT_GT(waits_a + waits_b, 0) << "no receive ever waited for a buffer (hv-a " << waits_a
                                  << ", hv-b " << waits_b << ")";
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
