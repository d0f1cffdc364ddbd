// xmig-verify --pcap on captures of real QEMU migrations, taken with tcpdump
// while they run: a direct migration over TCP is plaintext and must FAIL as
// "QEMU migration stream in plaintext"; the same migration through two xmig
// tunnels must PASS as TLS 1.3.
//
// Guests are small (64 MiB, XMIG_VERIFY_QEMU_RAM_MIB to change) and paused;
// the capture holds every byte (tcpdump -s 0 on lo).
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "harness/files.hpp"
#include "harness/netns.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/tunnel_pair.hpp"
#include "tests/verify/helpers.hpp"

namespace xmig::test {

using namespace harness;

namespace {

::testing::AssertionResult contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << needle << "\" not found in: " << text;
}

class VerifyQemuCapture : public ::testing::Test {
 protected:
  void SetUp() override {
    if (find_qemu().empty()) GTEST_SKIP() << "qemu-system-x86_64 not found";
    if (const char* env = std::getenv("XMIG_VERIFY_QEMU_RAM_MIB"))
      ram_mib_ = std::strtoull(env, nullptr, 10);
    work_ = std::make_unique<TempDir>("xmig-verify-qemu");
    ram_dir_ = std::make_unique<RamDir>(2 * (ram_mib_ << 20), work_->path());
    create_random_file(ram_dir_->path() / "source.ram", ram_mib_ << 20, 0x5145564d);
    create_zero_file(ram_dir_->path() / "destination.ram", ram_mib_ << 20);
    source_ =
        std::make_unique<QemuGuest>(QemuGuestConfig{.name = "source",
                                                    .work_dir = work_->path(),
                                                    .ram_file = ram_dir_->path() / "source.ram",
                                                    .ram_mib = ram_mib_,
                                                    .incoming = false});
    destination_ = std::make_unique<QemuGuest>(
        QemuGuestConfig{.name = "destination",
                        .work_dir = work_->path(),
                        .ram_file = ram_dir_->path() / "destination.ram",
                        .ram_mib = ram_mib_,
                        .incoming = true});
    source_->unlimit_bandwidth();
  }

  // Migrates and waits until both sides completed; then both QEMUs quit, so
  // every connection has ended before the capture stops.
  void migrate(const std::string& listen_uri, const std::string& send_uri) {
    destination_->migrate_incoming(listen_uri);
    source_->migrate(send_uri);
    MigrationStatus sent = source_->wait_for_migration(120s);
    ASSERT_TRUE(sent.completed()) << sent.status << ": " << sent.error << "\n" << source_->log();
    MigrationStatus got = destination_->wait_for_migration(60s);
    ASSERT_TRUE(got.completed()) << got.status << ": " << got.error << "\n" << destination_->log();
    source_->quit();
    destination_->quit();
  }

  uint64_t ram_mib_ = 64;
  std::unique_ptr<TempDir> work_;
  std::unique_ptr<RamDir> ram_dir_;
  std::unique_ptr<QemuGuest> source_, destination_;
};

// Setup: source and destination QEMU (64 MiB), no tunnel; tcpdump captures
// lo for the migration port.
// Action: migrate over tcp:127.0.0.1:PORT; stop tcpdump; xmig-verify --pcap.
// Pass: the migration completed; xmig-verify exits 1 and the flow to
// 127.0.0.1:PORT FAILs with "QEMU migration stream in plaintext".
TEST_F(VerifyQemuCapture, PcapFlagsPlaintextQemuMigration) {
  uint16_t port = free_port();
  fs::path pcap = work_->path() / "plain.pcap";
  Tcpdump dump("", "lo", "tcp port " + std::to_string(port), pcap.string(),
               (work_->path() / "tcpdump.log").string());
  const std::string uri = "tcp:127.0.0.1:" + std::to_string(port);
  ASSERT_NO_FATAL_FAILURE(migrate(uri, uri));
  std::string summary = dump.stop();

  VerifyRun r = run_verify({"--pcap", pcap.string()}, work_->path());
  EXPECT_EQ(r.exit_code, 1) << r.output << summary;
  EXPECT_TRUE(contains(r.output, "-> 127.0.0.1:" + std::to_string(port) +
                                     ": QEMU migration "
                                     "stream in plaintext"))
      << summary;
  std::cout << r.output;
}

// Setup: two real tunnels (hv-a, hv-b) on loopback; the destination QEMU
// listens where hv-b delivers channel qemu; tcpdump captures hv-b's TLS port.
// Action: migrate to hv-a's entry socket; stop tcpdump; xmig-verify --pcap.
// Pass: the migration completed; xmig-verify exits 0; the capture holds
// a TLS 1.3 flow with ALPN xmig/qemu carrying at least the guest's RAM, and
// nothing is flagged as plaintext.
TEST_F(VerifyQemuCapture, PcapPassesQemuMigrationThroughTunnel) {
  TunnelPair pair;
  fs::path pcap = work_->path() / "tunnel.pcap";
  Tcpdump dump("", "lo", "tcp port " + std::to_string(pair.b.port), pcap.string(),
               (work_->path() / "tcpdump.log").string());
  ASSERT_NO_FATAL_FAILURE(
      migrate("unix:" + pair.delivery("qemu").string(), "unix:" + pair.entry("qemu").string()));
  std::string summary = dump.stop();

  VerifyRun r = run_verify({"--pcap", pcap.string()}, work_->path());
  EXPECT_EQ(r.exit_code, 0) << r.output << summary << pair.logs();
  EXPECT_TRUE(
      contains(r.output, std::string(":") + std::to_string(pair.b.port) + ": TLS 1.3 TLS_AES_"));
  EXPECT_TRUE(contains(r.output, "ALPN xmig/qemu"));
  EXPECT_FALSE(contains(r.output, "in plaintext"));
  EXPECT_FALSE(contains(r.output, "FAIL"));
  VerifyRun j = run_verify({"--pcap", pcap.string(), "--json"}, work_->path());
  EXPECT_TRUE(contains(j.output, "\"status\":\"pass\""));
  std::cout << r.output;
}

}  // namespace
}  // namespace xmig::test
