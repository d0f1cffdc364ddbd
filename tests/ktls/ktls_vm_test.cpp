// kTLS end to end. Runs inside the test VM (tests/ktls/vm/run.sh boots
// Debian's stock kernel, which has tls.ko, with this program and xmig-tunnel
// in its initramfs). On a kernel without kTLS every test is skipped.
//
// Each test: two real xmig-tunnel processes, fresh certificates, hashed
// streams; the pass criterion opens each test.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <future>

#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "tests/ktls/ktls_test.hpp"
#include "tls/ktls.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kMiB = 1 << 20;

class KtlsVm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tls::ktls_unavailable_reason().empty())
      GTEST_SKIP() << "no kTLS here: " << tls::ktls_unavailable_reason();
  }
};

// A pair whose [tls] ktls is set per side, started.
struct KtlsPair {
  KtlsPair(const std::string& a_ktls, const std::string& b_ktls, TunnelPairOptions opts = {}) {
    opts.start = false;
    pair.emplace(opts);
    set_tls_key(pair->a, "ktls", "\"" + a_ktls + "\"");
    set_tls_key(pair->b, "ktls", "\"" + b_ktls + "\"");
    pair->start(pair->a);
    pair->start(pair->b);
  }
  TunnelPair& operator*() { return *pair; }
  TunnelPair* operator->() { return &*pair; }
  std::optional<TunnelPair> pair;
};

// Sends `up` bytes client -> target and `down` bytes back at the same time,
// each followed by a clean EOF, and checks both hashes.
void exchange(TunnelPair& pair, uint64_t up, uint64_t down) {
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), up, 11);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(20s);
  ASSERT_TRUE(server) << pair.logs();
  auto back = std::async(std::launch::async, [&] {
    auto h = send_stream(server.get(), down, 12);
    shutdown_write(server.get());
    return h;
  });
  Hashed got = recv_stream(server.get());
  Hashed returned = recv_stream(client.get());
  Hashed s = sent.get(), b = back.get();
  EXPECT_EQ(got.error, "") << pair.logs();
  EXPECT_EQ(got.bytes, up);
  EXPECT_EQ(got.sha256, s.sha256);
  EXPECT_EQ(returned.error, "") << pair.logs();
  EXPECT_EQ(returned.bytes, down);
  EXPECT_EQ(returned.sha256, b.sha256);
}

bool both_closed_ok(TunnelPair& pair, int n) {
  return wait_until(
      [&] {
        return count_in_log(pair.a.log, "result=ok") >= n &&
               count_in_log(pair.b.log, "result=ok") >= n;
      },
      20s);
}

// Pass: with ktls = "required" on both ends, 24 MiB one way and 8 MiB the
// other arrive intact with clean EOFs (close_notify each way); both close
// lines say mode=ktls-splice and result=ok; /proc/net/tls_stat shows two more
// kernel TX and two more kernel RX sessions and no decryption error.
TEST_F(KtlsVm, RequiredBothEndsSpliceBothWaysIntact) {
  auto before = tls_stat();
  KtlsPair pair("required", "required");
  exchange(*pair, 24 * kMiB, 8 * kMiB);
  ASSERT_TRUE(both_closed_ok(*pair, 1)) << pair->logs();
  auto after = tls_stat();
  EXPECT_EQ(count_in_log(pair->a.log, "mode=ktls-splice"), 1) << pair->logs();
  EXPECT_EQ(count_in_log(pair->b.log, "mode=ktls-splice"), 1) << pair->logs();
  EXPECT_GE(after["TlsTxSw"] - before["TlsTxSw"], 2);
  EXPECT_GE(after["TlsRxSw"] - before["TlsRxSw"], 2);
  EXPECT_EQ(after["TlsDecryptError"], before["TlsDecryptError"]);
  std::cout << "tls_stat: TlsTxSw +" << after["TlsTxSw"] - before["TlsTxSw"] << ", TlsRxSw +"
            << after["TlsRxSw"] - before["TlsRxSw"] << "\n";
}

// Pass: under kTLS a half-close travels each way on its own: the client's EOF
// (close_notify) reaches the target while the target can still answer, and
// the answer, then the target's EOF, reach the client; result=ok both ends.
TEST_F(KtlsVm, HalfCloseTravelsEachWayUnderKtls) {
  KtlsPair pair("required", "required");
  auto sink = Listener::unix_socket(pair->delivery("qemu").string());
  Fd client = connect_unix(pair->entry("qemu").string());
  Fd server = sink.accept(20s);
  ASSERT_TRUE(server) << pair->logs();
  auto sent = send_stream(client.get(), 1 * kMiB, 21);
  shutdown_write(client.get());
  Hashed got = recv_stream(server.get());  // ends only at the client's EOF
  EXPECT_EQ(got.error, "");
  EXPECT_EQ(got.sha256, sent.sha256);
  auto reply = send_stream(server.get(), 2 * kMiB, 22);
  shutdown_write(server.get());
  Hashed back = recv_stream(client.get());
  EXPECT_EQ(back.error, "");
  EXPECT_EQ(back.sha256, reply.sha256);
  EXPECT_TRUE(both_closed_ok(*pair, 1)) << pair->logs();
  EXPECT_EQ(count_in_log(pair->a.log, "mode=ktls-splice"), 1) << pair->logs();
}

// Pass: a client that resets mid-stream (TCP route: a UNIX socket has no
// reset) makes the target see an error, never a clean EOF, within 10 s, and
// both tunnels log the kTLS connection as failed.
TEST_F(KtlsVm, PeerResetUnderKtlsResetsTheOtherEnd) {
  auto sink = Listener::tcp();
  uint16_t route_port = free_port();
  TunnelPairOptions opts;
  opts.b_targets["bench"] = sink.endpoint();
  opts.a_routes["127.0.0.1:" + std::to_string(route_port)] = "bench";
  KtlsPair pair("required", "required", opts);
  Fd client = connect_tcp(route_port);
  Fd server = sink.accept(20s);
  ASSERT_TRUE(server) << pair->logs();
  send_stream(client.get(), 256 * 1024, 9);
  std::vector<char> buf(256 * 1024);
  ASSERT_EQ(::recv(server.get(), buf.data(), buf.size(), MSG_WAITALL), 256 * 1024);
  reset(client);
  auto got = std::async(std::launch::async, [&] { return recv_stream(server.get()); });
  ASSERT_EQ(got.wait_for(10s), std::future_status::ready) << "target still open\n" << pair->logs();
  EXPECT_NE(got.get().error, "") << "a reset must not look like a clean end of stream";
  EXPECT_TRUE(wait_until(
      [&] {
        return count_in_log(pair->a.log, "result=error error=\"") >= 1 &&
               count_in_log(pair->b.log, "result=error error=\"") >= 1;
      },
      10s))
      << pair->logs();
  EXPECT_EQ(count_in_log(pair->a.log, "mode=ktls-splice"), 1) << pair->logs();
}

// Pass: a kTLS end (required) and a user-space end (off) carry data intact
// both ways, whichever side dials: each logs its own mode.
TEST_F(KtlsVm, KtlsEndInteroperatesWithUserspaceEnd) {
  {
    KtlsPair pair("required", "off");
    exchange(*pair, 8 * kMiB, 4 * kMiB);
    ASSERT_TRUE(both_closed_ok(*pair, 1)) << pair->logs();
    EXPECT_EQ(count_in_log(pair->a.log, "mode=ktls-splice"), 1) << pair->logs();
    EXPECT_EQ(count_in_log(pair->b.log, "mode=userspace"), 1) << pair->logs();
  }
  {
    KtlsPair pair("off", "required");
    exchange(*pair, 8 * kMiB, 4 * kMiB);
    ASSERT_TRUE(both_closed_ok(*pair, 1)) << pair->logs();
    EXPECT_EQ(count_in_log(pair->a.log, "mode=userspace"), 1) << pair->logs();
    EXPECT_EQ(count_in_log(pair->b.log, "mode=ktls-splice"), 1) << pair->logs();
  }
}

// Pass: kTLS hosts prefer ChaCha20-Poly1305 (no practical AEAD record limit,
// since kTLS cannot rotate keys here), and the close line names it.
TEST_F(KtlsVm, KtlsConnectionsUseChaCha20) {
  KtlsPair pair("required", "auto");
  exchange(*pair, 1 * kMiB, 1 * kMiB);
  ASSERT_TRUE(both_closed_ok(*pair, 1)) << pair->logs();
  EXPECT_EQ(count_in_log(pair->a.log, "cipher=TLS_CHACHA20_POLY1305_SHA256"), 1) << pair->logs();
}

}  // namespace
}  // namespace xmig::test
