// tunnel/intercept: transparent mode's two ends (README "Transparent mode
// (nova)").
//
// Source side: nftables (tunnel/nftables.hpp) redirects TCP that this host
// opens to a peer's migration address into the intercept listener. For each
// connection the tunnel reads where it was going (SO_ORIGINAL_DST), maps the
// address to the [[peer]] that lists it and the port to a channel
// (driver_port -> "driver", a port of the range -> "port-<N>"), and carries
// it like an entry socket's connection. Connections to one original
// destination are dialled one after another, in accept order (multifd).
// Anything else reaching the listener is refused with its reason.
//
// Destination side: a port channel is delivered only to that port on this
// host's own [intercept].address, and only when the port lies in this host's
// own range: the remote side never chooses any other address or port.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/asio.hpp"
#include "tunnel/config.hpp"
#include "tunnel/endpoint.hpp"
#include "tunnel/tunnel.hpp"

namespace xmig::tunnel {

// "port-49153" for 49153.
std::string port_channel(uint16_t port);
// 49153 for "port-49153" (digits only, no leading zero, 1..65535), else nullopt.
std::optional<uint16_t> channel_port(std::string_view channel);

// Where this host delivers `channel`: its [targets] entry; for a port channel
// (no such entry), that port on [intercept].address when the port lies in
// this host's [intercept].ports. Otherwise nullopt, and *why (when given)
// says why.
std::optional<Endpoint> channel_target(const Config& c, const std::string& channel,
                                       std::string* why);

// Source side: the [[peer]] and channel for a connection's original
// destination (address, port), or nullopt with *why.
struct InterceptRoute {
  const PeerConfig* peer = nullptr;
  std::string channel;
};
std::optional<InterceptRoute> route_for(const Config& c, const std::string& address, uint16_t port,
                                        std::string* why);

// Opens the intercept listener(s) on 127.0.0.1 (and ::1 when a peer has an
// IPv6 address) at [intercept].listen_port and serves them.
void open_intercept_listeners(Tunnel::State& s);

}  // namespace xmig::tunnel
