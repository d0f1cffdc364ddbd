// The tunnel's lifecycle: load, listen, serve, reload on SIGHUP, drain on
// SIGTERM. The connection paths themselves are in outbound.cpp and inbound.cpp.
#include "tunnel/tunnel.hpp"

#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include <cstdio>
#include <iostream>
#include <latch>

#include "tls/records.hpp"
#include "tunnel/intercept.hpp"
#include "tunnel/nftables.hpp"
#include "tunnel/privileges.hpp"
#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

// The user libvirt runs QEMU as on Debian.
constexpr const char* kLibvirtQemuUser = "libvirt-qemu";

// systemd readiness (Type=notify): one datagram to $NOTIFY_SOCKET. A no-op
// when not started by systemd.
void notify_systemd(const char* state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || (path[0] != '/' && path[0] != '@')) return;
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  socklen_t len = offsetof(sockaddr_un, sun_path) + std::strlen(path);
  ::sendto(fd, state, std::strlen(state), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  ::close(fd);
}

void open_listeners(Tunnel::State& s) {
  const Config& c = s.config;
  const Access shared = {.mode = c.socket_mode, .group = lookup_group(c.socket_group)};
  make_owned_directory(c.run_dir, entry_folder_access(c));
  // Where QEMU and the NBD server create the sockets this host delivers to.
  make_owned_directory(c.run_dir + "/" + c.name, incoming_folder_access(c));

  s.tcp_listeners.push_back(open_tcp_listener(s.io, c.listen));
  asio::co_spawn(s.io, serve_peers(s, s.tcp_listeners.back()), asio::detached);

  for (const auto& peer : c.peers) {
    make_owned_directory(c.run_dir + "/" + peer.name, entry_folder_access(c));
    for (const auto& channel : kMigrationChannels) {
      std::string path = c.socket_path(peer.name, channel);
      s.unix_listeners.push_back(open_unix_listener(s.io, path, entry_access(c, channel)));
      s.created_sockets.push_back(path);
      asio::co_spawn(s.io, serve_entry(s, s.unix_listeners.back(), peer, channel, path),
                     asio::detached);
    }
  }
  // Root only: a reserved set includes a driver entry (libvirt RPC on the peer).
  s.unix_listeners.push_back(open_unix_listener(s.io, c.control_path(), {.mode = 0600}));
  s.created_sockets.push_back(c.control_path());
  asio::co_spawn(s.io, serve_control(s, s.unix_listeners.back()), asio::detached);

  if (c.status.is_unix()) {
    s.unix_listeners.push_back(open_unix_listener(s.io, c.status.path, shared));
    s.created_sockets.push_back(c.status.path);
    asio::co_spawn(s.io, serve_status(s, s.unix_listeners.back()), asio::detached);
  } else {
    s.tcp_listeners.push_back(open_tcp_listener(s.io, c.status));
    asio::co_spawn(s.io, serve_status(s, s.tcp_listeners.back()), asio::detached);
  }
  if (c.intercept.enabled) {
    open_intercept_listeners(s);
    // Applied after the listener is up, and refusing to start without it:
    // without the table, nova's migrations would leave in plaintext.
    apply_nftables(nftables_ruleset(c));
    spdlog::info(
        "intercept: table {} applied: {} to the peers' driver_port {} and ports {} "
        "go through 127.0.0.1:{}{}",
        kNftTable, "TCP", c.intercept.driver_port, c.intercept.ports.str(), c.intercept.listen_port,
        c.intercept.firewall ? "; plaintext to those ports from the network is dropped"
                             : "; firewall = false: no drop rules");
  }
  for (const auto& route : c.routes) {
    const PeerConfig& peer = *c.find_peer(route.peer);
    std::string name = route.listen.str();
    if (route.listen.is_unix()) {
      s.unix_listeners.push_back(
          open_unix_listener(s.io, route.listen.path, entry_access(c, route.channel)));
      s.created_sockets.push_back(route.listen.path);
      asio::co_spawn(s.io, serve_entry(s, s.unix_listeners.back(), peer, route.channel, name),
                     asio::detached);
    } else {
      s.tcp_listeners.push_back(open_tcp_listener(s.io, route.listen));
      asio::co_spawn(s.io, serve_entry(s, s.tcp_listeners.back(), peer, route.channel, name),
                     asio::detached);
    }
  }
}

// The threads of State::handshakes, named "xmig-handshake" (top, /proc/PID/task)
// so that an operator sees where handshakes' CPU goes: each takes one naming
// job and holds it until all have theirs, so every thread gets one.
std::unique_ptr<asio::thread_pool> start_handshake_threads(unsigned count) {
  auto pool = std::make_unique<asio::thread_pool>(count);
  // Shared: a thread may still look at it after this function's wait returned.
  auto named = std::make_shared<std::latch>(count);
  for (unsigned i = 0; i < count; ++i)
    asio::post(*pool, [named] {
      ::pthread_setname_np(::pthread_self(), Tunnel::State::kHandshakeThreadName);
      named->arrive_and_wait();
    });
  named->wait();
  return pool;
}

void close_listeners(Tunnel::State& s) {
  boost::system::error_code ignored;
  for (auto& l : s.unix_listeners) l.close(ignored);
  for (auto& l : s.tcp_listeners) l.close(ignored);
  for (auto& path : s.created_sockets) ::unlink(path.c_str());
  for (auto& [key, set] : s.reserved) set->close();
}

// Waits for running connections to end, up to the drain timeout, then aborts
// what is left.
asio::awaitable<void> drain(Tunnel::State& s) {
  auto deadline = std::chrono::steady_clock::now() + s.config.limits.drain_timeout;
  asio::steady_timer tick(s.io);
  bool aborted = false;
  while (s.connections > 0) {
    if (!aborted && std::chrono::steady_clock::now() >= deadline) {
      spdlog::warn("drain: {} connections still open after {} ms; aborting them",
                   s.connections.load(), s.config.limits.drain_timeout.count());
      s.workers->abort_all("drain timeout");
      aborted = true;
    }
    tick.expires_after(std::chrono::milliseconds(50));
    co_await tick.async_wait(asio::use_awaitable);
  }
  s.io.stop();
}

asio::awaitable<void> handle_signals(Tunnel::State& s) {
  asio::signal_set signals(s.io, SIGTERM, SIGINT, SIGHUP);
  while (true) {
    int sig = co_await signals.async_wait(asio::use_awaitable);
    if (sig == SIGHUP) {
      reload(s, "SIGHUP");
      continue;
    }
    spdlog::info("{}: no longer accepting; draining {} connections",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", s.connections.load());
    s.stopping = true;
    notify_systemd("STOPPING=1");
    close_listeners(s);
    co_await drain(s);
    co_return;
  }
}

// What would keep QEMU from creating or using the tunnel's sockets: QEMU
// runs as its own user (libvirt: libvirt-qemu), not as the tunnel's.
std::vector<std::string> socket_warnings(const Config& c) {
  std::vector<std::string> out;
  const std::string incoming = c.run_dir + "/" + c.name + "/";
  const bool libvirt = ::getpwnam(kLibvirtQemuUser) != nullptr;
  if (c.socket_group.empty()) {
    out.push_back(std::string("socket_group is not set: ") + incoming +
                  " and the entry sockets belong to the tunnel's group only, so a QEMU that "
                  "does not run as root cannot create its incoming sockets there or connect to "
                  "the entries (every incoming migration fails with \"Permission denied\")" +
                  (libvirt ? "; libvirt runs QEMU as user " + std::string(kLibvirtQemuUser) : "") +
                  "; fix: socket_group = \"libvirt-qemu\" in " + c.path);
  } else if (::getgrnam(c.socket_group.c_str()) && libvirt) {
    // Is libvirt's QEMU user in that group?
    const passwd* pw = ::getpwnam(kLibvirtQemuUser);
    int n = 64;
    std::vector<gid_t> groups(n);
    if (::getgrouplist(kLibvirtQemuUser, pw->pw_gid, groups.data(), &n) >= 0) {
      const gid_t want = ::getgrnam(c.socket_group.c_str())->gr_gid;
      if (std::find(groups.begin(), groups.begin() + n, want) == groups.begin() + n)
        out.push_back("user " + std::string(kLibvirtQemuUser) + " (libvirt's QEMU) is not in " +
                      "socket_group \"" + c.socket_group + "\": it cannot use " + incoming +
                      "; fix: socket_group = \"libvirt-qemu\", or add the user to the group");
    }
  }
  if ((c.socket_mode & 0060) != 0060)
    out.push_back("socket_mode " + fmt::format("{:04o}", c.socket_mode) +
                  " does not let socket_group read and write the sockets, so QEMU cannot "
                  "connect to them; fix: socket_mode = \"0660\"");
  return out;
}

// Runs a command of the command line: its exit code, or 1 with every problem
// of the config (or the one error) on stderr.
template <class Command>
int or_report_problems(Command command) {
  try {
    return command();
  } catch (const ConfigError& e) {
    for (const auto& p : e.problems()) std::cerr << p << "\n";
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
  }
  return 1;
}

}  // namespace

Tunnel::State::State(Config c)
    : config(std::move(c)), tls(tls::Context::load(tls_settings(config))) {
  for (const auto& p : config.peers) peer_names.push_back(p.name);
}

Tunnel::Tunnel(Config config) : state_(std::make_unique<State>(std::move(config))) {}

Tunnel::~Tunnel() = default;

int Tunnel::run() {
  State& s = *state_;
  raise_fd_limit();
  open_listeners(s);
  // Everything that needs root is done: the sockets are bound, the keys read
  // (and in transparent mode the table applied; its SO_MARK needs
  // CAP_NET_ADMIN for good).
  const auto user = lookup_user(s.config.user);
  const Capabilities kept = s.config.intercept.enabled ? kNetAdmin : kNoCapabilities;
  if (user)
    drop_privileges(*user, kept);
  else if (::geteuid() != 0)
    settle_capabilities(kept);
  s.workers = std::make_unique<io::Workers>(s.config.workers);
  s.handshakes = start_handshake_threads(s.workers->size());
  s.admission.trim_on(s.handshakes->get_executor());
  asio::co_spawn(s.io, handle_signals(s), asio::detached);
  watch_tls_files(s);
  spdlog::info(
      "ready: name={} listen={} peers={} routes={} workers={} run_dir={} status={} tls>={} "
      "aes_gcm=\"{}\" {}{}",
      s.config.name, s.config.listen.str(), s.config.peers.size(), s.config.routes.size(),
      s.workers->size(), s.config.run_dir, s.config.status.str(), s.config.tls.min_version,
      tls::aes_gcm_engine(), describe_certificates(*s.tls),
      user ? " user=" + user->name + " (uid " + std::to_string(user->uid) + ", " +
                 describe_kept(kept) + ")"
      : ::geteuid() != 0 ? " uid=" + std::to_string(::geteuid()) + " (" + describe_kept(kept) + ")"
                         : "");
  for (const auto& w : socket_warnings(s.config)) spdlog::warn("{}", w);
  notify_systemd("READY=1");
  s.io.run();
  spdlog::info("stopped");
  return 0;
}

int check(const std::string& config_path) {
  return or_report_problems([&] {
    Config c = load_config(config_path);
    auto context = tls::Context::load(tls_settings(c));
    const auto& cert = context->cert();
    const auto& client = context->client_cert();
    std::cout << config_path << ": OK\n"
              << "  name " << c.name << ", TLS listener " << c.listen.str()
              << ", TLS >= " << c.tls.min_version << "\n"
              << "  certificate " << c.tls.cert << ": serial " << cert.serial_hex << ", expires in "
              << days_left(cert) << " days, serves as the TLS server certificate of " << c.name
              << "\n";
    if (context->separate_client_cert())
      std::cout << "  client certificate " << c.tls.client_cert << ": serial " << client.serial_hex
                << ", expires in " << days_left(client)
                << " days, serves as the TLS client certificate of " << c.name << "\n";
    else
      std::cout << "  client certificate: the same file (client_cert not set), which serves as "
                   "the TLS client certificate of "
                << c.name << " too\n";
    for (const auto& p : c.peers)
      std::cout << "  peer " << p.name << " at " << p.address.str() << ": entries "
                << c.socket_path(p.name, "{driver,qemu,nbd}") << "\n";
    for (const auto& [channel, target] : c.targets)
      std::cout << "  inbound channel " << channel << " -> " << target.str() << "\n";
    for (const auto& r : c.routes)
      std::cout << "  route " << r.listen.str() << " -> " << r.peer << " channel " << r.channel
                << "\n";
    if (c.intercept.enabled) {
      const InterceptConfig& in = c.intercept;
      std::string users;
      for (const auto& u : in.users) users += (users.empty() ? "" : ", ") + u;
      std::cout << "  intercept: TCP to the peers' driver_port " << in.driver_port << " (root only)"
                << " and ports " << in.ports.str() << " (" << (users.empty() ? "nobody" : users)
                << ") -> 127.0.0.1:" << in.listen_port << "; delivered here to " << in.address
                << ":<port> within " << in.ports.str() << "; firewall "
                << (in.firewall ? "on" : "off") << "; print the table with --nftables\n";
      for (const auto& p : c.peers) {
        std::string list;
        for (const auto& a : p.addresses) list += (list.empty() ? "" : ", ") + a;
        std::cout << "  intercept: peer " << p.name << " at " << list << "\n";
      }
    }
    std::cout << "  per-migration sets: " << c.socket_path("<peer>/<id>", "{driver,qemu,nbd}")
              << ", reserved by xmig-migrate over " << c.control_path() << "\n";
    if (auto user = lookup_user(c.user))
      std::cout << "  runs as user " << user->name << " (uid " << user->uid
                << ") once its sockets are bound, with "
                << describe_kept(c.intercept.enabled ? kNetAdmin : kNoCapabilities)
                << (c.intercept.enabled ? " (SO_MARK of [intercept])" : "") << "\n";
    for (const auto& w : socket_warnings(c)) std::cout << "warning: " << w << "\n";
    return 0;
  });
}

int print_nftables(const std::string& config_path) {
  return or_report_problems([&] {
    Config c = load_config(config_path);
    if (!c.intercept.enabled) {
      std::cerr << config_path
                << ": has no [intercept] section, so there is no ruleset; fix: add [intercept] "
                   "(README: Transparent mode)\n";
      return 1;
    }
    std::cout << nftables_ruleset(c);
    return 0;
  });
}

}  // namespace xmig::tunnel
