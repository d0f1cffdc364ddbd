// Privilege separation of the channels (issue 13): what a member of
// socket_group (the group QEMU runs in, so what a guest that escaped into its
// QEMU can do) may reach, and what it can plant.
//
// Every test starts two real tunnels with socket_group = "nogroup" (a group
// every Debian has) and plays the group member in a forked child that drops
// to an unprivileged uid in that group (harness::run_as), as a compromised
// QEMU would be. The test directory is opened for traversal (0711) so that
// only the tunnel's own modes decide.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <pwd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "harness/credentials.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

// A uid no account uses: the group member's identity.
constexpr uid_t kMemberUid = 64231;
constexpr const char* kGroup = "nogroup";
constexpr auto kQuiet = std::chrono::milliseconds(1000);
constexpr uint64_t kStreamBytes = 4 << 20;

gid_t group_id() {
  const group* g = ::getgrnam(kGroup);
  if (!g) throw std::runtime_error(std::string("group ") + kGroup + " is missing on this machine");
  return g->gr_gid;
}

// As the group member (uid kMemberUid, only in socket_group): connect to the
// UNIX socket at `path` and write one byte. 0 when the byte was written, else
// the errno of what failed.
int member_connects(const fs::path& path) {
  const gid_t gid = group_id();
  return run_as(kMemberUid, gid, {gid}, [&] {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{.sun_family = AF_UNIX, .sun_path = {}};
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return errno;
    return ::send(fd, "x", 1, MSG_NOSIGNAL) == 1 ? 0 : errno;
  });
}

// Two tunnels with socket_group set; hv-b's extra [targets] as given.
std::unique_ptr<TunnelPair> group_pair(std::map<std::string, std::string> b_targets) {
  auto pair = std::make_unique<TunnelPair>(
      TunnelPairOptions{.b_targets = std::move(b_targets),
                        .top_toml = std::string("socket_group = \"") + kGroup + "\"",
                        .start = false});
  fs::permissions(pair->temp.path(), fs::perms(0711));
  pair->start(pair->a);
  pair->start(pair->b);
  return pair;
}

unsigned mode_of(const fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}

// Setup: two tunnels with socket_group = nogroup; hv-b's driver target is a
// UNIX listener of the test (standing in for libvirt's socket, root there).
// Action: the group member connects to hv-a's entries driver.sock and qemu.sock
// of the fixed set, and of a per-migration set reserved over control.sock;
// then root sends a hashed stream into the fixed driver entry.
// Pass: the member's connects to both driver entries fail with EACCES (their
// mode is 0600) while its connects to both qemu entries succeed (the group
// keeps what QEMU needs); hv-b's driver target gets no connection from the
// member's tries; root's stream arrives at it with the SHA-256 it was sent
// with (so the entry does work, for root).
TEST(Privilege, SocketGroupMemberCannotReachThePeersDriverTarget) {
  auto libvirt = std::make_shared<TempDir>("xmig-libvirt");
  Listener driver = Listener::unix_socket((libvirt->path() / "libvirt-sock").string());
  auto pair = group_pair({{"driver", driver.endpoint()}});

  Reservation set = reserve(pair->a, "hv-b", "vm1");
  ASSERT_EQ(set.reply.rfind("ok ", 0), 0u) << set.reply << pair->logs();
  const fs::path set_folder = set.reply.substr(3);
  for (const fs::path& folder : {pair->a.run_dir / "hv-b", set_folder}) {
    SCOPED_TRACE(folder.string());
    EXPECT_EQ(mode_of(folder / "driver.sock"), 0600u);
    EXPECT_EQ(member_connects(folder / "driver.sock"), EACCES);
    EXPECT_EQ(member_connects(folder / "qemu.sock"), 0);
  }
  EXPECT_FALSE(driver.accept(kQuiet)) << "a socket-group member reached hv-b's driver target\n"
                                      << pair->logs();

  Fd client = connect_unix((pair->a.run_dir / "hv-b" / "driver.sock").string());
  auto sent = std::async(std::launch::async, [&] {
    Hashed h = send_stream(client.get(), kStreamBytes, 13);
    shutdown_write(client.get());
    return h;
  });
  Fd delivered = driver.accept(std::chrono::seconds(10));
  ASSERT_TRUE(delivered) << pair->logs();
  Hashed got = recv_stream(delivered.get());
  EXPECT_EQ(got.bytes, kStreamBytes);
  EXPECT_EQ(got.sha256, sent.get().sha256) << pair->logs();
}

// As the group member: plants `link`, a symbolic link to `target`. 0 when
// planted, else errno.
int member_plants_symlink(const fs::path& target, const fs::path& link) {
  const gid_t gid = group_id();
  return run_as(kMemberUid, gid, {gid},
                [&] { return ::symlink(target.c_str(), link.c_str()) == 0 ? 0 : errno; });
}

// Root sends a stream into hv-a's entry for `channel`; returns what the
// client saw come back (it must see the end, not data).
void send_into_entry(TunnelPair& pair, const std::string& channel) {
  Fd client = connect_unix(pair.entry(channel).string());
  send_stream(client.get(), 64 << 10, 7);
  shutdown_write(client.get());
  ASSERT_TRUE(wait_readable(client.get(), std::chrono::seconds(5))) << pair.logs();
  char byte;
  EXPECT_LE(::recv(client.get(), &byte, 1, 0), 0) << "data came back from a refused target";
}

// Setup: two tunnels with socket_group = nogroup; a root service listening on
// a UNIX socket open to all (mode 0666, like libvirt's libvirt-sock) in a
// folder of the test.
// Action: the group member plants, in hv-b's incoming folder <run_dir>/hv-b/
// (which it may write: QEMU creates its sockets there), qemu.sock as a
// symbolic link to the root service; nbd.sock becomes a hard link to it (see
// below); root
// sends a stream into hv-a's qemu entry, then into its nbd entry.
// Pass: the plant succeeds (the folder must stay writable for QEMU); hv-b
// refuses the qemu stream with "is a symbolic link" and the nbd stream with
// "the socket belongs to root", each in a `refused:` line; the root service
// never gets a connection; hv-b's incoming folder has mode 01770.
TEST(Privilege, PlantedLinksInTheIncomingFolderAreRefused) {
  TempDir service_dir("xmig-root-service");
  fs::permissions(service_dir.path(), fs::perms(0711));
  const fs::path service_path = service_dir.path() / "service.sock";
  Listener service = Listener::unix_socket(service_path.string());
  fs::permissions(service_path, fs::perms(0666));
  auto pair = group_pair({});
  const fs::path incoming = pair->b.run_dir / "hv-b";
  EXPECT_EQ(mode_of(incoming), 01770u);

  ASSERT_EQ(member_plants_symlink(service_path, incoming / "qemu.sock"), 0);
  // fs.protected_hardlinks = 1 (Debian's default) refuses the member a hard
  // link to a socket it does not own: made by the test instead, for a host
  // where it is 0.
  ASSERT_EQ(::link(service_path.c_str(), (incoming / "nbd.sock").c_str()), 0);
  send_into_entry(*pair, "qemu");
  send_into_entry(*pair, "nbd");

  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair->b.log,
                                    {"refused:", "channel qemu", "is a symbolic link"}) == 1 &&
               count_lines_with_all(pair->b.log,
                                    {"refused:", "channel nbd", "the socket belongs to root"}) == 1;
      },
      std::chrono::seconds(5)))
      << pair->logs();
  EXPECT_FALSE(service.accept(kQuiet)) << "a planted link reached the root service\n"
                                       << pair->logs();
}

// Setup: a folder of someone else's with mode 01777 (like /tmp), owned by
// uid kMemberUid; hv-a has a [[route]] listening on a UNIX socket in it.
// Action: start both tunnels, carry a hashed stream through the route, stop
// them; then start hv-a with the route's folder missing.
// Pass: the folder's mode stays 01777 and its owner kMemberUid while the
// tunnels run and after they stop; the stream arrives with its SHA-256; with
// the folder missing hv-a does not start and its log says the folder "does
// not exist" (the tunnel creates only the socket there, never the folder).
TEST(Privilege, SocketInASharedFolderLeavesTheFolderUnchanged) {
  Listener bench = Listener::tcp();
  TempDir shared_dir("xmig-shared");
  const fs::path shared = shared_dir.path() / "shared";
  fs::create_directory(shared);
  ASSERT_EQ(::chown(shared.c_str(), kMemberUid, group_id()), 0);
  fs::permissions(shared, fs::perms(01777));
  auto owner_of = [&] {
    struct stat st {};
    return ::stat(shared.c_str(), &st) == 0 ? st.st_uid : 0;
  };
  {
    TunnelPair pair(
        TunnelPairOptions{.b_targets = {{"bench", bench.endpoint()}},
                          .a_routes = {{"unix:" + (shared / "bench.sock").string(), "bench"}}});
    EXPECT_EQ(mode_of(shared), 01777u);
    EXPECT_EQ(owner_of(), kMemberUid);
    Fd client = connect_unix((shared / "bench.sock").string());
    auto sent = std::async(std::launch::async, [&] {
      Hashed h = send_stream(client.get(), kStreamBytes, 3);
      shutdown_write(client.get());
      return h;
    });
    Fd delivered = bench.accept(std::chrono::seconds(10));
    ASSERT_TRUE(delivered) << pair.logs();
    Hashed got = recv_stream(delivered.get());
    EXPECT_EQ(got.sha256, sent.get().sha256) << pair.logs();
    pair.stop();
  }
  EXPECT_EQ(mode_of(shared), 01777u);
  EXPECT_EQ(owner_of(), kMemberUid);

  TunnelPair missing(TunnelPairOptions{
      .a_routes = {{"unix:" + (shared_dir.path() / "missing" / "bench.sock").string(), "bench"}},
      .start = false});
  EXPECT_THROW(missing.start(missing.a), std::runtime_error);
  EXPECT_EQ(count_in_log(missing.a.log, "missing does not exist"), 1) << missing.logs();
  EXPECT_FALSE(fs::exists(shared_dir.path() / "missing"));
}

// Setup: two tunnels with user = "nobody" (an account every Debian has; its
// group nogroup); hv-b's qemu sink is a UNIX socket of the test (mode 0666).
// Action: start both, send a hashed stream into hv-a's qemu entry for hv-b,
// then a second stream through a per-migration set reserved over
// control.sock (its folders are made after the drop, on hv-b when the set's
// driver connection arrives at a TCP sink of the test); read
// /proc/<pid>/task/*/status of both tunnels.
// Pass: every thread of both tunnels has Uid and Gid nobody's (real,
// effective, saved, filesystem), Groups only nobody's own, CapEff, CapPrm,
// CapBnd and CapAmb all zero and NoNewPrivs 1; both streams arrive with the
// SHA-256 they were sent with; run_dir and its folders belong to nobody.
TEST(Privilege, TunnelRunsAsTheConfiguredUserAndStillCarriesStreams) {
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  Listener driver = Listener::tcp();
  TunnelPair pair(TunnelPairOptions{.b_targets = {{"driver", driver.endpoint()}},
                                    .top_toml = "user = \"nobody\"",
                                    .start = false});
  fs::permissions(pair.temp.path(), fs::perms(0711));
  pair.start(pair.a);
  pair.start(pair.b);

  const ExpectedCredentials nobody_only{.uid = nobody->pw_uid,
                                        .gid = nobody->pw_gid,
                                        .groups = groups_of("nobody", nobody->pw_gid),
                                        .capabilities = 0};
  for (const TunnelSide* side : {&pair.a, &pair.b}) {
    SCOPED_TRACE(side->name);
    EXPECT_EQ(credential_problems(side->process->pid(), nobody_only), "");
    std::cout << side->name << " " << describe_credentials(side->process->pid()) << std::endl;
    EXPECT_GE(thread_credentials(side->process->pid()).size(), 2u) << "the workers should run too";
    struct stat st {};
    ASSERT_EQ(::stat(side->run_dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, nobody->pw_uid);
  }

  auto carry = [&](const fs::path& entry, const fs::path& delivery, uint64_t seed) {
    Listener sink = Listener::unix_socket(delivery.string());
    fs::permissions(delivery, fs::perms(0666));
    Fd client = connect_unix(entry.string());
    auto sent = std::async(std::launch::async, [&] {
      Hashed h = send_stream(client.get(), kStreamBytes, seed);
      shutdown_write(client.get());
      return h;
    });
    Fd delivered = sink.accept(std::chrono::seconds(10));
    if (!delivered) {
      sent.wait();
      ADD_FAILURE() << "nothing reached " << delivery << "\n" << pair.logs();
      return;
    }
    Hashed got = recv_stream(delivered.get());
    EXPECT_EQ(got.bytes, kStreamBytes);
    EXPECT_EQ(got.sha256, sent.get().sha256) << pair.logs();
  };
  carry(pair.entry("qemu"), pair.delivery("qemu"), 21);

  Reservation set = reserve(pair.a, "hv-b", "vm1");
  ASSERT_EQ(set.reply.rfind("ok ", 0), 0u) << set.reply << pair.logs();
  // hv-b makes <run_dir>/hv-b/vm1/ when the first connection of vm1 arrives
  // (libvirt's driver connection, in a migration; a TCP sink here) and keeps
  // it while that connection is open.
  const fs::path set_folder = set.reply.substr(3);
  Fd libvirt = connect_unix((set_folder / "driver.sock").string());
  Fd libvirtd = driver.accept(std::chrono::seconds(10));
  ASSERT_TRUE(libvirtd) << pair.logs();
  carry(set_folder / "qemu.sock", pair.b.run_dir / "hv-b" / "vm1" / "qemu.sock", 22);
}

}  // namespace
}  // namespace xmig::test
