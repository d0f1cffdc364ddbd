// Connections of one entry are dialled at once, yet reach the far target in
// the order the entry accepted them (tunnel/order.hpp; QEMU < 8.0 tells its
// multifd channels apart by arrival order). Between hv-a and hv-b runs a
// relay that holds each TLS connection for a time of its own before passing
// it on, so that their handshakes finish in another order than they were
// dialled: with dials that ran at once and nothing to order their delivery,
// the target would see that other order. Each test states its pass criterion
// first.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

// A TCP relay on 127.0.0.1 in front of upstream port (set once known): its
// n-th connection (from 0, in accept order) waits hold(n) before the relay
// connects onwards and copies both ways. It counts the connections it has
// open at once.
class HoldingRelay {
 public:
  explicit HoldingRelay(std::function<std::chrono::milliseconds(int)> hold)
      : listener_(Listener::tcp()), hold_(std::move(hold)) {
    acceptor_ = std::thread([this] {
      for (int n = 0; !stop_;) {
        Fd client = listener_.accept(100ms);
        if (!client) continue;
        std::lock_guard lock(mutex_);
        relays_.emplace_back(
            [this, n, fd = std::move(client)]() mutable { relay(n, std::move(fd)); });
        ++n;
      }
    });
  }
  ~HoldingRelay() {
    stop_ = true;
    acceptor_.join();
    std::lock_guard lock(mutex_);
    for (auto& t : relays_) t.join();
  }
  uint16_t port() const { return listener_.port(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port()); }
  void forward_to(uint16_t upstream) { upstream_ = upstream; }
  // The most connections open at once since the last settle().
  int most_open() const { return most_open_; }
  // Waits until no connection is open (false after 10 s), then counts anew.
  bool settle() {
    const bool idle = wait_until([&] { return open_ == 0; }, 10s);
    most_open_ = 0;
    return idle;
  }

 private:
  void relay(int n, Fd client) {
    const int now = ++open_;
    for (int seen = most_open_; now > seen && !most_open_.compare_exchange_weak(seen, now);) {
    }
    const auto until = std::chrono::steady_clock::now() + hold_(n);
    while (!stop_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
    Fd server = stop_ ? Fd() : connect_tcp(upstream_);
    if (server) copy_both_ways(client.get(), server.get());
    --open_;
  }

  // Copies until both directions ended (or the relay stops).
  void copy_both_ways(int a, int b) {
    bool a_open = true, b_open = true;
    char buf[64 * 1024];
    while ((a_open || b_open) && !stop_) {
      pollfd fds[2] = {{.fd = a_open ? a : -1, .events = POLLIN, .revents = 0},
                       {.fd = b_open ? b : -1, .events = POLLIN, .revents = 0}};
      if (::poll(fds, 2, 100) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!fds[i].revents) continue;
        const int from = i == 0 ? a : b, to = i == 0 ? b : a;
        ssize_t n = ::recv(from, buf, sizeof buf, 0);
        if (n <= 0) {
          (i == 0 ? a_open : b_open) = false;
          if (n < 0) return;  // a reset: close both
          ::shutdown(to, SHUT_WR);
          continue;
        }
        if (::send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) return;
      }
    }
  }

  Listener listener_;
  std::atomic<uint16_t> upstream_{0};
  std::function<std::chrono::milliseconds(int)> hold_;
  std::atomic<bool> stop_{false};
  std::atomic<int> open_{0}, most_open_{0};
  std::mutex mutex_;
  std::vector<std::thread> relays_;
  std::thread acceptor_;
};

// Opens `n` connections on hv-a's qemu entry back to back; each sends its
// index as one byte, then `bytes` of stream `seed_base + index`, then EOF.
std::vector<std::future<Hashed>> open_tagged(TunnelPair& pair, int n, uint64_t bytes,
                                             uint64_t seed_base, std::vector<Fd>* clients) {
  std::vector<std::future<Hashed>> sent;
  for (int i = 0; i < n; ++i) {
    clients->push_back(connect_unix(pair.entry("qemu").string()));
    const char tag = static_cast<char>(i);
    EXPECT_EQ(::send(clients->back().get(), &tag, 1, MSG_NOSIGNAL), 1);
  }
  for (int i = 0; i < n; ++i)
    sent.push_back(std::async(std::launch::async, [fd = (*clients)[i].get(), bytes, seed_base, i] {
      auto h = send_stream(fd, bytes, seed_base + static_cast<uint64_t>(i));
      shutdown_write(fd);
      return h;
    }));
  return sent;
}

constexpr uint64_t kMiB = 1 << 20;

// Pass: in each of 3 rounds, 16 connections opened back to back on one entry
// (as QEMU opens multifd channels) are all in flight to hv-b at once (the
// relay holds those 16 open together, no more, no fewer: the dials did not
// wait for one another),
// although the relay holds them so that their handshakes finish in reverse
// order, 40 ms apart; the target accepts them in the order they were opened,
// and each carries its own 1 MiB intact (SHA-256 per connection).
TEST(Ordering, SixteenConcurrentDialsFinishingInReverseReachTargetInAcceptOrder) {
  constexpr int kChannels = 16;
  HoldingRelay relay([](int n) { return (kChannels - 1 - n % kChannels) * 40ms; });
  TunnelPair pair(TunnelPairOptions{.a_dials = relay.address()});
  relay.forward_to(pair.b.port);
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(relay.settle()) << "round " << round << ": the last round's connections stay open";
    std::vector<Fd> clients;
    auto sent = open_tagged(pair, kChannels, kMiB, 1000 * round, &clients);
    std::string order, expected;
    std::vector<Fd> servers;
    for (int i = 0; i < kChannels; ++i) {
      expected += static_cast<char>('a' + i);
      Fd server = sink.accept(20s);
      ASSERT_TRUE(server) << "round " << round << ": connection " << i << " never arrived\n"
                          << pair.logs();
      char tag = -1;
      ASSERT_EQ(::recv(server.get(), &tag, 1, MSG_WAITALL), 1);
      order += static_cast<char>('a' + tag);
      servers.push_back(std::move(server));
    }
    EXPECT_EQ(order, expected) << "round " << round << "\n" << pair.logs();
    for (int i = 0; i < kChannels; ++i) {
      const int tag = order[i] - 'a';
      Hashed got = recv_stream(servers[i].get());
      EXPECT_EQ(got.bytes, kMiB);
      EXPECT_EQ(got.sha256, expected_sha256(kMiB, 1000 * round + tag)) << "connection " << tag;
      EXPECT_EQ(sent[tag].get().error, "");
    }
    EXPECT_EQ(relay.most_open(), kChannels) << "round " << round << "\n" << pair.logs();
  }
}

// Pass: of 5 connections opened back to back, the one the relay holds for
// 3.5 s (longer than hv-b's hold of 2 s: connect_timeout 1 + handshake_timeout
// 1) does not stop the others: the 4 others reach the target in the order
// they were opened; the held one, arriving after its successors were
// delivered, is refused (never delivered late: hv-b logs "arrived after its
// successors were delivered", hv-a "could not deliver this connection in the
// order") and its client sees its connection closed.
TEST(Ordering, PredecessorThatArrivesTooLateIsRefusedAndDoesNotStopItsSuccessors) {
  constexpr int kChannels = 5;
  HoldingRelay relay([](int n) { return n == 2 ? 3500ms : 0ms; });
  TunnelPair pair(
      TunnelPairOptions{.b_extra = "[limits]\nconnect_timeout = 1\nhandshake_timeout = 1\n",
                        .a_dials = relay.address()});
  relay.forward_to(pair.b.port);
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  std::vector<Fd> clients;
  auto sent = open_tagged(pair, kChannels, 0, 0, &clients);
  std::vector<int> arrived;
  for (int i = 0; i < kChannels - 1; ++i) {
    Fd server = sink.accept(20s);
    ASSERT_TRUE(server) << "connection " << i << " never arrived\n" << pair.logs();
    char tag = -1;
    ASSERT_EQ(::recv(server.get(), &tag, 1, MSG_WAITALL), 1);
    arrived.push_back(tag);
  }
  ASSERT_EQ(arrived.size(), 4u);
  for (size_t i = 1; i < arrived.size(); ++i)
    EXPECT_LT(arrived[i - 1], arrived[i]) << "delivered out of order\n" << pair.logs();
  int missing = 0;
  for (int tag = 0; tag < kChannels; ++tag)
    if (std::find(arrived.begin(), arrived.end(), tag) == arrived.end()) missing = tag;
  ASSERT_TRUE(wait_readable(clients[missing].get(), 20s)) << pair.logs();
  char byte;
  EXPECT_LE(::recv(clients[missing].get(), &byte, 1, 0), 0);
  EXPECT_FALSE(sink.accept(500ms)) << "the late connection was delivered\n" << pair.logs();
  EXPECT_TRUE(wait_until(
      [&] {
        return count_in_log(pair.b.log, "arrived after its successors were delivered") == 1 &&
               count_in_log(pair.a.log, "could not deliver this connection in the order") == 1;
      },
      10s))
      << pair.logs();
  for (auto& s : sent) s.get();
}

// CPU ticks (utime + stime, /proc/PID/task/TID/stat) of a process's threads
// named `name`, and how many there are.
struct ThreadsCpu {
  int threads = 0;
  long ticks = 0;
};
ThreadsCpu threads_cpu(pid_t pid, const std::string& name) {
  ThreadsCpu out;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string thread_name;
    std::getline(comm, thread_name);
    if (thread_name != name) continue;
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 15 && fields >> field; ++i)
      if (i >= 14) out.ticks += std::stol(field);
    ++out.threads;
  }
  return out;
}

// Pass: each end runs one handshake thread per worker (workers = 2: two
// threads named "xmig-handshake", what top and /proc show), and the TLS
// full handshakes (resumption off) of 64 connections through one entry, opened
// 16 at a time, run on them: at each end their CPU time grows by at least 2
// ticks (20 ms; 64 full handshakes cost about 1 ms of CPU each per end); every connection reaches
// the target in the order it was opened, its 64 KiB intact (SHA-256).
TEST(Ordering, HandshakesOfEachEndRunOnItsHandshakeThreads) {
  constexpr int kChannels = 16, kRounds = 4;
  constexpr long kLeastTicks = 2;
  const std::string kThreadName = "xmig-handshake";
  // Full handshakes, as the criterion counts on: a resumed one costs a third
  // as much, which put 64 of them at the 2-tick threshold.
  TunnelPair pair(TunnelPairOptions{.top_toml = "workers = 2", .tls_toml = "resumption = false"});
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  const ThreadsCpu a_before = threads_cpu(pair.a.process->pid(), kThreadName),
                   b_before = threads_cpu(pair.b.process->pid(), kThreadName);
  EXPECT_EQ(a_before.threads, 2);
  EXPECT_EQ(b_before.threads, 2);
  for (int round = 0; round < kRounds; ++round) {
    std::vector<Fd> clients;
    auto sent = open_tagged(pair, kChannels, 64 * 1024, 100 * round, &clients);
    for (int i = 0; i < kChannels; ++i) {
      Fd server = sink.accept(20s);
      ASSERT_TRUE(server) << "round " << round << ": connection " << i << " never arrived\n"
                          << pair.logs();
      char tag = -1;
      ASSERT_EQ(::recv(server.get(), &tag, 1, MSG_WAITALL), 1);
      EXPECT_EQ(tag, i) << "round " << round;
      Hashed got = recv_stream(server.get());
      EXPECT_EQ(got.bytes, 64u * 1024);
      EXPECT_EQ(got.sha256, expected_sha256(64 * 1024, 100 * round + tag));
    }
    for (auto& s : sent) EXPECT_EQ(s.get().error, "");
  }
  const ThreadsCpu a_after = threads_cpu(pair.a.process->pid(), kThreadName),
                   b_after = threads_cpu(pair.b.process->pid(), kThreadName);
  EXPECT_GE(a_after.ticks - a_before.ticks, kLeastTicks) << pair.logs();
  EXPECT_GE(b_after.ticks - b_before.ticks, kLeastTicks) << pair.logs();
}

}  // namespace
}  // namespace xmig::test
