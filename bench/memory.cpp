// xmig-bench-memory: what xmig's two ends hold in memory for N streams and N
// pending handshakes, and what they give back afterwards, as JSON lines for
// bench/compare (suite "memory", one group per N).
//
// For each N, a fresh pair (harness/tunnel_pair.hpp, limits raised so that N
// handshakes may pend) on loopback, in this order:
//   1. idle: VmRSS of hv-a and hv-b.
//   2. N connections to hv-b's TLS port that send nothing (pending
//      handshakes, no TLS session yet), then N that send a TLS record header
//      announcing a 16 KiB ClientHello and one byte of it (OpenSSL holds a
//      read buffer for each): hv-b's RSS with each set held; all closed, and
//      hv-b's RSS kReturnedAfter after /status showed none pending (the
//      tunnel gives a burst's freed memory back at its next once-a-second
//      sweep, tunnel/admission.hpp).
//   3. N streams through hv-a's qemu entry to hv-b's delivery, all open at
//      once: RSS of both ends with each stream idle (1 KiB carried), then
//      after each has carried kMovedBytes (its buffers filled); every piece
//      checked by SHA-256 at the far end. Peak RSS (VmHWM) of each end.
//   4. every stream closed; RSS of both ends kReturnedAfter after /status
//      showed none active: what the burst left behind (the tunnel gives the
//      freed memory of a burst of connections back at its next sweep).
// Per-item figures are RSS differences over N (KiB, 1 KiB = 1024 bytes).
#include <sys/socket.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <future>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.hpp"
#include "bench/measure.hpp"
#include "bench/record.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace {

using namespace std::chrono_literals;
using namespace xmig::harness;
using xmig::Fd;
using xmig::bench::Record;

constexpr double kKiB = 1024, kMiB = 1024 * 1024;
// Enough for every buffer of a stream's path to fill at least once (four of
// 256-288 KiB and two ciphertext queues per end, io/userspace_pump.cpp).
constexpr uint64_t kMovedBytes = 4ull << 20;
constexpr uint64_t kIdleBytes = 1024;
// Two of the tunnel's sweeps (tunnel/admission.cpp, once a second).
constexpr auto kReturnedAfter = 2s;

double mib(uint64_t bytes) {
  return static_cast<double>(bytes) / kMiB;
}
double per_item_kib(uint64_t after, uint64_t before, unsigned n) {
  return (static_cast<double>(after) - static_cast<double>(before)) / n / kKiB;
}

void wait_status(const TunnelSide& side, const std::string& field, long value) {
  if (!wait_until([&] { return status_number(side, field) == value; }, 60s))
    throw std::runtime_error(side.name + ": /status " + field + " did not reach " +
                             std::to_string(value) + ": " + status_request(side, "/status"));
}

// Sends `bytes` on `from` while receiving them on `to`; throws unless what
// arrived hashes as what was sent.
void carry(int from, int to, uint64_t bytes, uint64_t seed) {
  auto received = std::async(std::launch::async, [&] {
    std::vector<uint8_t> in(bytes);
    size_t got = 0;
    while (got < in.size()) {
      const ssize_t n = ::recv(to, in.data() + got, in.size() - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw std::runtime_error("a stream ended after " + std::to_string(got) + " bytes");
      got += static_cast<size_t>(n);
    }
    return sha256_hex(in);
  });
  const Hashed sent = send_stream(from, bytes, seed);
  if (!sent.error.empty()) throw std::runtime_error(sent.error);
  if (received.get() != sent.sha256) throw std::runtime_error("a stream's SHA-256 differs");
}

// N pending handshakes of one kind held at hv-b: its RSS meanwhile. Each
// kind comes from a source address of its own: hv-b bans a source whose
// handshakes end unfinished, as these do when they are closed.
uint64_t hold_pending(const TunnelPair& pair, unsigned n, bool partial_hello) {
  std::vector<Fd> held;
  if (partial_hello)
    held = partial_client_hellos(pair.b.port, "127.0.0.8", n);
  else
    for (unsigned i = 0; i < n; ++i) held.push_back(connect_tcp(pair.b.port, "127.0.0.7"));
  wait_status(pair.b, "pending_handshakes", n);
  std::this_thread::sleep_for(200ms);  // the partial records read and buffered
  const uint64_t rss = rss_bytes(pair.b.process->pid());
  held.clear();
  wait_status(pair.b, "pending_handshakes", 0);
  return rss;
}

Record measure(unsigned n, const std::string& tls_toml, const xmig::harness::fs::path& tunnel,
               int round) {
  Record r;
  r.set("suite", "memory")
      .set("group", "idle pair, then " + std::to_string(n) + " pending handshakes and streams")
      .set("round", round)
      .set("unit", "KiB per stream, both ends")
      .set("higher_is_better", false)
      .set("count", n);
  std::string error;
  try {
    TunnelPairOptions opts{.log_level = "info", .tunnel = tunnel};
    opts.tls_toml = tls_toml;
    opts.b_extra = pending_limits_toml(n);
    TunnelPair pair(opts);
    const pid_t a = pair.a.process->pid(), b = pair.b.process->pid();
    std::this_thread::sleep_for(300ms);
    const uint64_t a_idle = rss_bytes(a), b_idle = rss_bytes(b);

    const uint64_t b_pending = hold_pending(pair, n, false);
    const uint64_t b_partial = hold_pending(pair, n, true);
    std::this_thread::sleep_for(kReturnedAfter);
    const uint64_t b_after_pending = rss_bytes(b);

    auto sink = Listener::unix_socket(pair.delivery("qemu").string());
    const uint64_t before = rss_bytes(a) + rss_bytes(b);
    std::vector<Fd> clients, targets;
    for (unsigned i = 0; i < n; ++i) {
      clients.push_back(connect_unix(pair.entry("qemu").string()));
      targets.push_back(sink.accept(30s));
      if (!targets.back())
        throw std::runtime_error("stream " + std::to_string(i) + " not delivered");
    }
    wait_status(pair.b, "active", n);
    for (unsigned i = 0; i < n; ++i) carry(clients[i].get(), targets[i].get(), kIdleBytes, i);
    const uint64_t a_streams = rss_bytes(a), b_streams = rss_bytes(b);
    // Every stream's buffers filled once, one stream after the other (the
    // buffers stay with their stream, so the sum is what N busy streams hold).
    for (unsigned i = 0; i < n; ++i)
      carry(clients[i].get(), targets[i].get(), kMovedBytes, 1000 + i);
    const uint64_t a_moved = rss_bytes(a), b_moved = rss_bytes(b);
    clients.clear();
    targets.clear();
    wait_status(pair.b, "active", 0);
    wait_status(pair.a, "active", 0);
    std::this_thread::sleep_for(kReturnedAfter);
    const uint64_t a_closed = rss_bytes(a), b_closed = rss_bytes(b);
    // VmHWM is kept up to date lazily by the kernel: the peak is at least
    // the highest RSS read here.
    const double a_peak = std::max(static_cast<double>(xmig::bench::sample(a).peak_rss_kib) / kKiB,
                                   mib(a_moved)),
                 b_peak = std::max(static_cast<double>(xmig::bench::sample(b).peak_rss_kib) / kKiB,
                                   mib(b_moved));
    pair.stop();
    const std::string mode = xmig::bench::close_line_values(pair.a.log, "mode");

    const double moved = per_item_kib(a_moved + b_moved, before, n);
    r.set("config", "xmig-" + (mode.empty() ? std::string("unknown") : mode))
        .set("value", moved)
        .set("stream_moved_kib", moved)
        .set("stream_idle_kib", per_item_kib(a_streams + b_streams, before, n))
        .set("pending_idle_kib", per_item_kib(b_pending, b_idle, n))
        .set("pending_partial_kib", per_item_kib(b_partial, b_idle, n))
        .set("a_idle_mib", mib(a_idle))
        .set("b_idle_mib", mib(b_idle))
        .set("b_after_pending_mib", mib(b_after_pending))
        .set("a_streams_mib", mib(a_streams))
        .set("b_streams_mib", mib(b_streams))
        .set("a_moved_mib", mib(a_moved))
        .set("b_moved_mib", mib(b_moved))
        .set("a_peak_mib", a_peak)
        .set("b_peak_mib", b_peak)
        .set("a_closed_mib", mib(a_closed))
        .set("b_closed_mib", mib(b_closed))
        .set("closed_mib", mib(a_closed + b_closed))
        // Of what the streams added, the share the ends gave back once closed.
        .set("returned_pct", 100.0 *
                                 (static_cast<double>(a_moved + b_moved) -
                                  static_cast<double>(a_closed + b_closed)) /
                                 std::max(1.0, static_cast<double>(a_moved + b_moved) -
                                                   static_cast<double>(a_idle + b_idle)));
  } catch (const std::exception& e) {
    error = e.what();
    r.set("config", "xmig");
  }
  r.set("ok", error.empty());
  if (!error.empty()) r.set("error", error);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "xmig-bench-memory: RSS of xmig's two ends (a fresh pair on loopback per count) idle, with\n"
      "N pending handshakes (silent, and mid-ClientHello), with N streams open (idle, then each\n"
      "having carried 4 MiB, verified by SHA-256), and after they closed; one JSON line per "
      "count."};
  std::vector<unsigned> counts{10, 100, 1000};
  std::string tls_toml;
  xmig::harness::fs::path tunnel;
  int round = 0;
  app.add_option("--counts", counts, "Numbers of streams and handshakes")->capture_default_str();
  app.add_option("--tunnel", tunnel, "xmig-tunnel binary (default: the one built with this)");
  app.add_option("--tls-toml", tls_toml, "Lines for both [tls] tables");
  app.add_option("--round", round, "Round number in the output");
  CLI11_PARSE(app, argc, argv);
  xmig::raise_fd_limit();  // the pair inherits it: 1,000 streams need 4,000 fds
  bool ok = true;
  for (unsigned n : counts) {
    const Record r = measure(n, tls_toml, tunnel, round);
    ok = ok && r.flag("ok").value_or(false);
    std::cout << r.json() << std::endl;
  }
  return ok ? 0 : 1;
}
