// Live progress: while a connection runs, both tunnels' /status lists it as
// active with the bytes it has moved so far, and xmig_bytes_total grows with
// them, instead of moving only when the connection ends. Each test states its
// pass criterion first.
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <thread>

#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"
#include "verify/status_client.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// The value of one series of /metrics text, e.g.
// `xmig_bytes_total{direction="to_peer"}`; -1 when it is absent.
int64_t metric_value(const std::string& metrics, const std::string& series) {
  size_t at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::strtoll(metrics.c_str() + at + series.size() + 2, nullptr, 10);
}

// Both tunnels' /status and the two byte counters that move in this test.
struct Scrape {
  verify::TunnelStatus a, b;
  int64_t a_to_peer = -1, b_from_peer = -1;  // xmig_bytes_total on hv-a, on hv-b
  std::string text;                          // what was read, for failure messages
};

Scrape scrape(const TunnelPair& pair) {
  Scrape s;
  std::string a_json = status_request(pair.a, "/status");
  std::string b_json = status_request(pair.b, "/status");
  std::string a_metrics = status_request(pair.a, "/metrics");
  std::string b_metrics = status_request(pair.b, "/metrics");
  s.a = verify::parse_status(a_json);
  s.b = verify::parse_status(b_json);
  s.a_to_peer = metric_value(a_metrics, "xmig_bytes_total{direction=\"to_peer\"}");
  s.b_from_peer = metric_value(b_metrics, "xmig_bytes_total{direction=\"from_peer\"}");
  s.text = "hv-a /status: " + a_json + "hv-b /status: " + b_json + "hv-a /metrics:\n" + a_metrics +
           "hv-b /metrics:\n" + b_metrics;
  return s;
}

// Setup: hv-a and hv-b; a client streams 512 MiB of seeded random data into
// hv-a's qemu entry. The sink at hv-b's qemu delivery reads 64 MiB and stops
// reading (the stream stands still, its buffers full) while both tunnels'
// /status and /metrics are scraped; it reads on to 128 MiB, both are scraped
// again, then it reads the rest.
// Pass: at both scrapes, before either tunnel logged a close line, hv-a lists
// exactly one active connection (out, to hv-b, channel qemu, migration "",
// client "pid N") and hv-b one (in, from hv-a, channel qemu); hv-a's to_peer
// and hv-b's from_peer are at least what the sink has read and strictly larger
// at the second scrape, and so are xmig_bytes_total{to_peer} on hv-a and
// {from_peer} on hv-b. After the stream ends, the SHA-256 matches end to end,
// both totals (metrics and /status) are exactly 512 MiB, nothing flowed the
// other way, and both active lists are empty.
TEST(Tunnel, StatusShowsProgressOfARunningStream) {
  constexpr uint64_t kTotal = 512 * kMiB;
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), kTotal, 21);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  StreamReceiver receiver(server.get());

  std::vector<Scrape> running;
  for (uint64_t read_so_far : {64 * kMiB, 128 * kMiB}) {
    ASSERT_EQ(receiver.receive_until(read_so_far), read_so_far) << pair.logs();
    // hv-b counts a send to the target when the ring reports it done, which
    // can trail the receiver reading those bytes by a moment: scrape until
    // the count has caught up with what was read (the receiver is paused).
    Scrape s = scrape(pair);
    for (int i = 0; i < 100 && !s.b.active.empty() && s.b.active[0].from_peer < read_so_far; ++i) {
      std::this_thread::sleep_for(20ms);
      s = scrape(pair);
    }
    ASSERT_EQ(count_in_log(pair.a.log, "close:") + count_in_log(pair.b.log, "close:"), 0)
        << "the connection ended before the scrape\n"
        << pair.logs();
    ASSERT_EQ(s.a.active.size(), 1u) << s.text;
    ASSERT_EQ(s.b.active.size(), 1u) << s.text;
    const verify::ActiveConnection& out = s.a.active[0];
    const verify::ActiveConnection& in = s.b.active[0];
    EXPECT_EQ(out.direction, "out");
    EXPECT_EQ(out.peer, "hv-b");
    EXPECT_EQ(out.channel, "qemu");
    EXPECT_EQ(out.migration, "");
    EXPECT_EQ(out.client.rfind("pid ", 0), 0u) << out.client;
    EXPECT_EQ(in.direction, "in");
    EXPECT_EQ(in.peer, "hv-a");
    EXPECT_EQ(in.channel, "qemu");
    EXPECT_GE(out.to_peer, read_so_far) << s.text;
    EXPECT_GE(in.from_peer, read_so_far) << s.text;
    EXPECT_GE(s.a_to_peer, static_cast<int64_t>(read_so_far)) << s.text;
    EXPECT_GE(s.b_from_peer, static_cast<int64_t>(read_so_far)) << s.text;
    running.push_back(std::move(s));
  }
  const Scrape &first = running[0], &second = running[1];
  EXPECT_GT(second.a.active[0].to_peer, first.a.active[0].to_peer) << second.text;
  EXPECT_GT(second.b.active[0].from_peer, first.b.active[0].from_peer) << second.text;
  EXPECT_GT(second.a_to_peer, first.a_to_peer) << second.text;
  EXPECT_GT(second.b_from_peer, first.b_from_peer) << second.text;
  EXPECT_EQ(second.a.active[0].id, first.a.active[0].id) << "the same connection";
  EXPECT_GT(second.a.active[0].age_seconds, 0.0) << second.text;

  Hashed got = receiver.finish();
  Hashed s = sent.get();
  shutdown_write(server.get());
  EXPECT_EQ(recv_stream(client.get()).bytes, 0u);  // EOF back, nothing else
  EXPECT_EQ(s.error, "");
  EXPECT_EQ(got.error, "");
  EXPECT_EQ(got.bytes, kTotal);
  EXPECT_EQ(got.sha256, s.sha256);
  ASSERT_TRUE(wait_until(
      [&] {
        return count_in_log(pair.a.log, "result=ok") == 1 &&
               count_in_log(pair.b.log, "result=ok") == 1;
      },
      10s))
      << pair.logs();

  Scrape after = scrape(pair);
  EXPECT_EQ(after.a_to_peer, static_cast<int64_t>(kTotal)) << after.text;
  EXPECT_EQ(after.b_from_peer, static_cast<int64_t>(kTotal)) << after.text;
  EXPECT_TRUE(after.a.active.empty()) << after.text;
  EXPECT_TRUE(after.b.active.empty()) << after.text;
  ASSERT_EQ(after.a.recent.size(), 1u) << after.text;
  ASSERT_EQ(after.b.recent.size(), 1u) << after.text;
  EXPECT_EQ(after.a.recent[0].to_peer, kTotal);
  EXPECT_EQ(after.a.recent[0].from_peer, 0u);
  EXPECT_EQ(after.b.recent[0].from_peer, kTotal);
  EXPECT_EQ(after.b.recent[0].to_peer, 0u);
  EXPECT_EQ(after.a.recent[0].id, first.a.active[0].id) << "keeps its id when it ends";
  EXPECT_NE(after.text.find("\"bytes\":{\"to_peer\":536870912,\"from_peer\":0}"), std::string::npos)
      << after.text;
}

}  // namespace
}  // namespace xmig::test
