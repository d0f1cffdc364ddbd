// A real QEMU migration through the tunnel while every certificate is rotated
// and the CA is rolled over: the migration's connections are established
// before the first change and must carry the RAM to the end, byte for byte.
//
// XMIG_QEMU_RAM_MIB selects the guest RAM size (default 256 MiB). The source
// is throttled (max-bandwidth) so that the migration is still running when the
// last certificate change has been loaded; then the throttle is lifted.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "certs/certs.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/streams.hpp"
#include "harness/tls_probe.hpp"
#include "harness/tunnel_pair.hpp"
#include "tests/qemu/carried.hpp"

namespace xmig::test {

using namespace harness;

namespace {

struct Status {
  std::string serial;  // certificate.serial
  long ok = -1;        // reloads.ok
  long failed = -1;    // reloads.failed
  std::string json;
};

// GET /status from side's status socket (<run_dir>/status.sock).
Status status_of(const TunnelSide& side) {
  Status s;
  s.json = status_request(side, "/status");
  const std::string serial_key = "\"certificate\":{\"serial\":\"";
  if (size_t at = s.json.find(serial_key); at != std::string::npos) {
    at += serial_key.size();
    s.serial = s.json.substr(at, s.json.find('"', at) - at);
  }
  if (size_t at = s.json.find("\"reloads\":{\"ok\":"); at != std::string::npos) {
    char* end = nullptr;
    s.ok = std::strtol(s.json.c_str() + at + 16, &end, 10);
    if (end && std::string_view(end).rfind(",\"failed\":", 0) == 0)
      s.failed = std::strtol(end + 10, nullptr, 10);
  }
  return s;
}

std::string serial_of_file(const fs::path& cert) {
  return certs::describe(read_file(cert), cert.string()).serial_hex;
}

// Setup: a CA directory made by `xmig-certs ca init`; hv-a and hv-b issued
// from it by `xmig-certs issue` and started. A paused source QEMU with
// random RAM and a destination QEMU with zeroed RAM, multifd with 4
// channels on both; the source is throttled to RAM/20 per second (about 20
// s for the whole RAM). The source migrates to hv-a's entry socket; hv-b
// delivers to the destination. Once hv-b has opened all 5 connections
// (main + 4 multifd):
// Action: `xmig-certs rotate` on hv-b and hv-a, twice; `xmig-certs ca
// rollover`, ca-bundle.pem copied to both nodes; rotate both again (now from
// the new CA); `xmig-certs ca retire`, ca-bundle.pem (new CA only) copied to
// both. Each change is waited for on the status endpoint (the node's serial
// is the one in its files, reloads.ok grew). Then the throttle is lifted.
// Pass: the migration was still active after the last change had been
// loaded (so every change happened under a running migration); both QEMUs
// complete; multifd carried more than half of the RAM; the destination's
// RAM file equals the source's; each tunnel logged exactly 5 qemu closes,
// all result=ok; no reload refused, no refusal, reloads.failed = 0 on both.
TEST(QemuMigration, ThroughTunnelSurvivesCertificateRotation) {
  const std::string qemu = find_qemu();
  if (qemu.empty()) GTEST_SKIP() << "qemu-system-x86_64 not found";
  const uint64_t ram_mib = ram_mib_from_env();
  const uint64_t bytes = ram_mib << 20;
  TempDir work("xmig-qemu-reload");
  RamDir ram_dir(2 * bytes, work.path());
  const fs::path source_ram = ram_dir.path() / "source.ram";
  const fs::path destination_ram = ram_dir.path() / "destination.ram";
  create_random_file(source_ram, bytes, 0x72656c64 + ram_mib);
  create_zero_file(destination_ram, bytes);
  const std::string source_hash = sha256_file(source_ram);

  // The PKI, made and changed with the real xmig-certs.
  const fs::path ca_dir = work.path() / "ca";
  const fs::path cli_log = work.path() / "xmig-certs.log";
  auto certs_ok = [&](std::vector<std::string> args) {
    args.insert(args.begin(), tool("xmig-certs"));
    int rc = run(args, cli_log.string());
    EXPECT_EQ(rc, 0) << read_file(cli_log);
    return rc == 0;
  };
  TunnelPairOptions opts;
  opts.start = false;
  TunnelPair pair(opts);
  ASSERT_TRUE(certs_ok({"ca", "init", "--dir", ca_dir.string()}));
  for (TunnelSide* side : {&pair.a, &pair.b})
    ASSERT_TRUE(certs_ok({"issue", "--ca", ca_dir.string(), "--name", side->name, "--ip",
                          "127.0.0.1", "--out", side->pki.string(), "--force"}));
  ASSERT_NO_THROW(pair.start(pair.a));
  ASSERT_NO_THROW(pair.start(pair.b));

  QemuGuest source(QemuGuestConfig{.name = "source",
                                   .work_dir = work.path(),
                                   .ram_file = source_ram,
                                   .ram_mib = ram_mib,
                                   .incoming = false});
  QemuGuest destination(QemuGuestConfig{.name = "destination",
                                        .work_dir = work.path(),
                                        .ram_file = destination_ram,
                                        .ram_mib = ram_mib,
                                        .incoming = true});
  auto logs = [&] { return source.log() + "\n" + destination.log() + "\n" + pair.logs(); };
  constexpr int kChannels = 4;
  source.enable_multifd(kChannels);
  destination.enable_multifd(kChannels);
  const uint64_t throttle = std::max<uint64_t>(bytes / 20, 1 << 20);
  source.qmp().execute("migrate-set-parameters",
                       "{\"max-bandwidth\": " + std::to_string(throttle) + "}");
  ASSERT_NE(sha256_file(destination_ram), source_hash);

  destination.migrate_incoming("unix:" + pair.delivery("qemu").string());
  const auto start = std::chrono::steady_clock::now();
  source.migrate("unix:" + pair.entry("qemu").string());
  ASSERT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.b.log, {"open: hv-a", "channel qemu"}) >= 5;
      },
      30s))
      << "hv-b did not open the main and " << kChannels << " multifd connections\n"
      << logs();

  std::vector<std::string> serials_a{status_of(pair.a).serial}, serials_b{status_of(pair.b).serial};
  // Waits until side shows the serial in its files and more than ok_before
  // successful reloads.
  auto expect_loaded = [&](TunnelSide& side, long ok_before, const std::string& what) {
    const std::string want = serial_of_file(side.pki / "server-cert.pem");
    Status st;
    wait_until(
        [&] {
          st = status_of(side);
          return st.ok > ok_before && st.serial == want;
        },
        10s);
    EXPECT_EQ(st.serial, want) << what << " on " << side.name << "\n" << st.json << "\n" << logs();
    EXPECT_GT(st.ok, ok_before) << what << " on " << side.name << "\n" << st.json;
    return st.serial;
  };
  auto rotate = [&](TunnelSide& side) {
    long ok_before = status_of(side).ok;
    ASSERT_TRUE(certs_ok(
        {"rotate", "--ca", ca_dir.string(), "--dir", side.pki.string(), "--name", side.name}));
    (&side == &pair.a ? serials_a : serials_b)
        .push_back(expect_loaded(side, ok_before, "xmig-certs rotate"));
  };
  auto distribute_bundle = [&] {
    for (TunnelSide* side : {&pair.b, &pair.a}) {
      long ok_before = status_of(*side).ok;
      fs::copy_file(ca_dir / "ca-bundle.pem", side->pki / "ca-cert.pem.new",
                    fs::copy_options::overwrite_existing);
      fs::rename(side->pki / "ca-cert.pem.new", side->pki / "ca-cert.pem");
      expect_loaded(*side, ok_before, "ca-bundle.pem copied");
    }
  };

  for (int round = 0; round < 2; ++round) {
    ASSERT_NO_FATAL_FAILURE(rotate(pair.b));
    ASSERT_NO_FATAL_FAILURE(rotate(pair.a));
  }
  ASSERT_TRUE(certs_ok({"ca", "rollover", "--dir", ca_dir.string()}));
  ASSERT_NO_FATAL_FAILURE(distribute_bundle());
  ASSERT_NO_FATAL_FAILURE(rotate(pair.b));
  ASSERT_NO_FATAL_FAILURE(rotate(pair.a));
  ASSERT_TRUE(certs_ok({"ca", "retire", "--dir", ca_dir.string()}));
  ASSERT_NO_FATAL_FAILURE(distribute_bundle());
  const double rotation_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Every change happened under a running migration.
  const MigrationStatus during = source.query_migration();
  EXPECT_EQ(during.status, "active") << "the migration did not outlast the rotation; lower the "
                                        "throttle\n"
                                     << during.reply;
  const double transferred_during = json_number(during.reply, "transferred").value_or(0);

  source.unlimit_bandwidth();
  const MigrationStatus sent =
      source.wait_for_migration(60s + std::chrono::milliseconds(ram_mib * 250));
  ASSERT_TRUE(sent.completed()) << "source migration status '" << sent.status << "': " << sent.error
                                << "\n"
                                << sent.reply << "\n"
                                << logs();
  const MigrationStatus received = destination.wait_for_migration(60s);
  ASSERT_TRUE(received.completed())
      << "destination migration status '" << received.status << "': " << received.error << "\n"
      << logs();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(json_number(sent.reply, "multifd-bytes").value_or(0), static_cast<double>(bytes) / 2)
      << sent.reply;
  source.quit();
  destination.quit();
  EXPECT_EQ(sha256_file(source_ram), source_hash) << "the source's RAM file changed";
  EXPECT_EQ(sha256_file(destination_ram), source_hash)
      << "destination RAM differs from the source's after migration through rotations";

  // The tunnel side: 5 connections carried on each end, nothing refused.
  expect_qemu_connections_carried(pair, 1 + kChannels, logs());
  for (TunnelSide* side : {&pair.a, &pair.b}) {
    EXPECT_EQ(count_in_log(side->log, "refused"), 0) << logs();
    EXPECT_EQ(status_of(*side).failed, 0) << status_of(*side).json;
  }
  EXPECT_EQ(serials_a.size(), 1u + 3);  // the first and 3 rotations each
  EXPECT_EQ(serials_b.size(), 1u + 3);

  std::cout
      << "[ qemu     ] " << ram_mib << " MiB, multifd " << kChannels << ": "
      << static_cast<uint64_t>(transferred_during) / (1 << 20)
      << " MiB sent while 6 rotations, a CA rollover and a retire (4 bundle copies) were loaded "
         "in "
      << rotation_seconds << " s; completed in " << seconds << " s\n[ qemu     ] hv-a serials:";
  for (const auto& s : serials_a) std::cout << " " << s;
  std::cout << "\n[ qemu     ] hv-b serials:";
  for (const auto& s : serials_b) std::cout << " " << s;
  std::cout << "\n[ qemu     ] reloads ok: hv-a " << status_of(pair.a).ok << ", hv-b "
            << status_of(pair.b).ok << std::endl;
  RecordProperty("rotation_seconds", std::to_string(rotation_seconds));
  RecordProperty("mib_sent_during_rotation",
                 std::to_string(static_cast<uint64_t>(transferred_during) / (1 << 20)));
}

}  // namespace
}  // namespace xmig::test
