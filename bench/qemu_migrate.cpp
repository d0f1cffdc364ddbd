// xmig-bench-qemu: one real QEMU migration over a given path, timed and
// checked, as one JSON line for bench/compare.
//
// Two paused qemu-system-x86_64 (tests/qemu/qemu_vm.hpp, reused as it is):
// the source's RAM file holds random bytes, the destination's starts as
// zeros. The destination listens on --listen-uri, the source migrates to
// --send-uri; whatever sits between them (nothing, stunnel, xmig) is started
// by the caller, whose processes are measured with --pid. With --tls-dir,
// QEMU's own TLS (tls-creds-x509, mutual) protects the stream instead. After
// both QEMUs have quit, the two RAM files must be byte-identical, else the
// run counts as failed whatever its speed.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include "base/json.hpp"
#include "bench/measure.hpp"
#include "bench/record.hpp"
#include "harness/files.hpp"
#include "harness/qemu_vm.hpp"

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
  std::string listen_uri, send_uri;
  fs::path tls_server_dir, tls_client_dir;
  std::vector<std::string> pids;
  std::string label = "direct", group;
  int round = 0;
  unsigned timeout = 600;
  fs::path work_dir;
};

int run(const Options& o) {
  using namespace xmig::harness;
  const uint64_t bytes = o.ram_mib << 20;
  TempDir work("xmig-bench-qemu");
  RamDir ram(2 * bytes, o.work_dir.empty() ? work.path() : o.work_dir);
  const fs::path source_ram = ram.path() / "source.ram", dest_ram = ram.path() / "destination.ram";
  create_random_file(source_ram, bytes, 0x786d6967 + o.ram_mib);
  create_zero_file(dest_ram, bytes);

  std::vector<Measured> procs;
  for (const auto& spec : o.pids) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos)
      throw std::invalid_argument("--pid " + spec + ": expected NAME=PID");
    procs.push_back(
        {spec.substr(0, eq), static_cast<pid_t>(std::stol(spec.substr(eq + 1))), {}, {}});
  }

  Record r;
  r.set("suite", "qemu")
      .set("group", o.group.empty()
                        ? std::to_string(o.ram_mib) + " MiB, " +
                              (o.multifd ? "multifd " + std::to_string(o.multifd) + " channels"
                                         : std::string("single stream"))
                        : o.group)
      .set("config", o.label)
      .set("round", o.round)
      .set("unit", "s")
      .set("higher_is_better", false)
      .set("ram_mib", o.ram_mib)
      .set("multifd_channels", o.multifd);

  std::string error;
  try {
    QemuGuest source({.name = "source",
                      .work_dir = work.path(),
                      .ram_file = source_ram,
                      .ram_mib = o.ram_mib,
                      .incoming = false});
    QemuGuest dest({.name = "destination",
                    .work_dir = work.path(),
                    .ram_file = dest_ram,
                    .ram_mib = o.ram_mib,
                    .incoming = true});
    if (o.multifd > 0) {
      source.enable_multifd(o.multifd);
      dest.enable_multifd(o.multifd);
    }
    source.unlimit_bandwidth();
    if (!o.tls_server_dir.empty()) {
      enable_qemu_tls(dest, o.tls_server_dir, true);
      enable_qemu_tls(source, o.tls_client_dir, false);
    }
    dest.migrate_incoming(o.listen_uri);

    for (auto& p : procs) p.before = xmig::bench::sample(p.pid);
    const auto t0 = std::chrono::steady_clock::now();
    source.migrate(o.send_uri);
    // Both sides are watched: a destination that fails first (e.g. multifd
    // channels arriving in another order than the source opened them) can
    // leave the source waiting forever.
    MigrationStatus sent, received;
    const auto deadline = t0 + std::chrono::seconds(o.timeout);
    while (true) {
      sent = source.query_migration();
      if (sent.finished() || std::chrono::steady_clock::now() > deadline) break;
      // The destination may complete a moment before the source does; only
      // its failure ends the wait early.
      received = dest.query_migration();
      if (received.status == "failed" || received.status == "cancelled") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (sent.completed() && !received.finished())
      received = dest.wait_for_migration(std::chrono::seconds(60));
    else if (!sent.completed() && received.status.empty())
      received = dest.query_migration();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto& p : procs) p.after = xmig::bench::sample(p.pid);

    if (!sent.completed() || !received.completed())
      error = "source " + sent.status + (sent.error.empty() ? "" : " (" + sent.error + ")") +
              // An incoming migration that failed may report no status at all.
              (received.status.empty()
                   ? ""
                   : ", destination " + received.status +
                         (received.error.empty() ? "" : " (" + received.error + ")"));
    const double multifd_bytes = json_number(sent.reply, "multifd-bytes").value_or(0);
    if (error.empty() && o.multifd > 0 && multifd_bytes < static_cast<double>(bytes) / 2)
      error = "multifd carried only " + std::to_string(multifd_bytes) + " bytes";

    r.set("value", seconds)
        .set("seconds", seconds)
        .set("gbps", static_cast<double>(bytes) / seconds / 1e9);
    if (sent.total_time_ms) r.set("qemu_total_ms", *sent.total_time_ms);
    r.set("multifd_bytes", multifd_bytes);
    double cpu = 0;
    for (const auto& p : procs) {
      cpu += p.cpu_seconds();
      r.set(p.name + "_cpu_s", p.cpu_seconds());
      r.set(p.name + "_cpu_s_per_gb", p.cpu_seconds() / (static_cast<double>(bytes) / 1e9));
      r.set(p.name + "_peak_rss_mib", static_cast<double>(p.after.peak_rss_kib) / 1024);
    }
    if (!procs.empty()) r.set("cpu_s_per_gb", cpu / (static_cast<double>(bytes) / 1e9));

    // Both QEMUs exit before the files are compared, so every page is written
    // back and unmapped.
    source.quit();
    dest.quit();
    if (error.empty() && !same_contents(source_ram, dest_ram, bytes))
      error = "destination RAM differs from the source's";
    if (!error.empty()) r.set("qemu_logs", source.log() + "\n" + dest.log());
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
  app.add_option("--listen-uri", o.listen_uri, "Destination: migrate-incoming URI")->required();
  app.add_option("--send-uri", o.send_uri, "Source: migrate URI")->required();
  app.add_option("--tls-server-dir", o.tls_server_dir, "Destination's tls-creds-x509 directory");
  app.add_option("--tls-client-dir", o.tls_client_dir, "Source's tls-creds-x509 directory");
  app.add_option("--pid", o.pids, "NAME=PID of a relay process to measure (repeatable)");
  app.add_option("--label", o.label, "Config name in the output")->capture_default_str();
  app.add_option("--group", o.group, "Group name in the output (default: RAM and channels)");
  app.add_option("--round", o.round, "Round number in the output");
  app.add_option("--timeout", o.timeout, "Seconds before the migration counts as failed")
      ->capture_default_str();
  app.add_option("--ram-dir", o.work_dir,
                 "Where the RAM files go when /dev/shm is too small (default: a temp dir)");
  CLI11_PARSE(app, argc, argv);
  if (o.tls_server_dir.empty() != o.tls_client_dir.empty()) {
    std::cerr << "xmig-bench-qemu: --tls-server-dir and --tls-client-dir go together\n";
    return 2;
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::cerr << "xmig-bench-qemu: " << e.what() << "\n";
    return 2;
  }
}
