// Liveness of established streams: a tunnel end that dies (kill -9) or hangs
// (SIGSTOP) mid-stream fails the stream at the other end within the
// configured time, the application on a UNIX target sees the stream end
// where the bytes stopped, and the close lines say result=error; a stream
// that pauses while both ends are alive is never cut.
//
// Both tunnels run with short liveness settings (keepalive after 1 s idle,
// probes every 1 s, TCP_USER_TIMEOUT 2 s) so that each test takes seconds.
// Detection times are printed with the prefix "liveness:".
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <regex>
#include <thread>
#include <vector>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kStreamBytes = 4096 * kMiB;  // more than flows before the fault
constexpr uint64_t kBeforeFault = 64 * kMiB;
constexpr uint64_t kSeed = 21;
constexpr auto kUserTimeout = 2s;
// Detection must come within the user timeout plus this (the kernel's probe
// timer, a loaded machine).
constexpr auto kSlack = 3s;

const char* kLiveness =
    "[limits]\nkeepalive_idle = 1\nkeepalive_interval = 1\nkeepalive_count = 2\n"
    "user_timeout = 2\n";

TunnelPairOptions short_liveness() {
  TunnelPairOptions opts;
  opts.log_level = "info";
  opts.a_extra = kLiveness;
  opts.b_extra = kLiveness;
  return opts;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A field "name=N" of the first close line of `log` with `direction`; -1 if none.
long long close_field(const fs::path& log, const std::string& direction, const std::string& name) {
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("close: dir=" + direction) == std::string::npos) continue;
    std::smatch m;
    if (std::regex_search(line, m, std::regex(" " + name + "=([0-9]+)"))) return std::stoll(m[1]);
  }
  return -1;
}

// A stream client -> hv-a's qemu entry -> hv-b -> the UNIX target, sending
// and receiving on threads of its own.
struct RunningStream {
  explicit RunningStream(TunnelPair& pair)
      : sink(Listener::unix_socket(pair.delivery("qemu").string())),
        client(connect_unix(pair.entry("qemu").string())) {
    sender = std::thread([this] { sent = send_stream(client.get(), kStreamBytes, kSeed); });
    target = sink.accept(30s);
    if (target) receiver.emplace(target.get());
  }
  // A test that failed part way still ends both threads.
  ~RunningStream() {
    if (sender.joinable()) {
      ::shutdown(client.get(), SHUT_RDWR);
      sender.join();
    }
    if (reader.joinable()) {
      ::shutdown(target.get(), SHUT_RDWR);
      reader.join();
    }
  }
  // Receives up to `bytes`, then goes on receiving to EOF on a thread.
  void receive_to_end_after(uint64_t bytes) {
    receiver->receive_until(bytes);
    reader = std::thread([this] { received = receiver->finish(); });
  }
  void join() {
    sender.join();
    reader.join();
  }

  Listener sink;
  Fd client, target;
  std::optional<StreamReceiver> receiver;
  std::thread sender, reader;
  Hashed sent, received;
};

// What both sides say of the bytes: the target received a prefix of what the
// client sent (hash of the same length of the same data), exactly what hv-b
// delivered (from_peer) when hv-b logged its close, and no more than hv-a
// carried (to_peer) when hv-a logged its close.
void expect_accounted(const RunningStream& s, const TunnelPair& pair, bool a_logged,
                      bool b_logged) {
  EXPECT_LT(s.received.bytes, kStreamBytes);
  EXPECT_GE(s.received.bytes, kBeforeFault);
  EXPECT_EQ(s.received.sha256, expected_sha256(s.received.bytes, kSeed));
  EXPECT_NE(s.sent.error, "") << "the client's send must fail, not end as if complete";
  if (b_logged) {
    EXPECT_EQ(close_field(pair.b.log, "in", "from_peer"), static_cast<long long>(s.received.bytes))
        << pair.logs();
  }
  if (a_logged) {
    long long carried = close_field(pair.a.log, "out", "to_peer");
    EXPECT_GE(carried, static_cast<long long>(s.received.bytes)) << pair.logs();
    EXPECT_LE(carried, static_cast<long long>(s.sent.bytes)) << pair.logs();
  }
  std::printf("liveness: client sent %llu bytes, target received %llu, hv-a carried %lld\n",
              static_cast<unsigned long long>(s.sent.bytes),
              static_cast<unsigned long long>(s.received.bytes),
              a_logged ? close_field(pair.a.log, "out", "to_peer") : -1LL);
}

// Seconds until `log` has a close line of `direction` saying result=error;
// fails the test after `limit`.
double detected_within(const fs::path& log, const std::string& direction, Clock::time_point fault,
                       std::chrono::milliseconds limit, const TunnelPair& pair) {
  bool seen = wait_until(
      [&] {
        return count_lines_with_all(log, {"close: dir=" + direction, "result=error"}) == 1;
      },
      limit);
  double taken = seconds_since(fault);
  EXPECT_TRUE(seen) << "no result=error close line within " << limit.count() << " ms\n"
                    << pair.logs();
  return taken;
}

// One fault mid-stream: after 64 MiB have arrived, `victim` gets `sig`; the
// other side must log result=error within user_timeout + kSlack. Returns
// the seconds it took; the stream's threads are left running (see join).
double fault_mid_stream(TunnelPair& pair, RunningStream& s, TunnelSide& victim, int sig) {
  s.receiver->receive_until(kBeforeFault);
  victim.process->signal(sig);
  const auto fault = Clock::now();
  const bool entry_side = &victim == &pair.a;
  if (sig == SIGKILL) s.receive_to_end_after(kBeforeFault);
  double taken = detected_within(entry_side ? pair.b.log : pair.a.log, entry_side ? "in" : "out",
                                 fault, kUserTimeout + kSlack, pair);
  std::printf(
      "liveness: %s %s, the other side failed the stream after %.2f s (user_timeout "
      "2 s)\n",
      victim.name.c_str(), sig == SIGKILL ? "killed" : "stopped", taken);
  return taken;
}

// Pass: while 64 MiB have streamed hv-a -> hv-b and more is on its way, hv-b
// is stopped (SIGSTOP): hv-a logs a close line with result=error within
// user_timeout (2 s) + 3 s, and the client's send fails; hv-b, resumed
// (SIGCONT), also ends its side with result=error, and the UNIX target sees
// the stream end with exactly the bytes hv-b delivered, a prefix of the sent
// data (hash).
TEST(Liveness, StoppedPeerIsDetectedWithinTheUserTimeout) {
  TunnelPair pair(short_liveness());
  RunningStream s(pair);
  ASSERT_TRUE(s.receiver) << pair.logs();
  fault_mid_stream(pair, s, pair.b, SIGSTOP);
  pair.b.process->signal(SIGCONT);
  s.receive_to_end_after(kBeforeFault);
  s.join();
  detected_within(pair.b.log, "in", Clock::now(), 10s, pair);
  expect_accounted(s, pair, true, true);
}

// Pass: hv-a (the entry side) is killed with SIGKILL mid-stream: hv-b logs
// result=error within 2 s + 3 s, the UNIX target sees EOF after exactly the
// bytes hv-b delivered (a prefix of the sent data), and the client's send fails.
TEST(Liveness, KilledEntrySideIsDetectedAndTheTargetSeesWhereTheStreamEnded) {
  TunnelPair pair(short_liveness());
  RunningStream s(pair);
  ASSERT_TRUE(s.receiver) << pair.logs();
  fault_mid_stream(pair, s, pair.a, SIGKILL);
  s.join();
  EXPECT_EQ(s.received.error, "") << "on AF_UNIX the target sees a plain EOF";
  expect_accounted(s, pair, false, true);
}

// Pass: hv-b (the delivery side) is killed with SIGKILL mid-stream: hv-a
// logs result=error within 2 s + 3 s and the client's send fails; the
// target's bytes are a prefix of the sent data, no more than hv-a carried.
TEST(Liveness, KilledDeliverySideIsDetected) {
  TunnelPair pair(short_liveness());
  RunningStream s(pair);
  ASSERT_TRUE(s.receiver) << pair.logs();
  fault_mid_stream(pair, s, pair.b, SIGKILL);
  s.join();
  expect_accounted(s, pair, true, false);
}

// Pass: a stream that sends 1 MiB, then nothing for 8 s (four times
// user_timeout, past keepalive_idle + keepalive_interval x keepalive_count),
// then 1 MiB more and EOF arrives whole (hash) and both tunnels log result=ok:
// a paused but alive migration is never cut.
TEST(Liveness, PausedButAliveStreamIsNeverCut) {
  TunnelPair pair(short_liveness());
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  Fd target = sink.accept(30s);
  ASSERT_TRUE(target) << pair.logs();
  // 2 MiB of random data, sent in two halves around the pause; what arrives
  // is compared byte for byte.
  std::vector<uint8_t> data(2 * kMiB);
  fill_random(data, kSeed);
  std::vector<uint8_t> received;
  std::thread reader([&] {
    uint8_t buf[65536];
    for (ssize_t n; (n = ::recv(target.get(), buf, sizeof buf, 0)) > 0;)
      received.insert(received.end(), buf, buf + n);
  });
  auto send_all = [&](const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(client.get(), p, n, MSG_NOSIGNAL);
      ASSERT_GT(w, 0);
      p += w;
      n -= static_cast<size_t>(w);
    }
  };
  send_all(data.data(), kMiB);
  std::this_thread::sleep_for(8s);
  send_all(data.data() + kMiB, kMiB);
  shutdown_write(client.get());
  reader.join();
  target.reset();  // the application's end of the stream back
  EXPECT_EQ(received.size(), data.size()) << pair.logs();
  EXPECT_TRUE(received == data);
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.a.log, {"close: dir=out", "result=ok"}) == 1 &&
               count_lines_with_all(pair.b.log, {"close: dir=in", "result=ok"}) == 1;
      },
      10s))
      << pair.logs();
}

}  // namespace
}  // namespace xmig::test
