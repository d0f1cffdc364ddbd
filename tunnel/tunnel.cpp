// The tunnel's lifecycle: load, listen, serve, reload on SIGHUP, drain on
// SIGTERM. The connection paths themselves are in outbound.cpp and inbound.cpp.
#include "tunnel/tunnel.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

tls::Settings tls_settings(const Config& c) {
  return tls::Settings{c.tls.ca, c.tls.cert, c.tls.key, c.tls.crl, c.tls.min_version == "1.2",
                       c.name};
}

long days_left(const tls::CertInfo& cert) {
  auto left = cert.not_after - std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::hours>(left).count() / 24;
}

std::string human_rate(uint64_t bytes, double seconds) {
  if (seconds <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fMB/s", static_cast<double>(bytes) / seconds / 1e6);
  return buf;
}

void open_listeners(Tunnel::State& s) {
  const Config& c = s.config;
  gid_t group = lookup_group(c.socket_group);
  // Where QEMU and the NBD server create the sockets this host delivers to.
  make_directory(c.run_dir + "/" + c.name, 0770, group);

  s.tcp_listeners.push_back(open_tcp_listener(s.io, c.listen));
  asio::co_spawn(s.io, serve_peers(s, s.tcp_listeners.back()), asio::detached);

  for (const auto& peer : c.peers) {
    for (const auto& channel : kMigrationChannels) {
      std::string path = c.socket_path(peer.name, channel);
      s.unix_listeners.push_back(open_unix_listener(s.io, path, c.socket_mode, group));
      s.created_sockets.push_back(path);
      asio::co_spawn(s.io, serve_entry(s, s.unix_listeners.back(), peer, channel, path),
                     asio::detached);
    }
  }
  for (const auto& route : c.routes) {
    const PeerConfig& peer = *c.find_peer(route.peer);
    std::string name = route.listen.str();
    if (route.listen.is_unix()) {
      s.unix_listeners.push_back(open_unix_listener(s.io, route.listen.path, c.socket_mode, group));
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

void close_listeners(Tunnel::State& s) {
  boost::system::error_code ignored;
  for (auto& l : s.unix_listeners) l.close(ignored);
  for (auto& l : s.tcp_listeners) l.close(ignored);
  for (auto& path : s.created_sockets) ::unlink(path.c_str());
}

// New material is checked completely before it replaces the old; on any
// problem the old stays in service.
void reload(Tunnel::State& s) {
  try {
    auto fresh = tls::Context::load(tls_settings(s.config));
    s.tls = fresh;
    spdlog::info("reload: certificate serial {} expires in {} days", fresh->cert().serial,
                 days_left(fresh->cert()));
  } catch (const std::exception& e) {
    spdlog::error("reload refused, keeping the loaded certificate: {}", e.what());
  }
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
      s.workers.abort_all("drain timeout");
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
      reload(s);
      continue;
    }
    spdlog::info("{}: no longer accepting; draining {} connections",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", s.connections.load());
    s.stopping = true;
    close_listeners(s);
    co_await drain(s);
    co_return;
  }
}

}  // namespace

void log_close(const ConnectionInfo& info, const io::PumpStats& st) {
  double seconds = std::chrono::duration<double>(st.duration).count();
  std::string line = fmt::format(
      "close: dir={} peer={} channel={} local={} remote={} tls={} cipher={} mode={} "
      "to_peer={} from_peer={} duration={:.3f}s throughput={} result={}",
      info.direction, info.peer, info.channel, info.local, info.remote, info.tls_version,
      info.cipher, st.mode, st.plain_to_tls, st.tls_to_plain, seconds,
      human_rate(st.plain_to_tls + st.tls_to_plain, seconds),
      st.error.empty() ? "ok" : "\"" + st.error + "\"");
  if (st.error.empty())
    spdlog::info("{}", line);
  else
    spdlog::warn("{}", line);
}

Tunnel::State::State(Config c)
    : config(std::move(c)), tls(tls::Context::load(tls_settings(config))), workers(config.workers) {
  for (const auto& p : config.peers) peer_names.push_back(p.name);
}

Tunnel::Tunnel(Config config) : state_(std::make_unique<State>(std::move(config))) {}

Tunnel::~Tunnel() = default;

int Tunnel::run() {
  State& s = *state_;
  open_listeners(s);
  asio::co_spawn(s.io, handle_signals(s), asio::detached);
  const auto& cert = s.tls->cert();
  spdlog::info(
      "ready: name={} listen={} peers={} routes={} workers={} run_dir={} tls>={} certificate "
      "serial {} expires in {} days",
      s.config.name, s.config.listen.str(), s.config.peers.size(), s.config.routes.size(),
      s.workers.size(), s.config.run_dir, s.config.tls.min_version, cert.serial, days_left(cert));
  s.io.run();
  spdlog::info("stopped");
  return 0;
}

int check(const std::string& config_path) {
  try {
    Config c = load_config(config_path);
    auto context = tls::Context::load(tls_settings(c));
    const auto& cert = context->cert();
    std::cout << config_path << ": OK\n"
              << "  name " << c.name << ", TLS listener " << c.listen.str()
              << ", TLS >= " << c.tls.min_version << "\n"
              << "  certificate " << c.tls.cert << ": serial " << cert.serial << ", expires in "
              << days_left(cert) << " days\n";
    for (const auto& p : c.peers)
      std::cout << "  peer " << p.name << " at " << p.address.str() << ": entries "
                << c.socket_path(p.name, "{driver,qemu,nbd}") << "\n";
    for (const auto& [channel, target] : c.targets)
      std::cout << "  inbound channel " << channel << " -> " << target.str() << "\n";
    for (const auto& r : c.routes)
      std::cout << "  route " << r.listen.str() << " -> " << r.peer << " channel " << r.channel
                << "\n";
    return 0;
  } catch (const ConfigError& e) {
    for (const auto& p : e.problems()) std::cerr << p << "\n";
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
  }
  return 1;
}

}  // namespace xmig::tunnel
