// Real QEMU migrations, checked byte for byte.
//
// Two qemu-system-x86_64 processes (paused, no guest OS) migrate RAM from a
// source whose RAM file holds random bytes to a destination whose RAM file
// starts as zeros. The destination's file must then hash the same as the
// source's. The direct tests prove the harness; the tunnel tests prove xmig
// carries a real migration stream intact.
//
// XMIG_QEMU_RAM_MIB selects the guest RAM size (default 256 MiB); each test
// prints how long the migration took, e.g.
//   XMIG_QEMU_RAM_MIB=1024 ctest -R QemuMigration --output-on-failure -V
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "harness/certtool.hpp"
#include "harness/credentials.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/tunnel_pair.hpp"
#include "tests/qemu/carried.hpp"

namespace xmig::test {

using namespace harness;

namespace {

class QemuMigration : public ::testing::Test {
 protected:
  void SetUp() override {
    ram_mib_ = ram_mib_from_env();
    const uint64_t bytes = ram_mib_ << 20;
    work_ = std::make_unique<TempDir>("xmig-qemu");
    ram_dir_ = std::make_unique<RamDir>(2 * bytes, work_->path());
    source_ram_ = ram_dir_->path() / "source.ram";
    destination_ram_ = ram_dir_->path() / "destination.ram";

    // The source's RAM is random (incompressible, no zero pages for QEMU to
    // skip); the destination's is zeros, so only a complete, correct copy can
    // make the two files equal.
    create_random_file(source_ram_, bytes, 0x786d6967 + ram_mib_);
    create_zero_file(destination_ram_, bytes);
    source_hash_ = sha256_file(source_ram_);
  }

  // Starts both QEMUs; channels > 0 enables multifd with that many channels on
  // both sides (QEMU requires matching settings).
  // With `user`, both QEMUs run as that user (as libvirt runs them as
  // libvirt-qemu): their RAM files and a folder for their QMP sockets become
  // its own, and the folders above them passable.
  void start_guests(int multifd_channels, std::optional<QemuUser> user = std::nullopt) {
    multifd_channels_ = multifd_channels;
    fs::path guest_dir = work_->path();
    if (user) {
      guest_dir = work_->path() / "guests";
      fs::create_directory(guest_dir);
      for (const fs::path& own : {guest_dir, source_ram_, destination_ram_})
        ASSERT_EQ(::chown(own.c_str(), user->uid, user->gid), 0) << own;
      for (const fs::path& pass : {work_->path(), ram_dir_->path()})
        fs::permissions(pass, fs::perms(0711));
    }
    source_ = std::make_unique<QemuGuest>(QemuGuestConfig{
        .name = "source",
        .work_dir = guest_dir,
        .ram_file = source_ram_,
        .ram_mib = ram_mib_,
        .incoming = false,
        .user = user,
    });
    destination_ = std::make_unique<QemuGuest>(QemuGuestConfig{
        .name = "destination",
        .work_dir = guest_dir,
        .ram_file = destination_ram_,
        .ram_mib = ram_mib_,
        .incoming = true,
        .user = user,
    });
    if (multifd_channels > 0) {
      source_->enable_multifd(multifd_channels);
      destination_->enable_multifd(multifd_channels);
    }
    source_->unlimit_bandwidth();

    // The final comparison must be able to fail: a running destination QEMU
    // has not (yet) made its RAM file look like the source's.
    ASSERT_NE(sha256_file(destination_ram_), source_hash_)
        << "destination RAM equals the source's before any migration";
  }

  // The destination listens on listen_uri, the source migrates to send_uri
  // (the same path when direct, different paths through the tunnel). Waits
  // for both sides to finish, reports the duration, and checks the RAM.
  // `while_running`, when given, runs once both sides completed, before the
  // QEMUs quit.
  void migrate_and_verify(const std::string& listen_uri, const std::string& send_uri,
                          const std::function<void()>& while_running = {}) {
    ASSERT_TRUE(source_ && destination_) << "start_guests() first";
    destination_->migrate_incoming(listen_uri);

    // Timeout grows with RAM; generous, because speed is for benchmarks and
    // this machine is shared.
    const auto timeout = 60s + std::chrono::milliseconds(ram_mib_ * 250);
    const auto start = std::chrono::steady_clock::now();
    source_->migrate(send_uri);
    const MigrationStatus sent = source_->wait_for_migration(timeout);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(sent.completed()) << "source migration status '" << sent.status
                                  << "': " << sent.error << "\n"
                                  << sent.reply << "\n"
                                  << logs();

    // The source completes once it has sent everything; the destination may
    // still be loading the last bytes.
    const MigrationStatus received = destination_->wait_for_migration(60s);
    ASSERT_TRUE(received.completed())
        << "destination migration status '" << received.status << "': " << received.error << "\n"
        << received.reply << "\n"
        << logs();

    // A multifd test must really have used multifd: RAM pages go over the
    // extra channels, and multifd-bytes counts them.
    const double multifd_bytes = json_number(sent.reply, "multifd-bytes").value_or(0);
    if (multifd_channels_ > 0) {
      EXPECT_GT(multifd_bytes, static_cast<double>(ram_mib_ << 20) / 2) << sent.reply;
    } else {
      EXPECT_EQ(multifd_bytes, 0) << sent.reply;
    }

    report(seconds, sent.total_time_ms);
    if (while_running) while_running();

    // Let both QEMUs exit, so every page is written back and unmapped before
    // the files are read.
    source_->quit();
    destination_->quit();

    EXPECT_EQ(sha256_file(source_ram_), source_hash_) << "the source's RAM file changed";
    EXPECT_EQ(sha256_file(destination_ram_), source_hash_)
        << "destination RAM differs from the source's after migration";
  }

  void report(double seconds, std::optional<double> qemu_total_ms) {
    const double mib_per_s = seconds > 0 ? static_cast<double>(ram_mib_) / seconds : 0;
    std::ostringstream line;
    line << std::fixed << std::setprecision(3) << "[ qemu     ] "
         << ::testing::UnitTest::GetInstance()->current_test_info()->name() << ": " << ram_mib_
         << " MiB in " << seconds << " s (" << std::setprecision(1) << mib_per_s << " MiB/s)";
    if (qemu_total_ms)
      line << ", QEMU total-time " << static_cast<int64_t>(*qemu_total_ms) << " ms";
    std::cout << line.str() << std::endl;

    RecordProperty("ram_mib", std::to_string(ram_mib_));
    RecordProperty("migration_seconds", std::to_string(seconds));
    RecordProperty("mib_per_second", std::to_string(mib_per_s));
    if (qemu_total_ms)
      RecordProperty("qemu_total_time_ms", std::to_string(static_cast<int64_t>(*qemu_total_ms)));
  }

  // Starts hv-a and hv-b (real xmig-tunnel processes on loopback); from then
  // on failure messages carry the tunnel logs too. Throws (with the log) when
  // a tunnel does not come up.
  void start_tunnel() { pair_ = std::make_unique<TunnelPair>(); }

  // As start_tunnel, with the certificates of libvirt's /etc/pki/qemu layout
  // made by certtool from libvirt's templates (a server certificate and a
  // separate client certificate per host, tests/support/certtool.hpp), and
  // [tls] client_cert/client_key mapped to the client files.
  void start_tunnel_with_certtool_pki() {
    pair_ = std::make_unique<TunnelPair>(TunnelPairOptions{.client_files = true, .start = false});
    Certtool certtool(pair_->temp / "certtool");
    ASSERT_NO_THROW(certtool_pair_pki(certtool, *pair_, CerttoolKey::Rsa)) << certtool.log();
    pair_->start(pair_->a);
    pair_->start(pair_->b);
  }

  // After both QEMUs have quit (tests/qemu/carried.hpp).
  void expect_tunnel_carried(int connections) {
    ASSERT_TRUE(pair_) << "start_tunnel() first";
    expect_qemu_connections_carried(*pair_, connections, logs());
  }

  std::string logs() const {
    std::string out;
    if (source_) out += source_->log() + "\n";
    if (destination_) out += destination_->log() + "\n";
    if (pair_) out += pair_->logs();
    return out;
  }

  uint64_t ram_mib_ = 0;
  int multifd_channels_ = 0;
  std::unique_ptr<TempDir> work_;
  std::unique_ptr<TunnelPair> pair_;  // only for the tunnel tests
  std::unique_ptr<RamDir> ram_dir_;
  fs::path source_ram_;
  fs::path destination_ram_;
  std::string source_hash_;
  std::unique_ptr<QemuGuest> source_;
  std::unique_ptr<QemuGuest> destination_;
};

// Setup: paused source QEMU with random RAM, destination QEMU with zeroed
// RAM waiting on unix:<dir>/qemu.sock; no tunnel.
// Action: the source migrates to the same socket (one stream, no multifd).
// Pass: both sides report completed and the destination's RAM file is
// byte-identical to the source's (it differed before the migration).
TEST_F(QemuMigration, DirectUnixSocketCopiesRamExactly) {
  start_guests(0);
  const std::string uri = "unix:" + (work_->path() / "qemu.sock").string();
  migrate_and_verify(uri, uri);
}

// Setup: as above, with multifd enabled and 4 channels on both QEMUs.
// Action: the source migrates over the main connection plus 4 multifd
// connections to the same UNIX socket.
// Pass: both sides report completed and the RAM files are identical.
TEST_F(QemuMigration, DirectMultifdFourChannelsCopiesRamExactly) {
  start_guests(4);
  const std::string uri = "unix:" + (work_->path() / "qemu.sock").string();
  migrate_and_verify(uri, uri);
}

// Setup: two real xmig-tunnel processes, hv-a and hv-b, on loopback with
// fresh certificates; source and destination QEMUs as in the direct test.
// The destination listens on unix:<run_b>/hv-b/qemu.sock, where hv-b
// delivers the qemu channel.
// Action: the source migrates to hv-a's entry socket
// unix:<run_a>/hv-b/qemu.sock, so the stream goes source -> hv-a ==TLS==>
// hv-b -> destination (one stream, no multifd).
// Pass: both QEMUs report completed, the destination's RAM file is
// byte-identical to the source's, and after the QEMUs quit hv-a logged
// exactly one `close: dir=out ... channel=qemu ... result=ok` and hv-b the
// matching `dir=in` line, with no refusals.
TEST_F(QemuMigration, ThroughTunnelCopiesRamExactly) {
  start_tunnel();
  ASSERT_NO_FATAL_FAILURE(start_guests(0));
  ASSERT_NO_FATAL_FAILURE(migrate_and_verify("unix:" + pair_->delivery("qemu").string(),
                                             "unix:" + pair_->entry("qemu").string()));
  expect_tunnel_carried(1);
}

// Setup: as ThroughTunnelCopiesRamExactly, with multifd enabled and 4
// channels on both QEMUs.
// Action: the source opens the main connection plus 4 multifd connections
// to hv-a's entry socket; each crosses the tunnel in its own TLS connection
// and hv-b connects each to the destination's socket in accept order.
// Pass: both QEMUs report completed, multifd carried more than half
// the RAM, the RAM files are identical, and each tunnel logged 5 clean
// qemu closes (out on hv-a, in on hv-b) and no refusals; hv-a dialled the
// channels at once (tunnel/order.hpp): hv-b's open lines name the place of
// each of the 5 in the entry's order, and at least one was dialled while a
// predecessor still was, so the order was kept by hv-b, not by waiting.
TEST_F(QemuMigration, ThroughTunnelMultifdFourChannelsCopiesRamExactly) {
  start_tunnel();
  ASSERT_NO_FATAL_FAILURE(start_guests(4));
  ASSERT_NO_FATAL_FAILURE(migrate_and_verify("unix:" + pair_->delivery("qemu").string(),
                                             "unix:" + pair_->entry("qemu").string()));
  expect_tunnel_carried(1 + 4);
  const int ordered =
      count_lines_with_all(pair_->b.log, {"open:", "channel qemu", "predecessor(s)"});
  const int alone = count_lines_with_all(pair_->b.log, {"open:", "channel qemu", "beside 0 pred"});
  EXPECT_EQ(ordered, 5) << logs();
  EXPECT_GT(ordered - alone, 0) << "every multifd channel was dialled alone\n" << logs();
}

// Setup: hv-a and hv-b with libvirt's layout made by certtool from
// libvirt's templates (issue #19): server-cert.pem allows serverAuth only,
// client-cert.pem clientAuth only (plus dns_name = host); cert/key and
// client_cert/client_key mapped as the Quick start says. QEMUs as in the
// multifd test.
// Action: the source migrates over the main connection plus 4 multifd
// connections to hv-a's entry socket: five TLS connections, each dialled
// with hv-a's client certificate.
// Pass: both QEMUs report completed, the RAM files are identical, and
// each tunnel logged 5 clean qemu closes and no refusals (a dial with the
// server certificate would be refused: "its extendedKeyUsage lacks clientAuth").
TEST_F(QemuMigration, ThroughTunnelWithCerttoolLibvirtCertificatesCopiesRamExactly) {
  ASSERT_NO_FATAL_FAILURE(start_tunnel_with_certtool_pki());
  ASSERT_NO_FATAL_FAILURE(start_guests(4));
  ASSERT_NO_FATAL_FAILURE(migrate_and_verify("unix:" + pair_->delivery("qemu").string(),
                                             "unix:" + pair_->entry("qemu").string()));
  expect_tunnel_carried(1 + 4);
}

// A uid no account uses: QEMU's, as libvirt-qemu's is on a hypervisor.
constexpr uid_t kQemuUid = 64232;

// Pass: every thread of both tunnels has uid and gid nobody's (real,
// effective, saved, filesystem), only nobody's groups, CapEff, CapPrm,
// CapBnd, CapInh and CapAmb empty and NoNewPrivs 1; both QEMUs run as
// kQemuUid; both QEMUs report completed, the RAM files are identical, and
// each tunnel logged 5 clean qemu closes and no refusals.
// Setup: hv-a and hv-b with user = "nobody" (they bind as root, then drop
// to nobody) and socket_group = "nogroup", nobody's own group; both QEMUs
// run as uid kQemuUid in group nogroup, without capabilities and with
// umask 0002, as libvirt runs QEMU as libvirt-qemu in socket_group;
// multifd with 4 channels on both.
// Action: the source migrates to hv-a's entry socket; hv-b delivers to the
// destination's socket, which QEMU created in hv-b's incoming folder; once
// both QEMUs report completed, /proc/<pid>/task/*/status of both tunnels
// and both QEMUs is read.
TEST_F(QemuMigration, ThroughTunnelsRunningAsAnUnprivilegedUserCopiesRamExactly) {
  const passwd* nobody = ::getpwnam("nobody");
  const group* nogroup = ::getgrnam("nogroup");
  ASSERT_TRUE(nobody && nogroup) << "this test needs the user nobody and the group nogroup";
  pair_ = std::make_unique<TunnelPair>(TunnelPairOptions{
      .top_toml = "user = \"nobody\"\nsocket_group = \"nogroup\"", .start = false});
  fs::permissions(pair_->temp.path(), fs::perms(0711));
  pair_->start(pair_->a);
  pair_->start(pair_->b);
  ASSERT_NO_FATAL_FAILURE(start_guests(
      4, QemuUser{.uid = kQemuUid, .gid = nogroup->gr_gid, .groups = {nogroup->gr_gid}}));

  const ExpectedCredentials nobody_only{.uid = nobody->pw_uid,
                                        .gid = nobody->pw_gid,
                                        .groups = groups_of("nobody", nobody->pw_gid),
                                        .capabilities = 0};
  auto expect_unprivileged = [&] {
    for (const TunnelSide* side : {&pair_->a, &pair_->b}) {
      SCOPED_TRACE(side->name);
      EXPECT_EQ(credential_problems(side->process->pid(), nobody_only), "");
      std::cout << "[ proc     ] " << side->name << " "
                << describe_credentials(side->process->pid()) << std::endl;
    }
    for (const QemuGuest* qemu : {source_.get(), destination_.get()}) {
      const auto threads = thread_credentials(qemu->pid());
      ASSERT_FALSE(threads.empty());
      const std::string uid = std::to_string(kQemuUid);
      EXPECT_EQ(threads.front().lines.at("Uid"), uid + "\t" + uid + "\t" + uid + "\t" + uid);
    }
  };
  ASSERT_NO_FATAL_FAILURE(migrate_and_verify("unix:" + pair_->delivery("qemu").string(),
                                             "unix:" + pair_->entry("qemu").string(),
                                             expect_unprivileged));
  expect_tunnel_carried(1 + 4);
}

}  // namespace
}  // namespace xmig::test
