// Config parsing and validation: every bad input gets its promised error,
// naming the file, the key and the fix; good input gets the documented
// defaults.
#include <gtest/gtest.h>

#include "tunnel/config.hpp"

namespace xmig::tunnel {
namespace {

const char* kGood = R"(
name = "hv-a"
run_dir = "/run/xmig"
listen = "0.0.0.0:7443"

[tls]
ca = "/etc/pki/qemu/ca-cert.pem"
cert = "/etc/pki/qemu/server-cert.pem"
key = "/etc/pki/qemu/server-key.pem"

[[peer]]
name = "hv-b"
address = "10.0.0.2:7443"

[targets]
bench = "127.0.0.1:6000"

[[route]]
listen = "127.0.0.1:5000"
peer = "hv-b"
channel = "bench"
)";

// All problems of a text, joined; "" when it parses.
std::string problems_of(const std::string& text) {
  try {
    parse_config(text, "tunnel.toml");
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

std::string with(const std::string& from, const std::string& to) {
  std::string s = kGood;
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

// Pass: the issue's example parses, with qemu/nbd delivered under
// <run_dir>/<name>/ and driver to libvirt's socket.
TEST(Config, ExampleParsesWithDocumentedDefaults) {
  Config c = parse_config(kGood, "tunnel.toml");
  EXPECT_EQ(c.name, "hv-a");
  EXPECT_EQ(c.listen.str(), "0.0.0.0:7443");
  ASSERT_EQ(c.peers.size(), 1u);
  EXPECT_EQ(c.peers[0].address.str(), "10.0.0.2:7443");
  EXPECT_EQ(c.targets.at("qemu").str(), "unix:/run/xmig/hv-a/qemu.sock");
  EXPECT_EQ(c.targets.at("nbd").str(), "unix:/run/xmig/hv-a/nbd.sock");
  EXPECT_EQ(c.targets.at("driver").str(), "unix:/run/libvirt/libvirt-sock");
  EXPECT_EQ(c.targets.at("bench").str(), "127.0.0.1:6000");
  ASSERT_EQ(c.routes.size(), 1u);
  EXPECT_EQ(c.routes[0].channel, "bench");
  EXPECT_EQ(c.tls.min_version, "1.3");
  EXPECT_EQ(c.status.str(), "unix:/run/xmig/status.sock");
  EXPECT_EQ(c.socket_path("hv-b", "qemu"), "/run/xmig/hv-b/qemu.sock");
}

// Pass: without client_cert and client_key, this host dials with cert and key;
// with both set (libvirt's layout, as the Quick start maps it), it dials with
// those.
TEST(Config, ClientCertificateDefaultsToCertAndCanBeItsOwn) {
  Config c = parse_config(kGood, "tunnel.toml");
  EXPECT_EQ(c.tls.client_cert, "/etc/pki/qemu/server-cert.pem");
  EXPECT_EQ(c.tls.client_key, "/etc/pki/qemu/server-key.pem");
  Config own = parse_config(with("key = \"/etc/pki/qemu/server-key.pem\"\n",
                                 "key = \"/etc/pki/qemu/server-key.pem\"\n"
                                 "client_cert = \"/etc/pki/qemu/client-cert.pem\"\n"
                                 "client_key = \"/etc/pki/qemu/client-key.pem\"\n"),
                            "tunnel.toml");
  EXPECT_EQ(own.tls.cert, "/etc/pki/qemu/server-cert.pem");
  EXPECT_EQ(own.tls.client_cert, "/etc/pki/qemu/client-cert.pem");
  EXPECT_EQ(own.tls.client_key, "/etc/pki/qemu/client-key.pem");
}

// Pass: client_cert without client_key (and the reverse) is refused, naming
// the key that is set, the one missing and libvirt's file names as the fix.
TEST(Config, ClientCertificateWithoutItsKeyIsRefused) {
  std::string p = problems_of(with("[[peer]]", "client_cert = \"/pki/client-cert.pem\"\n[[peer]]"));
  EXPECT_NE(p.find("tunnel.toml: [tls].client_cert"), std::string::npos) << p;
  EXPECT_NE(p.find("is set without client_key; fix: set client_cert and client_key together"),
            std::string::npos)
      << p;
  EXPECT_NE(p.find("/etc/pki/qemu/client-key.pem"), std::string::npos) << p;
  p = problems_of(with("[[peer]]", "client_key = \"/pki/client-key.pem\"\n[[peer]]"));
  EXPECT_NE(p.find("[tls].client_key"), std::string::npos) << p;
  EXPECT_NE(p.find("is set without client_cert"), std::string::npos) << p;
}

// Pass: a TOML syntax error names the file, the line and asks for a fix.
TEST(Config, SyntaxErrorNamesFileAndLine) {
  std::string p = problems_of("name = \"hv-a\"\nlisten = \n");
  EXPECT_NE(p.find("tunnel.toml: line 2"), std::string::npos) << p;
  EXPECT_NE(p.find("fix:"), std::string::npos) << p;
}

// Pass: a missing required key is named with the fix.
TEST(Config, MissingNameIsReported) {
  std::string p = problems_of(with("name = \"hv-a\"\n", ""));
  EXPECT_NE(p.find("tunnel.toml: name: missing; fix: set name"), std::string::npos) << p;
}

// Pass: a config without [tls] is told to add it, and the misspelt table is named.
TEST(Config, MissingTlsSectionIsReported) {
  std::string s = kGood;
  s.replace(s.find("[tls]"), 5, "[tlx]");
  std::string p = problems_of(s);
  EXPECT_NE(p.find("[tls]: missing; fix: add a [tls] section"), std::string::npos) << p;
  EXPECT_NE(p.find("tlx"), std::string::npos) << "the unknown table is named too: " << p;
}

// Pass: an address without a port, and a port out of range, are refused with why.
TEST(Config, BadEndpointsAreExplained) {
  std::string p = problems_of(with("\"10.0.0.2:7443\"", "\"10.0.0.2\""));
  EXPECT_NE(p.find("[[peer]] #1 address"), std::string::npos) << p;
  EXPECT_NE(p.find("expected \"HOST:PORT\""), std::string::npos) << p;
  p = problems_of(with("\"0.0.0.0:7443\"", "\"0.0.0.0:70000\""));
  EXPECT_NE(p.find("listen"), std::string::npos) << p;
  EXPECT_NE(p.find("out of range"), std::string::npos) << p;
  p = problems_of(with("\"127.0.0.1:6000\"", "\"unix:relative.sock\""));
  EXPECT_NE(p.find("[targets].bench"), std::string::npos) << p;
  EXPECT_NE(p.find("must be absolute"), std::string::npos) << p;
}

// Pass: a misspelt key is an error, not silently ignored.
TEST(Config, UnknownKeyIsRefused) {
  std::string p = problems_of(with("address = ", "adress = \"x:1\"\naddress = "));
  EXPECT_NE(p.find("[[peer]] #1 adress"), std::string::npos) << p;
  EXPECT_NE(p.find("unknown key"), std::string::npos) << p;
}

// Pass: a route to a host that is not a [[peer]] is refused.
TEST(Config, RouteToUnknownPeerIsRefused) {
  std::string p = problems_of(with("peer = \"hv-b\"", "peer = \"hv-c\""));
  EXPECT_NE(p.find("[[route]] #1 peer"), std::string::npos) << p;
  EXPECT_NE(p.find("\"hv-c\" is not a configured [[peer]]"), std::string::npos) << p;
}

// Pass: duplicate peers, and a peer named like this host, are refused.
TEST(Config, DuplicateOrSelfPeerIsRefused) {
  std::string twice =
      std::string(kGood) + "\n[[peer]]\nname = \"hv-b\"\naddress = \"10.0.0.3:7443\"\n";
  EXPECT_NE(problems_of(twice).find("listed twice"), std::string::npos);
  std::string self =
      std::string(kGood) + "\n[[peer]]\nname = \"hv-a\"\naddress = \"10.0.0.3:7443\"\n";
  EXPECT_NE(problems_of(self).find("this host's own name"), std::string::npos);
}

// Pass: an empty host name, this host's or a peer's, is a problem naming the
// key ("name: is empty"; an empty peer name would check no name at all when
// dialling it); "HV-B" next to "hv-b" is the same peer listed twice (names
// compare ignoring case, as certificates do); names are kept in lower case,
// routes find their peer in any case, and "HV-A" is this host's own name.
TEST(Config, EmptyOrCaseVariantNamesAreRefused) {
  std::string p = problems_of(with("name = \"hv-b\"", "name = \"\""));
  EXPECT_NE(p.find("tunnel.toml: [[peer]] #1 name (line 12): is empty"), std::string::npos) << p;
  p = problems_of(with("name = \"hv-a\"", "name = \"\""));
  EXPECT_NE(p.find("tunnel.toml: name (line 2): is empty"), std::string::npos) << p;
  p = problems_of(std::string(kGood) +
                  "\n[[peer]]\nname = \"HV-B\"\naddress = \"10.0.0.3:7443\"\n");
  EXPECT_NE(p.find("[[peer]] #2 name (line 24): \"hv-b\" is listed twice"), std::string::npos) << p;
  p = problems_of(std::string(kGood) +
                  "\n[[peer]]\nname = \"HV-A\"\naddress = \"10.0.0.3:7443\"\n");
  EXPECT_NE(p.find("this host's own name"), std::string::npos) << p;

  Config c = parse_config(with("name = \"hv-b\"", "name = \"Hv-B\""), "tunnel.toml");
  ASSERT_EQ(c.peers.size(), 1u);
  EXPECT_EQ(c.peers[0].name, "hv-b");
  c = parse_config(with("peer = \"hv-b\"", "peer = \"HV-B\""), "tunnel.toml");
  EXPECT_EQ(c.routes.at(0).peer, "hv-b");
}

// Pass: driver_group may not be socket_group (QEMU's group must never reach
// libvirt RPC on a peer): a problem naming driver_group and the fix; another
// group is accepted.
TEST(Config, DriverGroupCannotBeTheSocketGroup) {
  std::string p = problems_of(with("listen = \"0.0.0.0:7443\"",
                                   "listen = \"0.0.0.0:7443\"\nsocket_group = \"kvm\"\n"
                                   "driver_group = \"kvm\""));
  EXPECT_NE(p.find("driver_group (line 6): \"kvm\" is socket_group too"), std::string::npos) << p;
  Config c = parse_config(with("listen = \"0.0.0.0:7443\"",
                               "listen = \"0.0.0.0:7443\"\nsocket_group = \"kvm\"\n"
                               "driver_group = \"xmig-admin\""),
                          "tunnel.toml");
  EXPECT_EQ(c.driver_group, "xmig-admin");
}

// Pass: channel names are restricted (they become ALPN ids and file names),
// and "verify" is reserved for xmig-verify's echo.
TEST(Config, BadAndReservedChannelNamesAreRefused) {
  std::string p = problems_of(with("channel = \"bench\"", "channel = \"../x\""));
  EXPECT_NE(p.find("is not a valid channel name"), std::string::npos) << p;
  p = problems_of(with("bench = \"127.0.0.1:6000\"", "verify = \"127.0.0.1:6000\""));
  EXPECT_NE(p.find("reserved"), std::string::npos) << p;
}

// Pass: min_version other than "1.3" or "1.2" is refused, naming both allowed values.
TEST(Config, UnsupportedTlsVersionIsRefused) {
  std::string p =
      problems_of(with("key = \"/etc/pki/qemu/server-key.pem\"",
                       "key = \"/etc/pki/qemu/server-key.pem\"\nmin_version = \"1.1\""));
  EXPECT_NE(p.find("[tls].min_version"), std::string::npos) << p;
  EXPECT_NE(p.find("\"1.3\" (default) or \"1.2\""), std::string::npos) << p;
}

// Pass: wrong types and out-of-range limits are explained.
TEST(Config, BadLimitsAreRefused) {
  std::string p = problems_of(std::string(kGood) +
                              "\n[limits]\nhandshake_timeout = -1\nmax_connections = \"many\"\n");
  EXPECT_NE(p.find("[limits].handshake_timeout"), std::string::npos) << p;
  EXPECT_NE(p.find("[limits].max_connections"), std::string::npos) << p;
}

// Pass: a section of the wrong type is one problem, under its own name, and
// no other section is blamed for it (the reader used to report "[targets]"
// and "[limits]" too).
TEST(Config, WrongTypeOfSectionIsOneProblemNamingIt) {
  std::string s = kGood;
  s = s.substr(0, s.find("[tls]")) + "tls = \"oops\"\n" + s.substr(s.find("[[peer]]"));
  try {
    parse_config(s, "tunnel.toml");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.problems().size(), 1u) << e.what();
    EXPECT_NE(e.problems()[0].find("tls"), std::string::npos) << e.what();
    EXPECT_NE(e.problems()[0].find("must be a table, written [tls]"), std::string::npos)
        << e.what();
  }
}

// Pass: every number that is not finite, out of range or not an integer where
// one is needed is refused by name (nan compared false to both bounds, 1e-9 s
// rounded to a 0 ms timeout, 1e100 workers overflowed the conversion).
TEST(Config, NumbersThatAreNotFiniteInRangeOrWholeAreRefused) {
  for (const char* bad :
       {"handshake_timeout = nan", "handshake_timeout = 1e-9", "connect_timeout = nan",
        "drain_timeout = -nan", "drain_timeout = inf", "handshake_timeout = 0",
        "max_connections = 1e100", "max_connections = 2.5"}) {
    std::string p = problems_of(std::string(kGood) + "\n[limits]\n" + bad + "\n");
    std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(p.find("[limits]." + key), std::string::npos) << bad << " -> " << p;
  }
  std::string p = problems_of(with("run_dir", "workers = 1e100\nrun_dir"));
  EXPECT_NE(p.find("workers"), std::string::npos) << p;
  EXPECT_NE(p.find("whole number from 0 to 256"), std::string::npos) << p;
  Config ok =
      parse_config(std::string(kGood) + "\n[limits]\nhandshake_timeout = 0.001\n", "tunnel.toml");
  EXPECT_EQ(ok.limits.handshake_timeout.count(), 1);
}

// Pass: the [limits] keys of the listener's budgets, bans and liveness are
// read into Limits; their defaults are those the README states; a wrong type
// or an out-of-range value of each is refused by name.
TEST(Config, AbuseAndLivenessLimitsAreReadAndChecked) {
  Config d = parse_config(kGood, "tunnel.toml");
  EXPECT_EQ(d.limits.max_pending_handshakes, 256u);
  EXPECT_EQ(d.limits.max_pending_per_source, 64u);
  EXPECT_EQ(d.limits.handshake_rate_per_source, 100u);
  EXPECT_EQ(d.limits.ban_after, 3u);
  EXPECT_EQ(d.limits.ban_window.count(), 300'000);
  EXPECT_EQ(d.limits.ban_time.count(), 900'000);
  EXPECT_TRUE(d.limits.ban_exempt_peers);
  EXPECT_EQ(d.limits.liveness.idle.count(), 10'000);
  EXPECT_EQ(d.limits.liveness.interval.count(), 5'000);
  EXPECT_EQ(d.limits.liveness.count, 4u);
  EXPECT_EQ(d.limits.liveness.user_timeout.count(), 30'000);
  Config c =
      parse_config(std::string(kGood) +
                       "\n[limits]\nmax_pending_handshakes = 10\nmax_pending_per_source = 2\n"
                       "handshake_rate_per_source = 5\nban_after = 0\nban_window = 60\n"
                       "ban_time = 0.5\nban_exempt_peers = false\nkeepalive_idle = 1\n"
                       "keepalive_interval = 2\nkeepalive_count = 3\nuser_timeout = 4.5\n",
                   "tunnel.toml");
  EXPECT_EQ(c.limits.max_pending_handshakes, 10u);
  EXPECT_EQ(c.limits.max_pending_per_source, 2u);
  EXPECT_EQ(c.limits.handshake_rate_per_source, 5u);
  EXPECT_EQ(c.limits.ban_after, 0u);
  EXPECT_EQ(c.limits.ban_window.count(), 60'000);
  EXPECT_EQ(c.limits.ban_time.count(), 500);
  EXPECT_FALSE(c.limits.ban_exempt_peers);
  EXPECT_EQ(c.limits.liveness.idle.count(), 1'000);
  EXPECT_EQ(c.limits.liveness.interval.count(), 2'000);
  EXPECT_EQ(c.limits.liveness.count, 3u);
  EXPECT_EQ(c.limits.liveness.user_timeout.count(), 4'500);
  for (const char* bad :
       {"max_pending_handshakes = 0", "max_pending_per_source = 1.5",
        "handshake_rate_per_source = -1", "ban_after = nan", "ban_window = 0", "ban_time = inf",
        "ban_exempt_peers = \"yes\"", "keepalive_idle = nan", "keepalive_interval = -1",
        "keepalive_count = 0", "keepalive_count = 128", "user_timeout = 1e-9"}) {
    std::string p = problems_of(std::string(kGood) + "\n[limits]\n" + bad + "\n");
    std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(p.find("[limits]." + key), std::string::npos) << bad << " -> " << p;
  }
}

// Pass: [tls] resumption is on unless set to false (as the README states); a
// value that is not a boolean is refused by name.
TEST(Config, TlsResumptionIsOnByDefaultAndCanBeTurnedOff) {
  EXPECT_TRUE(parse_config(kGood, "tunnel.toml").tls.resumption);
  const std::string key_line = "key = \"/etc/pki/qemu/server-key.pem\"\n";
  EXPECT_FALSE(parse_config(with(key_line, key_line + "resumption = false\n"), "tunnel.toml")
                   .tls.resumption);
  std::string p = problems_of(with(key_line, key_line + "resumption = \"no\"\n"));
  EXPECT_NE(p.find("[tls].resumption"), std::string::npos) << p;
  EXPECT_NE(p.find("must be true or false"), std::string::npos) << p;
}

// Pass: several problems are all reported at once, one per line.
TEST(Config, ReportsEveryProblemAtOnce) {
  std::string s = with("name = \"hv-a\"\n", "");
  s = s.replace(s.find("\"10.0.0.2:7443\""), 15, "\"nope\"");
  try {
    parse_config(s, "tunnel.toml");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.problems().size(), 2u) << e.what();
  }
}

// Pass: a config file that does not exist is named.
TEST(Config, UnreadableFileIsNamed) {
  try {
    load_config("/nonexistent/tunnel.toml");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tunnel.toml: cannot be read"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace xmig::tunnel
