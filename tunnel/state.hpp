// Internal to tunnel/: the running tunnel's state, shared by the lifecycle
// (tunnel.cpp), the entry side (outbound.cpp) and the TLS side (inbound.cpp).
#pragma once

#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <string>

#include "base/asio.hpp"
#include "io/pump.hpp"
#include "tls/context.hpp"
#include "tunnel/admission.hpp"
#include "tunnel/config.hpp"
#include "tunnel/migrations.hpp"
#include "tunnel/order.hpp"
#include "tunnel/refusal_log.hpp"
#include "tunnel/sockets.hpp"
#include "tunnel/status.hpp"
#include "tunnel/tunnel.hpp"

namespace xmig::tunnel {

// Counts an established stream until it closes: in all (what the drain and
// xmig_connections_active look at) and in its direction (what
// max_connections looks at).
class Slot {
 public:
  Slot(std::atomic<size_t>& all, std::atomic<size_t>& direction)
      : all_(&all), direction_(&direction) {
    ++*all_;
    ++*direction_;
  }
  ~Slot() {
    if (!all_) return;
    --*all_;
    --*direction_;
  }
  Slot(Slot&& o) noexcept
      : all_(std::exchange(o.all_, nullptr)), direction_(std::exchange(o.direction_, nullptr)) {}
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  Slot& operator=(Slot&&) = delete;

 private:
  std::atomic<size_t>* all_;
  std::atomic<size_t>* direction_;
};

// A per-migration socket set reserved over the control socket (source side).
struct ReservedSet {
  std::string peer, id, folder;
  std::list<UnixProtocol::acceptor> entries;
  std::vector<std::string> paths;
  // Closes the entries and removes the sockets and the folder (idempotent).
  void close();
};

struct Tunnel::State {
  explicit State(Config c);

  Config config;
  // Before io: a connection held for its predecessors still gives its place
  // back when io's coroutines are destroyed at exit.
  DeliveryOrder delivery_order{delivery_hold(config.limits)};
  asio::io_context io{1};
  // Swapped by reload; each connection takes its own copy when it starts.
  std::shared_ptr<const tls::Context> tls;
  // Before workers: a pump that ends as the workers stop still releases its folder.
  IncomingFolders incoming{config};
  FixedSetOwner fixed_set;
  // Started by Tunnel::run() once privileges are dropped (every thread runs
  // with the dropped credentials).
  std::unique_ptr<io::Workers> workers;
  // Where the TLS handshakes' CPU goes (tls::handshake's `crypto`): as many
  // threads as workers, started beside them. Everything else of a connection
  // before its pump stays on io's one thread. After io: stopped and joined
  // before io's coroutines, whose sessions its steps use, are destroyed.
  std::unique_ptr<asio::thread_pool> handshakes;
  static constexpr char kHandshakeThreadName[] = "xmig-handshake";  // 15 characters at most
  // Established streams (and entries' connections while they dial): in all,
  // from peers, and from this host's own entries.
  std::atomic<size_t> connections{0}, inbound{0}, outbound{0};
  bool stopping = false;
  std::vector<std::string> peer_names;
  Stats stats;
  RefusalLog refusal_log;
  // Pending handshakes, per-source budgets and bans of the TLS listener; the
  // memory of a burst of ended connections given back.
  Admission admission{io, config.limits, peer_sources(io, config.peers), refusal_log, connections};

  std::list<UnixProtocol::acceptor> unix_listeners;
  std::list<asio::ip::tcp::acceptor> tcp_listeners;
  std::vector<std::string> created_sockets;  // removed at exit
  // Per-migration sets by "<peer>/<id>", while their control connection lasts.
  std::map<std::string, std::shared_ptr<ReservedSet>> reserved;
};

// Runs `steps` (a callable that starts the TLS handshake on `sock` and the
// exchange right after it, returning its awaitable) within the handshake
// timeout, which cancels `sock`. A timeout, a socket error or a TLS error
// comes out as std::runtime_error "TLS handshake timed out" / "TLS
// handshake: <why>"; any other exception (a refusal) passes as it is.
template <class Steps>
auto within_handshake_timeout(Tunnel::State& s, asio::ip::tcp::socket& sock, Steps steps)
    -> decltype(steps()) {
  // A handshake step on s.handshakes does not see the cancel: the shutdown
  // makes the step after it fail at once (tls::handshake).
  Deadline deadline(s.io, s.config.limits.handshake_timeout, [&] {
    sock.cancel();
    boost::system::error_code ignored;
    sock.shutdown(asio::socket_base::shutdown_both, ignored);
  });
  try {
    co_return co_await steps();
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error(deadline.expired() ? "TLS handshake timed out"
                                                : "TLS handshake: " + e.code().message());
  } catch (const tls::Error& e) {
    throw std::runtime_error(deadline.expired() ? std::string("TLS handshake timed out")
                                                : std::string("TLS handshake: ") + e.what());
  }
}

tls::Settings tls_settings(const Config& c);
long days_left(const tls::CertInfo& cert);
// "certificate serial S expires in N days" and, when the client certificate
// is another file, ", client certificate serial C expires in M days".
std::string describe_certificates(const tls::Context& context);

// Loads the TLS material again and swaps it in only if all of it is valid;
// otherwise logs why and keeps the old. `why` names the trigger for the log.
void reload(Tunnel::State& s, const std::string& why);

// Reloads when one of the [tls] files changes: CA bundle, certificate, key,
// client certificate, client key, CRL (inotify on their directories, so files
// replaced by rename are seen too).
void watch_tls_files(Tunnel::State& s);

// Lists the connection as active in /status from now on, with the byte
// counts its pump will add to (sets info.live and info.started). Call it just
// before the pump is started, with info.live then in the pump's options.
void start_connection(Tunnel::State& s, ConnectionInfo& info);

// Logs the close line and counts the connection (any thread).
void finish_connection(Tunnel::State& s, const ConnectionInfo& info, const io::PumpStats& stats);

// Serves /status and /metrics on the status listener.
asio::awaitable<void> serve_status(Tunnel::State& s, UnixProtocol::acceptor& acceptor);
asio::awaitable<void> serve_status(Tunnel::State& s, asio::ip::tcp::acceptor& acceptor);

// The verify channel: an echo that only authenticated peers reach; returns
// the local end to hand to a pump.
Fd start_echo(Tunnel::State& s);

// Entry side: accepts local clients on `acceptor` and carries each to
// `peer`'s `channel` (of per-migration set `migration`, "" for the fixed
// set). Their dials run at once; each takes its place in the entry's accept
// order, which the far side keeps (tunnel/order.hpp). Returns when the
// acceptor is closed.
template <class Acceptor>
asio::awaitable<void> serve_entry(Tunnel::State& s, Acceptor& acceptor, const PeerConfig& peer,
                                  std::string channel, std::string local_name,
                                  std::string migration = "");

// Dials `peer` for one accepted local connection, at `place` in its entry's
// accept order, and hands the pair to a pump; logs and resets `local` when
// the peer cannot be reached or refuses. Returns once the peer's verdict came;
// `place` leaves the order then.
asio::awaitable<void> dial(Tunnel::State& s, Fd local, Slot slot, DialOrder::Place place,
                           const PeerConfig& peer, std::string channel, std::string local_name,
                           std::string migration);

// The control socket: reservations of per-migration socket sets (see
// tunnel/migrations.hpp), each held while its connection stays open.
asio::awaitable<void> serve_control(Tunnel::State& s, UnixProtocol::acceptor& acceptor);

// TLS side: accepts peers and admits each one (concurrently).
asio::awaitable<void> serve_peers(Tunnel::State& s, asio::ip::tcp::acceptor& acceptor);

}  // namespace xmig::tunnel
