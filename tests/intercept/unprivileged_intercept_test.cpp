// Transparent mode under least privilege: tunnels with [intercept] and
// user = apply their nftables table as root, then run as the user keeping
// CAP_NET_ADMIN alone (the SO_MARK on every socket they dial, which keeps
// their own traffic out of the redirect), and still carry nova's plain TCP
// migration.
//
// hv-a and hv-b are network namespaces (harness/netns) with a tunnel each,
// started by root with user = "nobody"; QEMU migrates the way nova makes
// libvirt do it (tcp:<hv-b address>:PORT), unaware of xmig.
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <pwd.h>

#include <iostream>
#include <memory>
#include <string>

#include "harness/credentials.hpp"
#include "harness/files.hpp"
#include "harness/netns.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kRamMib = 64;
constexpr uint16_t kPort = 49157;
constexpr uint64_t kNetAdmin = uint64_t{1} << CAP_NET_ADMIN;

// [intercept] of a host whose migration address is `own`: QEMU runs as root
// in this test, so root is the user allowed to the range.
std::string intercept_toml(const std::string& own) {
  return "[intercept]\nports = \"49152-49215\"\ndriver_port = 16509\nlisten_port = 7445\n"
         "address = \"" +
         own + "\"\nusers = [\"root\"]\n";
}

// How the tunnels are started: as root with user = "nobody" (they drop
// themselves), or as the systemd drop-in starts them: already as nobody, with
// CAP_NET_ADMIN in every set but none other (setpriv, as systemd's
// AmbientCapabilities= and CapabilityBoundingSet= do).
enum class Start { RootWithUser, AsUserWithAmbientNetAdmin };

// What the systemd unit with tools/xmig-tunnel-transparent.conf does before
// it runs the tunnel, as a script TunnelPair starts in its place. The tunnel
// is copied into `dir` (0711), as the checkout may lie where nobody cannot
// reach.
fs::path unit_like_launcher(const fs::path& dir) {
  const fs::path launcher = dir / "as-unit.sh", tunnel = dir / "xmig-tunnel";
  fs::copy_file(tool("xmig-tunnel"), tunnel);
  fs::permissions(tunnel, fs::perms(0755));
  write_file(launcher,
             "#!/bin/sh\nexec /usr/bin/setpriv --reuid=nobody --regid=nogroup --clear-groups "
             "--inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin "
             "--bounding-set=-all,+net_admin " +
                 tunnel.string() + " \"$@\"\n");
  fs::permissions(launcher, fs::perms(0755));
  return launcher;
}

// Everything of one side (its config, keys, run_dir's parent) becomes
// nobody's, as /etc/pki/qemu's keys and /run/xmig are xmig's under the unit.
void give_to(const fs::path& dir, uid_t uid, gid_t gid) {
  ASSERT_EQ(::chown(dir.c_str(), uid, gid), 0) << dir;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    ASSERT_EQ(::lchown(entry.path().c_str(), uid, gid), 0) << entry.path();
}

void carries_a_nova_migration_keeping_only_net_admin(Start how) {
  std::string why;
  if (!can_make_namespaces(&why)) GTEST_SKIP() << why;
  if (find_qemu().empty()) GTEST_SKIP() << "qemu-system-x86_64 not found";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  NetnsLab lab;
  TempDir work("xmig-unprivileged-intercept");
  fs::permissions(work.path(), fs::perms(0711));
  const bool as_user = how == Start::AsUserWithAmbientNetAdmin;
  TunnelPair pair(
      TunnelPairOptions{.a_extra = intercept_toml(lab.a_ip),
                        .b_extra = intercept_toml(lab.b_ip),
                        .top_toml = as_user ? "" : "user = \"nobody\"",
                        .tunnel = as_user ? unit_like_launcher(work.path()) : fs::path(),
                        .start = false,
                        .a_host = lab.a_ip,
                        .b_host = lab.b_ip,
                        .a_netns = lab.a,
                        .b_netns = lab.b});
  fs::permissions(pair.temp.path(), fs::perms(0711));
  if (as_user) {
    for (const TunnelSide* side : {&pair.a, &pair.b}) {
      ASSERT_NO_FATAL_FAILURE(give_to(side->dir, nobody->pw_uid, nobody->pw_gid));
    }
  }
  pair.start(pair.a);
  pair.start(pair.b);

  RamDir ram(2 * (kRamMib << 20), work.path());
  const fs::path source_ram = ram.path() / "source.ram", destination_ram = ram.path() / "dest.ram";
  create_random_file(source_ram, kRamMib << 20, 0x55505249);
  create_zero_file(destination_ram, kRamMib << 20);
  const std::string source_hash = sha256_file(source_ram);
  QemuGuest source(QemuGuestConfig{.name = "source",
                                   .work_dir = work.path(),
                                   .ram_file = source_ram,
                                   .ram_mib = kRamMib,
                                   .incoming = false,
                                   .netns = lab.a});
  QemuGuest destination(QemuGuestConfig{.name = "destination",
                                        .work_dir = work.path(),
                                        .ram_file = destination_ram,
                                        .ram_mib = kRamMib,
                                        .incoming = true,
                                        .netns = lab.b});
  source.unlimit_bandwidth();
  ASSERT_NE(sha256_file(destination_ram), source_hash);
  destination.migrate_incoming("tcp:0.0.0.0:" + std::to_string(kPort));
  source.migrate("tcp:" + lab.b_ip + ":" + std::to_string(kPort));
  const MigrationStatus sent = source.wait_for_migration(120s);
  ASSERT_TRUE(sent.completed()) << sent.status << ": " << sent.error << "\n"
                                << source.log() << destination.log() << pair.logs();
  const MigrationStatus got = destination.wait_for_migration(60s);
  ASSERT_TRUE(got.completed()) << got.status << ": " << got.error << "\n" << destination.log();

  const ExpectedCredentials nobody_with_net_admin{.uid = nobody->pw_uid,
                                                  .gid = nobody->pw_gid,
                                                  .groups = groups_of("nobody", nobody->pw_gid),
                                                  .capabilities = kNetAdmin};
  for (const TunnelSide* side : {&pair.a, &pair.b}) {
    SCOPED_TRACE(side->name);
    EXPECT_EQ(credential_problems(side->process->pid(), nobody_with_net_admin), "");
    EXPECT_EQ(
        count_lines_with_all(side->log, {"ready: ",
                                         as_user ? "uid=" + std::to_string(nobody->pw_uid) + " ("
                                                 : std::string("user=nobody"),
                                         "CAP_NET_ADMIN only"}),
        1)
        << pair.logs();
    std::cout << "[ proc     ] " << side->name << " " << describe_credentials(side->process->pid())
              << std::endl;
  }

  if (!as_user) {
    const fs::path check = work.path() / "check.log";
    EXPECT_EQ(
        run({tool("xmig-tunnel"), "--check", "--config", pair.a.config.string()}, check.string()),
        0)
        << read_file(check);
    EXPECT_NE(read_file(check).find("runs as user nobody (uid " + std::to_string(nobody->pw_uid) +
                                    ") once its sockets are bound, with CAP_NET_ADMIN only"),
              std::string::npos)
        << read_file(check);
  }

  source.quit();
  destination.quit();
  EXPECT_EQ(sha256_file(destination_ram), source_hash)
      << "destination RAM differs from the source's";
  const std::string channel = "channel=port-" + std::to_string(kPort);
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.a.log, {"close: dir=out peer=hv-b", channel,
                                                 "local=intercept:", "result=ok"}) == 1 &&
               count_lines_with_all(pair.b.log, {"close: dir=in peer=hv-a", channel}) == 1;
      },
      10s))
      << pair.logs();
}

// Pass: the nova-style migration to tcp:<hv-b>:49157 completes on both QEMUs
// with the destination's RAM hashing as the source's; hv-a logged its close
// line for channel port-49157 (taken by the intercept) with result=ok and
// hv-b its delivery of it; every thread of both tunnels has uid and gid
// nobody's, only nobody's groups, CapEff, CapPrm and CapBnd exactly
// CAP_NET_ADMIN (0000000000001000), CapInh and CapAmb empty and NoNewPrivs 1;
// both ready lines say "CAP_NET_ADMIN only", and so does hv-a's --check
// (exit 0: user = with [intercept] is a valid config).
// Setup: two namespaces; tunnels in both with [intercept] and user =
// "nobody", started as root; a paused source QEMU (random RAM) in hv-a and a
// destination (zeros) in hv-b.
// Action: the destination listens on tcp:0.0.0.0:49157 in hv-b, the source
// migrates to tcp:<hv-b address>:49157 in hv-a; then /proc of both tunnels
// is read.
TEST(UnprivilegedIntercept, TunnelsKeepOnlyNetAdminAndCarryANovaMigration) {
  carries_a_nova_migration_keeping_only_net_admin(Start::RootWithUser);
}

// Pass: as above (the --check line excepted: there is no user =), with the
// ready lines saying "uid=<nobody's> (CAP_NET_ADMIN only)": the tunnel that
// systemd starts with AmbientCapabilities=CAP_NET_ADMIN applies its table
// through nft (which inherits the capability), then empties its ambient and
// inheritable sets, so that nothing it runs later inherits it.
// Setup: as above, but each tunnel's files belong to nobody and the tunnels
// are started by a script doing what the unit with
// tools/xmig-tunnel-transparent.conf does: setpriv to nobody with
// CAP_NET_ADMIN in the inheritable, ambient and bounding sets.
// Action: the same migration; /proc of both tunnels is read.
TEST(UnprivilegedIntercept, TunnelStartedAsTheUnitDoesKeepsOnlyNetAdmin) {
  carries_a_nova_migration_keeping_only_net_admin(Start::AsUserWithAmbientNetAdmin);
}

}  // namespace
}  // namespace xmig::test
