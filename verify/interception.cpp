// Transparent mode proven on this host (README "Transparent mode (nova)"),
// for a config with [intercept]:
// - table: the table inet xmig in place is what the config demands: nft's
//   listing of it equals nft's listing of the tunnel's own ruleset
//   (tunnel/nftables.hpp), applied in a private network namespace;
// - from this host: plaintext TCP to the peer's migration address on
//   driver_port and on a port of the range, each carrying a canary, while
//   the wire towards the peer is captured: nothing may reach those ports on
//   the wire, the local tunnel must carry each connection as TLS to the
//   peer's TLS port (ALPN xmig/driver, xmig/port-N), and no byte of the
//   canary may appear anywhere;
// - from the network: the same connections from a socket carrying the
//   tunnel's mark, which this host's table lets pass as it lets the tunnel's
//   own, so they reach the peer as any host's would: the peer's table
//   (firewall = true) must drop them.
#include <netinet/in.h>
#include <poll.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "base/socket.hpp"
#include "tunnel/nftables.hpp"
#include "tunnel/protocol.hpp"
#include "verify/classify.hpp"
#include "verify/live_detail.hpp"

namespace xmig::verify::detail {

namespace {

const char* kGroup = "interception";
// Enough to cross several TCP segments and TLS records; small, because at a
// peer that accepts the channel it reaches libvirtd or QEMU as garbage.
constexpr uint64_t kProbeCanaryBytes = 64 * 1024;

std::string apply_by_hand(const std::string& config) {
  return "xmig-tunnel --nftables --config " + config + " | nft -f -";
}

// Is the table in place what the config demands? Compared in nft's own
// spelling, so formatting never makes a difference and every rule does.
void check_table(LiveContext& c) {
  const std::string fix =
      "restart xmig-tunnel with " + c.opts.config +
      " (it replaces the table at start), or apply it by hand: " + apply_by_hand(c.opts.config);
  std::optional<std::string> found;
  try {
    found = tunnel::listed_table();
  } catch (const std::exception& e) {
    c.report.add(kGroup, "table inet xmig", Status::Fail, e.what());
    return;
  }
  if (!found) {
    c.report.add(kGroup, "table inet xmig", Status::Fail,
                 "this host has no table inet xmig: nothing redirects its plaintext migrations "
                 "into the tunnel (deleted, or the tunnel never started with [intercept])",
                 fix);
    return;
  }
  std::string expected;
  try {
    expected = tunnel::listed_form(tunnel::nftables_ruleset(c.config));
  } catch (const std::exception& e) {
    c.report.add(kGroup, "table inet xmig", Status::Warn,
                 "present, but not compared with the config: " + std::string(e.what()),
                 "run xmig-verify as root");
    return;
  }
  if (*found == expected) {
    c.report.add(kGroup, "table inet xmig", Status::Pass,
                 "in place and equal to what " + c.opts.config + " demands (" +
                     std::to_string(std::count(found->begin(), found->end(), '\n')) +
                     " lines as nft lists them, firewall " +
                     (c.config.intercept.firewall ? "on" : "off") + ")");
    return;
  }
  // The rules one has and the other lacks say what changed.
  auto rules_of = [](const std::string& text) {
    std::vector<std::string> lines;
    for (size_t at = 0; at < text.size();) {
      size_t end = std::min(text.find('\n', at), text.size());
      std::string line = text.substr(at, end - at);
      line.erase(0, std::min(line.find_first_not_of(" \t"), line.size()));
      if (!line.empty() && line != "}") lines.push_back(line);
      at = end + 1;
    }
    return lines;
  };
  auto lacking = [](std::vector<std::string> from, const std::vector<std::string>& in) {
    std::string out;
    for (const auto& line : in)
      if (auto it = std::find(from.begin(), from.end(), line); it != from.end())
        from.erase(it);
      else
        out += (out.empty() ? "\"" : "; \"") + line + "\"";
    return out;
  };
  const auto have = rules_of(*found), want = rules_of(expected);
  const std::string missing = lacking(have, want), extra = lacking(want, have);
  c.report.add(kGroup, "table inet xmig", Status::Fail,
               "differs from what " + c.opts.config + " demands (edited by hand, or applied " +
                   "from another config)" + (missing.empty() ? "" : "; missing: " + missing) +
                   (extra.empty() ? "" : "; not in the config: " + extra),
               fix);
}

// One of the peer's intercepted ports, tried both ways.
struct PortProbe {
  uint16_t port = 0;
  PeerAddress at{};               // the peer's migration address on that port
  std::string channel;            // what the local tunnel must carry it as
  std::string what;               // "driver port 16509", "migration port 49215"
  std::optional<unsigned> uid{};  // whose socket it is from this host (root when none)
  // From this host, plaintext with the canary.
  std::string local_error{};  // connect/send failure
  uint64_t sent = 0;
  // From the network: a socket with the tunnel's mark.
  enum class Outcome { Connected, Reset, Unreachable, TimedOut, NotRun } outcome = Outcome::NotRun;
  uint16_t marked_port = 0;  // its local port, to find its SYN in the capture
  std::string marked_error{};
};

// The socket's owner (sk_uid, what the table's guard matches) is the
// creating thread's fsuid: this thread becomes `uid` for the socket() call
// only, when root may not reach the range ports ([intercept].users).
Fd connect_as(const PeerAddress& to, std::optional<unsigned> uid, std::chrono::milliseconds timeout,
              std::string* error) {
  if (uid) ::setfsuid(*uid);
  Fd fd = connect_with_timeout(to, timeout, error);
  if (uid) ::setfsuid(0);
  return fd;
}

// A plaintext connection to the peer's port from this host: the canary
// goes in, our side half-closes, and whatever comes back is read until
// the far end closes or the timeout.
void from_this_host(LiveContext& c, const std::string& canary, PortProbe& p) {
  Fd fd = connect_as(p.at, p.uid, c.opts.timeout, &p.local_error);
  if (!fd) return;
  for (std::string_view rest = canary; !rest.empty();) {
    ssize_t n = ::send(fd.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the tunnel closed it (the peer refused the channel): fine
    p.sent += static_cast<uint64_t>(n);
    rest.remove_prefix(static_cast<size_t>(n));
  }
  ::shutdown(fd.get(), SHUT_WR);
  char buf[4096];
  while (::recv(fd.get(), buf, sizeof buf, 0) > 0) {
  }
}

// Connections to every probe's port at once from sockets carrying `mark`,
// so that the drops cost one timeout, not one each. Nothing is sent on a
// connection that is accepted; it is reset at once.
void from_the_network(LiveContext& c, uint32_t mark, std::vector<PortProbe>& probes) {
  std::vector<Fd> fds;
  std::vector<pollfd> waiting;
  for (auto& p : probes) {
    const PeerAddress& at = p.at;
    Fd fd(::socket(at.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
      p.marked_error = std::string("SO_MARK: ") + strerror(errno) + " (needs CAP_NET_ADMIN)";
      fds.emplace_back();
      continue;
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&at.addr), at.len) != 0 &&
        errno != EINPROGRESS) {
      p.marked_error = std::string("connect: ") + strerror(errno);
      fds.emplace_back();
      continue;
    }
    p.marked_port = local_port_of(fd.get());
    waiting.push_back({.fd = fd.get(), .events = POLLOUT, .revents = 0});
    fds.push_back(std::move(fd));
  }
  const auto deadline = std::chrono::steady_clock::now() + c.opts.timeout;
  for (size_t open = waiting.size(); open > 0;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || ::poll(waiting.data(), waiting.size(), int(left.count())) == 0) break;
    for (auto& w : waiting)
      if (w.fd >= 0 && w.revents) {
        for (size_t i = 0; i < probes.size(); ++i) {
          if (fds[i].get() != w.fd) continue;
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(w.fd, SOL_SOCKET, SO_ERROR, &err, &len);
          auto& p = probes[i];
          p.outcome = err == 0              ? PortProbe::Outcome::Connected
                      : err == ECONNREFUSED ? PortProbe::Outcome::Reset
                                            : PortProbe::Outcome::Unreachable;
          if (err) p.marked_error = strerror(err);
          if (err == 0) reset_on_close(w.fd);
        }
        w.fd = -1;  // poll ignores it from now on
        --open;
      }
  }
  for (size_t i = 0; i < probes.size(); ++i)
    if (fds[i] && probes[i].outcome == PortProbe::Outcome::NotRun)
      probes[i].outcome = PortProbe::Outcome::TimedOut;
}

// Is `a` the peer's address on `port`?
bool is(const Address& a, const PeerAddress& peer, uint16_t port) {
  if (a.port != port || a.v6 != (peer.addr.ss_family == AF_INET6)) return false;
  if (a.v6)
    return std::memcmp(a.ip.data(), &reinterpret_cast<const sockaddr_in6*>(&peer.addr)->sin6_addr,
                       16) == 0;
  return std::memcmp(a.ip.data(), &reinterpret_cast<const sockaddr_in*>(&peer.addr)->sin_addr, 4) ==
         0;
}

// Judges one probe's connection from this host on what the capture holds.
void judge_from_this_host(LiveContext& c, const PortProbe& p, const PeerAddress& to,
                          const FlowTable& table, const std::vector<uint16_t>& marked,
                          const std::string& where) {
  const std::string check = p.what + " from this host";
  // Plaintext to the port on the wire: anything but our marked probes.
  std::string plain;
  for (const auto& f : table.flows())
    for (int server = 0; server < 2; ++server)
      if (is(f->side(server), to, p.port) &&
          std::find(marked.begin(), marked.end(), f->side(1 - server).port) == marked.end())
        plain += (plain.empty() ? "" : "; ") + f->side(1 - server).str() + " -> " +
                 f->side(server).str() + " (" + std::to_string(f->frames) + " frames)";
  if (!plain.empty()) {
    c.report.add(kGroup, check, Status::Fail,
                 "plaintext TCP from this host to " + to.ip + " port " + std::to_string(p.port) +
                     " crossed " + where + ": " + plain + ": it was not redirected into the tunnel",
                 "put table inet xmig in place (see the table finding): restart xmig-tunnel with " +
                     c.opts.config + ", or " + apply_by_hand(c.opts.config));
    return;
  }
  // The local tunnel's TLS connection for it: the channel is in the ALPN.
  const std::string alpn = "xmig/" + p.channel;
  for (const auto& f : table.flows()) {
    int client = f->client;
    if (!is(f->side(1 - client), c.address, c.address.port) ||
        f->dir[client].tls.summary().alpn != alpn)
      continue;
    FlowVerdict v = classify_flow(*f);
    if (!v.tls || v.status == Status::Fail) {
      c.report.add(kGroup, check, Status::Fail,
                   "the flow " + v.name + " with ALPN " + alpn + " is not TLS: " + v.reason,
                   "only TLS may travel to the peer's port");
      return;
    }
    c.report.add(kGroup, check, Status::Pass,
                 "carried by the local tunnel as channel " + p.channel + ": nothing to port " +
                     std::to_string(p.port) + " on " + where + ", TLS flow " + v.name + " (" +
                     v.reason.substr(0, v.reason.find(',')) + ", ALPN " + alpn + "); " +
                     human_bytes(p.sent) + " of canary sent in plaintext by this host");
    return;
  }
  c.report.add(kGroup, check, Status::Fail,
               "nothing carried the connection to " + to.ip + ":" + std::to_string(p.port) +
                   " (no TLS flow with ALPN " + alpn + " to " + c.address.str() + " on " + where +
                   ")" + (p.local_error.empty() ? "" : ": " + p.local_error),
               "start xmig-tunnel with " + c.opts.config + ": its intercept listener (" +
                   (to.v6 ? "[::1]:" : "127.0.0.1:") +
                   std::to_string(c.config.intercept.listen_port) +
                   ") takes the redirected connections; see its log for \"intercept\"" +
                   (p.local_error.find("refused") == std::string::npos
                        ? std::string()
                        : "; a connection refused at once may also be the table's guard: only root "
                          "reaches driver_port, only [intercept] users the range"));
}

// Judges one probe's connection from the network (the marked socket).
void judge_from_the_network(LiveContext& c, const PortProbe& p, const PeerAddress& to,
                            const FlowTable& table, const std::string& where) {
  const std::string check = p.what + " from the network";
  const std::string target = to.ip + ":" + std::to_string(p.port);
  const std::string fix = "set firewall = true in " + c.opts.peer +
                          "'s [intercept] and restart its xmig-tunnel: its table then drops "
                          "TCP to driver_port and the range that arrives from the network";
  bool syn_left = false;
  for (const auto& f : table.flows())
    for (int server = 0; server < 2; ++server)
      syn_left = syn_left ||
                 (is(f->side(server), to, p.port) && f->side(1 - server).port == p.marked_port);
  char mark[16];
  std::snprintf(mark, sizeof mark, "0x%08x", c.config.intercept.mark);
  const std::string how = "a connection from this host that its own table lets pass (SO_MARK " +
                          std::string(mark) + ", as any host on the network)";
  switch (p.outcome) {
    case PortProbe::Outcome::NotRun:
      c.report.add(kGroup, check, Status::Fail, "could not be tried: " + p.marked_error,
                   "run xmig-verify as root");
      break;
    case PortProbe::Outcome::Connected:
      c.report.add(kGroup, check, Status::Fail,
                   c.opts.peer + " accepted plaintext TCP on " + target + " from " + how +
                       ": a migration listening there takes plaintext from any host",
                   fix);
      break;
    case PortProbe::Outcome::Reset:
      c.report.add(kGroup, check, Status::Warn,
                   c.opts.peer + " answered " + how + " to " + target +
                       " with a reset: nothing listens there now, but nothing dropped it either "
                       "(xmig's table drops, it never resets), so a migration listening there "
                       "would take plaintext from any host",
                   fix);
      break;
    case PortProbe::Outcome::Unreachable:
      c.report.add(kGroup, check, Status::Pass,
                   "refused: " + how + " to " + target + " got " + p.marked_error);
      break;
    case PortProbe::Outcome::TimedOut:
      if (syn_left)
        c.report.add(kGroup, check, Status::Pass,
                     "dropped: " + how + " to " + target + " left on " + where +
                         " and got no answer in " + std::to_string(c.opts.timeout.count()) + " ms");
      else
        c.report.add(kGroup, check, Status::Warn,
                     "no answer, but its SYN was not seen on " + where +
                         ": it never left this host, so " + c.opts.peer + " was not tested",
                     "check this host's other firewall rules for output to port " +
                         std::to_string(p.port) + ", or give --interface");
      break;
  }
}

}  // namespace

void check_interception(LiveContext& c) {
  const tunnel::InterceptConfig& in = c.config.intercept;
  if (!in.enabled) return;
  check_table(c);
  if (c.peer->addresses.empty()) return;  // the config refuses this; nothing to probe

  PeerAddress to;
  try {
    to = resolve(c.peer->addresses.front(), in.driver_port);
  } catch (const std::exception& e) {
    c.report.add(kGroup, "peer migration address", Status::Fail, e.what(),
                 "correct [[peer]] addresses for " + c.opts.peer);
    return;
  }
  // The last port of the range: libvirt takes ports from the first up, so
  // no migration is likely to be waiting there for its stream.
  const uint16_t range_port = c.opts.intercept_port ? c.opts.intercept_port : in.ports.last;
  if (!in.ports.contains(range_port)) {
    c.report.add(kGroup, "migration port " + std::to_string(range_port), Status::Fail,
                 "--intercept-port " + std::to_string(range_port) +
                     " is outside this host's [intercept] ports " + in.ports.str(),
                 "give a port of the range, or leave --intercept-port out");
    return;
  }
  std::vector<PortProbe> probes = {
      {.port = in.driver_port,
       .at = resolve(to.ip, in.driver_port),
       .channel = tunnel::kDriverChannel,
       .what = "driver port " + std::to_string(in.driver_port)},
      {.port = range_port,
       .at = resolve(to.ip, range_port),
       .channel = std::string(tunnel::kPortChannelPrefix) + std::to_string(range_port),
       .what = "migration port " + std::to_string(range_port)},
  };
  // Root may always reach the driver port; the range only [intercept].users.
  if (!in.uids.empty() && std::find(in.uids.begin(), in.uids.end(), 0u) == in.uids.end())
    probes.back().uid = in.uids.front();

  std::string filter = "tcp and host " + to.ip;
  if (c.address.ip != to.ip) filter = "tcp and (host " + to.ip + " or host " + c.address.ip + ")";
  CaptureStart started = start_capture(c, {to, c.address}, filter);
  const std::string canary = make_canary(kProbeCanaryBytes);
  for (auto& p : probes) from_this_host(c, canary, p);
  from_the_network(c, in.mark, probes);
  if (!started.capture) {
    c.report.add(
        kGroup, "capture", Status::Fail,
        "no capture, so nothing shows where the plaintext connections went: " + started.error,
        capture_fix(started.error));
    return;
  }
  // Let the tunnel's last frames (its TLS close) reach the capture.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  started.capture->stop();
  const LiveCapture& cap = *started.capture;
  FlowTable table(FlowOptions{.keep_streams = true, .keep_limit = 32u << 20});
  read_capture(cap, table);
  const std::string where = started.interface;
  if (cap.dropped() || cap.overflowed()) {
    c.report.add(kGroup, "capture", Status::Fail,
                 std::to_string(cap.dropped()) + " frames were dropped on " + where +
                     (cap.overflowed() ? " and the memory cap hit" : ""),
                 "run again on a quieter moment");
    return;
  }
  std::vector<uint16_t> marked;
  for (const auto& p : probes) marked.push_back(p.marked_port);
  for (const auto& p : probes) judge_from_this_host(c, p, to, table, marked, where);
  std::string leak = find_canary(CanaryMatcher(canary), table, cap);
  if (leak.empty())
    c.report.add(kGroup, "no plaintext canary on the wire", Status::Pass,
                 "no 16-byte window of the plaintext connections' canary in " +
                     std::to_string(cap.frames().size()) +
                     " captured frames or the reassembled streams");
  else
    c.report.add(kGroup, "no plaintext canary on the wire", Status::Fail,
                 "canary plaintext found " + leak,
                 "plaintext migrations leave this host: see the findings above");
  for (const auto& p : probes) judge_from_the_network(c, p, to, table, where);
}

}  // namespace xmig::verify::detail
