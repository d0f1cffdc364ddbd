#include "tunnel/intercept.hpp"

#include <arpa/inet.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>

#include "base/socket.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

// Where a redirected connection was going before nftables sent it here, or
// nullopt with *why (not redirected, or conntrack does not know it).
std::optional<sockaddr_storage> original_destination(int fd, std::string* why) {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    *why = std::string("getsockname: ") + strerror(errno);
    return std::nullopt;
  }
  sockaddr_storage original{};
  len = sizeof original;
  const bool v6 = local.ss_family == AF_INET6;
  if (::getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, v6 ? IP6T_SO_ORIGINAL_DST : SO_ORIGINAL_DST,
                   &original, &len) != 0) {
    *why = std::string(v6 ? "IP6T_SO_ORIGINAL_DST" : "SO_ORIGINAL_DST") + ": " + strerror(errno) +
           " (not a connection that nftables redirected)";
    return std::nullopt;
  }
  return original;
}

asio::awaitable<void> serve_intercept(Tunnel::State& s, asio::ip::tcp::acceptor& acceptor,
                                      std::string listener) {
  // The accept order of each original destination ("<address>:<port>": one per
  // migration port in use), kept while one of its dials runs.
  std::map<std::string, std::shared_ptr<DialOrder>> orders;
  AcceptBackoff backoff("intercept listener " + listener);
  while (auto sock = co_await accept_next(acceptor, backoff, s.stopping)) {
    Fd local(sock->release());
    const std::string client = describe_client(local.get());
    std::string why;
    auto original = original_destination(local.get(), &why);
    std::optional<InterceptRoute> route;
    std::string destination;
    if (original) {
      destination = address_text(*original);
      char text[INET6_ADDRSTRLEN] = {};
      const bool v6 = original->ss_family == AF_INET6;
      const auto* a4 = reinterpret_cast<const sockaddr_in*>(&*original);
      const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&*original);
      ::inet_ntop(original->ss_family,
                  v6 ? static_cast<const void*>(&a6->sin6_addr) : &a4->sin_addr, text, sizeof text);
      route = route_for(s.config, text, ntohs(v6 ? a6->sin6_port : a4->sin_port), &why);
    }
    if (!route) {
      s.stats.record_refusal();
      spdlog::warn("refused: intercept {} from {}{}: {}", listener, client,
                   destination.empty() ? "" : " to " + destination, why);
      reset_on_close(local.get());
      continue;
    }
    if (s.outbound >= s.config.limits.max_connections) {
      s.stats.record_refusal();
      spdlog::warn("refused: intercept {} from {} to {}: max_connections ({}) reached", listener,
                   client, destination, s.config.limits.max_connections);
      reset_on_close(local.get());
      continue;
    }
    // A destination with no dial running starts a new order: nothing before
    // it is left to wait for.
    std::erase_if(orders, [](const auto& kv) { return kv.second->idle(); });
    auto& order = orders[destination];
    if (!order) order = DialOrder::make();
    asio::co_spawn(s.io,
                   dial(s, std::move(local), Slot(s.connections, s.outbound), order->take(),
                        *route->peer, route->channel, "intercept:" + destination, ""),
                   asio::detached);
  }
}

}  // namespace

std::string port_channel(uint16_t port) {
  return std::string(kPortChannelPrefix) + std::to_string(port);
}

std::optional<uint16_t> channel_port(std::string_view channel) {
  if (channel.substr(0, kPortChannelPrefix.size()) != kPortChannelPrefix) return std::nullopt;
  std::string_view digits = channel.substr(kPortChannelPrefix.size());
  if (digits.empty() || digits.size() > 5 || digits.front() == '0') return std::nullopt;
  unsigned port = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

std::optional<Endpoint> channel_target(const Config& c, const std::string& channel,
                                       std::string* why) {
  if (auto it = c.targets.find(channel); it != c.targets.end()) return it->second;
  auto port = channel_port(channel);
  std::string reason;
  if (!port)
    reason = "unknown channel \"" + channel + "\"";
  else if (!c.intercept.enabled)
    reason = "channel " + channel + ": this host has no [intercept] section (transparent mode off)";
  else if (!c.intercept.ports.contains(*port))
    reason = "channel " + channel + ": port " + std::to_string(*port) +
             " is outside this host's [intercept].ports " + c.intercept.ports.str();
  if (!reason.empty()) {
    if (why) *why = reason;
    return std::nullopt;
  }
  return Endpoint{
      .kind = Endpoint::Kind::Tcp, .host = c.intercept.address, .port = *port, .path = {}};
}

std::optional<InterceptRoute> route_for(const Config& c, const std::string& address, uint16_t port,
                                        std::string* why) {
  const PeerConfig* peer = nullptr;
  for (const auto& p : c.peers)
    for (const auto& a : p.addresses) {
      in6_addr x{}, y{};
      // Compare as addresses, so that "::1" and "0:0::1" are one.
      const int family = address.find(':') == std::string::npos ? AF_INET : AF_INET6;
      if (a == address || (::inet_pton(family, a.c_str(), &x) == 1 &&
                           ::inet_pton(family, address.c_str(), &y) == 1 &&
                           std::memcmp(&x, &y, family == AF_INET ? 4 : 16) == 0))
        peer = &p;
    }
  const InterceptConfig& in = c.intercept;
  const std::string ports =
      "driver_port " + std::to_string(in.driver_port) + " or ports " + in.ports.str();
  if (!peer) {
    *why = address +
           " is not an address of any [[peer]] (connect to a peer's migration address "
           "on " +
           ports + "; the intercept listener serves redirected connections only)";
    return std::nullopt;
  }
  if (port == in.driver_port) return InterceptRoute{.peer = peer, .channel = kDriverChannel};
  if (in.ports.contains(port)) return InterceptRoute{.peer = peer, .channel = port_channel(port)};
  *why = "port " + std::to_string(port) + " of peer " + peer->name + " is neither " + ports;
  return std::nullopt;
}

void open_intercept_listeners(Tunnel::State& s) {
  const InterceptConfig& in = s.config.intercept;
  bool v6 = false;
  for (const auto& p : s.config.peers)
    for (const auto& a : p.addresses) v6 = v6 || a.find(':') != std::string::npos;
  // REDIRECT in the output hook sends to the loopback address of the family.
  for (const char* host : {"127.0.0.1", "::1"}) {
    if (std::string(host) == "::1" && !v6) continue;
    const Endpoint ep{
        .kind = Endpoint::Kind::Tcp, .host = host, .port = in.listen_port, .path = {}};
    s.tcp_listeners.push_back(open_tcp_listener(s.io, ep));
    asio::co_spawn(s.io, serve_intercept(s, s.tcp_listeners.back(), ep.str()), asio::detached);
  }
}

}  // namespace xmig::tunnel
