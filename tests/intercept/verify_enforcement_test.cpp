// xmig-verify proves transparent mode on a live host: run in hv-a against
// hv-b (network namespaces, each with its own xmig-tunnel and table inet
// xmig, harness/netns.hpp), its interception group passes on a correct pair
// and fails, naming the cause and the fix, when hv-a's table is gone and
// when hv-b does not drop plaintext from the network. And a nova-style QEMU
// migration over IPv6 through the pair.
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

// The range port xmig-verify tries by default: the range's last.
constexpr uint16_t kProbedPort = 49215;
const std::vector<std::string> kInterceptionChecks = {
    "table inet xmig",
    "driver port 16509 from this host",
    "migration port 49215 from this host",
    "no plaintext canary on the wire",
    "driver port 16509 from the network",
    "migration port 49215 from the network",
};

::testing::AssertionResult contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << needle << "\" not found in:\n" << text;
}

class VerifyEnforcement : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!can_make_namespaces(&why)) GTEST_SKIP() << why;
    lab_ = std::make_unique<NetnsLab>();
    work_ = std::make_unique<TempDir>("xmig-verify-enforcement");
  }

  // Both tunnels with [intercept]; hv-a has a verify route, so the wire
  // check too goes through its tunnel.
  // a_users: hv-a's [intercept] users line instead of root's.
  void start_tunnels(bool b_firewall = true, bool ipv6 = false, const std::string& a_users = "") {
    TunnelPairOptions o = intercept_pair(*lab_, true, b_firewall, ipv6);
    if (!a_users.empty()) o.a_extra.replace(o.a_extra.find("users = "), std::string::npos, a_users);
    o.a_routes = {{"unix:" + (work_->path() / "verify.sock").string(), "verify"}};
    pair_ = std::make_unique<TunnelPair>(o);
  }

  // What QEMU waiting for a migration is to the network: a listener on
  // hv-b's migration address at the probed port, keeping what it receives.
  void listen_in_b() {
    received_ = work_->path() / "received";
    listener_.emplace(
        NetnsLab::in(lab_->b, {"/bin/sh", "-c",
                               "exec /bin/nc -lk " + lab_->b_ip + " " +
                                   std::to_string(kProbedPort) + " > " + received_.string()}));
    ASSERT_TRUE(wait_until(
        [&] {
          return NetnsLab::run_in(lab_->b, {"/bin/nc", "-z", "-w", "1", lab_->b_ip,
                                            std::to_string(kProbedPort)}) == 0;
        },
        10s));
  }

  // xmig-verify run in hv-a against hv-b.
  VerifyRun verify(bool json) {
    static int n = 0;
    const fs::path out = work_->path() / ("verify-" + std::to_string(++n) + ".out");
    std::vector<std::string> argv = {tool("xmig-verify"), "--config", pair_->a.config.string(),
                                     "--peer", "hv-b"};
    if (json) argv.push_back("--json");
    VerifyRun r;
    r.exit_code = NetnsLab::run_in(lab_->a, argv, out.string(), 180s);
    r.output = read_file(out);
    return r;
  }

  // Every interception check passed.
  static void expect_interception_passes(const std::string& json) {
    for (const auto& check : kInterceptionChecks) {
      auto f = find_check(json, check);
      ASSERT_TRUE(f) << check << " missing in:\n" << json;
      EXPECT_EQ(f->status, "pass") << check << ": " << f->reason;
    }
  }

  // The status of each check in `checks`, expected as given ("pass", "fail", ...).
  static void expect_statuses(const std::string& json,
                              const std::vector<std::pair<std::string, std::string>>& checks) {
    for (const auto& [check, status] : checks) {
      auto f = find_check(json, check);
      ASSERT_TRUE(f) << check << " missing in:\n" << json;
      EXPECT_EQ(f->group, "interception") << check;
      EXPECT_EQ(f->status, status) << check << ": " << f->reason;
    }
  }

  std::unique_ptr<NetnsLab> lab_;
  std::unique_ptr<TempDir> work_;
  std::unique_ptr<TunnelPair> pair_;
  std::optional<Process> listener_;
  fs::path received_;
};

// Pass: on a correct pair (both tables in place, firewall on, a listener on
// hv-b's probed port) xmig-verify exits 0 with every interception check
// PASS: hv-a's table equals its config's, both plaintext connections were
// carried as TLS with ALPN xmig/driver and xmig/port-49215, the canary is
// nowhere on the veth, and hv-b dropped both marked connections. The
// listener received the canary in plaintext: it crossed the tunnel end to
// end.
TEST_F(VerifyEnforcement, PassesOnACorrectPair) {
  start_tunnels();
  ASSERT_NO_FATAL_FAILURE(listen_in_b());
  VerifyRun r = verify(true);
  EXPECT_EQ(r.exit_code, 0) << r.output << pair_->logs();
  ASSERT_NO_FATAL_FAILURE(expect_interception_passes(r.output));
  EXPECT_TRUE(contains(find_check(r.output, "driver port 16509 from this host")->reason,
                       "ALPN xmig/driver"));
  EXPECT_TRUE(contains(find_check(r.output, "migration port 49215 from this host")->reason,
                       "ALPN xmig/port-49215"));
  EXPECT_TRUE(
      contains(find_check(r.output, "migration port 49215 from the network")->reason, "dropped"));
  EXPECT_TRUE(wait_until([&] { return contains(read_file(received_), "xmig-verify canary"); }, 5s))
      << "the canary did not reach hv-b's listener";
  EXPECT_EQ(count_lines_with_all(pair_->a.log, {"close: dir=out peer=hv-b channel=port-49215",
                                                "local=intercept:" + lab_->b_ip + ":49215"}),
            1)
      << pair_->logs();
  std::cout << "---- xmig-verify --config hv-a --peer hv-b ----\n" << verify(false).output;
}

// Pass: with hv-a's [intercept] users = ["nobody"] (root may not open
// connections to the peers' migration ports: the table resets them),
// xmig-verify makes its range-port socket as nobody and the check passes,
// carried as port-49215; the same connection as root is reset by the table
// (so the check would fail without that).
TEST_F(VerifyEnforcement, ProbesTheRangeAsAnAllowedUserWhenRootIsNot) {
  start_tunnels(true, false, "users = [\"nobody\"]\n");
  EXPECT_NE(NetnsLab::run_in(lab_->a,
                             {"/bin/nc", "-z", "-w", "3", lab_->b_ip, std::to_string(kProbedPort)}),
            0)
      << "root reached the range: the guard does not hold, the test proves nothing";
  VerifyRun r = verify(true);
  EXPECT_EQ(r.exit_code, 0) << r.output << pair_->logs();
  ASSERT_NO_FATAL_FAILURE(expect_interception_passes(r.output));
}

// Pass: with hv-a's table deleted (nft delete table inet xmig) while its
// tunnel runs, xmig-verify exits 1: the table check FAILs ("no table inet
// xmig", fix names xmig-tunnel --nftables), both plaintext connections FAIL
// as not redirected (they crossed the veth), while hv-b still drops them
// from the network (PASS).
TEST_F(VerifyEnforcement, FailsWhenThisHostsTableIsMissing) {
  start_tunnels();
  ASSERT_EQ(NetnsLab::run_in(lab_->a, {"/usr/sbin/nft", "delete", "table", "inet", "xmig"}), 0);
  VerifyRun r = verify(true);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_statuses(r.output, {{"table inet xmig", "fail"},
                             {"driver port 16509 from this host", "fail"},
                             {"migration port 49215 from this host", "fail"},
                             {"driver port 16509 from the network", "pass"},
                             {"migration port 49215 from the network", "pass"}});
  auto table = find_check(r.output, "table inet xmig");
  ASSERT_TRUE(table);
  EXPECT_TRUE(contains(table->reason, "this host has no table inet xmig"));
  EXPECT_TRUE(contains(table->fix, "xmig-tunnel --nftables --config"));
  auto port = find_check(r.output, "migration port 49215 from this host");
  ASSERT_TRUE(port);
  EXPECT_TRUE(contains(port->reason, "it was not redirected into the tunnel"));
  std::cout << "---- table missing ----\n" << verify(false).output;
}

// Pass: with a table that differs from the config's (hv-a's replaced by the
// one of a config without firewall), the table check FAILs naming the first
// differing line of nft's listing.
TEST_F(VerifyEnforcement, FailsWhenThisHostsTableDiffersFromTheConfig) {
  start_tunnels();
  const fs::path other = work_->path() / "other.toml";
  std::string text = read_file(pair_->a.config);
  text.replace(text.find("firewall = true"), 15, "firewall = false");
  write_file(other, text);
  ASSERT_EQ(run({"/bin/sh", "-c",
                 tool("xmig-tunnel") + " --nftables --config " + other.string() + " > " +
                     (work_->path() / "other.nft").string()}),
            0);
  ASSERT_EQ(
      NetnsLab::run_in(lab_->a, {"/usr/sbin/nft", "-f", (work_->path() / "other.nft").string()}),
      0);
  VerifyRun r = verify(true);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  auto table = find_check(r.output, "table inet xmig");
  ASSERT_TRUE(table) << r.output;
  EXPECT_EQ(table->status, "fail");
  EXPECT_TRUE(contains(table->reason, "differs from what"));
  EXPECT_TRUE(contains(table->reason, "missing: \"chain fail_closed {\""));
}

// Pass: with hv-b's tunnel running firewall = false and a listener on its
// probed port, xmig-verify exits 1: "migration port 49215 from the network"
// FAILs ("accepted plaintext TCP", fix: firewall = true in hv-b's
// [intercept]), while hv-a's own checks still pass.
TEST_F(VerifyEnforcement, FailsWhenThePeerHasNoFirewall) {
  start_tunnels(false);
  ASSERT_NO_FATAL_FAILURE(listen_in_b());
  VerifyRun r = verify(true);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_statuses(r.output, {{"table inet xmig", "pass"},
                             {"driver port 16509 from this host", "pass"},
                             {"migration port 49215 from this host", "pass"},
                             {"no plaintext canary on the wire", "pass"},
                             {"migration port 49215 from the network", "fail"}});
  auto port = find_check(r.output, "migration port 49215 from the network");
  ASSERT_TRUE(port);
  EXPECT_TRUE(contains(port->reason, "hv-b accepted plaintext TCP on " + lab_->b_ip + ":49215"));
  EXPECT_TRUE(contains(port->fix, "set firewall = true in hv-b's [intercept]"));
  // Nothing listens on hv-b's driver port: a reset, which proves no drop.
  auto driver = find_check(r.output, "driver port 16509 from the network");
  ASSERT_TRUE(driver);
  EXPECT_EQ(driver->status, "warn") << driver->reason;
  std::cout << "---- peer without firewall ----\n" << verify(false).output;
}

// Pass: over IPv6 (tunnels on fd00:231::1 and fd00:231::2, those the
// migration addresses), a nova-style migration to tcp:[fd00:231::2]:49153
// completes with the destination's RAM equal to the source's; the capture on
// hv-a's veth holds only TLS 1.3 (xmig-verify --pcap exits 0, ALPN
// xmig/port-49153, nothing in plaintext); hv-a's close line names the
// original IPv6 destination; and xmig-verify's interception group passes
// over IPv6 too (the ip6 rules, the [::1] intercept listener).
TEST_F(VerifyEnforcement, Ipv6NovaStyleMigrationCrossesTheWireOnlyAsTls) {
  if (find_qemu().empty()) GTEST_SKIP() << "qemu-system-x86_64 not found";
  start_tunnels(true, true);
  const fs::path pcap = work_->path() / "ipv6.pcap";
  Tcpdump dump(lab_->a, lab_->a_link, "tcp", pcap.string(),
               (work_->path() / "ipv6.tcpdump.log").string());
  {
    NovaMigration m(*lab_, work_->path(), "ipv6", 49153, 0, true);
    m.start();
    MigrationStatus sent = m.wait_source();
    ASSERT_TRUE(sent.completed()) << sent.status << ": " << sent.error << "\n"
                                  << m.logs() << pair_->logs();
    MigrationStatus got = m.wait_destination();
    ASSERT_TRUE(got.completed()) << got.status << ": " << got.error << "\n" << m.logs();
    EXPECT_TRUE(m.ram_arrived()) << "destination RAM differs from the source's";
  }
  dump.stop();
  VerifyRun offline = run_verify({"--pcap", pcap.string()}, work_->path());
  EXPECT_EQ(offline.exit_code, 0) << offline.output;
  EXPECT_TRUE(contains(offline.output, "ALPN xmig/port-49153"));
  EXPECT_TRUE(contains(offline.output, "[" + lab_->a_ip6 + "]:"));
  EXPECT_FALSE(contains(offline.output, "in plaintext"));
  std::cout << "---- xmig-verify --pcap (IPv6 migration) ----\n" << offline.output;
  const std::string original = "[" + lab_->b_ip6 + "]:49153";
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair_->a.log, {"close: dir=out peer=hv-b channel=port-49153",
                                                   "local=intercept:" + original, "result=ok"}) ==
               1;
      },
      10s))
      << pair_->logs();
  VerifyRun live = verify(true);
  EXPECT_EQ(live.exit_code, 0) << live.output;
  ASSERT_NO_FATAL_FAILURE(expect_interception_passes(live.output));
  EXPECT_TRUE(contains(find_check(live.output, "migration port 49215 from this host")->reason,
                       "[" + lab_->b_ip6 + "]:"));
}

}  // namespace
}  // namespace xmig::test
