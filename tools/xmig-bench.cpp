// xmig-bench: measures a migration path end to end. Wires bench/ (load
// generation, process measurement, the relay, the report) and harness/
// (xmig's two ends) to the command line; nothing else.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "bench/channels.hpp"
#include "bench/load.hpp"
#include "bench/measure.hpp"
#include "bench/record.hpp"
#include "bench/relay.hpp"
#include "harness/files.hpp"
#include "harness/netns.hpp"
#include "harness/tunnel_pair.hpp"

namespace {

using namespace xmig::bench;
using xmig::harness::TempDir;
using xmig::harness::TunnelPair;
using xmig::harness::TunnelPairOptions;
namespace fs = std::filesystem;

// ---- Signals -------------------------------------------------------------------

// SIGINT/SIGTERM: subcommands that serve (relay, pair) stop cleanly; a
// measurement run stops the tunnels it started before exiting.
std::atomic<bool> g_stop{false};
std::atomic<pid_t> g_children[2] = {0, 0};

void on_signal(int) {
  g_stop = true;
}

// A measurement run exits at once, but not before asking the tunnels it
// started to stop (they live in their own process groups).
void on_signal_exit(int sig) {
  for (auto& c : g_children)
    if (pid_t p = c.load(); p > 0) ::kill(p, SIGTERM);
  ::_exit(128 + sig);
}

void install_signals(bool exit_on_signal) {
  struct sigaction sa {};
  sa.sa_handler = exit_on_signal ? on_signal_exit : on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

// ---- Helpers -------------------------------------------------------------------

// "4G", "512M", "100000": binary suffixes (K, M, G, T).
uint64_t parse_size(const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  const std::string suffix = end;
  static const std::map<std::string, uint64_t> kUnits = {{"", 1},
                                                         {"K", 1ull << 10},
                                                         {"M", 1ull << 20},
                                                         {"G", 1ull << 30},
                                                         {"T", 1ull << 40},
                                                         {"KiB", 1ull << 10},
                                                         {"MiB", 1ull << 20},
                                                         {"GiB", 1ull << 30},
                                                         {"TiB", 1ull << 40}};
  auto it = kUnits.find(suffix);
  if (end == text.c_str() || it == kUnits.end() || v <= 0)
    throw CLI::ValidationError("--bytes",
                               "'" + text + "': expected a size like 1G, 512M or 1048576");
  return static_cast<uint64_t>(v * static_cast<double>(it->second));
}

// The xmig-tunnel next to this binary (as the build and the install lay them out).
fs::path default_tunnel() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("xmig-tunnel") : self.parent_path() / "xmig-tunnel";
}

// xmig's two ends as the bench runs them: info logs (one line per connection,
// nothing per byte), the channel qemu, which hv-b delivers to `target` and hv-a
// takes at `entry` (a [[route]]: HOST:PORT or unix:PATH) or, when that is
// empty, at its UNIX entry socket.
TunnelPairOptions pair_options(const fs::path& dir, const fs::path& tunnel,
                               const std::string& target, const std::string& entry,
                               unsigned workers, const std::string& extra_toml,
                               const std::string& tls_toml) {
  TunnelPairOptions po{.b_targets = {{"qemu", target}},
                       .top_toml = "workers = " + std::to_string(workers) + "\n" + extra_toml,
                       .tls_toml = tls_toml,
                       .log_level = "info",
                       .dir = dir,
                       .tunnel = tunnel};
  if (!entry.empty()) po.a_routes = {{entry, "qemu"}};
  return po;
}

// Where a client reaches hv-a, in bench's endpoint spelling.
std::string entry_of(const TunnelPair& pair, const std::string& entry) {
  return entry.empty() ? "unix:" + pair.entry("qemu").string() : entry;
}

double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// A progress bar on stdout, only when a person is watching it.
class ProgressBar {
 public:
  ProgressBar(uint64_t total, bool enabled)
      : total_(total), enabled_(enabled), start_(std::chrono::steady_clock::now()) {}
  void update(uint64_t done) {
    if (!enabled_) return;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double frac = total_ ? static_cast<double>(done) / static_cast<double>(total_) : 1;
    const int width = 40, filled = static_cast<int>(frac * width);
    std::printf("\r  [%s%s] %3.0f%%  %.2f GB/s ", std::string(filled, '#').c_str(),
                std::string(width - filled, '.').c_str(), frac * 100,
                secs > 0 ? static_cast<double>(done) / secs / 1e9 : 0.0);
    std::fflush(stdout);
  }
  void finish() {
    if (enabled_) std::printf("\n");
  }

 private:
  uint64_t total_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

// ---- The measurement -------------------------------------------------------------

struct RunOptions {
  std::string connect, sink_listen;
  std::vector<std::string> pids;  // NAME=PID
  unsigned streams = 1;
  std::string bytes = "1G";
  unsigned handshakes = 200, handshake_concurrency = 4;
  bool json = false;
  StreamOptions::Role role = StreamOptions::Role::Both;
  std::string label, group;
  int round = 0;
  fs::path tunnel = default_tunnel();
  std::string entry = "tcp";
  unsigned workers = 0;
  std::string extra_toml, tls_toml;
  bool keep = false;
  unsigned timeout = 600;
  // Two hosts in one process: the source (and the path's entry) in one network
  // namespace, the sink (and the exit) in the other (`xmig-bench netns`).
  fs::path netns_info;
};

std::vector<Measured> parse_pids(const std::vector<std::string>& specs) {
  std::vector<Measured> out;
  for (const auto& spec : specs) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0)
      throw CLI::ValidationError("--pid", "'" + spec + "': expected NAME=PID, e.g. entry=1234");
    out.push_back({spec.substr(0, eq), static_cast<pid_t>(std::stol(spec.substr(eq + 1))), {}, {}});
  }
  return out;
}

// Sets "<name>_cpu_s", "<name>_cpu_s_per_gb", "<name>_peak_rss_mib" and the
// sum over all measured processes as "cpu_s_per_gb".
void add_costs(Record& r, const std::vector<Measured>& procs, double gigabytes) {
  double total = 0;
  for (const auto& p : procs) {
    total += p.cpu_seconds();
    r.set(p.name + "_cpu_s", p.cpu_seconds());
    if (gigabytes > 0) r.set(p.name + "_cpu_s_per_gb", p.cpu_seconds() / gigabytes);
    r.set(p.name + "_peak_rss_mib", static_cast<double>(p.after.peak_rss_kib) / 1024);
  }
  if (!procs.empty() && gigabytes > 0) r.set("cpu_s_per_gb", total / gigabytes);
}

void print_text(const Record& r, const std::vector<Measured>& procs) {
  if (r.text("suite") == "stream") {
    const bool at_source = r.text("measured_at") == "source";
    std::printf("%s: %.3f GB in %.3f s = %.3f GB/s %s, %u stream(s)%s\n", r.text("config")->c_str(),
                *r.number("bytes") / 1e9, *r.number("seconds"), *r.number("value"),
                at_source ? "sent (until the remote sink closed)" : "at the sink",
                static_cast<unsigned>(*r.number("streams")),
                !r.flag("ok").value() ? " — FAILED"
                : at_source           ? ""
                                      : ", every byte verified");
  } else {
    std::printf(
        "%s: %u connections in %.3f s = %.1f connections/s; latency p50 %.2f ms, "
        "p90 %.2f ms, p99 %.2f ms, max %.2f ms%s\n",
        r.text("config")->c_str(), static_cast<unsigned>(*r.number("connections")),
        *r.number("seconds"), *r.number("value"), *r.number("p50_ms"), *r.number("p90_ms"),
        *r.number("p99_ms"), *r.number("max_ms"), r.flag("ok").value() ? "" : " — FAILED");
  }
  for (const auto& p : procs) {
    std::printf("  %-6s pid %-7d CPU %.3f s", p.name.c_str(), p.pid, p.cpu_seconds());
    if (auto v = r.number(p.name + "_cpu_s_per_gb")) std::printf(" = %.3f CPU-s/GB", *v);
    if (auto v = r.number(p.name + "_cpu_ms_per_conn")) std::printf(" = %.3f CPU-ms/conn", *v);
    std::printf(", peak RSS %.1f MiB\n", static_cast<double>(p.after.peak_rss_kib) / 1024);
  }
  if (auto e = r.text("error"); e && !e->empty()) std::printf("  error: %s\n", e->c_str());
}

int run(const RunOptions& o) {
  const uint64_t bytes = parse_size(o.bytes);
  std::vector<Measured> procs = parse_pids(o.pids);
  using Role = StreamOptions::Role;
  const bool self_start = o.connect.empty() && o.role == Role::Both;
  if (!self_start && o.role == Role::Both && o.sink_listen.empty())
    throw CLI::ValidationError("--sink-listen",
                               "required with --connect: where the path under test delivers "
                               "(or --remote-sink when `xmig-bench sink` runs on the far host)");
  if (o.role == Role::SourceOnly && o.connect.empty())
    throw CLI::ValidationError("--remote-sink", "needs --connect: the entry of the path");

  std::optional<xmig::harness::NetnsNames> lab;
  if (!o.netns_info.empty()) {
    if (o.role != Role::Both)
      throw CLI::ValidationError("--netns",
                                 "puts both ends in one process; not with sink/--remote-sink");
    lab = xmig::harness::read_lab_info(o.netns_info);
  }
  // The sink listens first, so the path's exit can connect to it; its socket
  // stays in the exit's namespace.
  std::optional<Listener> sink;
  if (o.role != Role::SourceOnly) {
    xmig::harness::ScopedNetns on_exit_host(lab ? lab->b : "");
    sink.emplace(parse_endpoint(o.sink_listen.empty() ? "127.0.0.1:0" : o.sink_listen));
  }
  std::optional<TempDir> dir;  // declared first: removed after the pair has stopped
  std::optional<TunnelPair> pair;
  std::string pair_route;
  if (self_start) {
    dir.emplace("xmig-bench");
    if (o.keep) dir->keep();
    if (o.entry == "tcp") pair_route = "127.0.0.1:" + std::to_string(xmig::harness::free_port());
    TunnelPairOptions po = pair_options(dir->path(), o.tunnel, sink->endpoint().str(), pair_route,
                                        o.workers, o.extra_toml, o.tls_toml);
    if (lab) {  // hv-a with the source, hv-b with the sink, TLS over the veth pair
      po.a_netns = lab->a;
      po.b_netns = lab->b;
      po.a_host = lab->a_ip;
      po.b_host = lab->b_ip;
    }
    pair.emplace(po);
    const pid_t entry_pid = pair->a.process->pid(), exit_pid = pair->b.process->pid();
    g_children[0] = entry_pid;
    g_children[1] = exit_pid;
    procs.insert(procs.begin(), {{"entry", entry_pid, {}, {}}, {"exit", exit_pid, {}, {}}});
  }
  const Endpoint entry = o.role == Role::SinkOnly
                             ? Endpoint{}
                             : parse_endpoint(self_start ? entry_of(*pair, pair_route) : o.connect);
  const Pattern pattern;
  // From here on this thread, and the source's threads it starts, connect
  // from the entry's namespace.
  xmig::harness::ScopedNetns on_entry_host(lab ? lab->a : "");

  // Throughput: CPU and RSS are read right before and after the transfer.
  for (auto& p : procs) p.before = sample(p.pid);
  const double self_before = self_cpu_seconds();
  ProgressBar bar(bytes, !o.json && ::isatty(STDOUT_FILENO));
  StreamOptions so;
  so.role = o.role;
  so.connect = entry;
  so.streams = o.streams;
  so.bytes = bytes;
  so.timeout = std::chrono::seconds(o.timeout);
  so.progress = [&](uint64_t done) { bar.update(done); };
  const StreamResult sr = run_streams(so, sink ? &*sink : nullptr, pattern);
  bar.finish();
  for (auto& p : procs) p.after = sample(p.pid);
  const double self_cpu = self_cpu_seconds() - self_before;
  std::vector<Measured> stream_procs = procs;

  // Handshakes: connections/s through the entry, each carrying 16 bytes.
  std::optional<HandshakeResult> hr;
  std::vector<Measured> hs_procs = procs;
  if (o.handshakes > 0 && sr.error.empty() && o.role == Role::Both) {
    for (auto& p : hs_procs) p.before = sample(p.pid);
    HandshakeOptions ho;
    ho.connect = entry;
    ho.connections = o.handshakes;
    ho.concurrency = o.handshake_concurrency;
    ho.timeout = std::chrono::seconds(o.timeout);
    hr = run_handshakes(ho, *sink);
    for (auto& p : hs_procs) p.after = sample(p.pid);
  }

  // What the tunnel says it did: data-path mode and cipher from its close lines.
  std::string label = o.label, mode, cipher;
  if (pair) {
    pair->stop();
    g_children[0] = g_children[1] = 0;
    mode = close_line_values(pair->a.log, "mode");
    cipher = close_line_values(pair->a.log, "cipher");
    if (label.empty()) label = "xmig-" + (mode.empty() ? std::string("unknown") : mode);
  }
  if (label.empty()) label = "external";

  // Across the namespaces is a group of its own (beside the same on loopback).
  const std::string topology = lab ? ", netns + veth" : "";
  Record r;
  r.set("suite", "stream")
      .set("group", o.group.empty() ? std::to_string(o.streams) +
                                          (o.streams == 1 ? " stream" : " streams") + topology
                                    : o.group)
      .set("config", label)
      .set("round", o.round)
      .set("ok", sr.error.empty())
      .set("value", sr.gbps())
      .set("unit", "GB/s")
      .set("higher_is_better", true)
      .set("streams", o.streams)
      .set("bytes", sr.bytes)
      .set("seconds", sr.seconds)
      .set("connect_ms", sr.connect_seconds * 1e3)
      .set("load_cpu_s", self_cpu);
  if (o.role != Role::Both) r.set("measured_at", o.role == Role::SinkOnly ? "sink" : "source");
  if (!mode.empty()) r.set("mode", mode);
  if (!cipher.empty()) r.set("cipher", cipher);
  add_costs(r, stream_procs, static_cast<double>(sr.bytes) / 1e9);
  if (!sr.error.empty()) r.set("error", sr.error);

  std::optional<Record> h;
  if (hr) {
    h.emplace();
    h->set("suite", "handshake")
        .set("group", "connections through the entry, 16 bytes each, " +
                          std::to_string(o.handshake_concurrency) + " at a time" + topology)
        .set("config", label)
        .set("round", o.round)
        .set("ok", hr->error.empty() && hr->completed == o.handshakes)
        .set("value", hr->per_second())
        .set("unit", "conn/s")
        .set("higher_is_better", true)
        .set("connections", hr->completed)
        .set("seconds", hr->seconds)
        .set("p50_ms", hr->p50_ms)
        .set("p90_ms", hr->p90_ms)
        .set("p99_ms", hr->p99_ms)
        .set("max_ms", hr->max_ms);
    double cpu_s = 0;
    for (const auto& p : hs_procs) {
      cpu_s += p.cpu_seconds();
      h->set(p.name + "_cpu_s", p.cpu_seconds());
      if (hr->completed) h->set(p.name + "_cpu_ms_per_conn", p.cpu_seconds() * 1e3 / hr->completed);
    }
    // Both ends per connection: what bench/compare's handshake table shows.
    if (hr->completed && !hs_procs.empty()) h->set("cpu_ms_per_conn", cpu_s * 1e3 / hr->completed);
    if (!hr->error.empty()) h->set("error", hr->error);
  }

  if (o.json) {
    std::cout << r.json() << "\n";
    if (h) std::cout << h->json() << "\n";
  } else {
    print_text(r, stream_procs);
    if (h) print_text(*h, hs_procs);
    if (pair && o.keep)
      std::cout << "tunnel configs, certificates and logs: " << dir->path() << "\n";
  }
  const bool ok = sr.error.empty() && (!h || h->flag("ok").value());
  return ok ? 0 : 1;
}

// ---- Channel setup ----------------------------------------------------------------

struct ChannelsOptions {
  std::vector<std::string> tunnels;  // LABEL=PATH; default: xmig=<the tunnel next to this binary>
  std::vector<unsigned> counts{1, 4, 8, 16};
  unsigned rounds = 5, repeat = 10;
  unsigned workers = 0;
  std::string tls_toml;
  bool json = false;
  unsigned timeout = 60;
  double link_delay_ms = 0;  // one way, between hv-a and hv-b (a delaying relay)
};

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Each round starts a pair of every tunnel in turn (the order rotates from
// round to round) and measures channel setup `repeat` times for each count;
// one record per tunnel, count and round (the median of its repeats); then a
// table of the medians over the rounds and each count's cost against 1 channel.
int run_channels(const ChannelsOptions& o) {
  std::vector<std::pair<std::string, fs::path>> tunnels;
  for (const auto& spec : o.tunnels) {
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0)
      throw CLI::ValidationError("--tunnel", "'" + spec + "': expected LABEL=PATH");
    tunnels.emplace_back(spec.substr(0, eq), spec.substr(eq + 1));
  }
  if (tunnels.empty()) tunnels.emplace_back("xmig", default_tunnel());
  // label -> count -> per-round medians in ms
  std::map<std::string, std::map<unsigned, std::vector<double>>> medians, cpu;
  for (unsigned round = 1; round <= o.rounds; ++round)
    for (size_t k = 0; k < tunnels.size(); ++k) {
      const auto& [label, path] = tunnels[(k + round) % tunnels.size()];
      Listener sink(parse_endpoint("127.0.0.1:0"));
      TempDir dir("xmig-bench");
      TunnelPairOptions po =
          pair_options(dir.path(), path, sink.endpoint().str(), "", o.workers, "", o.tls_toml);
      const auto delay = std::chrono::microseconds(static_cast<int64_t>(o.link_delay_ms * 1e3));
      if (delay.count() > 0) po.a_dials = "127.0.0.1:" + std::to_string(xmig::harness::free_port());
      TunnelPair pair(po);
      // The link between the two ends, with its latency, when asked for.
      std::atomic<bool> link_stop{false};
      std::optional<std::thread> link;
      if (delay.count() > 0) {
        const RelayOptions link_options{
            .listen = parse_endpoint(po.a_dials),
            .connect = parse_endpoint("127.0.0.1:" + std::to_string(pair.b.port)),
            .splice = false,
            .delay = delay};
        link.emplace([link_options, &link_stop] { run_relay(link_options, link_stop); });
        // Time for its listener to come up (a dial before that fails the run, visibly).
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      g_children[0] = pair.a.process->pid();
      g_children[1] = pair.b.process->pid();
      const Endpoint entry = parse_endpoint(entry_of(pair, ""));
      for (unsigned n : o.counts) {
        std::vector<double> ms;
        std::string error;
        const double cpu_before =
            sample(pair.a.process->pid()).cpu_seconds + sample(pair.b.process->pid()).cpu_seconds;
        for (unsigned rep = 0; rep < o.repeat && error.empty(); ++rep) {
          const auto r = run_channel_setup(
              {.connect = entry, .channels = n, .timeout = std::chrono::seconds(o.timeout)}, sink);
          error = r.error;
          if (error.empty()) ms.push_back(r.seconds * 1e3);
          // The last run's streams close before the next starts.
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        // Both ends' CPU per channel, closes included (the pause lets them happen).
        const double cpu_ms_per_channel = (sample(pair.a.process->pid()).cpu_seconds +
                                           sample(pair.b.process->pid()).cpu_seconds - cpu_before) *
                                          1e3 / (n * std::max<size_t>(ms.size(), 1));
        Record rec;
        rec.set("suite", "channel setup")
            .set("group", std::to_string(n) + (n == 1 ? " channel" : " channels") +
                              (delay.count() > 0
                                   ? ", link " + std::to_string(o.link_delay_ms) + " ms each way"
                                   : ""))
            .set("config", label)
            .set("round", round)
            .set("ok", error.empty())
            .set("value", median_of(ms))
            .set("unit", "ms")
            .set("higher_is_better", false)
            .set("channels", n)
            .set("repeats", static_cast<unsigned>(ms.size()))
            .set("cpu_ms_per_channel", cpu_ms_per_channel);
        if (!ms.empty())
          rec.set("min_ms", *std::min_element(ms.begin(), ms.end()))
              .set("max_ms", *std::max_element(ms.begin(), ms.end()));
        if (!error.empty()) rec.set("error", error);
        if (error.empty()) {
          medians[label][n].push_back(median_of(ms));
          cpu[label][n].push_back(cpu_ms_per_channel);
        }
        if (o.json)
          std::cout << rec.json() << std::endl;
        else if (error.empty())
          std::printf(
              "round %u %-10s %2u channel(s): %.2f ms (median of %zu), %.2f CPU-ms per "
              "channel (both ends)\n",
              round, label.c_str(), n, median_of(ms), ms.size(), cpu_ms_per_channel);
        else
          std::printf("round %u %-10s %2u channel(s): FAILED: %s\n", round, label.c_str(), n,
                      error.c_str());
        std::fflush(stdout);
      }
      pair.stop();
      g_children[0] = g_children[1] = 0;
      link_stop = true;
      if (link) link->join();
    }
  if (o.json) return 0;
  std::printf("\n| tunnel |");
  for (unsigned n : o.counts) std::printf(" N = %u: ms (CPU-ms/channel) |", n);
  std::printf(" N = %u vs N = %u [per round] |\n|---|", o.counts.back(), o.counts.front());
  for (size_t i = 0; i <= o.counts.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (const auto& [label, path] : tunnels) {
    auto& by_count = medians[label];
    std::printf("| %s |", label.c_str());
    for (unsigned n : o.counts)
      std::printf(" %.2f (%.2f) |", median_of(by_count[n]), median_of(cpu[label][n]));
    const auto& first = by_count[o.counts.front()];
    const auto& last = by_count[o.counts.back()];
    std::vector<double> ratios;
    for (size_t i = 0; i < std::min(first.size(), last.size()); ++i)
      if (first[i] > 0) ratios.push_back(last[i] / first[i]);
    std::string rounds;
    for (double r : ratios) rounds += (rounds.empty() ? "" : " ") + std::to_string(r).substr(0, 4);
    std::printf(" %.2fx [%s] |\n", median_of(ratios), rounds.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "xmig-bench: measures a migration path end to end, with data it checks.\n\n"
      "A source pushes incompressible data over N parallel streams into the path's entry; a\n"
      "sink at the path's far end verifies every byte (each 64 KiB chunk names its stream and\n"
      "position; payload is compared against a random pool) and the throughput is what the\n"
      "sink received per second (GB = 10^9 bytes). For every measured process it reports CPU\n"
      "seconds per GB (utime+stime from /proc/PID/stat, all threads) and peak RSS (VmHWM).\n"
      "Then it measures the handshake rate: connections through the entry, each carrying 16\n"
      "bytes to the sink and waiting for the sink to close, with the connect latency of each\n"
      "(p50/p90/p99/max: connect() to the sink's close arriving back, TLS handshakes included).\n\n"
      "Without --connect it starts two xmig-tunnel ends itself on loopback (hv-a = entry,\n"
      "hv-b = exit) with a fresh CA and certificates, and measures those:\n"
      "  client -> hv-a ==TLS 1.3==> hv-b -> sink\n"
      "With --connect it measures any path you started (stunnel, HAProxy, xmig on two hosts):\n"
      "  xmig-bench --connect 127.0.0.1:7001 --sink-listen 127.0.0.1:7003 \\\n"
      "             --pid entry=$(pidof ...) --pid exit=... --streams 4 --bytes 4G\n\n"
      "Subcommands serve the side-by-side comparison (bench/compare): `relay` (a plain TCP\n"
      "relay, the floor), `pair` (keep an xmig pair running for another tool), `report`; and\n"
      "`sink`, the far end of a measurement between two hosts."};
  app.require_subcommand(0, 1);

  RunOptions o;
  app.add_option("--connect", o.connect,
                 "Entry of the path under test: HOST:PORT or unix:PATH (default: start an xmig "
                 "pair here)");
  app.add_option("--sink-listen", o.sink_listen,
                 "Where the sink listens, i.e. where the path delivers (required with --connect; "
                 "default 127.0.0.1 on a free port)");
  bool remote_sink = false;
  app.add_flag("--remote-sink", remote_sink,
               "Send only: the sink is `xmig-bench sink` on the far host (between two hosts); "
               "the time runs until the far end closed every stream");
  app.add_option("--pid", o.pids,
                 "NAME=PID of a process to measure (repeatable), e.g. entry=1234 exit=1240; the "
                 "ends it starts itself are measured as entry and exit");
  app.add_option("-n,--streams", o.streams, "Parallel streams")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_option("-b,--bytes", o.bytes, "Bytes over all streams (K, M, G, T: binary)")
      ->capture_default_str();
  app.add_option("--handshakes", o.handshakes, "Connections for the handshake test; 0 skips it")
      ->capture_default_str();
  app.add_option("--handshake-concurrency", o.handshake_concurrency,
                 "Connections in flight at once during the handshake test")
      ->check(CLI::Range(1u, 256u))
      ->capture_default_str();
  app.add_flag("--json", o.json,
               "Print one flat JSON object per measurement (stream, handshake) on stdout");
  app.add_option("--label", o.label,
                 "Name of the path in the output (default: xmig-<mode> from the tunnel's close "
                 "lines, or 'external')");
  app.add_option("--group", o.group, "Group name in the output (default: 'N streams')");
  app.add_option("--round", o.round, "Round number in the output (bench/compare)");
  app.add_option("--timeout", o.timeout, "Seconds before a run is abandoned")
      ->capture_default_str();
  auto* own = app.add_option_group("xmig pair", "When xmig-bench starts the two tunnel ends");
  own->add_option("--tunnel", o.tunnel, "xmig-tunnel binary")->capture_default_str();
  own->add_option("--entry", o.entry,
                  "hv-a's entry: tcp (a [[route]] on 127.0.0.1) or unix (its "
                  "<run_dir>/hv-b/qemu.sock)")
      ->check(CLI::IsMember({"tcp", "unix"}))
      ->capture_default_str();
  own->add_option("--workers", o.workers, "Tunnel worker threads (0: one per core)")
      ->capture_default_str();
  own->add_option("--tunnel-toml", o.extra_toml,
                  "Top-level TOML lines added to both tunnel configs (e.g. workers = 1)");
  own->add_option("--tls-toml", o.tls_toml,
                  "TOML lines added to both [tls] tables, e.g. 'ktls = \"off\"' to force the "
                  "userspace data path");
  own->add_flag("--keep", o.keep, "Keep the tunnels' directory (configs, certificates, logs)");
  app.add_option("--netns", o.netns_info,
                 "Two hosts joined by a veth pair, in this process: the source (and an xmig "
                 "pair's hv-a) in one network namespace, the sink (and hv-b) in the other, as "
                 "written by `xmig-bench netns --info FILE` (root); --connect and --sink-listen "
                 "are then addresses in those namespaces");

  // sink
  auto* sink_cmd = app.add_subcommand(
      "sink",
      "The far end of a measurement between two hosts: accept --streams streams of --bytes in "
      "all, verify every byte, report GB/s at the sink (first connection to last byte) and the "
      "cost of local --pid processes (e.g. the exit tunnel). Start it before the source:\n"
      "  host B: xmig-bench sink --listen 10.0.0.2:7003 --streams 4 --bytes 8G --pid exit=PID\n"
      "  host A: xmig-bench --connect 127.0.0.1:7001 --remote-sink --streams 4 --bytes 8G "
      "--pid entry=PID");
  std::string sink_listen;
  sink_cmd->add_option("--listen", sink_listen, "HOST:PORT or unix:PATH")->required();
  sink_cmd->add_option("-n,--streams", o.streams, "Streams to expect")->capture_default_str();
  sink_cmd->add_option("-b,--bytes", o.bytes, "Bytes over all streams (as the source's --bytes)")
      ->capture_default_str();
  sink_cmd->add_option("--pid", o.pids, "NAME=PID of a local process to measure (repeatable)");
  sink_cmd->add_flag("--json", o.json, "Print one flat JSON object");
  sink_cmd->add_option("--label", o.label, "Name of the path in the output");
  sink_cmd->add_option("--timeout", o.timeout, "Seconds before the run is abandoned")
      ->capture_default_str();

  // relay
  auto* relay = app.add_subcommand(
      "relay",
      "A plain TCP relay with no crypto (one hop); two in a row are the floor of the tunnel's "
      "topology. Runs until SIGTERM/SIGINT.");
  std::string relay_listen, relay_connect;
  bool relay_splice = false;
  relay->add_option("--listen", relay_listen, "HOST:PORT or unix:PATH")->required();
  relay->add_option("--connect", relay_connect, "HOST:PORT or unix:PATH")->required();
  relay->add_flag("--splice", relay_splice,
                  "Move bytes with splice() through a pipe instead of read()/write()");

  // pair
  auto* pair_cmd = app.add_subcommand(
      "pair",
      "Start an xmig pair (hv-a entry -> TLS -> hv-b exit) with fresh certificates, write its "
      "endpoints and pids to --info as shell variables, serve until SIGTERM/SIGINT");
  fs::path pair_dir, pair_info;
  std::string pair_target, pair_entry;
  pair_cmd->add_option("--dir", pair_dir, "Directory for certificates, configs, logs")->required();
  pair_cmd->add_option("--target", pair_target, "Where hv-b delivers: HOST:PORT or unix:PATH")
      ->required();
  pair_cmd->add_option(
      "--entry", pair_entry,
      "Where hv-a listens (HOST:PORT or unix:PATH; default its UNIX entry socket)");
  pair_cmd
      ->add_option("--info", pair_info,
                   "File to write ENTRY=, ENTRY_PID=, EXIT_PID=, ENTRY_LOG=, EXIT_LOG= to")
      ->required();
  pair_cmd->add_option("--tunnel", o.tunnel, "xmig-tunnel binary")->capture_default_str();
  pair_cmd->add_option("--workers", o.workers, "Tunnel worker threads (0: one per core)");
  pair_cmd->add_option("--tunnel-toml", o.extra_toml, "Top-level TOML lines for both configs");
  pair_cmd->add_option("--tls-toml", o.tls_toml, "TOML lines for both [tls] tables");

  // report
  auto* report_cmd = app.add_subcommand(
      "report",
      "Summarize JSON-lines results (from --json runs and bench/qemu_migrate): per group, "
      "median and min–max of each config, CPU-s/GB, and per-round ratios vs. the references");
  std::vector<std::string> report_files, report_refs = {"relay", "direct", "stunnel"};
  std::string report_json;
  report_cmd->add_option("files", report_files, "Files of JSON lines")->required();
  report_cmd->add_option("--ref", report_refs, "Reference configs for ratios, in order")
      ->capture_default_str();
  report_cmd->add_option("--json", report_json, "Write the summary and all records here");

  // netns
  auto* netns_cmd = app.add_subcommand(
      "netns",
      "Make two network namespaces joined by a veth pair (harness/netns: hv-a 10.231.0.1, hv-b "
      "10.231.0.2, each with its own loopback), write their names and addresses to --info as "
      "shell variables (A_NS, B_NS, A_IP, B_IP), keep them until SIGTERM/SIGINT, then delete "
      "them. For `xmig-bench --netns FILE` and relays started with `ip netns exec` (root)");
  fs::path netns_info;
  netns_cmd->add_option("--info", netns_info, "File to write the names and addresses to")
      ->required();

  // ports
  auto* ports_cmd = app.add_subcommand("ports", "Print N TCP ports on 127.0.0.1 free just now");
  unsigned port_count = 1;
  ports_cmd->add_option("count", port_count)->capture_default_str();

  // channels
  ChannelsOptions co;
  auto* channels_cmd = app.add_subcommand(
      "channels",
      "Channel setup: the time from the first connection until all N channels carry data, as a "
      "migration with N-1 multifd channels opens them: N connections to hv-a's qemu entry socket "
      "back to back, each sending 16 bytes at once; the sink behind hv-b must receive them in the "
      "order they were opened. Starts a pair of each --tunnel in turn, round by round:\n"
      "  xmig-bench channels --tunnel new=build/tools/xmig-tunnel --tunnel old=/tmp/xmig-tunnel");
  channels_cmd->add_option("--tunnel", co.tunnels,
                           "LABEL=PATH of an xmig-tunnel to measure (repeatable; default: "
                           "xmig=the one next to this binary)");
  channels_cmd->add_option("--channels", co.counts, "Channel counts")->capture_default_str();
  channels_cmd->add_option("--rounds", co.rounds, "Rounds")->capture_default_str();
  channels_cmd->add_option("--repeat", co.repeat, "Measurements per count, tunnel and round")
      ->capture_default_str();
  channels_cmd->add_option("--workers", co.workers, "Tunnel worker threads (0: one per core)")
      ->capture_default_str();
  channels_cmd->add_option("--tls-toml", co.tls_toml, "TOML lines added to both [tls] tables");
  channels_cmd->add_option("--timeout", co.timeout, "Seconds before one measurement fails")
      ->capture_default_str();
  channels_cmd
      ->add_option("--link-delay-ms", co.link_delay_ms,
                   "One-way latency of the link between the two ends (a relay that "
                   "passes each byte on this much later); 0: loopback as it is")
      ->capture_default_str();
  channels_cmd->add_flag("--json", co.json,
                         "One JSON record per tunnel, count and round (for `xmig-bench report`)");

  CLI11_PARSE(app, argc, argv);

  try {
    if (*relay) {
      install_signals(false);
      run_relay({parse_endpoint(relay_listen), parse_endpoint(relay_connect), relay_splice},
                g_stop);
      return 0;
    }
    if (*pair_cmd) {
      install_signals(false);
      TunnelPair pair(pair_options(pair_dir, o.tunnel, pair_target, pair_entry, o.workers,
                                   o.extra_toml, o.tls_toml));
      {
        std::ofstream info(pair_info.string() + ".tmp");
        info << "ENTRY=" << entry_of(pair, pair_entry) << "\nENTRY_PID=" << pair.a.process->pid()
             << "\nEXIT_PID=" << pair.b.process->pid() << "\nENTRY_LOG=" << pair.a.log.string()
             << "\nEXIT_LOG=" << pair.b.log.string() << "\n";
      }
      fs::rename(pair_info.string() + ".tmp", pair_info);  // readers never see half a file
      while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      pair.stop();
      return 0;
    }
    if (*netns_cmd) {
      install_signals(false);
      xmig::harness::NetnsLab lab;
      xmig::harness::write_lab_info(lab, netns_info);
      while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      fs::remove(netns_info);
      return 0;
    }
    if (*channels_cmd) {
      install_signals(true);
      return run_channels(co);
    }
    if (*report_cmd) {
      std::vector<Record> all;
      for (const auto& f : report_files) {
        auto more = read_records(f);
        all.insert(all.end(), more.begin(), more.end());
      }
      report(all, report_refs, std::cout, report_json);
      return 0;
    }
    if (*ports_cmd) {
      // Hold each port until all are chosen, so the N are distinct.
      std::vector<std::unique_ptr<Listener>> held;
      for (unsigned i = 0; i < port_count; ++i) {
        held.push_back(std::make_unique<Listener>(parse_endpoint("127.0.0.1:0")));
        std::cout << held.back()->endpoint().port << (i + 1 < port_count ? " " : "\n");
      }
      return 0;
    }
    install_signals(true);
    if (*sink_cmd) {
      o.role = StreamOptions::Role::SinkOnly;
      o.sink_listen = sink_listen;
    } else if (remote_sink) {
      o.role = StreamOptions::Role::SourceOnly;
    }
    return run(o);
  } catch (const CLI::Error& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "xmig-bench: " << e.what() << "\n";
    return 2;
  }
}
