// xmig-migrate, the real binary, against a fake tunnel: a control server on
// <run_dir>/control.sock that answers the reservation, sometimes a status
// endpoint serving canned /status JSON, and a `virsh` script (--virsh) that
// records its arguments and open files, waits for the test's go, and exits
// with a chosen code. No libvirt and no real tunnel are involved. Each test
// states its pass criterion first.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

std::vector<std::string> lines_of(const fs::path& file) {
  std::vector<std::string> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// One line from a socket (without its newline), up to `timeout`.
std::string read_line(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  char c;
  while (wait_readable(fd, timeout) && ::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
  return line;
}

// The tunnel's side of the reservation: accepts one connection, records the
// request line, answers `reply` ("ok <dir>" or "error <reason>"), then waits
// for the client to close its end.
class FakeControl {
 public:
  FakeControl(const fs::path& socket, std::string reply)
      : listener_(Listener::unix_socket(socket.string())), reply_(std::move(reply)) {
    thread_ = std::thread([this] {
      Fd conn = listener_.accept(20s);
      if (!conn) return;
      request_ = read_line(conn.get(), 10s);
      std::string answer = reply_ + "\n";
      ::send(conn.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
      answered_ = true;
      char c;
      while (!stop_) {
        if (!wait_readable(conn.get(), 50ms)) continue;
        if (::recv(conn.get(), &c, 1, 0) <= 0) break;
      }
      closed_ = !stop_;
    });
  }
  ~FakeControl() {
    stop_ = true;
    thread_.join();
  }
  // Valid once answered().
  const std::string& request() const { return request_; }
  bool answered() const { return answered_; }
  // The client closed the control connection.
  bool closed() const { return closed_; }

 private:
  Listener listener_;
  std::string reply_, request_;
  std::atomic<bool> answered_{false}, closed_{false}, stop_{false};
  std::thread thread_;
};

// The tunnel's status endpoint, serving whatever body() returns at the time.
class FakeStatus {
 public:
  FakeStatus(const fs::path& socket, std::function<std::string()> body)
      : listener_(Listener::unix_socket(socket.string())), body_(std::move(body)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        Fd conn = listener_.accept(50ms);
        if (!conn) continue;
        std::string request;
        char buf[1024];
        while (request.find("\r\n\r\n") == std::string::npos && wait_readable(conn.get(), 2s)) {
          ssize_t n = ::recv(conn.get(), buf, sizeof buf, 0);
          if (n <= 0) break;
          request.append(buf, static_cast<size_t>(n));
        }
        ++requests_;
        std::string body = body_();
        std::string reply =
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body;
        ::send(conn.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
      }
    });
  }
  ~FakeStatus() {
    stop_ = true;
    thread_.join();
  }
  int requests() const { return requests_; }

 private:
  Listener listener_;
  std::function<std::string()> body_;
  std::atomic<int> requests_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// hv-a as xmig-migrate sees it: a config naming peer hv-b, a fake virsh,
// and where to look.
struct SourceHost {
  SourceHost() {
    fs::create_directories(run_dir);
    write_file(config,
               "name = \"hv-a\"\nrun_dir = \"" + run_dir.string() +
                   "\"\nlisten = \"127.0.0.1:17443\"\n\n[tls]\nca = \"/nonexistent/ca.pem\"\n"
                   "cert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n\n"
                   "[[peer]]\nname = \"hv-b\"\naddress = \"127.0.0.1:27443\"\n");
  }
  ~SourceHost() { go(); }  // a fake virsh left waiting ends too

  // Writes the fake virsh: it records its arguments (one per line) and its
  // open files, waits for go() (30 s at most), and exits with `code`; on
  // SIGTERM it notes it and exits 143.
  void fake_virsh(int code) {
    write_file(virsh,
               "#!/bin/sh\n"
               "trap 'echo TERM > " +
                   (temp / "signal").string() +
                   "; exit 143' TERM\n"
                   "ls -l /proc/$$/fd > " +
                   (temp / "fds").string() +
                   "\n"
                   "printf '%s\\n' \"$@\" > " +
                   (temp / "argv.tmp").string() +
                   "\n"
                   "mv " +
                   (temp / "argv.tmp").string() + " " + argv_file().string() +
                   "\n"
                   "i=0\n"
                   "while [ ! -e " +
                   (temp / "go").string() +
                   " ] && [ $i -lt 600 ]; do\n"
                   "  sleep 0.05; i=$((i+1))\n"
                   "done\n"
                   "exit " +
                   std::to_string(code) + "\n");
    ::chmod(virsh.c_str(), 0755);
  }
  void go() { write_file(temp / "go", ""); }
  fs::path argv_file() const { return temp / "argv"; }
  bool virsh_started() const { return fs::exists(argv_file()); }
  std::vector<std::string> virsh_args() const { return lines_of(argv_file()); }

  Process migrate(std::vector<std::string> args) {
    std::vector<std::string> argv = {tool("xmig-migrate"), "--config", config.string(), "--virsh",
                                     virsh.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return Process(argv, log.string());
  }
  std::string output() const { return fs::exists(log) ? read_file(log) : ""; }

  TempDir temp{"xmig-migrate"};
  fs::path run_dir = temp / "run";
  fs::path config = temp / "tunnel.toml";
  fs::path virsh = temp / "virsh";
  fs::path log = temp / "xmig-migrate.log";
  // Where the fake tunnel says the set is: <run_dir>/<peer>/<id>.
  std::string set_dir(const std::string& id) const { return (run_dir / "hv-b" / id).string(); }
};

// What xmig-migrate must run for domain vm1 on set `dir`, around `middle`
// (the options between --p2p and the domain) and with or without the NBD socket.
std::vector<std::string> expected_virsh(const std::string& dir,
                                        const std::vector<std::string>& middle, bool disks) {
  std::vector<std::string> argv = {"-c", "qemu:///system", "migrate", "--live", "--p2p"};
  argv.insert(argv.end(), middle.begin(), middle.end());
  argv.insert(argv.end(), {"vm1", "--desturi", "qemu+unix:///system?socket=" + dir + "/driver.sock",
                           "--migrateuri", "unix://" + dir + "/qemu.sock"});
  if (disks) argv.insert(argv.end(), {"--disks-uri", "unix://" + dir + "/nbd.sock"});
  return argv;
}

// Setup: a fake control server answering "ok <run_dir>/hv-b/vm1", no status
// endpoint, a fake virsh that waits for the test and then exits 3.
// Action: xmig-migrate vm1 hv-b; while virsh waits, the control connection is
// watched for 300 ms; then virsh is let go.
// Pass: the request is "reserve hv-b vm1"; virsh gets exactly `-c
// qemu:///system migrate --live --p2p vm1 --desturi
// qemu+unix:///system?socket=<dir>/driver.sock --migrateuri unix://<dir>/qemu.sock`
// (no --disks-uri); the command is printed first; the control connection is
// still open while virsh runs and virsh does not hold it (no socket among its
// open files); xmig-migrate exits 3, the control connection is then closed, the
// missing status endpoint was only a warning, and the summary names status 3.
TEST(MigrateTool, RunsVirshOnItsSocketSetAndHoldsTheSetUntilVirshEnds) {
  SourceHost s;
  FakeControl control(s.run_dir / "control.sock", "ok " + s.set_dir("vm1"));
  s.fake_virsh(3);
  Process p = s.migrate({"vm1", "hv-b"});
  ASSERT_TRUE(wait_until([&] { return s.virsh_started() || !p.running(); }, 20s)) << s.output();
  ASSERT_TRUE(s.virsh_started()) << s.output();
  EXPECT_EQ(control.request(), "reserve hv-b vm1");
  EXPECT_EQ(s.virsh_args(), expected_virsh(s.set_dir("vm1"), {}, false));
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(control.closed()) << "the set was released while virsh was running";
  EXPECT_EQ(read_file(s.temp / "fds").find("socket:"), std::string::npos)
      << "virsh inherited a socket (the control connection?):\n"
      << read_file(s.temp / "fds");
  s.go();
  EXPECT_EQ(p.wait(20s), std::optional<int>(3)) << s.output();
  EXPECT_TRUE(wait_until([&] { return control.closed(); }, 5s));
  std::string out = s.output();
  EXPECT_NE(out.find("xmig-migrate: running " + s.virsh.string() +
                     " -c qemu:///system migrate --live --p2p vm1 --desturi "
                     "'qemu+unix:///system?socket=" +
                     s.set_dir("vm1") + "/driver.sock' --migrateuri unix://" + s.set_dir("vm1") +
                     "/qemu.sock\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("warning: no progress to show"), std::string::npos) << out;
  EXPECT_NE(out.find("vm1 -> hv-b: virsh exited with status 3 after"), std::string::npos) << out;
}

// Setup: as above, virsh exits 0 at once.
// Action: xmig-migrate vm1 hv-b --copy-storage-all, then --copy-storage-inc.
// Pass: virsh gets the storage flag after --p2p and --disks-uri
// unix://<dir>/nbd.sock at the end; xmig-migrate exits 0 each time.
TEST(MigrateTool, CopiedStorageGoesThroughTheSetsNbdSocket) {
  for (std::string flag : {"--copy-storage-all", "--copy-storage-inc"}) {
    SourceHost s;
    FakeControl control(s.run_dir / "control.sock", "ok " + s.set_dir("vm1"));
    s.fake_virsh(0);
    s.go();
    Process p = s.migrate({"vm1", "hv-b", flag});
    EXPECT_EQ(p.wait(20s), std::optional<int>(0)) << s.output();
    EXPECT_EQ(s.virsh_args(), expected_virsh(s.set_dir("vm1"), {flag}, true)) << flag;
  }
}

// Setup: as above, with a control server answering for id "vm1-try2".
// Action: xmig-migrate --id vm1-try2 vm1 hv-b --parallel 4 -- --verbose
// --timeout 30.
// Pass: the request is "reserve hv-b vm1-try2"; virsh gets --parallel
// --parallel-connections 4, then --verbose --timeout 30, before the domain,
// with the URIs of <run_dir>/hv-b/vm1-try2; xmig-migrate exits with virsh's 0.
TEST(MigrateTool, ParallelAndOptionsAfterDoubleDashReachVirsh) {
  SourceHost s;
  FakeControl control(s.run_dir / "control.sock", "ok " + s.set_dir("vm1-try2"));
  s.fake_virsh(0);
  s.go();
  Process p = s.migrate(
      {"--id", "vm1-try2", "vm1", "hv-b", "--parallel", "4", "--", "--verbose", "--timeout", "30"});
  EXPECT_EQ(p.wait(20s), std::optional<int>(0)) << s.output();
  EXPECT_EQ(control.request(), "reserve hv-b vm1-try2");
  EXPECT_EQ(s.virsh_args(), expected_virsh(s.set_dir("vm1-try2"),
                                           {"--parallel", "--parallel-connections", "4",
                                            "--verbose", "--timeout", "30"},
                                           false));
}

// Setup: a control server that answers "error <reason>".
// Action: xmig-migrate vm1 hv-b.
// Pass: exit 1, the reason is printed, virsh never ran.
TEST(MigrateTool, RefusedReservationExitsOneWithTheTunnelsReason) {
  SourceHost s;
  FakeControl control(s.run_dir / "control.sock", "error hv-b already has a migration named vm1");
  s.fake_virsh(0);
  Process p = s.migrate({"vm1", "hv-b"});
  EXPECT_EQ(p.wait(20s), std::optional<int>(1)) << s.output();
  EXPECT_NE(s.output().find("hv-b already has a migration named vm1"), std::string::npos)
      << s.output();
  EXPECT_FALSE(s.virsh_started());
}

// Setup: the config of the other tests; no control server.
// Action: xmig-migrate with a peer the config does not list; with a domain
// name that cannot be an id; with --id ending in ".sock"; with no tunnel
// listening on control.sock.
// Pass: each exits 1 without running virsh, saying respectively that the
// peer is not a [[peer]] in the config file (naming the file and the peers it
// has), that the domain name cannot be an id (suggesting --id), that the --id
// cannot be one, and that the control socket cannot be reached (naming it).
TEST(MigrateTool, ExplainsWhatKeepsAMigrationFromStarting) {
  SourceHost s;
  s.fake_virsh(0);
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> said;
  };
  for (const Case& c : std::vector<Case>{
           {{"vm1", "hv-x"}, {"\"hv-x\" is not a [[peer]] in " + s.config.string(), "hv-b"}},
           {{"vm/1", "hv-b"},
            {"the domain name \"vm/1\" cannot be a migration id", "give one with --id ID"}},
           {{"--id", "vm1.sock", "vm1", "hv-b"},
            {"--id \"vm1.sock\" cannot be a migration id", "choose another --id"}},
           {{"vm1", "hv-b"},
            {"cannot reach the tunnel's control socket " + (s.run_dir / "control.sock").string()}},
       }) {
    fs::remove(s.log);
    Process p = s.migrate(c.args);
    EXPECT_EQ(p.wait(20s), std::optional<int>(1)) << s.output();
    for (const std::string& text : c.said)
      EXPECT_NE(s.output().find(text), std::string::npos) << text << "\n" << s.output();
  }
  EXPECT_FALSE(s.virsh_started());
}

// Setup: a control server; a fake status endpoint at <run_dir>/status.sock
// that lists, while virsh runs, four active "out" connections of migration vm1
// to hv-b (driver, two qemu, nbd) whose bytes grow with every request, plus
// one of another migration and one "in" connection that must not count; once
// virsh has ended it lists them as recent with their final figures (251 MiB
// to the peer in all).
// Action: xmig-migrate vm1 hv-b, virsh let go after two progress lines.
// Pass: progress lines "xmig-migrate: vm1 -> hv-b: <x> MiB, <y> MiB/s,
// 4 channels (driver x1, nbd x1, qemu x2)" (one per scrape: the output is not
// a terminal); the summary says 251.0 MiB sent; exit code is virsh's 0.
TEST(MigrateTool, ShowsTheMigrationsProgressFromTheStatusEndpoint) {
  SourceHost s;
  FakeControl control(s.run_dir / "control.sock", "ok " + s.set_dir("vm1"));
  std::atomic<bool> ended{false};
  std::atomic<uint64_t> step{0};
  auto connection = [](const std::string& direction, const std::string& channel,
                       const std::string& migration, int id, uint64_t bytes) {
    return "{\"direction\":\"" + direction + "\",\"peer\":\"hv-b\",\"channel\":\"" + channel +
           "\",\"migration\":\"" + migration + "\",\"id\":" + std::to_string(id) +
           ",\"to_peer\":" + std::to_string(bytes) + ",\"from_peer\":5}";
  };
  constexpr uint64_t kMiB = 1 << 20;
  FakeStatus status(s.run_dir / "status.sock", [&] {
    if (ended)
      return "{\"name\":\"hv-a\",\"active\":[],\"recent\":[" +
             connection("out", "driver", "vm1", 1, kMiB) + "," +
             connection("out", "qemu", "vm1", 2, 100 * kMiB) + "," +
             connection("out", "qemu", "vm1", 3, 100 * kMiB) + "," +
             connection("out", "nbd", "vm1", 4, 50 * kMiB) + "]}";
    uint64_t n = ++step;
    return "{\"name\":\"hv-a\",\"active\":[" + connection("out", "driver", "vm1", 1, kMiB / 2) +
           "," + connection("out", "qemu", "vm1", 2, n * 10 * kMiB) + "," +
           connection("out", "qemu", "vm1", 3, n * 10 * kMiB) + "," +
           connection("out", "nbd", "vm1", 4, n * kMiB) + "," +
           connection("out", "qemu", "vm2", 5, 999 * kMiB) + "," +
           connection("in", "qemu", "vm1", 6, 999 * kMiB) + "],\"recent\":[]}";
  });
  s.fake_virsh(0);
  Process p = s.migrate({"vm1", "hv-b"});
  const std::string progress = "xmig-migrate: vm1 -> hv-b: ";
  const std::string channels = " MiB/s, 4 channels (driver x1, nbd x1, qemu x2)";
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(s.log, {progress, channels}) >= 2;
      },
      20s))
      << s.output();
  ended = true;
  s.go();
  EXPECT_EQ(p.wait(20s), std::optional<int>(0)) << s.output();
  EXPECT_NE(s.output().find(progress + "virsh exited with status 0 after "), std::string::npos)
      << s.output();
  EXPECT_NE(s.output().find("; 251.0 MiB sent, "), std::string::npos) << s.output();
  EXPECT_EQ(s.output().find("warning"), std::string::npos) << s.output();
}

// Setup: a control server; a fake virsh that waits (and notes a SIGTERM).
// Action: SIGTERM to xmig-migrate while virsh runs.
// Pass: virsh gets the SIGTERM, and xmig-migrate exits with virsh's 143.
TEST(MigrateTool, PassesSigtermOnToVirsh) {
  SourceHost s;
  FakeControl control(s.run_dir / "control.sock", "ok " + s.set_dir("vm1"));
  s.fake_virsh(0);
  Process p = s.migrate({"vm1", "hv-b"});
  ASSERT_TRUE(wait_until([&] { return s.virsh_started() || !p.running(); }, 20s)) << s.output();
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(20s), std::optional<int>(143)) << s.output();
  EXPECT_TRUE(fs::exists(s.temp / "signal")) << s.output();
}

}  // namespace
}  // namespace xmig::test
