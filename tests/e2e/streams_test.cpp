// Stream semantics through two real tunnels: integrity by hash, concurrency,
// half-close, resets, ordering, drain. Each test states its pass criterion
// first.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <future>
#include <set>
#include <thread>

#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGiB = 1 << 30;

// Waits until both tunnels logged `n` close lines with result=ok.
void expect_clean_closes(TunnelPair& pair, int n) {
  bool ok = wait_until(
      [&] {
        return count_in_log(pair.a.log, "result=ok") >= n &&
               count_in_log(pair.b.log, "result=ok") >= n;
      },
      10s);
  EXPECT_TRUE(ok) << pair.logs();
}

// Pass: 1 GiB sent into hv-a's qemu entry socket arrives at the UNIX socket
// where hv-b delivers qemu with the same SHA-256, while 64 MiB flow back the
// other way at the same time, each followed by a clean EOF.
TEST(Tunnel, CarriesGigabyteOverUnixChannelIntact) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), kGiB, 1);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  auto back = std::async(std::launch::async, [&] {
    auto h = send_stream(server.get(), 64 * kMiB, 2);
    shutdown_write(server.get());
    return h;
  });
  Hashed got = recv_stream(server.get());
  Hashed returned = recv_stream(client.get());
  Hashed s = sent.get(), b = back.get();
  EXPECT_EQ(s.error, "");
  EXPECT_EQ(got.error, "");
  EXPECT_EQ(got.bytes, kGiB);
  EXPECT_EQ(got.sha256, s.sha256);
  EXPECT_EQ(returned.bytes, 64 * kMiB);
  EXPECT_EQ(returned.sha256, b.sha256);
  expect_clean_closes(pair, 1);
  EXPECT_EQ(count_in_log(pair.a.log, "to_peer=1073741824 from_peer=67108864"), 1) << pair.logs();
}

// Pass: 1 GiB sent into a TCP [[route]] of hv-a arrives at hv-b's TCP target
// for that route's channel with the same SHA-256.
TEST(Tunnel, CarriesGigabyteOverTcpRouteIntact) {
  auto sink = Listener::tcp();
  uint16_t route_port = free_port();
  TunnelPairOptions opts;
  opts.b_targets["bench"] = sink.endpoint();
  opts.a_routes["127.0.0.1:" + std::to_string(route_port)] = "bench";
  TunnelPair pair(opts);

  Fd client = connect_tcp(route_port);
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), kGiB, 3);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  Hashed got = recv_stream(server.get());
  EXPECT_EQ(got.bytes, kGiB);
  EXPECT_EQ(got.sha256, sent.get().sha256);
  server.reset();
  EXPECT_EQ(recv_stream(client.get()).bytes, 0u);  // EOF comes back too
  expect_clean_closes(pair, 1);
}

// Pass: 8 connections opened at once on the same entry each deliver their own
// 64 MiB intact; the set of hashes at the target equals the set sent.
TEST(Tunnel, EightConcurrentStreamsArriveIntact) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("nbd").string());
  constexpr int kStreams = 8;
  std::vector<std::future<Hashed>> senders, receivers;
  for (int i = 0; i < kStreams; ++i)
    senders.push_back(std::async(std::launch::async, [&, i] {
      Fd fd = connect_unix(pair.entry("nbd").string());
      auto h = send_stream(fd.get(), 64 * kMiB, 100 + i);
      shutdown_write(fd.get());
      recv_stream(fd.get());  // wait for the far side's EOF
      return h;
    }));
  for (int i = 0; i < kStreams; ++i) {
    Fd server = sink.accept(20s);
    ASSERT_TRUE(server) << "connection " << i << " never arrived\n" << pair.logs();
    receivers.push_back(std::async(std::launch::async, [fd = std::move(server)]() mutable {
      auto h = recv_stream(fd.get());
      fd.reset();
      return h;
    }));
  }
  std::multiset<std::string> sent, got;
  for (auto& f : senders) sent.insert(f.get().sha256);
  for (auto& f : receivers) {
    Hashed h = f.get();
    EXPECT_EQ(h.bytes, 64 * kMiB);
    got.insert(h.sha256);
  }
  EXPECT_EQ(sent, got);
  expect_clean_closes(pair, kStreams);
}

// Sends `bytes` of stream `seed` on fd in the background, then shuts down
// the write side: the other end can read while this one writes.
std::future<Hashed> send_then_eof(int fd, uint64_t bytes, uint64_t seed) {
  return std::async(std::launch::async, [=] {
    auto h = send_stream(fd, bytes, seed);
    shutdown_write(fd);
    return h;
  });
}

// Pass: when the client shuts down its write side, the target sees EOF but can
// still answer, and the client receives the whole answer and then EOF.
TEST(Tunnel, HalfCloseFromClientTravelsAndReplyStillArrives) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = send_then_eof(client.get(), 3 * kMiB, 5);
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  Hashed got = recv_stream(server.get());  // returns only on EOF
  EXPECT_EQ(got.sha256, sent.get().sha256);
  auto reply = send_then_eof(server.get(), 5 * kMiB, 6);
  Hashed answer = recv_stream(client.get());
  Hashed r = reply.get();
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(answer.sha256, r.sha256);
  EXPECT_EQ(answer.error, "");
  expect_clean_closes(pair, 1);
}

// Pass: when the target shuts down its write side first, the client sees EOF
// but can still send, and the target receives all of it and then EOF.
TEST(Tunnel, HalfCloseFromTargetTravelsAndClientCanStillSend) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  auto sent = send_then_eof(server.get(), 3 * kMiB, 7);
  Hashed got = recv_stream(client.get());
  EXPECT_EQ(got.sha256, sent.get().sha256);
  auto late = send_then_eof(client.get(), 5 * kMiB, 8);
  Hashed arrived = recv_stream(server.get());
  Hashed l = late.get();
  EXPECT_EQ(l.error, "");
  EXPECT_EQ(arrived.sha256, l.sha256);
  expect_clean_closes(pair, 1);
}

// Pass: a TCP client that resets mid-stream makes the target's connection
// fail with a reset (not a clean EOF, which would pass for a complete stream)
// within 5 seconds; both tunnels log the failure. (UNIX sockets have no
// reset: a client that closes one is seen as EOF, as with shutdown.)
TEST(Tunnel, ClientResetMidStreamResetsTargetPromptly) {
  auto sink = Listener::tcp();
  uint16_t route_port = free_port();
  TunnelPairOptions opts;
  opts.b_targets["bench"] = sink.endpoint();
  opts.a_routes["127.0.0.1:" + std::to_string(route_port)] = "bench";
  TunnelPair pair(opts);
  Fd client = connect_tcp(route_port);
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  send_stream(client.get(), 256 * 1024, 9);
  std::vector<char> buf(256 * 1024);
  ASSERT_EQ(::recv(server.get(), buf.data(), buf.size(), MSG_WAITALL), 256 * 1024);
  reset(client);
  auto got = std::async(std::launch::async, [&] { return recv_stream(server.get()); });
  ASSERT_EQ(got.wait_for(5s), std::future_status::ready) << "target still open\n" << pair.logs();
  EXPECT_NE(got.get().error, "") << "a reset must not look like a clean end of stream";
  EXPECT_TRUE(wait_until(
      [&] {
        return count_in_log(pair.a.log, "result=error error=\"") >= 1 &&
               count_in_log(pair.b.log, "result=error error=\"") >= 1;
      },
      5s))
      << pair.logs();
}

// Pass: a target that resets while the client is sending makes the client's
// sends fail within 10 seconds, long before its 4 GiB are through.
TEST(Tunnel, TargetResetMidStreamFailsClientPromptly) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent =
      std::async(std::launch::async, [&] { return send_stream(client.get(), 4 * kGiB, 10); });
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  std::vector<char> buf(kMiB);
  ASSERT_GT(::recv(server.get(), buf.data(), buf.size(), MSG_WAITALL), 0);
  reset(server);
  ASSERT_EQ(sent.wait_for(10s), std::future_status::ready) << "client still sending\n"
                                                           << pair.logs();
  Hashed s = sent.get();
  EXPECT_NE(s.error, "");
  EXPECT_LT(s.bytes, 4 * kGiB);
}

// Pass: connections opened back to back on one entry reach the target in the
// order they were opened (QEMU < 8.0 tells multifd channels apart by arrival
// order), over several rounds.
TEST(Tunnel, ConnectionsReachTargetInAcceptOrder) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  for (int round = 0; round < 3; ++round) {
    constexpr int kConns = 6;
    std::vector<Fd> clients;
    for (int i = 0; i < kConns; ++i) {
      clients.push_back(connect_unix(pair.entry("qemu").string()));
      char tag = static_cast<char>('0' + i);
      ASSERT_EQ(::send(clients.back().get(), &tag, 1, 0), 1);
    }
    std::string order;
    for (int i = 0; i < kConns; ++i) {
      Fd server = sink.accept(10s);
      ASSERT_TRUE(server) << pair.logs();
      char tag = 0;
      ASSERT_EQ(::recv(server.get(), &tag, 1, MSG_WAITALL), 1);
      order += tag;
    }
    EXPECT_EQ(order, "012345") << "round " << round;
  }
}

// Pass: when hv-b cannot connect its target, the client of hv-a's entry sees
// its connection closed within 5 seconds, and hv-a logs the peer's reason.
TEST(Tunnel, ClosesEntryPromptlyWhenFarTargetRefuses) {
  TunnelPair pair;  // nobody listens where hv-b delivers qemu
  Fd client = connect_unix(pair.entry("qemu").string());
  ASSERT_TRUE(wait_readable(client.get(), 5s)) << pair.logs();
  char byte;
  EXPECT_LE(::recv(client.get(), &byte, 1, 0), 0);
  EXPECT_TRUE(wait_until(
      [&] { return count_in_log(pair.a.log, "could not connect to its target") == 1; }, 5s))
      << pair.logs();
}

// Pass: on SIGTERM hv-a stops accepting (its entry socket disappears) but a
// running stream still completes intact, and hv-a exits 0.
TEST(Tunnel, SigtermLetsRunningStreamFinish) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  Hashed first = send_stream(client.get(), kMiB, 11);
  std::vector<char> buf(kMiB);
  ASSERT_EQ(::recv(server.get(), buf.data(), buf.size(), MSG_WAITALL), static_cast<ssize_t>(kMiB));

  pair.a.process->signal(SIGTERM);
  ASSERT_TRUE(wait_until([&] { return !fs::exists(pair.entry("qemu")); }, 5s)) << pair.logs();
  EXPECT_TRUE(pair.a.process->running()) << "exited before the stream finished\n" << pair.logs();

  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), 64 * kMiB, 12);
    shutdown_write(client.get());
    return h;
  });
  Hashed rest = recv_stream(server.get());
  EXPECT_EQ(rest.sha256, sent.get().sha256);
  server.reset();
  EXPECT_EQ(pair.a.process->wait(10s), std::optional<int>(0)) << pair.logs();
  (void)first;
}

// Pass: a tunnel restarted after being killed (its sockets left behind)
// replaces them and works; a second tunnel on the same run_dir refuses to
// start, saying the socket is in use.
TEST(Tunnel, ReplacesStaleSocketsButNeverALiveOne) {
  TunnelPair pair;
  pair.a.process->signal(SIGKILL);
  pair.a.process->wait(5s);
  ASSERT_TRUE(fs::exists(pair.entry("qemu")));
  pair.start(pair.a);  // throws if it does not become ready

  Process second({tool("xmig-tunnel"), "--config", pair.a.config.string()},
                 (pair.temp / "second.log").string());
  EXPECT_EQ(second.wait(10s), std::optional<int>(1));
  EXPECT_NE(read_file(pair.temp / "second.log").find("in use"), std::string::npos);
  EXPECT_TRUE(pair.a.process->running());

  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  Hashed sent = send_stream(client.get(), kMiB, 13);
  shutdown_write(client.get());
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  EXPECT_EQ(recv_stream(server.get()).sha256, sent.sha256);
}

}  // namespace
}  // namespace xmig::test
