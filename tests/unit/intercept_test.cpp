// Transparent mode without processes: [intercept] and [[peer]] addresses as
// read from the file, the destination rule for port channels, and the
// mapping of an original destination to a peer and a channel.
#include <gtest/gtest.h>

#include "tunnel/config.hpp"
#include "tunnel/intercept.hpp"
#include "tunnel/nftables.hpp"

namespace xmig::tunnel {
namespace {

const std::string kHost = R"(
name = "hv-a"
listen = "10.0.0.1:7443"
[tls]
ca = "ca.pem"
cert = "cert.pem"
key = "key.pem"
[[peer]]
name = "hv-b"
address = "10.0.0.2:7443"
[[peer]]
name = "hv-c"
address = "hv-c.example:7443"
addresses = ["10.0.0.3", "fd00::3"]
)";

Config with_intercept(const std::string& extra = "") {
  return parse_config(kHost + "[intercept]\n" + extra, "tunnel.toml");
}

// Pass: user = next to [intercept] is accepted (the tunnel keeps
// CAP_NET_ADMIN alone for SO_MARK; tests/intercept checks the process), and
// the user is read as written.
TEST(InterceptConfig, UnprivilegedUserCanBeCombinedWithIntercept) {
  Config c = parse_config("user = \"nobody\"\n" + kHost + "[intercept]\n", "tunnel.toml");
  EXPECT_EQ(c.user, "nobody");
  EXPECT_TRUE(c.intercept.enabled);
}

// Pass: addresses default to the host of address; address defaults to
// listen's host; the documented defaults hold.
TEST(InterceptConfig, DefaultsFollowTheFile) {
  Config c = with_intercept();
  EXPECT_EQ(c.peers[0].addresses, std::vector<std::string>{"10.0.0.2"});
  EXPECT_EQ(c.peers[1].addresses, (std::vector<std::string>{"10.0.0.3", "fd00::3"}));
  EXPECT_TRUE(c.intercept.enabled);
  EXPECT_EQ(c.intercept.address, "10.0.0.1");
  EXPECT_EQ(c.intercept.ports.str(), "49152-49215");
  EXPECT_EQ(c.intercept.driver_port, 16509);
  EXPECT_TRUE(c.intercept.firewall);
  EXPECT_EQ(c.socket_mark(), 0x786d6967u);
  EXPECT_FALSE(parse_config(kHost, "tunnel.toml").intercept.enabled);
  EXPECT_EQ(parse_config(kHost, "tunnel.toml").socket_mark(), 0u);
}

// Pass: a port channel goes only to this host's address, only within its
// range, spelled exactly; anything else is refused with a reason.
TEST(InterceptConfig, PortChannelsReachOnlyOwnAddressWithinOwnRange) {
  Config c = with_intercept("ports = \"49152-49153\"\naddress = \"10.0.0.9\"\n");
  std::string why;
  auto target = channel_target(c, "port-49153", &why);
  ASSERT_TRUE(target) << why;
  EXPECT_EQ(target->str(), "10.0.0.9:49153");
  for (const char* refused : {"port-49154", "port-22", "port-049153", "port-", "port-70000",
                              "port-4915a", "port-+4915"}) {
    why.clear();
    EXPECT_FALSE(channel_target(c, refused, &why)) << refused;
    EXPECT_FALSE(why.empty()) << refused;
  }
  EXPECT_FALSE(channel_target(c, "port-49154", &why));
  EXPECT_NE(why.find("outside this host's"), std::string::npos) << why;
  Config off = parse_config(kHost, "tunnel.toml");
  EXPECT_FALSE(channel_target(off, "port-49153", &why));
  EXPECT_NE(why.find("no [intercept]"), std::string::npos) << why;
}

// Pass: an original destination maps to the peer that lists the address and
// to driver or port-N; other addresses and ports are refused with a reason.
TEST(InterceptConfig, OriginalDestinationMapsToPeerAndChannel) {
  Config c = with_intercept();
  std::string why;
  auto driver = route_for(c, "10.0.0.2", 16509, &why);
  ASSERT_TRUE(driver) << why;
  EXPECT_EQ(driver->peer->name, "hv-b");
  EXPECT_EQ(driver->channel, "driver");
  auto ram = route_for(c, "fd00:0::3", 49200, &why);
  ASSERT_TRUE(ram) << why;
  EXPECT_EQ(ram->peer->name, "hv-c");
  EXPECT_EQ(ram->channel, "port-49200");
  EXPECT_FALSE(route_for(c, "127.0.0.1", 7445, &why));
  EXPECT_NE(why.find("not an address of any [[peer]]"), std::string::npos) << why;
  EXPECT_FALSE(route_for(c, "10.0.0.2", 22, &why));
  EXPECT_NE(why.find("neither"), std::string::npos) << why;
}

// Pass: names, where nftables needs addresses, are refused naming the fix;
// so is one address listed by two peers.
TEST(InterceptConfig, RefusesNamesAndSharedAddresses) {
  try {
    parse_config(kHost + "[[peer]]\nname = \"hv-d\"\naddress = \"hv-d.example:7443\"\n" +
                     "[[peer]]\nname = \"hv-e\"\naddress = \"10.0.0.5:7443\"\n" +
                     "addresses = [\"10.0.0.2\"]\n[intercept]\n",
                 "tunnel.toml");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("peer hv-d's address \"hv-d.example\" is a name"), std::string::npos)
        << what;
    EXPECT_NE(what.find("\"10.0.0.2\" is listed by peers hv-b and hv-e"), std::string::npos)
        << what;
  }
}

// Pass: the ruleset names both families' peers, redirects both port sets to
// the listener and keeps the firewall chains only with firewall = true.
TEST(InterceptConfig, RulesetFollowsTheConfig) {
  const std::string on = nftables_ruleset(with_intercept());
  EXPECT_NE(on.find("elements = { 10.0.0.2, 10.0.0.3 }"), std::string::npos) << on;
  EXPECT_NE(on.find("elements = { fd00::3 }"), std::string::npos) << on;
  EXPECT_NE(on.find("ip6 daddr @peers6 tcp dport { 16509, 49152-49215 } redirect to :7445"),
            std::string::npos)
      << on;
  EXPECT_NE(on.find("chain no_plaintext_in"), std::string::npos);
  const std::string off = nftables_ruleset(with_intercept("firewall = false\n"));
  EXPECT_EQ(off.find("chain no_plaintext_in"), std::string::npos) << off;
  EXPECT_EQ(off.find("chain fail_closed"), std::string::npos) << off;
  EXPECT_NE(off.find("chain intercept"), std::string::npos) << off;
}

}  // namespace
}  // namespace xmig::tunnel
