// xmig-bench-qemu: real QEMU migrations over a given path, timed and
// checked, as one JSON line for bench/compare: one migration, or K at once
// (one --listen-uri and --send-uri per migration), as when a host is drained.
//
// Each migration has two paused qemu-system-x86_64 (harness/qemu_vm.hpp):
// the source's RAM file holds random bytes, the destination's starts as
// zeros. The destination listens on --listen-uri, the source migrates to
// --send-uri; whatever sits between them (nothing, stunnel, xmig) is started
// by the caller, whose processes are measured with --pid. With --tls-dir,
// QEMU's own TLS (tls-creds-x509, mutual) protects the stream instead. After
// both QEMUs have quit, the two RAM files must be byte-identical, else the
// run counts as failed whatever its speed. With --xmig it starts one xmig
// pair itself, one TCP route per migration, and measures both ends.
//
// Busy (--busy-mib W --dirty-rate D): one migration of a guest that keeps
// dirtying W MiB of its RAM at D MiB/s (harness/busy_guest.hpp) with QEMU's
// downtime-limit and no bandwidth cap set explicitly; when it has not
// converged by --timeout it is cancelled and reported "not converged" (the
// tool's result, not its failure). There is no RAM comparison (the RAM keeps
// changing); instead the guest's once-a-second counter must carry on at the
// destination.
//
// K at once: the time is until the last one completed (the drain); fairness
// is how the RAM each had sent was spread when the first one completed
// (Jain's index, least/most); the balance of the worker threads is the
// least busy of the top N threads' CPU over the busiest one's.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "base/json.hpp"
#include "bench/measure.hpp"
#include "bench/record.hpp"
#include "harness/busy_guest.hpp"
#include "harness/files.hpp"
#include "harness/netns.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/tunnel_pair.hpp"

namespace {

namespace fs = std::filesystem;
using xmig::bench::Measured;
using xmig::bench::Record;

// Compares two files of `bytes` bytes through shared mappings (no 1 GiB reads
// into buffers, and faster than hashing both).
bool same_contents(const fs::path& a, const fs::path& b, uint64_t bytes) {
  auto map = [&](const fs::path& p) -> const uint8_t* {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("open " + p.string() + ": " + strerror(errno));
    void* m = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (m == MAP_FAILED) throw std::runtime_error("mmap " + p.string() + ": " + strerror(errno));
    return static_cast<const uint8_t*>(m);
  };
  const uint8_t* x = map(a);
  const uint8_t* y = map(b);
  const bool same = std::memcmp(x, y, bytes) == 0;
  ::munmap(const_cast<uint8_t*>(x), bytes);
  ::munmap(const_cast<uint8_t*>(y), bytes);
  return same;
}

// The 4 KiB pages where two files of `bytes` bytes differ: how many, and the
// first few offsets; empty when none.
std::string differing_pages(const fs::path& a, const fs::path& b, uint64_t bytes) {
  constexpr uint64_t kPage = 4096;
  constexpr size_t kShown = 6;
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  std::vector<char> pa(kPage), pb(kPage);
  uint64_t count = 0;
  std::string shown;
  for (uint64_t off = 0; off < bytes; off += kPage) {
    fa.read(pa.data(), kPage);
    fb.read(pb.data(), kPage);
    if (std::memcmp(pa.data(), pb.data(), kPage) == 0) continue;
    if (count++ < kShown) {
      char buf[32];
      std::snprintf(buf, sizeof buf, " 0x%llx", static_cast<unsigned long long>(off));
      shown += buf;
    }
  }
  return count ? std::to_string(count) + " pages differ, at" + shown : std::string();
}

// QEMU's own TLS: a tls-creds-x509 object on each side (the destination is
// the TLS server, the source the client; both verify the peer), named by the
// migration parameter tls-creds.
void enable_qemu_tls(xmig::harness::QemuGuest& guest, const fs::path& dir, bool server) {
  using xmig::json_quote;
  guest.qmp().execute("object-add", R"({"qom-type": "tls-creds-x509", "id": "xmig-tls", "dir": )" +
                                        json_quote(dir.string()) + R"(, "endpoint": ")" +
                                        (server ? "server" : "client") +
                                        R"(", "verify-peer": true})");
  guest.qmp().execute("migrate-set-parameters", R"({"tls-creds": "xmig-tls"})");
}

struct Options {
  uint64_t ram_mib = 1024;
  int multifd = 0;
  // One pair per migration: K of each run K migrations at once.
  std::vector<std::string> listen_uris, send_uris;
  fs::path tls_server_dir, tls_client_dir;
  std::vector<std::string> pids;
  std::string label, suite = "qemu", group;  // label: "direct", or "xmig" with --xmig
  int round = 0;
  unsigned timeout = 600;
  fs::path work_dir;
  // Through an xmig pair of our own: its binary, [tls] lines, worker threads.
  fs::path xmig_tunnel;
  std::string tls_toml;
  unsigned workers = 0;
  // Threads per measured process whose CPU balance is reported (0: none).
  unsigned balance_threads = 0;
  // "netns": sources (and hv-a) in one network namespace, destinations (and
  // hv-b) in another, joined by a veth pair (harness/netns.hpp).
  std::string topology = "loopback";
  // Busy guest: MiB it dirties (0: the paused guest with random RAM) and at
  // how many MiB/s; QEMU's downtime-limit.
  uint64_t busy_mib = 0, dirty_rate = 0;
  unsigned downtime_limit_ms = 300;
};

// Where migration traffic crosses between the two hosts.
struct Topology {
  std::optional<xmig::harness::NetnsLab> lab;
  std::string source_ns() const { return lab ? lab->a : ""; }
  std::string dest_ns() const { return lab ? lab->b : ""; }
  // A destination listens on every address of its namespace; a direct
  // source reaches it at hv-b's address on the veth pair.
  std::string listen_uri(const std::string& uri) const {
    return lab ? "tcp:0.0.0.0:" + port_of(uri) : uri;
  }
  std::string send_uri(const std::string& uri) const {
    return lab ? "tcp:" + lab->b_ip + ":" + port_of(uri) : uri;
  }
  static std::string port_of(const std::string& uri) { return uri.substr(uri.rfind(':') + 1); }
};

// "tcp:HOST:PORT" -> "HOST:PORT" (what a tunnel's [targets] and [[route]] take).
std::string tcp_endpoint(const std::string& uri) {
  if (uri.rfind("tcp:", 0) != 0)
    throw std::invalid_argument("--listen-uri " + uri + ": xmig needs tcp:HOST:PORT here");
  return uri.substr(4);
}

// One xmig pair for all the migrations: migration i enters hv-a on a TCP
// [[route]] of its own (channel mig-<i>, so each migration keeps its own
// accept order, as a per-migration socket set does) and hv-b delivers it to
// that migration's destination.
// In the netns topology hv-a and hv-b run in the sources' and destinations'
// namespaces and meet over the veth pair; each side's routes and targets stay
// on its own loopback.
xmig::harness::TunnelPairOptions xmig_pair(const Options& o, const Topology& topology,
                                           const fs::path& dir,
                                           std::vector<std::string>& send_uris) {
  xmig::harness::TunnelPairOptions po{
      .top_toml = "workers = " + std::to_string(o.workers) + "\n",
      .tls_toml = o.tls_toml,
      .log_level = "info",  // one line per connection, nothing per byte
      .dir = dir,
      .tunnel = o.xmig_tunnel};
  if (topology.lab) {
    po.a_host = topology.lab->a_ip;
    po.b_host = topology.lab->b_ip;
    po.a_netns = topology.lab->a;
    po.b_netns = topology.lab->b;
  }
  send_uris.clear();
  for (size_t i = 0; i < o.listen_uris.size(); ++i) {
    const std::string channel = "mig-" + std::to_string(i + 1);
    const std::string entry = "127.0.0.1:" + std::to_string(xmig::harness::free_port());
    po.b_targets[channel] = tcp_endpoint(o.listen_uris[i]);
    po.a_routes[entry] = channel;
    send_uris.push_back("tcp:" + entry);
  }
  return po;
}

// Jain's fairness index of xs: 1 when all are equal, 1/n when one has it all.
double jain_index(const std::vector<double>& xs) {
  double sum = 0, squares = 0;
  for (double x : xs) sum += x, squares += x * x;
  return squares > 0 ? sum * sum / (static_cast<double>(xs.size()) * squares) : 0;
}

std::string joined(const std::vector<double>& xs, int digits) {
  std::string out;
  char buf[32];
  for (double x : xs) {
    std::snprintf(buf, sizeof buf, "%.*f", digits, x);
    out += (out.empty() ? "" : " ") + std::string(buf);
  }
  return out;
}

// RAM bytes a source has handed to its channels so far (total - remaining of
// query-migrate's "ram"): on a paused guest with random RAM, its progress.
double ram_sent(const xmig::harness::MigrationStatus& s) {
  using xmig::harness::json_number;
  return json_number(s.reply, "total").value_or(0) - json_number(s.reply, "remaining").value_or(0);
}

// One migration of the run: its two QEMUs and what became of it.
struct Migration {
  fs::path source_ram, dest_ram;
  std::unique_ptr<xmig::harness::QemuGuest> source, dest;
  xmig::harness::MigrationStatus sent, received;
  std::optional<double> seconds;  // from migrate to the source's completion
  double multifd_bytes = 0;
};

// The processes given with --pid NAME=PID.
std::vector<Measured> measured_processes(const Options& o) {
  std::vector<Measured> procs;
  for (const auto& spec : o.pids) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos)
      throw std::invalid_argument("--pid " + spec + ": expected NAME=PID");
    procs.push_back(
        {spec.substr(0, eq), static_cast<pid_t>(std::stol(spec.substr(eq + 1))), {}, {}});
  }
  return procs;
}

// The record's config: the label asked for, else what carried the migration.
std::string config_label(const Options& o) {
  if (!o.label.empty()) return o.label;
  return o.xmig_tunnel.empty() ? "direct" : "xmig";
}

std::string channels_text(int multifd) {
  return multifd ? "multifd " + std::to_string(multifd) + " channels" : "single stream";
}

// Busy guest: seconds its loop runs before the migration starts, so that the
// whole buffer has been written once (a guest's working set is resident and
// dirty), at least kMinWarmUpSeconds and at most kMaxWarmUpSeconds.
constexpr uint64_t kMinWarmUpSeconds = 2, kMaxWarmUpSeconds = 20;
// Counter lines the destination's guest must print after it arrived, and how
// long it has for them.
constexpr size_t kLinesAfterArrival = 3;
constexpr auto kArrivalCheckTimeout = std::chrono::seconds(20);
constexpr auto kPollInterval = std::chrono::milliseconds(100);
constexpr double kPagesPerMib = 256;  // the guest's 4 KiB pages

// One migration of a busy guest (see the top of this file).
int run_busy(const Options& o) {
  using namespace xmig::harness;
  using xmig::harness::json_number;
  const BusyLoad load{.mib = o.busy_mib, .rate_mib_per_s = o.dirty_rate};
  const uint64_t ram_mib = busy_guest_ram_mib(load);
  TempDir work("xmig-bench-busy");
  RamDir ram(2 * (ram_mib << 20), o.work_dir.empty() ? work.path() : o.work_dir);
  std::vector<Measured> procs = measured_processes(o);

  Record r;
  r.set("suite", o.suite == "qemu" ? std::string("qemu-busy") : o.suite)
      .set("group", o.group.empty() ? std::to_string(load.mib) + " MiB dirtied at " +
                                          std::to_string(load.rate_mib_per_s) + " MiB/s, " +
                                          channels_text(o.multifd)
                                    : o.group)
      .set("config", config_label(o))
      .set("round", o.round)
      .set("unit", "s")
      .set("higher_is_better", false)
      .set("busy_mib", load.mib)
      .set("dirty_rate_asked_mibps", load.rate_mib_per_s)
      .set("ram_mib", ram_mib)
      .set("multifd_channels", o.multifd)
      .set("downtime_limit_ms", o.downtime_limit_ms)
      .set("timeout_s", o.timeout);

  std::string error, not_converged;
  std::optional<TunnelPair> pair;
  try {
    Topology topology;
    std::vector<std::string> send_uris = o.send_uris;
    if (!o.xmig_tunnel.empty()) {
      pair.emplace(xmig_pair(o, topology, work / "xmig", send_uris));
      procs.push_back({"entry", pair->a.process->pid(), {}, {}});
      procs.push_back({"exit", pair->b.process->pid(), {}, {}});
    }
    const fs::path kernel = busy_guest_kernel();
    const fs::path source_ram = ram.path() / "source.ram",
                   dest_ram = ram.path() / "destination.ram";
    auto guest = [&](const std::string& name, bool incoming) {
      const fs::path ram_file = incoming ? dest_ram : source_ram;
      create_zero_file(ram_file, ram_mib << 20);
      return std::make_unique<QemuGuest>(QemuGuestConfig{.name = name,
                                                         .work_dir = work.path(),
                                                         .ram_file = ram_file,
                                                         .ram_mib = ram_mib,
                                                         .incoming = incoming,
                                                         .kernel = kernel,
                                                         .kernel_args = busy_guest_args(load),
                                                         .serial_log = work / (name + ".serial")});
    };
    auto source = guest("source", false), dest = guest("destination", true);
    if (o.multifd > 0) {
      source->enable_multifd(o.multifd);
      dest->enable_multifd(o.multifd);
    }
    source->unlimit_bandwidth();
    source->set_downtime_limit(std::chrono::milliseconds(o.downtime_limit_ms));
    if (!o.tls_server_dir.empty()) {
      enable_qemu_tls(*dest, o.tls_server_dir, true);
      enable_qemu_tls(*source, o.tls_client_dir, false);
    }
    dest->migrate_incoming(o.listen_uris[0]);

    // The guest has gone over its buffer once (its working set is dirty)
    // before the migration starts.
    const uint64_t warm_up =
        std::clamp(busy_pass_seconds(load), kMinWarmUpSeconds, kMaxWarmUpSeconds);
    const fs::path source_serial = work / "source.serial",
                   dest_serial = work / "destination.serial";
    const BusyCounters warm =
        wait_for_busy_counters(source_serial, warm_up, std::chrono::seconds(warm_up + 30));
    if (warm.lines < warm_up)
      throw std::runtime_error("the busy guest did not run its loop: " + read_file(source_serial) +
                               "\n" + source->log());

    for (auto& p : procs) p.before = xmig::bench::sample(p.pid);
    const auto t0 = std::chrono::steady_clock::now();
    source->migrate(send_uris[0]);
    const auto deadline = t0 + std::chrono::seconds(o.timeout);
    MigrationStatus sent, received, progress;  // progress: the last reply while active
    double dirty_pages_rate = 0;               // QEMU's last measure while the migration ran
    while (true) {
      sent = source->query_migration();
      if (auto rate = json_number(sent.reply, "dirty-pages-rate"); rate && *rate > 0)
        dirty_pages_rate = *rate;
      if (sent.finished()) break;
      if (sent.status == "active") progress = sent;
      received = dest->query_migration();
      if (received.status == "failed") break;
      if (std::chrono::steady_clock::now() > deadline) {
        // Not converged: the guest dirties faster than the path carries.
        source->cancel_migration();
        sent = source->wait_for_migration(std::chrono::seconds(60));
        not_converged = "not converged within " + std::to_string(o.timeout) +
                        " s, cancelled (source " + sent.status + ")";
        break;
      }
      std::this_thread::sleep_for(kPollInterval);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto& p : procs) p.after = xmig::bench::sample(p.pid);

    // A cancelled migration reports no RAM figures: those of its last poll.
    const std::string& figures = sent.completed() ? sent.reply : progress.reply;
    const double page_size = json_number(figures, "page-size").value_or(4096);
    const double transferred = json_number(figures, "transferred").value_or(0);
    r.set("converged", sent.completed())
        .set("seconds", seconds)
        .set("transferred_mib", transferred / (1 << 20))
        .set("dirty_syncs", json_number(figures, "dirty-sync-count").value_or(0))
        .set("source_status", sent.status);
    // QEMU measures the rate over its sync periods (about a second): a shorter
    // migration has none.
    if (dirty_pages_rate > 0)
      r.set("dirty_pages_rate", dirty_pages_rate)
          .set("dirty_mibps", dirty_pages_rate * page_size / (1 << 20));
    if (auto mbps = json_number(sent.reply, "mbps")) r.set("qemu_mbps", *mbps);
    double cpu = 0;
    for (const Measured& p : procs) {
      cpu += p.cpu_seconds();
      r.set(p.name + "_cpu_s", p.cpu_seconds());
      r.set(p.name + "_peak_rss_mib", static_cast<double>(p.after.peak_rss_kib) / 1024);
    }
    if (!procs.empty() && transferred > 0) r.set("cpu_s_per_gb", cpu / (transferred / 1e9));

    // The source's counters when the migration ended (completed: the source
    // is paused; cancelled: before the guest goes on), and what the guest
    // managed while it was migrated (it may fall short of the rate asked when
    // the host is busy).
    const BusyCounters before = busy_counters(read_file(source_serial));
    if (before.last && warm.last && *before.last > *warm.last)
      r.set("guest_dirty_mibps",
            static_cast<double>(before.last_pages.value_or(0) - warm.last_pages.value_or(0)) /
                static_cast<double>(*before.last - *warm.last) / kPagesPerMib);
    if (sent.completed()) {
      received = dest->wait_for_migration(std::chrono::seconds(60));
      r.set("value", seconds);
      if (auto ms = sent.total_time_ms) r.set("qemu_total_ms", *ms);
      if (auto ms = json_number(sent.reply, "downtime")) r.set("downtime_ms", *ms);
      if (auto ms = json_number(sent.reply, "setup-time")) r.set("setup_ms", *ms);
      if (!received.completed())
        error = "destination " + received.status +
                (received.error.empty() ? "" : " (" + received.error + ")");
      // Both are paused now (the source after completing, the destination
      // until resumed): the RAM that arrived must be the source's, byte for
      // byte, dirtied pages and all.
      if (error.empty()) {
        const std::string first = differing_pages(source_ram, dest_ram, ram_mib << 20);
        std::this_thread::sleep_for(std::chrono::seconds(2));
        const std::string second = differing_pages(source_ram, dest_ram, ram_mib << 20);
        if (!first.empty()) error = "destination RAM differs: " + first + "; 2 s later: " + second;
      }
      if (error.empty()) dest->resume();
      // The guest arrived alive: its counter carries on at the destination,
      // and once it has gone over its whole buffer again no page was stale.
      const size_t lines = std::max<size_t>(kLinesAfterArrival, busy_pass_seconds(load) + 1);
      const BusyCounters after = wait_for_busy_counters(
          dest_serial, lines, kArrivalCheckTimeout + std::chrono::seconds(lines));
      r.set("source_counter", static_cast<double>(before.last.value_or(0)))
          .set("destination_counter", static_cast<double>(after.last.value_or(0)))
          .set("stale_pages", static_cast<double>(after.stale));
      if (const std::string why = busy_continues(before, after, lines);
          error.empty() && !why.empty())
        error = "guest check: " + why;
    } else if (!not_converged.empty()) {
      // The migration was given up; the guest must still run at the source.
      const size_t lines = before.lines;
      if (wait_for_busy_counters(source_serial, lines + 2, kArrivalCheckTimeout).lines < lines + 2)
        error = not_converged + "; the guest stopped at the source afterwards";
    } else {
      error = "source " + sent.status + (sent.error.empty() ? "" : " (" + sent.error + ")") +
              (received.status.empty() ? "" : ", destination " + received.status);
    }

    source->quit();
    dest->quit();
    if (pair) {
      pair->stop();
      const std::string mode = xmig::bench::close_line_values(pair->a.log, "mode");
      r.set("config", r.text("config").value_or("xmig") + "-" + (mode.empty() ? "unknown" : mode));
    }
    if (!error.empty())
      r.set("qemu_logs",
            source->log() + "\n" + dest->log() + "\n" + (pair ? pair->logs() : std::string()));
  } catch (const std::exception& e) {
    error = e.what();
  }
  // Not converging is what was measured, not a failure of the run: ok stays
  // true, and the report lists it with the reason (no time to average).
  r.set("ok", error.empty());
  if (!error.empty())
    r.set("error", error);
  else if (!not_converged.empty())
    r.set("error", not_converged);
  std::cout << r.json() << std::endl;
  return error.empty() ? 0 : 1;
}

int run(const Options& o) {
  using namespace xmig::harness;
  const uint64_t bytes = o.ram_mib << 20;
  const size_t count = o.listen_uris.size();
  TempDir work("xmig-bench-qemu");
  RamDir ram(2 * count * bytes, o.work_dir.empty() ? work.path() : o.work_dir);

  std::vector<Measured> procs = measured_processes(o);

  Record r;
  r.set("suite", o.suite)
      .set("group", o.group.empty()
                        ? std::to_string(o.ram_mib) + " MiB, " + channels_text(o.multifd) +
                              (o.topology == "netns" ? ", netns + veth" : "")
                        : o.group)
      .set("config", config_label(o))
      .set("round", o.round)
      .set("unit", "s")
      .set("higher_is_better", false)
      .set("ram_mib", o.ram_mib)
      .set("multifd_channels", o.multifd)
      .set("topology", o.topology);
  if (count > 1) r.set("migrations", count);

  std::string error;
  Topology topology;
  std::optional<TunnelPair> pair;
  std::vector<Migration> migrations(count);
  try {
    if (o.topology == "netns") topology.lab.emplace();
    std::vector<std::string> send_uris;
    for (const auto& uri : o.send_uris) send_uris.push_back(topology.send_uri(uri));
    if (!o.xmig_tunnel.empty()) {
      pair.emplace(xmig_pair(o, topology, work / "xmig", send_uris));
      procs.push_back({"entry", pair->a.process->pid(), {}, {}});
      procs.push_back({"exit", pair->b.process->pid(), {}, {}});
    }
    for (size_t i = 0; i < count; ++i) {
      Migration& m = migrations[i];
      const std::string n = count > 1 ? "-" + std::to_string(i + 1) : "";
      m.source_ram = ram.path() / ("source" + n + ".ram");
      m.dest_ram = ram.path() / ("destination" + n + ".ram");
      create_random_file(m.source_ram, bytes, 0x786d6967 + o.ram_mib + i);
      create_zero_file(m.dest_ram, bytes);
      m.source = std::make_unique<QemuGuest>(QemuGuestConfig{.name = "source" + n,
                                                             .work_dir = work.path(),
                                                             .ram_file = m.source_ram,
                                                             .ram_mib = o.ram_mib,
                                                             .incoming = false,
                                                             .netns = topology.source_ns()});
      m.dest = std::make_unique<QemuGuest>(QemuGuestConfig{.name = "destination" + n,
                                                           .work_dir = work.path(),
                                                           .ram_file = m.dest_ram,
                                                           .ram_mib = o.ram_mib,
                                                           .incoming = true,
                                                           .netns = topology.dest_ns()});
      if (o.multifd > 0) {
        m.source->enable_multifd(o.multifd);
        m.dest->enable_multifd(o.multifd);
      }
      m.source->unlimit_bandwidth();
      if (!o.tls_server_dir.empty()) {
        enable_qemu_tls(*m.dest, o.tls_server_dir, true);
        enable_qemu_tls(*m.source, o.tls_client_dir, false);
      }
      m.dest->migrate_incoming(topology.listen_uri(o.listen_uris[i]));
    }

    std::vector<std::map<pid_t, double>> threads_before;
    for (auto& p : procs) {
      p.before = xmig::bench::sample(p.pid);
      threads_before.push_back(xmig::bench::thread_cpu_seconds(p.pid));
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < count; ++i) migrations[i].source->migrate(send_uris[i]);
    // Every side is watched: a destination that fails first (e.g. multifd
    // channels arriving in another order than the source opened them) can
    // leave its source waiting forever.
    const auto deadline = t0 + std::chrono::seconds(o.timeout);
    // Each migration's progress when the first one completed: its share of
    // the bytes while all of them competed.
    std::vector<double> progress_at_first;
    size_t running = count;
    while (running > 0 && std::chrono::steady_clock::now() <= deadline) {
      bool failed = false;
      for (Migration& m : migrations) {
        if (m.sent.finished()) continue;
        m.sent = m.source->query_migration();
        if (m.sent.finished()) {
          --running;
          m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (progress_at_first.empty() && count > 1)
            for (Migration& other : migrations)
              progress_at_first.push_back(ram_sent(&other == &m || other.sent.finished()
                                                       ? other.sent
                                                       : other.source->query_migration()));
          continue;
        }
        // The destination may complete a moment before the source does; only
        // its failure ends the wait early.
        m.received = m.dest->query_migration();
        failed = failed || m.received.status == "failed" || m.received.status == "cancelled";
      }
      if (failed) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    double drain = 0;
    for (Migration& m : migrations) drain = std::max(drain, m.seconds.value_or(0));
    if (running > 0)
      drain = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<std::vector<double>> thread_cpu(procs.size());
    std::vector<double> balance(procs.size());
    for (size_t k = 0; k < procs.size(); ++k) {
      procs[k].after = xmig::bench::sample(procs[k].pid);
      balance[k] = xmig::bench::thread_balance(threads_before[k],
                                               xmig::bench::thread_cpu_seconds(procs[k].pid),
                                               o.balance_threads, &thread_cpu[k]);
    }

    for (size_t i = 0; i < count; ++i) {
      Migration& m = migrations[i];
      if (m.sent.completed() && !m.received.finished())
        m.received = m.dest->wait_for_migration(std::chrono::seconds(60));
      else if (!m.sent.completed() && m.received.status.empty())
        m.received = m.dest->query_migration();
      const std::string which = count > 1 ? "migration " + std::to_string(i + 1) + ": " : "";
      if (error.empty() && (!m.sent.completed() || !m.received.completed()))
        error = which + "source " + m.sent.status +
                (m.sent.error.empty() ? "" : " (" + m.sent.error + ")") +
                // An incoming migration that failed may report no status at all.
                (m.received.status.empty()
                     ? ""
                     : ", destination " + m.received.status +
                           (m.received.error.empty() ? "" : " (" + m.received.error + ")"));
      m.multifd_bytes = json_number(m.sent.reply, "multifd-bytes").value_or(0);
      if (error.empty() && o.multifd > 0 && m.multifd_bytes < static_cast<double>(bytes) / 2)
        error = which + "multifd carried only " + std::to_string(m.multifd_bytes) + " bytes";
    }

    const double total_gb = static_cast<double>(count * bytes) / 1e9;
    r.set("value", drain).set("seconds", drain).set("gbps", total_gb / drain);
    if (count == 1) {
      if (migrations[0].sent.total_time_ms)
        r.set("qemu_total_ms", *migrations[0].sent.total_time_ms);
      r.set("multifd_bytes", migrations[0].multifd_bytes);
    } else {
      std::vector<double> seconds, rates;
      for (const Migration& m : migrations) {
        seconds.push_back(m.seconds.value_or(drain));
        rates.push_back(static_cast<double>(bytes) / 1e9 / seconds.back());
      }
      r.set("gbps_aggregate", total_gb / drain)
          .set("migration_seconds", joined(seconds, 2))
          .set("migration_gbps", joined(rates, 3));
      if (!progress_at_first.empty()) {
        const auto [lo, hi] =
            std::minmax_element(progress_at_first.begin(), progress_at_first.end());
        r.set("fairness_jain", jain_index(progress_at_first))
            .set("share_min_max", *hi > 0 ? *lo / *hi : 0)
            .set("shares_at_first_completion", joined(progress_at_first, 0));
      }
    }
    double cpu = 0;
    for (size_t k = 0; k < procs.size(); ++k) {
      const Measured& p = procs[k];
      cpu += p.cpu_seconds();
      r.set(p.name + "_cpu_s", p.cpu_seconds());
      r.set(p.name + "_cpu_s_per_gb", p.cpu_seconds() / total_gb);
      r.set(p.name + "_peak_rss_mib", static_cast<double>(p.after.peak_rss_kib) / 1024);
      if (o.balance_threads > 0) {
        r.set(p.name + "_thread_balance", balance[k]);
        r.set(p.name + "_thread_cpu_s", joined(thread_cpu[k], 2));
      }
    }
    if (!procs.empty()) r.set("cpu_s_per_gb", cpu / total_gb);
    if (o.balance_threads > 0 && !procs.empty()) {
      double worst = 1;
      for (double b : balance) worst = std::min(worst, b);
      r.set("thread_balance", worst);
    }

    // Both QEMUs exit before the files are compared, so every page is written
    // back and unmapped.
    std::string logs;
    for (Migration& m : migrations) {
      m.source->quit();
      m.dest->quit();
    }
    // The close lines (with the data path's mode) are all written once QEMU
    // has closed its connections and the pair has drained.
    if (pair) {
      pair->stop();
      const std::string mode = xmig::bench::close_line_values(pair->a.log, "mode");
      r.set("config", r.text("config").value_or("xmig") + "-" + (mode.empty() ? "unknown" : mode));
    }
    for (size_t i = 0; i < count; ++i) {
      Migration& m = migrations[i];
      if (error.empty() && !same_contents(m.source_ram, m.dest_ram, bytes))
        error = (count > 1 ? "migration " + std::to_string(i + 1) + ": " : std::string()) +
                "destination RAM differs from the source's";
      if (!error.empty() && logs.size() < 64 * 1024)
        logs += m.source->log() + "\n" + m.dest->log() + "\n";
    }
    if (!error.empty()) r.set("qemu_logs", logs + (pair ? pair->logs() : std::string()));
  } catch (const std::exception& e) {
    error = e.what();
  }
  r.set("ok", error.empty());
  if (!error.empty()) r.set("error", error);
  std::cout << r.json() << std::endl;
  return error.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "xmig-bench-qemu: migrates a paused QEMU guest whose RAM is random bytes from a source\n"
      "QEMU to a destination QEMU over the path you give, times it (migrate command to both\n"
      "sides completed), compares the two RAM files byte for byte, and prints one JSON line.\n"
      "Processes given with --pid (the path's relays) are measured: CPU-s per GB, peak RSS.\n\n"
      "  direct:    --listen-uri tcp:127.0.0.1:P --send-uri tcp:127.0.0.1:P\n"
      "  a relay:   --listen-uri tcp:127.0.0.1:EXIT_TARGET --send-uri tcp:127.0.0.1:ENTRY\n"
      "  QEMU TLS:  add --tls-server-dir DIR_B --tls-client-dir DIR_A (libvirt layout, as\n"
      "             written by xmig-certs issue; the certificates must name 127.0.0.1)"};
  Options o;
  app.add_option("--ram-mib", o.ram_mib, "Guest RAM in MiB")->capture_default_str();
  app.add_option("--multifd", o.multifd, "multifd channels (0: one stream)")->capture_default_str();
  app.add_option("--listen-uri", o.listen_uris,
                 "Destination: migrate-incoming URI (repeat it for K migrations at once)")
      ->required();
  app.add_option("--send-uri", o.send_uris,
                 "Source: migrate URI (one per --listen-uri; not with --xmig)");
  app.add_option("--xmig", o.xmig_tunnel,
                 "Migrate through an xmig pair of our own, started with this xmig-tunnel: "
                 "migration i enters hv-a on a TCP route of its own (channel mig-<i>) and hv-b "
                 "delivers it to its --listen-uri (tcp:HOST:PORT); both ends are measured");
  app.add_option("--tls-toml", o.tls_toml, "With --xmig: lines for both [tls] tables");
  app.add_option("--workers", o.workers, "With --xmig: worker threads (0: one per core)");
  app.add_option("--balance-threads", o.balance_threads,
                 "Report how evenly the busiest N threads of each measured process shared its "
                 "CPU (thread_balance: least busy / busiest)");
  app.add_option("--topology", o.topology,
                 "loopback, or netns: sources and hv-a in one network namespace, destinations "
                 "and hv-b in another, joined by a veth pair (root); URIs are given as for "
                 "loopback")
      ->check(CLI::IsMember({"loopback", "netns"}))
      ->capture_default_str();
  app.add_option("--suite", o.suite, "Suite name in the output")->capture_default_str();
  app.add_option("--tls-server-dir", o.tls_server_dir, "Destination's tls-creds-x509 directory");
  app.add_option("--tls-client-dir", o.tls_client_dir, "Source's tls-creds-x509 directory");
  app.add_option("--pid", o.pids, "NAME=PID of a relay process to measure (repeatable)");
  app.add_option("--label", o.label,
                 "Config name in the output (default: direct, or xmig-<mode> with --xmig)");
  app.add_option("--group", o.group, "Group name in the output (default: RAM and channels)");
  app.add_option("--round", o.round, "Round number in the output");
  app.add_option("--timeout", o.timeout, "Seconds before the migration counts as failed")
      ->capture_default_str();
  app.add_option("--ram-dir", o.work_dir,
                 "Where the RAM files go when /dev/shm is too small (default: a temp dir)");
  app.add_option("--busy-mib", o.busy_mib,
                 "A busy guest instead of the paused one: it dirties this many MiB of its RAM "
                 "over and over (one migration; no RAM comparison: its counter must carry on at "
                 "the destination; --ram-mib is ignored)");
  app.add_option("--dirty-rate", o.dirty_rate, "With --busy-mib: MiB the guest dirties per second")
      ->capture_default_str();
  app.add_option("--downtime-limit-ms", o.downtime_limit_ms,
                 "With --busy-mib: QEMU's downtime-limit (a migration completes once the rest "
                 "fits in it; past --timeout it is cancelled: not converged)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (o.busy_mib > 0 && (o.listen_uris.size() != 1 || o.topology != "loopback")) {
    std::cerr << "xmig-bench-qemu: --busy-mib runs one migration on loopback\n";
    return 2;
  }
  if (o.tls_server_dir.empty() != o.tls_client_dir.empty()) {
    std::cerr << "xmig-bench-qemu: --tls-server-dir and --tls-client-dir go together\n";
    return 2;
  }
  if (o.xmig_tunnel.empty() ? o.send_uris.size() != o.listen_uris.size() : !o.send_uris.empty()) {
    std::cerr << "xmig-bench-qemu: give one --send-uri per --listen-uri, or --xmig\n";
    return 2;
  }
  try {
    return o.busy_mib > 0 ? run_busy(o) : run(o);
  } catch (const std::exception& e) {
    std::cerr << "xmig-bench-qemu: " << e.what() << "\n";
    return 2;
  }
}
