// Transparent mode: nova's plain TCP migrations go through xmig without
// changing nova, libvirt or QEMU.
//
// hv-a and hv-b are network namespaces joined by a veth pair, each with its
// own xmig-tunnel and its own table inet xmig; a third namespace is an
// outsider on hv-b's network. QEMU migrates the way nova makes libvirt do it:
// the destination listens on tcp:0.0.0.0:PORT in hv-b, the source migrates to
// tcp:<hv-b address>:PORT in hv-a, and nobody tells either QEMU about xmig.
// RAM is random on the source and zeros on the destination; the files must
// hash the same afterwards. Captures on hv-a's veth are judged by
// `xmig-verify --pcap`.
#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

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
  return ::testing::AssertionFailure() << "\"" << needle << "\" not found in:\n" << text;
}

// The lines of `log` that contain `needle`, each with a newline.
std::string lines_with(const fs::path& log, const std::string& needle) {
  std::string out, text = read_file(log);
  for (size_t at = 0, end; at < text.size(); at = end + 1) {
    end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    if (text.compare(at, end - at, needle) != 0 &&
        text.substr(at, end - at).find(needle) != std::string::npos)
      out += text.substr(at, end - at) + "\n";
  }
  return out;
}

class Intercept : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!can_make_namespaces(&why)) GTEST_SKIP() << why;
    if (find_qemu().empty()) GTEST_SKIP() << "qemu-system-x86_64 not found";
    lab_ = std::make_unique<NetnsLab>();
    work_ = std::make_unique<TempDir>("xmig-intercept");
  }

  // Tunnels in hv-a and hv-b, each applying its table at start.
  void start_tunnels(bool firewall = true) {
    pair_ = std::make_unique<TunnelPair>(intercept_pair(*lab_, firewall, firewall));
  }

  // A capture of every TCP segment on hv-a's end of the veth.
  std::unique_ptr<Tcpdump> capture(const std::string& name, const std::string& filter = "tcp") {
    return std::make_unique<Tcpdump>(lab_->a, lab_->a_link, filter,
                                     (work_->path() / (name + ".pcap")).string(),
                                     (work_->path() / (name + ".tcpdump.log")).string());
  }

  fs::path pcap(const std::string& name) const { return work_->path() / (name + ".pcap"); }

  // Runs one migration to completion and checks RAM.
  void migrate(const std::string& name, uint16_t port, int multifd) {
    NovaMigration m(*lab_, work_->path(), name, port, multifd);
    m.start();
    MigrationStatus sent = m.wait_source();
    ASSERT_TRUE(sent.completed()) << sent.status << ": " << sent.error << "\n"
                                  << m.logs() << (pair_ ? pair_->logs() : "");
    MigrationStatus got = m.wait_destination();
    ASSERT_TRUE(got.completed()) << got.status << ": " << got.error << "\n" << m.logs();
    EXPECT_TRUE(m.ram_arrived()) << "destination RAM differs from the source's";
  }

  // The pcap verdict: passes, with a TLS 1.3 flow of ALPN xmig/port-<port>
  // and nothing in plaintext.
  void expect_only_tls(const std::string& name, uint16_t port) {
    VerifyRun r = run_verify({"--pcap", pcap(name).string()}, work_->path());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "ALPN xmig/port-" + std::to_string(port)));
    EXPECT_TRUE(contains(r.output, "TLS 1.3"));
    EXPECT_FALSE(contains(r.output, "in plaintext"));
    EXPECT_FALSE(contains(r.output, "FAIL"));
    std::cout << "---- xmig-verify --pcap " << name << " ----\n" << r.output;
  }

  // Connects from namespace `ns` to address:port; exit code of nc (0 = connected).
  int try_connect(const std::string& ns, const std::string& address, uint16_t port) {
    return NetnsLab::run_in(ns, {"/bin/nc", "-z", "-w", "3", address, std::to_string(port)},
                            (work_->path() / "nc.log").string(), 20s);
  }

  std::unique_ptr<NetnsLab> lab_;
  std::unique_ptr<TempDir> work_;
  std::unique_ptr<TunnelPair> pair_;
};

// Pass: a single-stream migration to tcp:<hv-b>:49153 completes with equal
// RAM; the veth capture holds only TLS 1.3 (xmig-verify --pcap exit 0, ALPN
// xmig/port-49153); both tunnels log the connection's close line.
TEST_F(Intercept, NovaStyleMigrationCrossesTheWireOnlyAsTls) {
  start_tunnels();
  auto dump = capture("single");
  ASSERT_NO_FATAL_FAILURE(migrate("single", 49153, 0));
  dump->stop();
  pair_->stop();
  expect_only_tls("single", 49153);
  const std::string original = lab_->b_ip + ":49153";
  EXPECT_EQ(count_lines_with_all(pair_->a.log, {"close: dir=out peer=hv-b channel=port-49153",
                                                "local=intercept:" + original, "result=ok"}),
            1)
      << pair_->logs();
  EXPECT_EQ(count_lines_with_all(
                pair_->b.log, {"close: dir=in peer=hv-a channel=port-49153", "local=" + original}),
            1)
      << pair_->logs();
  std::cout << "---- close lines ----\n"
            << lines_with(pair_->a.log, "channel=port-49153")
            << lines_with(pair_->b.log, "channel=port-49153");
}

// Pass: a multifd migration with 4 channels through the intercept completes
// with equal RAM, and the capture holds only TLS.
TEST_F(Intercept, NovaStyleMultifdFourChannelsKeepsOrder) {
  start_tunnels();
  auto dump = capture("multifd");
  ASSERT_NO_FATAL_FAILURE(migrate("multifd", 49160, 4));
  dump->stop();
  pair_->stop();
  expect_only_tls("multifd", 49160);
  // The main channel and the 4 multifd channels, each carried once.
  EXPECT_EQ(count_lines_with_all(pair_->a.log, {"close: dir=out", "channel=port-49160"}), 5)
      << pair_->logs();
}

// Pass: two migrations at once on ports 49170 and 49171 both complete, each
// destination's RAM equal to its own source's (they never cross).
TEST_F(Intercept, TwoMigrationsAtOnceOnDifferentPortsNeverCross) {
  start_tunnels();
  NovaMigration first(*lab_, work_->path(), "first", 49170, 0);
  NovaMigration second(*lab_, work_->path(), "second", 49171, 2);
  first.start();
  second.start();
  for (NovaMigration* m : {&first, &second}) {
    MigrationStatus sent = m->wait_source();
    ASSERT_TRUE(sent.completed()) << sent.status << ": " << sent.error << "\n" << pair_->logs();
    ASSERT_TRUE(m->wait_destination().completed()) << m->logs();
  }
  EXPECT_TRUE(first.ram_arrived()) << "first: destination RAM differs from the source's";
  EXPECT_TRUE(second.ram_arrived()) << "second: destination RAM differs from the source's";
}

// Pass: without xmig's tables the same migration completes and its capture
// is flagged (xmig-verify exits 1, "QEMU migration stream in plaintext"):
// the capture check can fail.
TEST_F(Intercept, WithoutTheRulesTheSameMigrationIsFlaggedPlaintext) {
  auto dump = capture("plain");
  ASSERT_NO_FATAL_FAILURE(migrate("plain", 49153, 0));
  dump->stop();
  VerifyRun r = run_verify({"--pcap", pcap("plain").string()}, work_->path());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(
      contains(r.output, "-> " + lab_->b_ip + ":49153: QEMU migration stream in plaintext"));
  std::cout << r.output;
}

// Pass: the outsider reaches a listener on hv-b's migration port 49190 and
// driver port before hv-b's table exists, and no longer once it does (the
// table drops plaintext from the network), while hv-b itself still can.
TEST_F(Intercept, OutsiderCannotConnectToMigrationPortsInPlaintext) {
  Process listener(NetnsLab::in(lab_->b, {"/bin/nc", "-lk", "49190"}));
  Process driver(NetnsLab::in(lab_->b, {"/bin/nc", "-lk", "16509"}));
  ASSERT_TRUE(wait_until([&] { return try_connect(lab_->outsider, lab_->b_ip, 49190) == 0; }, 10s))
      << "the outsider cannot reach hv-b even without the table: the test proves nothing";
  EXPECT_EQ(try_connect(lab_->outsider, lab_->b_ip, 16509), 0);
  start_tunnels();
  EXPECT_NE(try_connect(lab_->outsider, lab_->b_ip, 49190), 0);
  EXPECT_NE(try_connect(lab_->outsider, lab_->b_ip, 16509), 0);
  EXPECT_EQ(try_connect(lab_->b, lab_->b_ip, 49190), 0) << "hv-b's own connection was dropped";
}

// Pass: with hv-a's tunnel stopped (its table stays), a migration to hv-b
// fails, and not one segment to the migration port crosses the veth.
TEST_F(Intercept, StoppedTunnelFailsTheMigrationWithoutPlaintext) {
  start_tunnels();
  pair_->a.process->terminate(10s);
  auto dump = capture("stopped", "tcp port 49153");
  NovaMigration m(*lab_, work_->path(), "stopped", 49153, 0);
  m.start();
  MigrationStatus sent = m.wait_source();
  EXPECT_EQ(sent.status, "failed") << sent.reply;
  std::string summary = dump->stop();
  EXPECT_TRUE(contains(summary, "0 packets captured"));
  EXPECT_EQ(NetnsLab::run_in(lab_->a, {"/usr/sbin/nft", "list", "table", "inet", "xmig"}), 0)
      << "the table went with the tunnel";
}

// Pass: in hv-a, root's connection to hv-b's driver port is taken by the
// intercept listener, while the same connection by user nobody is reset by
// the table (a driver connection is root on the peer's libvirt).
TEST_F(Intercept, OnlyRootReachesThePeersDriverPort) {
  start_tunnels();
  const std::string taken = "intercept:" + lab_->b_ip + ":16509";  // in hv-a's line for it
  const std::vector<std::string> nc = {"/bin/nc", "-z", "-w", "3", lab_->b_ip, "16509"};
  EXPECT_EQ(NetnsLab::run_in(lab_->a, nc), 0) << "root's driver connection was not taken";
  ASSERT_TRUE(wait_until([&] { return count_in_log(pair_->a.log, taken) >= 1; }, 10s))
      << pair_->logs();
  const int lines = count_in_log(pair_->a.log, taken);
  std::vector<std::string> as_nobody = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                        "--clear-groups"};
  as_nobody.insert(as_nobody.end(), nc.begin(), nc.end());
  EXPECT_NE(NetnsLab::run_in(lab_->a, as_nobody), 0) << "user nobody reached the driver port";
  EXPECT_EQ(count_in_log(pair_->a.log, taken), lines) << pair_->logs();
}

// Pass: a connection made straight to the intercept listener (no redirect)
// is refused, and hv-a's log says why.
TEST_F(Intercept, StraightToTheListenerIsRefusedWithAReason) {
  start_tunnels();
  NetnsLab::run_in(
      lab_->a,
      {"/bin/sh", "-c", "echo hello | nc -w 2 127.0.0.1 " + std::to_string(kLabInterceptPort)});
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair_->a.log, {"refused: intercept", "from 127.0.0.1"}) == 1;
      },
      10s))
      << pair_->logs();
}

// Pass: what `xmig-tunnel --nftables` prints, fed to `nft -f -` in a
// namespace (twice: it replaces the table), lists as table inet xmig with the
// redirect of both port sets to the listener and the drop rules.
TEST_F(Intercept, PrintedRulesetAppliesAsItIs) {
  start_tunnels();
  pair_->stop();
  const fs::path rules = work_->path() / "rules.nft";
  ASSERT_EQ(run({"/bin/sh", "-c",
                 tool("xmig-tunnel") + " --nftables --config " + pair_->a.config.string() + " > " +
                     rules.string()}),
            0);
  const std::string printed = read_file(rules);
  std::cout << printed;
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(NetnsLab::run_in(lab_->outsider, {"/usr/sbin/nft", "-f", rules.string()},
                               (work_->path() / "nft.log").string()),
              0)
        << read_file(work_->path() / "nft.log");
  const fs::path listed = work_->path() / "listed.txt";
  ASSERT_EQ(NetnsLab::run_in(lab_->outsider, {"/usr/sbin/nft", "list", "table", "inet", "xmig"},
                             listed.string()),
            0);
  const std::string table = read_file(listed);
  EXPECT_TRUE(contains(table, "elements = { " + lab_->b_ip + " }"));
  EXPECT_TRUE(contains(table, "tcp dport { 16509, 49152-49215 } redirect to :7445"));
  EXPECT_TRUE(contains(table, "meta skuid != 0 reject"));
  EXPECT_TRUE(contains(table, "ct state new tcp dport { 16509, 49152-49215 } drop"));
  EXPECT_EQ(count_in_log(listed, "table inet xmig"), 1);
}

// Pass: --check refuses each overlap that would make the tunnel catch its
// own traffic or block its peers, naming the key.
TEST(InterceptCheck, RefusesOverlappingPorts) {
  TunnelPair pair(TunnelPairOptions{.start = false});
  struct Case {
    std::string intercept, expect;
  };
  const std::vector<Case> cases = {
      {"listen_port = 49200\n", "[intercept].listen_port"},
      {"driver_port = 49160\n", "[intercept].driver_port"},
      {"ports = \"" + std::to_string(pair.b.port) + "-" + std::to_string(pair.b.port) + "\"\n",
       "TLS port"},
      {"ports = \"" + std::to_string(pair.a.port) + "-" + std::to_string(pair.a.port) + "\"\n",
       "the TLS listener's port"},
      {"ports = \"49215-49152\"\n", "is not a port range"},
      {"address = \"127.0.0.1\"\n", "is also an address of peer hv-b"},
  };
  for (const auto& c : cases) {
    const fs::path config = pair.temp.path() / "case.toml";
    std::string text = read_file(pair.a.config);
    write_file(config, text + "\n[intercept]\naddress = \"127.0.0.2\"\n" + c.intercept);
    // A repeated key is a TOML error; write address only when the case does not.
    if (c.intercept.rfind("address", 0) == 0)
      write_file(config, text + "\n[intercept]\n" + c.intercept);
    const fs::path out = pair.temp.path() / "check.log";
    fs::remove(out);
    EXPECT_EQ(run({tool("xmig-tunnel"), "--check", "--config", config.string()}, out.string()), 1)
        << c.intercept << read_file(out);
    EXPECT_TRUE(contains(read_file(out), c.expect)) << c.intercept;
  }
  // And a clean [intercept] passes, naming what it intercepts.
  const fs::path config = pair.temp.path() / "good.toml";
  write_file(config, read_file(pair.a.config) + "\n[intercept]\naddress = \"127.0.0.2\"\n");
  const fs::path out = pair.temp.path() / "good.log";
  EXPECT_EQ(run({tool("xmig-tunnel"), "--check", "--config", config.string()}, out.string()), 0)
      << read_file(out);
  EXPECT_TRUE(contains(read_file(out), "intercept: TCP to the peers' driver_port 16509"));
}

}  // namespace
}  // namespace xmig::test
