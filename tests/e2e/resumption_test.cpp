// TLS 1.3 session resumption between the channels of two real tunnels: the
// second and later channels to a peer resume (status counters), data arrives
// intact, a reload of either end makes the next channel a full handshake, and
// a dialling end with [tls] resumption off gets no ticket and runs full
// handshakes only. Each test states its pass criterion first.
//
// What the tunnels did is read from their /status: "handshakes":{"out":
// {"full","resumed"},"in":{"full","resumed"}} (tunnel/status.hpp).
#include <gtest/gtest.h>
#include <signal.h>

#include <future>
#include <string>

#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"
#include "tls/ktls.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kChannelBytes = 4 * kMiB;
// A SIGHUP reload: a load and a status query, no settle.
constexpr auto kReloadWait = 10s;

// The number after "key": in json from `at` on, or -1.
long number_after(const std::string& json, size_t at, const std::string& key) {
  at = json.find("\"" + key + "\":", at);
  if (at == std::string::npos) return -1;
  return std::strtol(json.c_str() + at + key.size() + 3, nullptr, 10);
}

long reloads_ok(const TunnelSide& side) {
  const std::string json = status_request(side, "/status");
  const size_t at = json.find("\"reloads\":");
  return at == std::string::npos ? -1 : number_after(json, at, "ok");
}

// One connection on hv-a's qemu entry: kChannelBytes (seeded by `seed`) to
// hv-b's target, closed when they have arrived. "" when they arrived intact,
// else what went wrong.
std::string channel_carries(TunnelPair& pair, Listener& sink, uint64_t seed) {
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), kChannelBytes, seed);
    shutdown_write(client.get());
    return h;
  });
  Fd target = sink.accept(10s);
  if (!target) return "no connection reached the target";
  Hashed got = recv_stream(target.get());
  Hashed s = sent.get();
  if (!s.error.empty() || !got.error.empty()) return "send: " + s.error + ", receive: " + got.error;
  if (got.bytes != kChannelBytes || got.sha256 != s.sha256)
    return "received " + std::to_string(got.bytes) + " bytes, SHA-256 " + got.sha256 +
           "; sent SHA-256 " + s.sha256;
  return "";
}

void reload_by_sighup(TunnelSide& side) {
  const long before = reloads_ok(side);
  side.process->signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return reloads_ok(side) > before; }, kReloadWait));
}

}  // namespace

// Pass: four connections opened one after the other on hv-a's qemu entry each
// carry 4 MiB to hv-b's target intact (SHA-256); hv-a counts 1 full and 3
// resumed dialled handshakes, hv-b 1 full and 3 resumed accepted ones. On a
// kernel with kTLS all four ran on the kTLS path (hv-a's close lines say
// mode=ktls-splice: its RX sequence counted the ticket before the verdict).
TEST(Resumption, ResumesSecondAndLaterChannelsToAPeer) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  for (uint64_t seed = 1; seed <= 4; ++seed)
    ASSERT_EQ(channel_carries(pair, sink, seed), "") << "channel " << seed << "\n" << pair.logs();
  const HandshakeCounts a = status_handshakes(pair.a), b = status_handshakes(pair.b);
  EXPECT_EQ(a.out_full, 1) << a.json;
  EXPECT_EQ(a.out_resumed, 3) << a.json;
  EXPECT_EQ(b.in_full, 1) << b.json;
  EXPECT_EQ(b.in_resumed, 3) << b.json;
  if (tls::ktls_unavailable_reason().empty()) {
    EXPECT_TRUE(wait_until([&] { return count_in_log(pair.a.log, "mode=ktls-splice") == 4; }, 10s))
        << pair.logs();
  }
}

// Pass: after a full and a resumed channel, a reload of hv-a (SIGHUP) makes
// the next channel a full handshake (hv-a: out full 2, resumed 1) and the one
// after it resumed (resumed 2); then a reload of hv-b makes the next channel
// full again although hv-a offers the ticket it holds (hv-b: in full 3,
// resumed 2), and the one after it resumed (resumed 3). Every channel carries
// its 4 MiB intact.
TEST(Resumption, ReloadOfEitherEndMakesTheNextChannelAFullHandshake) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  uint64_t seed = 10;
  ASSERT_EQ(channel_carries(pair, sink, ++seed), "") << pair.logs();
  ASSERT_EQ(channel_carries(pair, sink, ++seed), "") << pair.logs();

  ASSERT_NO_FATAL_FAILURE(reload_by_sighup(pair.a)) << pair.logs();
  ASSERT_EQ(channel_carries(pair, sink, ++seed), "") << pair.logs();
  HandshakeCounts a = status_handshakes(pair.a);
  EXPECT_EQ(a.out_full, 2) << "hv-a offered a ticket of its old material\n" << a.json;
  EXPECT_EQ(a.out_resumed, 1) << a.json;
  ASSERT_EQ(channel_carries(pair, sink, ++seed), "") << pair.logs();
  a = status_handshakes(pair.a);
  EXPECT_EQ(a.out_resumed, 2) << a.json;

  ASSERT_NO_FATAL_FAILURE(reload_by_sighup(pair.b)) << pair.logs();
  ASSERT_EQ(channel_carries(pair, sink, ++seed), "") << pair.logs();
  HandshakeCounts b = status_handshakes(pair.b);
  EXPECT_EQ(b.in_full, 3) << "hv-b resumed a ticket of its old material\n" << b.json;
  EXPECT_EQ(b.in_resumed, 2) << b.json;
  ASSERT_EQ(channel_carries(pair, sink, ++seed), "") << pair.logs();
  b = status_handshakes(pair.b);
  EXPECT_EQ(b.in_resumed, 3) << b.json;
}

// Pass: with `resumption = false` in hv-a's [tls] (hv-b keeps the default),
// three channels carry their 4 MiB intact and all three are full handshakes
// on both ends: hv-a does not ask for tickets, so hv-b sends none (the
// dialling end of a version without resumption counts no ticket before its
// verdict).
TEST(Resumption, OffOnTheDiallingEndMeansFullHandshakesOnly) {
  TunnelPair pair({.start = false});
  std::string config = read_file(pair.a.config);
  const size_t tls = config.find("[tls]\n");
  ASSERT_NE(tls, std::string::npos) << config;
  config.insert(tls + 6, "resumption = false\n");
  write_file(pair.a.config, config);
  ASSERT_NO_THROW(pair.start(pair.a));
  ASSERT_NO_THROW(pair.start(pair.b));
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  for (uint64_t seed = 21; seed <= 23; ++seed)
    ASSERT_EQ(channel_carries(pair, sink, seed), "") << pair.logs();
  const HandshakeCounts a = status_handshakes(pair.a), b = status_handshakes(pair.b);
  EXPECT_EQ(a.out_full, 3) << a.json;
  EXPECT_EQ(a.out_resumed, 0) << a.json;
  EXPECT_EQ(b.in_full, 3) << b.json;
  EXPECT_EQ(b.in_resumed, 0) << b.json;
}

}  // namespace xmig::test
