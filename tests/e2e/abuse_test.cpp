// Under abuse it keeps serving peers: strangers on the migration network
// flood hv-b's TLS listener (idle connections, slowloris, bad certificates,
// each from source addresses of their own: any 127/8 address is this
// machine) while the real peer hv-a (127.0.0.1) migrates through it and hv-b's
// own entry towards hv-a is used; temporary bans engage and lift; the memory a
// pending handshake and an established stream cost is measured.
//
// Figures (transfer times, connections held, RSS) are printed with the prefix
// "abuse:" so that a run shows them (ctest -V).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <unistd.h>
#include <algorithm>
#include <atomic>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>
#include <vector>

#include "certs/certs.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tls_probe.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMiB = 1024 * 1024;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A TLS 1.3 ClientHello's record header announcing 512 bytes that come one
// at a time: the slowloris of TLS.
constexpr unsigned char kSlowRecordHeader[] = {0x16, 0x03, 0x01, 0x02, 0x00};

// 256 MiB from hv-a's qemu entry to hv-b's delivery socket; returns the
// seconds taken, and fails the test unless both hashes are equal.
double migrate_256_mib(TunnelPair& pair, Listener& sink, uint64_t seed) {
  const uint64_t bytes = 256 * kMiB;
  auto start = Clock::now();
  Hashed received;
  std::thread receiver([&] {
    Fd target = sink.accept(30s);
    if (target) received = recv_stream(target.get());
  });
  Fd client = connect_unix(pair.entry("qemu").string());
  Hashed sent = send_stream(client.get(), bytes, seed);
  shutdown_write(client.get());
  receiver.join();
  double taken = seconds_since(start);
  EXPECT_EQ(sent.bytes, bytes) << sent.error;
  EXPECT_EQ(received.bytes, bytes) << received.error << pair.logs();
  EXPECT_EQ(received.sha256, expected_sha256(bytes, seed));
  return taken;
}

// hv-b's own entry towards hv-a (b.run_dir/hv-a/qemu.sock -> a.run_dir/hv-a/qemu.sock):
// 1 MiB, hashes equal.
void own_entry_works(TunnelPair& pair) {
  auto sink = Listener::unix_socket((pair.a.run_dir / "hv-a" / "qemu.sock").string());
  Hashed received;
  std::thread receiver([&] {
    Fd target = sink.accept(30s);
    if (target) received = recv_stream(target.get());
  });
  Fd client = connect_unix((pair.b.run_dir / "hv-a" / "qemu.sock").string());
  Hashed sent = send_stream(client.get(), kMiB, 3);
  shutdown_write(client.get());
  receiver.join();
  EXPECT_EQ(received.bytes, kMiB) << received.error << pair.logs();
  EXPECT_EQ(received.sha256, sent.sha256);
}

// Strangers knocking on port until stop: each source keeps `per_source`
// connections open (idle: nothing sent; slowloris: a byte every 300 ms),
// opening a new one whenever the tunnel closes one. Counts connections made.
class Flood {
 public:
  Flood(uint16_t port, std::atomic<bool>& stop) : port_(port), stop_(stop) {}
  ~Flood() {
    for (auto& t : threads_) t.join();
  }

  void idle(const std::string& source, int per_source, bool slowloris) {
    threads_.emplace_back([=, this] {
      std::vector<Fd> open(per_source);
      size_t sent = 0;
      while (!stop_) {
        for (auto& fd : open) {
          if (fd && wait_readable(fd.get(), 0ms)) fd.reset();  // closed by the tunnel
          if (!fd) {
            try {
              fd = connect_tcp(port_, source);
              ++connections;
            } catch (const std::exception&) {
              continue;
            }
          }
          if (slowloris)
            ::send(fd.get(), &kSlowRecordHeader[sent % sizeof kSlowRecordHeader], 1, MSG_NOSIGNAL);
        }
        ++sent;
        std::this_thread::sleep_for(300ms);
      }
    });
  }

  // Handshakes with a certificate of another CA, one after another.
  void bad_certificates(const std::string& source, const certs::Pem& stranger,
                        const std::string& ca) {
    threads_.emplace_back([=, this] {
      while (!stop_) {
        TlsProbeOptions o;
        o.cert_pem = stranger.cert;
        o.key_pem = stranger.key;
        o.ca_pem = ca;
        o.alpn = {"xmig/qemu"};
        o.source_address = source;
        o.timeout = 2s;
        TlsProbe(o).connect(port_);
        ++connections;
        std::this_thread::sleep_for(20ms);
      }
    });
  }

  std::atomic<uint64_t> connections{0};

 private:
  uint16_t port_;
  std::atomic<bool>& stop_;
  std::vector<std::thread> threads_;
};

std::string source(int n) {
  return "127.0.0." + std::to_string(n);
}

// A node certificate for hv-a from a CA hv-b does not trust.
certs::Pem stranger_certificate() {
  certs::IssueOptions o;
  o.name = "hv-a";
  o.ips = {"127.0.0.1"};
  return certs::issue(certs::make_ca({}), o);
}

// Pass: with hv-b limited to 64 pending handshakes (8 per source, 2 s each),
// a flood from 33 stranger addresses (20 x 10 idle connections, 10 x 4
// slowloris, 3 sources of bad-certificate handshakes) never holds more
// pending handshakes than that; 256 MiB from hv-a reach hv-b intact during
// the flood, and hv-b's own entry towards hv-a carries 1 MiB intact; the
// 33 strangers are all banned (one "ban:" line each, within 30 s), 127.0.0.1
// never, and their refusals are rate-limited (fewer refusal lines than half
// the connections, "more like this" lines). The transfer
// times, connections held and hv-b's RSS are printed.
TEST(Abuse, FloodOfStrangersLeavesPeersTransferAndOwnEntryWorking) {
  constexpr long kStrangers = 20 + 10 + 3;
  TunnelPairOptions opts;
  opts.log_level = "info";
  opts.b_extra =
      "[limits]\nmax_pending_handshakes = 64\nmax_pending_per_source = 8\n"
      "handshake_timeout = 2\nhandshake_rate_per_source = 20\nban_time = 60\n";
  TunnelPair pair(opts);
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  const uint64_t rss_before = rss_bytes(pair.b.process->pid());

  const double quiet = migrate_256_mib(pair, sink, 11);

  std::atomic<bool> stop{false};
  long most_pending = 0;
  uint64_t most_rss = 0;
  double flooded = 0;
  uint64_t flood_connections = 0;
  {
    Flood flood(pair.b.port, stop);
    for (int i = 0; i < 20; ++i) flood.idle(source(10 + i), 10, false);
    for (int i = 0; i < 10; ++i) flood.idle(source(40 + i), 4, true);
    const auto stranger = stranger_certificate();
    for (int i = 0; i < 3; ++i) flood.bad_certificates(source(60 + i), stranger, pair.ca.cert);
    std::thread watch([&] {
      while (!stop) {
        most_pending = std::max(most_pending, status_number(pair.b, "pending_handshakes"));
        most_rss = std::max(most_rss, rss_bytes(pair.b.process->pid()));
        std::this_thread::sleep_for(100ms);
      }
    });
    std::this_thread::sleep_for(3s);  // the flood at full strength: budgets full, bans engaging
    flooded = migrate_256_mib(pair, sink, 12);
    own_entry_works(pair);
    // Every stranger ends up banned, the real peer never.
    EXPECT_TRUE(wait_until([&] { return status_number(pair.b, "total") >= kStrangers; }, 30s))
        << status_request(pair.b, "/status");
    stop = true;
    watch.join();
    flood_connections = flood.connections;
  }
  const int refusal_lines = count_in_log(pair.b.log, "refused: from 127.0.0.");
  std::printf(
      "abuse: 256 MiB hv-a -> hv-b: %.2f s quiet, %.2f s under the flood; flood connections "
      "%llu, pending handshakes held at most %ld (limit 64), hv-b RSS %.1f MiB before, %.1f MiB "
      "at most during; bans %ld; refusal lines %d\n",
      quiet, flooded, static_cast<unsigned long long>(flood_connections), most_pending,
      static_cast<double>(rss_before) / kMiB, static_cast<double>(most_rss) / kMiB,
      status_number(pair.b, "total"), refusal_lines);

  EXPECT_LE(most_pending, 64 + 1);  // the strangers' 64, and hv-a's own one at a time
  EXPECT_GT(most_pending, 0);
  EXPECT_EQ(count_in_log(pair.b.log, " ban: 127.0.0."), kStrangers) << pair.logs();
  EXPECT_EQ(count_in_log(pair.b.log, " ban: 127.0.0.1 "), 0);
  EXPECT_LT(static_cast<uint64_t>(refusal_lines), flood_connections / 2);
  EXPECT_TRUE(wait_until(
      [&] { return count_in_log(pair.b.log, "more like this in the last 10 s") > 0; }, 12s))
      << pair.logs();
  // The real peer was never refused.
  EXPECT_EQ(count_in_log(pair.b.log, "refused: from 127.0.0.1:"), 0) << pair.logs();
  EXPECT_EQ(count_in_log(pair.a.log, "refused:"), 0) << pair.logs();
}

// Pass: from 127.0.0.5, two handshakes with a certificate of another CA are
// refused as such and no ban is logged; the third brings exactly one
// "ban: 127.0.0.5" line; while banned, even a valid certificate from
// 127.0.0.5 is refused at accept (no verdict) and /status lists the ban
// (xmig_bans_total 1), while 127.0.0.6 with a valid certificate is accepted;
// 20 more tries while banned give one refusal line and, once the 10 s window
// ends, one "(N more like this in the last 10 s)" line; after ban_time (3 s)
// one "ban lifted: 127.0.0.5" line, an empty ban list, and the valid
// certificate from 127.0.0.5 is accepted ('A').
TEST(Abuse, BanEngagesOnTheThirdFailureAndLiftsAfterBanTime) {
  TunnelPairOptions opts;
  opts.log_level = "info";
  auto bench = Listener::tcp();
  opts.b_targets["bench"] = bench.endpoint();
  opts.b_extra = "[limits]\nban_after = 3\nban_window = 60\nban_time = 3\n";
  TunnelPair pair(opts);
  const auto stranger = stranger_certificate();
  auto probe = [&](const std::string& from, bool valid) {
    TlsProbeOptions o;
    if (valid) {
      o.cert_file = (pair.a.pki / "server-cert.pem").string();
      o.key_file = (pair.a.pki / "server-key.pem").string();
    } else {
      o.cert_pem = stranger.cert;
      o.key_pem = stranger.key;
    }
    o.ca_pem = pair.ca.cert;
    o.alpn = {"xmig/bench"};
    o.source_address = from;
    return TlsProbe(o).connect(pair.b.port);
  };
  for (int i = 0; i < 2; ++i) {
    auto r = probe("127.0.0.5", false);
    EXPECT_FALSE(r.verdict);
  }
  EXPECT_TRUE(
      wait_until([&] { return count_in_log(pair.b.log, "refused: from 127.0.0.5") >= 1; }, 5s));
  EXPECT_EQ(count_in_log(pair.b.log, " ban: "), 0) << pair.logs();
  probe("127.0.0.5", false);
  ASSERT_TRUE(wait_until([&] { return count_in_log(pair.b.log, " ban: 127.0.0.5 ") == 1; }, 5s))
      << pair.logs();
  const auto banned_at = Clock::now();

  auto refused = probe("127.0.0.5", true);
  EXPECT_FALSE(refused.verdict) << pair.logs();
  std::string status = status_request(pair.b, "/status");
  EXPECT_NE(status.find("\"source\":\"127.0.0.5\""), std::string::npos) << status;
  EXPECT_NE(status_request(pair.b, "/metrics").find("xmig_bans_total 1\n"), std::string::npos);
  auto other = probe("127.0.0.6", true);
  EXPECT_EQ(other.verdict, 'A') << other.error << pair.logs();
  for (int i = 0; i < 20; ++i) probe("127.0.0.5", true);
  EXPECT_EQ(count_lines_with_all(pair.b.log, {"refused: from 127.0.0.5", "banned for"}), 1)
      << pair.logs();

  ASSERT_TRUE(
      wait_until([&] { return count_in_log(pair.b.log, "ban lifted: 127.0.0.5 ") == 1; }, 10s))
      << pair.logs();
  const double lifted_after = seconds_since(banned_at);
  EXPECT_GE(lifted_after, 2.5);
  EXPECT_NE(status_request(pair.b, "/status").find("\"in_force\":[]"), std::string::npos);
  auto again = probe("127.0.0.5", true);
  EXPECT_EQ(again.verdict, 'A') << again.error << pair.logs();
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.b.log, {"refused: from 127.0.0.5", "banned for",
                                                 "(20 more like this in the last 10 s)"}) == 1;
      },
      12s))
      << pair.logs();
  std::printf("abuse: ban lifted %.1f s after it engaged (ban_time 3 s)\n", lifted_after);
}

// Pass: with ban_exempt_peers at its default (true), five bad-certificate
// handshakes from the configured peer's address (127.0.0.1) are each refused
// with a line of their own, and no ban is logged; the peer then migrates.
TEST(Abuse, ConfiguredPeersAddressIsNeverBanned) {
  TunnelPairOptions opts;
  opts.log_level = "info";
  TunnelPair pair(opts);
  const auto stranger = stranger_certificate();
  for (int i = 0; i < 5; ++i) {
    TlsProbeOptions o;
    o.cert_pem = stranger.cert;
    o.key_pem = stranger.key;
    o.ca_pem = pair.ca.cert;
    o.alpn = {"xmig/qemu"};
    TlsProbe(o).connect(pair.b.port);
  }
  EXPECT_TRUE(
      wait_until([&] { return count_in_log(pair.b.log, "refused: from 127.0.0.1") == 5; }, 5s))
      << pair.logs();
  EXPECT_EQ(count_in_log(pair.b.log, " ban: "), 0) << pair.logs();
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  migrate_256_mib(pair, sink, 13);
}

// Pass: 1,000 idle connections from one stranger address (limits raised to
// let them all pend) are all held as pending handshakes, and hv-b's RSS grows
// by less than 16 KiB each; then 1,000 streams through hv-a's qemu entry to
// hv-b, all open at once and idle, each carrying 1 KiB intact, grow the two
// tunnels' RSS together by less than 256 KiB per stream. The figures are
// printed (the README's memory bounds come from them).
TEST(Abuse, MemoryPerPendingHandshakeAndPerStreamIsBounded) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's shadow memory and quarantine are most of a sanitized process's RSS
  // (measured: 1.4 MiB per stream instead of 58 KiB): the bound is the
  // product's, so it is checked by the suite's ordinary build only.
  GTEST_SKIP() << "RSS under AddressSanitizer measures the sanitizer, not the tunnel";
#endif
  constexpr int kCount = 1000;
  raise_fd_limit();
  TunnelPairOptions opts;
  opts.log_level = "info";
  opts.b_extra = pending_limits_toml(kCount);
  TunnelPair pair(opts);
  const pid_t a = pair.a.process->pid(), b = pair.b.process->pid();

  const uint64_t b_idle = rss_bytes(b);
  std::vector<Fd> strangers;
  for (int i = 0; i < kCount; ++i) strangers.push_back(connect_tcp(pair.b.port, "127.0.0.7"));
  ASSERT_TRUE(
      wait_until([&] { return status_number(pair.b, "pending_handshakes") == kCount; }, 20s))
      << status_request(pair.b, "/status");
  const uint64_t b_pending = rss_bytes(b);
  const double per_pending = (static_cast<double>(b_pending) - b_idle) / kCount;
  strangers.clear();

  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  const uint64_t before = rss_bytes(a) + rss_bytes(b);
  std::vector<Fd> clients, targets;
  for (int i = 0; i < kCount; ++i) {
    clients.push_back(connect_unix(pair.entry("qemu").string()));
    targets.push_back(sink.accept(30s));
    ASSERT_TRUE(targets.back()) << "stream " << i << "\n" << pair.logs();
  }
  ASSERT_TRUE(wait_until([&] { return status_number(pair.b, "active") == kCount; }, 20s));
  // Each stream carries 1 KiB, so that both pumps' buffers are in use.
  for (int i = 0; i < kCount; ++i) {
    send_stream(clients[i].get(), 1024, i);
    char buf[1024];
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t n = ::recv(targets[i].get(), buf + got, sizeof buf - got, 0);
      ASSERT_GT(n, 0);
      got += static_cast<size_t>(n);
    }
  }
  const uint64_t streams = rss_bytes(a) + rss_bytes(b);
  const double per_stream = (static_cast<double>(streams) - before) / kCount;
  std::printf(
      "abuse: hv-b RSS %.1f MiB idle, %.1f MiB with %d pending handshakes (%.1f KiB each); "
      "hv-a+hv-b RSS %.1f MiB before, %.1f MiB with %d established streams (%.1f KiB per "
      "stream, both ends together)\n",
      static_cast<double>(b_idle) / kMiB, static_cast<double>(b_pending) / kMiB, kCount,
      per_pending / 1024, static_cast<double>(before) / kMiB, static_cast<double>(streams) / kMiB,
      kCount, per_stream / 1024);
  EXPECT_LT(per_pending, 16 * 1024);
  EXPECT_LT(per_stream, 256 * 1024);
}

// Pass: 1,000 connections from one stranger address, each stopped
// mid-ClientHello (a record header announcing 16 KiB and one byte of it),
// grow hv-b's RSS by more than 20 MiB while they pend; once they are closed
// and /status shows none pending, hv-b's RSS is back within 6 MiB of what it
// was idle before the burst within 5 s (the tunnel gives the freed heap back
// to the system instead of keeping it for the next burst).
TEST(Abuse, MemoryOfABurstOfPendingHandshakesIsReturned) {
#if defined(__SANITIZE_ADDRESS__)
  // As in MemoryPerPendingHandshakeAndPerStreamIsBounded: ASan's allocator
  // and quarantine decide a sanitized process's RSS, not the tunnel.
  GTEST_SKIP() << "RSS under AddressSanitizer measures the sanitizer, not the tunnel";
#endif
  constexpr unsigned kCount = 1000;
  constexpr uint64_t kBurstAtLeast = 20 * kMiB, kReturnedWithin = 6 * kMiB;
  constexpr auto kReturnedBy = 5s;
  raise_fd_limit();
  TunnelPairOptions opts;
  opts.log_level = "info";
  opts.b_extra = pending_limits_toml(kCount);
  TunnelPair pair(opts);
  const pid_t b = pair.b.process->pid();
  std::this_thread::sleep_for(300ms);  // settled after start
  const uint64_t idle = rss_bytes(b);

  auto held = partial_client_hellos(pair.b.port, "127.0.0.8", kCount);
  ASSERT_TRUE(
      wait_until([&] { return status_number(pair.b, "pending_handshakes") == kCount; }, 30s))
      << status_request(pair.b, "/status");
  // Every partial record read (a TLS session and read buffer each).
  uint64_t burst = 0;
  wait_until(
      [&] {
        burst = std::max(burst, rss_bytes(b));
        return burst > idle + kBurstAtLeast;
      },
      5s);
  held.clear();
  ASSERT_TRUE(wait_until([&] { return status_number(pair.b, "pending_handshakes") == 0; }, 30s))
      << status_request(pair.b, "/status");
  const auto closed = Clock::now();
  const uint64_t right_after = rss_bytes(b);
  uint64_t after = right_after;
  const bool returned = wait_until(
      [&] {
        after = rss_bytes(b);
        return after <= idle + kReturnedWithin;
      },
      kReturnedBy);
  std::printf(
      "abuse: hv-b RSS %.1f MiB idle, %.1f MiB with %u handshakes pending mid-ClientHello, "
      "%.1f MiB when none pended, %.1f MiB %.1f s later\n",
      static_cast<double>(idle) / kMiB, static_cast<double>(burst) / kMiB, kCount,
      static_cast<double>(right_after) / kMiB, static_cast<double>(after) / kMiB,
      seconds_since(closed));
  EXPECT_GT(burst, idle + kBurstAtLeast) << "the burst did not cost what it should: no test";
  EXPECT_TRUE(returned) << "hv-b kept " << (after - idle) / kMiB << " MiB over idle\n"
                        << pair.logs();
}

}  // namespace
}  // namespace xmig::test

namespace xmig::test {

using namespace harness;
namespace {

// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // state .. cmajflt
  double user = 0, system = 0;
  fields >> user >> system;
  return (user + system) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Pass: hv-b's open-file limit lowered to 48 (prlimit) and 80 idle
// connections from a stranger: accept fails with EMFILE, and hv-b pauses
// (log lines "Too many open files; next accept in N ms", fewer than 40 in
// 3 s, N up to 1000) using under 0.5 CPU seconds in those 3 s instead of
// spinning; once the strangers go (the limit stays), hv-b's own entry and
// hv-a's 1 MiB to hv-b work.
TEST(Abuse, AcceptErrorsBackOffInsteadOfSpinning) {
#if defined(__SANITIZE_ADDRESS__)
  // The sanitizers' own runtime needs file descriptors: UBSan's vptr check
  // probes memory through a pipe (sanitizer_common's IsAccessibleMemoryRange:
  // `if (pipe(...)) return false;`), so at EMFILE it reports a live object as
  // having an "invalid vptr" and aborts (seen: hv-b's s.tls control block, a
  // valid _Sp_counted_ptr<tls::Context*> in gdb). The product's behaviour at
  // EMFILE is checked by the suite's ordinary build.
  GTEST_SKIP() << "a sanitizer runtime cannot run out of file descriptors";
#endif
  TunnelPairOptions opts;
  opts.log_level = "info";
  opts.b_extra = "[limits]\nmax_pending_per_source = 1000\nhandshake_rate_per_source = 1000\n";
  TunnelPair pair(opts);
  const pid_t b = pair.b.process->pid();
  ASSERT_EQ(run({"/usr/bin/prlimit", "--pid", std::to_string(b), "--nofile=48:48"}), 0);
  std::vector<Fd> strangers;
  for (int i = 0; i < 80; ++i) strangers.push_back(connect_tcp(pair.b.port, "127.0.0.8"));
  ASSERT_TRUE(wait_until(
      [&] { return count_in_log(pair.b.log, "Too many open files; next accept in") > 0; }, 5s))
      << pair.logs();
  const double cpu_before = cpu_seconds(b);
  const int lines_before = count_in_log(pair.b.log, "next accept in");
  std::this_thread::sleep_for(3s);
  const double cpu = cpu_seconds(b) - cpu_before;
  const int lines = count_in_log(pair.b.log, "next accept in") - lines_before;
  std::printf("abuse: EMFILE for 3 s: %d accept error lines, %.2f CPU s\n", lines, cpu);
  EXPECT_LT(lines, 40) << pair.logs();
  EXPECT_LT(cpu, 0.5);
  EXPECT_GE(count_in_log(pair.b.log, "next accept in 1000 ms"), 1) << pair.logs();
  strangers.clear();
  own_entry_works(pair);  // hv-b -> hv-a
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  Hashed sent = send_stream(client.get(), kMiB, 5);
  shutdown_write(client.get());
  Fd target = sink.accept(10s);
  ASSERT_TRUE(target) << pair.logs();
  EXPECT_EQ(recv_stream(target.get()).sha256, sent.sha256);
}

// Pass: 16 status clients that connect and send nothing hold every place of
// the status endpoint: a 17th request gets no answer; 5 s later the silent
// ones have been closed (EOF) and a request is answered with the status.
TEST(Abuse, StatusEndpointHasATimeoutAndACap) {
  TunnelPairOptions opts;
  opts.log_level = "info";
  TunnelPair pair(opts);
  std::vector<Fd> silent;
  for (int i = 0; i < 16; ++i)
    silent.push_back(connect_unix((pair.b.run_dir / "status.sock").string()));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(status_request(pair.b, "/status").find("\"name\":\"hv-b\""), std::string::npos);
  for (auto& fd : silent) EXPECT_TRUE(wait_readable(fd.get(), 7s));
  EXPECT_NE(status_request(pair.b, "/status").find("\"name\":\"hv-b\""), std::string::npos)
      << pair.logs();
  EXPECT_EQ(count_in_log(pair.b.log, "refused: status endpoint: 16 requests already"), 1)
      << pair.logs();
}

}  // namespace
}  // namespace xmig::test
