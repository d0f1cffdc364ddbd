// xmig-verify: prove that migration traffic is encrypted. A thin main over
// verify/ (see verify/verify.hpp and verify/README.md).
#include <CLI/CLI.hpp>

#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "base/fd.hpp"

#include "verify/verify.hpp"

namespace {

constexpr const char* kDescription = R"(xmig-verify: prove that migration traffic is encrypted.

Live check:  xmig-verify --config /etc/xmig/tunnel.toml --peer hv-b [--json]
  Uses this host's tunnel config and certificates against the peer's TLS port.
  config       the config loads and its certificates are valid
  handshake    mutual TLS with the peer works; TLS 1.3; an AEAD suite; the peer's
               certificate chains to [tls] ca and names the peer; days until this
               host's and the peer's certificates expire (WARN under --warn-days)
  enforcement  the peer must refuse each of: a client without certificate, a
               self-signed certificate, a certificate of another CA (made in
               memory), plaintext bytes, TLS 1.2 (when
               min_version is 1.3), and an unknown channel (verdict 'C')
  wire         a canary stream goes through the LOCAL tunnel to the peer's echo
               channel and back, while the traffic to the peer's port is captured
               with libpcap (needs root or CAP_NET_RAW; no capture = FAIL). PASS
               needs: the canary back intact, no 16-byte window of it in the
               captured bytes, the bytes parse as TLS records, and application
               data entropy above 7.5 bits/byte. The local tunnel needs a route
               for the canary:
                   [[route]]
                   listen = "unix:/run/xmig/verify.sock"
                   peer = "hv-b"
                   channel = "verify"
               Without one, xmig-verify connects to the peer itself with the local
               certificate and says so (the local tunnel's data path is then not
               part of the check).
  data path    which mode (ktls-splice, userspace, or userspace-openssl for TLS 1.2)
               the local tunnel used for the canary connection (from its status
               endpoint) and the kernel's kTLS counters (/proc/net/tls_stat)
  interception with [intercept] (transparent mode, see the README section
               Transparent mode): this host's table inet xmig equals what the config
               demands (compared in nft's listing); plaintext TCP from this host
               to the peer's migration address on driver_port and on a port of
               the range (--intercept-port, default the range's last), carrying
               a canary, is carried by the local tunnel as TLS (ALPN xmig/driver,
               xmig/port-N) and nothing reaches those ports on the wire; the same
               connections from a socket with the tunnel's mark (as from any host
               on the network) are dropped by the peer (firewall = true there)

Test migration:  xmig-verify --config /etc/xmig/tunnel.toml --peer hv-b --test-migration [--json]
  The smoke test for real, on libvirt hosts, as root: a throwaway transient
  domain (xmig-verify-<random>: TCG, 32 MiB of RAM filled with a known pattern,
  paused, no disk; with --storage also a 4 MiB raw disk filled with the pattern,
  in a storage pool of its own on each host, migrated with --copy-storage-all
  through the tunnel's nbd channel and hashed after the round trip) is created
  on this host, migrated to the peer the way
  operators do (xmig-migrate DOMAIN PEER, found next to xmig-verify or in PATH;
  with [intercept] nova's virsh migrate --p2p DOMAIN qemu+tcp://PEER/system
  --migrateuri tcp://PEER, through table inet xmig) and back (virsh migrate
  started on the peer's libvirt, reached through the tunnel's driver channel,
  to this host's fixed socket set <run_dir>/<this host>/), then removed on both
  hosts, also after a failure, a timeout (--migration-timeout) or Ctrl-C.
  First the handshake of the live check: a certificate problem (chain, name,
  expiry, on which host) or an unreachable peer tunnel is named as such and
  nothing is migrated. Then:
  test migration  the domain went there and back; its RAM hashes alike after
               the round trip; a failure names its cause and fix (the
               destination's sockets not usable by QEMU: socket_group;
               libvirt refusing: same host UUID; timeout; ...); this host's
               tunnel's connections of it (from its status endpoint: peer,
               channel, TLS version, cipher, mode, bytes, result); clean-up
  wire         captured (libpcap) towards the peer while it ran: the RAM
               crossed both ways, every flow with payload is TLS to a tunnel's
               port (no plaintext QEMU, NBD or libvirt RPC), and no 16-byte
               window of the RAM pattern is in any frame or stream
  interception with [intercept]: the live check's interception group after it

Fleet check:  xmig-verify --config /etc/xmig/tunnel.toml --all-peers [--json | --prometheus]
  The live check against every [[peer]] of the config, one after another, then
  one table: peer, handshake, enforcement (with interception), wire, mode, days
  left on the peer's certificate, result; below it every finding that is not a
  PASS with its fix; last the overall result (exit status 1 when a peer failed).
  --prometheus prints the result for node_exporter's textfile collector
  (xmig_verify_peer_status{peer,group} 0 pass / 1 warn / 2 fail,
  xmig_verify_peer_certificate_expiry_seconds{peer},
  xmig_verify_last_run_timestamp_seconds), e.g. hourly from cron:
      xmig-verify --config /etc/xmig/tunnel.toml --all-peers --prometheus \
        > /var/lib/prometheus/node-exporter/xmig.prom.new &&
        mv /var/lib/prometheus/node-exporter/xmig.prom.new \
           /var/lib/prometheus/node-exporter/xmig.prom

Offline check:  xmig-verify --pcap migration.pcap [--json]
  For a capture of the migration network taken during a migration, e.g.
      tcpdump -i eth1 -w migration.pcap 'tcp'
  every TCP flow is reassembled and classified as TLS (version and suite from
  the ServerHello, record counts, entropy) or plaintext; a plaintext QEMU
  migration stream ("QEVM", multifd), NBD or libvirt RPC is a FAIL naming the
  flow's addresses and ports.

Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed,
2 when the input could not be used (bad options, unreadable capture).)";

}  // namespace

int main(int argc, char** argv) {
  // A peer that closes while a probe writes is a finding, not a reason to die.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{kDescription, "xmig-verify"};
  xmig::verify::LiveOptions live;
  std::string pcap;
  xmig::verify::TestMigrationOptions trial;
  bool json = false, all_peers = false, prometheus = false, test_migration = false;
  int migration_timeout = 300;
  int timeout_ms = 5000;
  auto* config = app.add_option("--config", live.config, "the local tunnel's TOML config file")
                     ->check(CLI::Validator(CLI::ExistingFile).description(""))
                     ->type_name("FILE");
  auto* peer =
      app.add_option("--peer", live.peer, "the [[peer]] to check (live check)")->type_name("NAME");
  auto* file = app.add_option("--pcap", pcap, "a capture file to check (offline check)")
                   ->check(CLI::Validator(CLI::ExistingFile).description(""))
                   ->type_name("FILE");
  auto* fleet = app.add_flag("--all-peers", all_peers,
                             "the live check against every [[peer]] of the config (fleet check)");
  auto* as_json = app.add_flag("--json", json, "print the findings as one JSON object");
  auto* as_metrics =
      app.add_flag("--prometheus", prometheus,
                   "with --all-peers: print the result in Prometheus' text format (textfile "
                   "collector)");
  app.add_option("--canary-bytes", live.canary_bytes, "size of the canary stream")
      ->check(CLI::Range(uint64_t{64 * 1024}, uint64_t{8} << 20))
      ->capture_default_str();
  app.add_option("--interface", live.interface,
                 "capture interface (default: found from the peer's address; lo for loopback)")
      ->type_name("NAME");
  app.add_option("--timeout-ms", timeout_ms, "bound for each probe's connect, handshake, read")
      ->check(CLI::Range(100, 120000))
      ->capture_default_str();
  app.add_option("--warn-days", live.warn_days, "warn when a certificate expires sooner")
      ->capture_default_str();
  app.add_option("--intercept-port", live.intercept_port,
                 "with [intercept]: the migration port the interception check connects to "
                 "(default: the last of [intercept].ports)")
      ->type_name("PORT");
  auto* trial_flag = app.add_flag(
      "--test-migration", test_migration,
      "with --peer: migrate a throwaway domain to the peer and back through the tunnels while "
      "capturing the wire (test migration)");
  app.add_option("--migration-timeout", migration_timeout,
                 "with --test-migration: seconds the round trip may take before it is cancelled")
      ->check(CLI::Range(10, 86400))
      ->capture_default_str();
  auto* storage = app.add_flag(
      "--storage", trial.storage,
      "with --test-migration: give the throwaway domain a small disk (a libvirt storage "
      "pool of its own on each host) and migrate it with its storage "
      "(--copy-storage-all)");
  app.add_option("--xmig-migrate", trial.xmig_migrate,
                 "with --test-migration: the xmig-migrate program (default: next to xmig-verify, "
                 "else in PATH)")
      ->type_name("PATH");
  trial_flag->needs(peer);
  storage->needs(trial_flag);
  peer->needs(config);
  fleet->needs(config)->excludes(peer)->excludes(file);
  as_metrics->needs(fleet)->excludes(as_json);
  file->excludes(config)->excludes(peer);
  try {
    app.parse(argc, argv);
    if (pcap.empty() && live.config.empty())
      throw CLI::RequiredError(
          "--config FILE --peer NAME, --config FILE --all-peers, or --pcap FILE");
    if (!live.config.empty() && live.peer.empty() && !all_peers)
      throw CLI::RequiredError("--config needs --peer NAME or --all-peers");
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  live.timeout = std::chrono::milliseconds(timeout_ms);

  if (test_migration) {
    trial.live = live;
    trial.migration_timeout = std::chrono::seconds(migration_timeout);
    if (trial.xmig_migrate == "xmig-migrate") {
      // The xmig-migrate installed with this xmig-verify (same folder) first.
      std::error_code ec;
      auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
      auto sibling = self.parent_path() / "xmig-migrate";
      if (!ec && ::access(sibling.c_str(), X_OK) == 0) trial.xmig_migrate = sibling;
    }
    // Ctrl-C and SIGTERM cancel the migration; the domain is still removed.
    sigset_t cancel;
    sigemptyset(&cancel);
    sigaddset(&cancel, SIGINT);
    sigaddset(&cancel, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &cancel, nullptr);
    xmig::Fd signals(::signalfd(-1, &cancel, SFD_CLOEXEC | SFD_NONBLOCK));
    trial.cancel_fd = signals.get();
    xmig::verify::Report report = xmig::verify::run_test_migration(trial);
    std::cout << (json ? xmig::verify::render_json(report) : xmig::verify::render_text(report));
    return xmig::verify::exit_code(report);
  }

  if (all_peers) {
    xmig::verify::FleetReport fleet_report;
    try {
      fleet_report = xmig::verify::run_all_peers(live);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "xmig-verify: %s\n", e.what());
      return 2;
    }
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    std::cout << (prometheus ? xmig::verify::render_fleet_prometheus(fleet_report, now)
                  : json     ? xmig::verify::render_fleet_json(fleet_report)
                             : xmig::verify::render_fleet_text(fleet_report));
    return xmig::verify::exit_code(fleet_report);
  }

  xmig::verify::Report report;
  try {
    report = pcap.empty() ? xmig::verify::run_live(live) : xmig::verify::analyze_pcap(pcap);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xmig-verify: %s\n", e.what());
    return 2;
  }
  std::cout << (json ? xmig::verify::render_json(report) : xmig::verify::render_text(report));
  return xmig::verify::exit_code(report);
}
