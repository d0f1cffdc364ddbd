// Per-migration socket sets and the guest check: two migrations to one host
// never reach each other's QEMU. Each test states its pass criterion first.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <future>

#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// Sends `bytes` of seed data into `entry` and receives them on `sink`;
// returns {sent, received}.
std::pair<Hashed, Hashed> carry(const fs::path& entry, Listener& sink, uint64_t bytes,
                                uint64_t seed) {
  Fd client = connect_unix(entry.string());
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), bytes, seed);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(10s);
  if (!server) {
    Hashed nothing;
    nothing.error = "nothing arrived at the sink";
    return {sent.get(), nothing};
  }
  Hashed got = recv_stream(server.get());
  return {sent.get(), got};
}

// Pass: two sets reserved on hv-a (vm1, vm2) appear as
// <run_dir>/hv-b/<id>/{driver,qemu,nbd}.sock; a driver connection of each
// makes hv-b create <run_dir>/hv-b/<id>/; 32 MiB sent into each id's qemu
// entry arrive, by hash, at that id's own socket on hv-b and nowhere else;
// the close lines name the migration; releasing vm1's reservation removes its
// entries on hv-a, and hv-b removes its folder when its last connection ends.
TEST(Migrations, PerMigrationSetsDeliverEachStreamToItsOwnFolder) {
  TempDir scratch("xmig-driver");
  auto driver_sink = Listener::unix_socket((scratch.path() / "libvirt-sock").string());
  TunnelPairOptions opts;
  opts.b_targets["driver"] = driver_sink.endpoint();
  TunnelPair pair(opts);

  Reservation vm1 = reserve(pair.a, "hv-b", "vm1");
  Reservation vm2 = reserve(pair.a, "hv-b", "vm2");
  ASSERT_EQ(vm1.reply, "ok " + (pair.a.run_dir / "hv-b" / "vm1").string()) << pair.logs();
  ASSERT_EQ(vm2.reply, "ok " + (pair.a.run_dir / "hv-b" / "vm2").string()) << pair.logs();
  for (const char* ch : {"driver", "qemu", "nbd"})
    EXPECT_TRUE(fs::is_socket(pair.a.run_dir / "hv-b" / "vm1" / (std::string(ch) + ".sock")));

  std::map<std::string, Fd> drivers, driver_ends;
  std::map<std::string, std::unique_ptr<Listener>> qemus;
  for (const std::string id : {"vm1", "vm2"}) {
    drivers[id] = connect_unix((pair.a.run_dir / "hv-b" / id / "driver.sock").string());
    driver_ends[id] = driver_sink.accept(10s);
    ASSERT_TRUE(driver_ends[id]) << pair.logs();
    fs::path folder = pair.b.run_dir / "hv-b" / id;
    ASSERT_TRUE(fs::is_directory(folder)) << pair.logs();
    qemus[id] = std::make_unique<Listener>(Listener::unix_socket((folder / "qemu.sock").string()));
  }
  auto one = std::async(std::launch::async, [&] {
    return carry(pair.a.run_dir / "hv-b" / "vm1" / "qemu.sock", *qemus["vm1"], 32 * kMiB, 11);
  });
  auto two = carry(pair.a.run_dir / "hv-b" / "vm2" / "qemu.sock", *qemus["vm2"], 32 * kMiB, 22);
  auto first = one.get();
  EXPECT_EQ(first.second.error, "");
  EXPECT_EQ(first.second.sha256, first.first.sha256) << pair.logs();
  EXPECT_EQ(first.second.sha256, expected_sha256(32 * kMiB, 11));
  EXPECT_EQ(two.second.sha256, expected_sha256(32 * kMiB, 22)) << pair.logs();
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.b.log, {"close:", "channel=qemu migration=vm1", "ok"}) ==
                   1 &&
               count_lines_with_all(pair.a.log, {"close:", "channel=qemu migration=vm2", "ok"}) ==
                   1;
      },
      10s))
      << pair.logs();

  vm1.control.reset();
  EXPECT_TRUE(wait_until([&] { return !fs::exists(pair.a.run_dir / "hv-b" / "vm1"); }, 5s))
      << pair.logs();
  EXPECT_TRUE(fs::exists(pair.b.run_dir / "hv-b" / "vm1")) << "driver connection still open";
  drivers["vm1"].reset();
  driver_ends["vm1"].reset();
  EXPECT_TRUE(wait_until([&] { return !fs::exists(pair.b.run_dir / "hv-b" / "vm1"); }, 5s))
      << pair.logs();
  EXPECT_TRUE(fs::exists(pair.a.run_dir / "hv-b" / "vm2" / "qemu.sock"));
  EXPECT_TRUE(fs::exists(pair.b.run_dir / "hv-b" / "vm2"));
}

// Pass: the control socket is mode 0600; reserving for an unknown peer, with
// an id that could leave the folder ("../x", "a/b"), or ending in .sock, or
// an id already held, each answers "error <why>"; once released, the same id
// can be reserved again.
TEST(Migrations, ControlSocketRefusesWhatItMustAndIsRootOnly) {
  TunnelPair pair;
  struct stat st {};
  ASSERT_EQ(::stat((pair.a.run_dir / "control.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  EXPECT_EQ(reserve(pair.a, "hv-x", "vm1").reply.rfind("error no [[peer]] named \"hv-x\"", 0), 0u);
  for (const std::string bad : {"../x", "a/b", "qemu.sock", ".hidden"})
    EXPECT_EQ(reserve(pair.a, "hv-b", bad).reply.rfind("error invalid migration id", 0), 0u) << bad;
  EXPECT_FALSE(fs::exists(pair.a.run_dir / "x"));

  Reservation held = reserve(pair.a, "hv-b", "vm1");
  ASSERT_EQ(held.reply.rfind("ok ", 0), 0u) << held.reply;
  EXPECT_NE(reserve(pair.a, "hv-b", "vm1").reply.find("already reserved"), std::string::npos);
  held.control.reset();
  EXPECT_TRUE(wait_until([&] { return !fs::exists(pair.a.run_dir / "hv-b" / "vm1"); }, 5s));
  EXPECT_EQ(reserve(pair.a, "hv-b", "vm1").reply.rfind("ok ", 0), 0u) << pair.logs();
}

// A stand-in for QEMU: a python3 process whose command line carries
// "-uuid UUID", as libvirt starts QEMU. Role "listen" accepts one connection
// on PATH and writes the byte count it received to PATH.count; role
// "connect" sends 1 MiB into PATH and waits for the far end to close.
Process fake_qemu(const std::string& role, const fs::path& path, const std::string& uuid,
                  const fs::path& log) {
  static const char* kScript = R"(
import os, socket, sys
role, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
if role == "listen":
    s.bind(path); s.listen(4)
    c, _ = s.accept(); n = 0
    try:
        while True:
            b = c.recv(65536)
            if not b: break
            n += len(b)
    except OSError:
        pass
    open(path + ".count.tmp", "w").write(str(n)); os.rename(path + ".count.tmp", path + ".count")
else:
    s.connect(path)
    try:
        s.sendall(b"x" * (1 << 20)); s.shutdown(socket.SHUT_WR)
        while s.recv(65536): pass
    except OSError:
        pass
)";
  return Process({"/usr/bin/python3", "-c", kScript, role, path.string(), "-uuid", uuid},
                 log.string());
}

// Pass: on the fixed set, a stream from guest A's QEMU is never delivered to
// a destination socket whose QEMU is guest B (what happens when a second
// migration's QEMU replaced the first one's socket): that QEMU receives 0
// bytes, and hv-b logs a refusal saying another migration uses the set. The
// same stream to guest A's own QEMU arrives whole (1 MiB).
TEST(Migrations, StreamIsNeverDeliveredToAnotherGuestsQemu) {
  TunnelPair pair;
  const std::string guest_a = "aaaaaaaa-1111-4111-8111-aaaaaaaaaaaa";
  const std::string guest_b = "bbbbbbbb-2222-4222-8222-bbbbbbbbbbbb";
  const fs::path dest = pair.delivery("qemu");
  const fs::path log = pair.temp.path() / "fake-qemu.log";

  Process other = fake_qemu("listen", dest, guest_b, log);
  ASSERT_TRUE(wait_until([&] { return fs::exists(dest); }, 10s));
  Process source = fake_qemu("connect", pair.entry("qemu"), guest_a, log);
  EXPECT_EQ(source.wait(20s), std::optional<int>(0)) << read_file(log);
  ASSERT_TRUE(wait_until([&] { return fs::exists(dest.string() + ".count"); }, 10s))
      << read_file(log) << pair.logs();
  EXPECT_EQ(read_file(dest.string() + ".count"), "0");
  EXPECT_EQ(count_lines_with_all(pair.b.log, {"refused:", "belongs to guest " + guest_b,
                                              "carries guest " + guest_a, "another migration"}),
            1)
      << pair.logs();
  other.wait(5s);
  fs::remove(dest);
  fs::remove(dest.string() + ".count");

  Process own = fake_qemu("listen", dest, guest_a, log);
  ASSERT_TRUE(wait_until([&] { return fs::exists(dest); }, 10s));
  Process again = fake_qemu("connect", pair.entry("qemu"), guest_a, log);
  EXPECT_EQ(again.wait(20s), std::optional<int>(0)) << read_file(log);
  ASSERT_TRUE(wait_until([&] { return fs::exists(dest.string() + ".count"); }, 10s))
      << read_file(log) << pair.logs();
  EXPECT_EQ(read_file(dest.string() + ".count"), std::to_string(kMiB));
}

}  // namespace
}  // namespace xmig::test
