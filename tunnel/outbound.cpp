// The entry side: a local client connects to <run_dir>/<peer>/<channel>.sock,
// a per-migration <run_dir>/<peer>/<id>/<channel>.sock, or a [[route]]; the
// tunnel dials the peer, runs the TLS handshake naming the channel in ALPN,
// sends its Request (migration id, guest), waits for the peer's verdict, then
// hands the pair to a pump. Connections of one entry are dialled one after another: the verdict
// arrives only once the peer has connected its target, so targets see them in
// the order this side accepted them.
#include <spdlog/spdlog.h>

#include "base/socket.hpp"
#include "tls/handshake.hpp"
#include "tunnel/migrations.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

struct Dialled {
  asio::ip::tcp::socket sock;
  SslPtr ssl;
};

// The handshake, the request and the peer's verdict (run within the
// handshake timeout).
asio::awaitable<void> handshake_and_verdict(Dialled& d, const Request& request) {
  co_await tls::handshake(d.sock, d.ssl.get());
  std::string record = encode(request);  // one write: one record, as the peer expects
  co_await tls::write_all(d.sock, d.ssl.get(), record.data(), record.size());
  uint8_t verdict = 0;
  size_t n = co_await tls::read_some(d.sock, d.ssl.get(), &verdict, 1);
  if (n == 0) throw std::runtime_error("peer closed the connection before its verdict");
  if (static_cast<Verdict>(verdict) != Verdict::Accepted)
    throw std::runtime_error("refused by peer: " + describe(static_cast<Verdict>(verdict)));
}

// Connect, handshake, request, verdict. Throws with the reason on any failure.
asio::awaitable<void> start_dial(Tunnel::State& s, const PeerConfig& peer,
                                 const std::string& channel, const Request& request, Dialled& d) {
  const auto& limits = s.config.limits;
  {
    Deadline deadline(s.io, limits.connect_timeout, [&] { d.sock.close(); });
    try {
      co_await connect_tcp(d.sock, peer.address, s.config.socket_mark());
      set_liveness(d.sock.native_handle(), limits.liveness);
    } catch (const boost::system::system_error& e) {
      throw std::runtime_error("connect to " + peer.address.str() + ": " +
                               (deadline.expired() ? "timed out" : e.code().message()));
    }
  }
  auto context = s.tls;  // material may be swapped by a reload meanwhile
  d.ssl = context->new_client(peer.name, channel);
  tls::prepare_session(d.ssl.get(), s.config.tls.ktls);
  co_await within_handshake_timeout(s, d.sock, [&] { return handshake_and_verdict(d, request); });
}

}  // namespace

asio::awaitable<void> dial(Tunnel::State& s, Fd local, Slot slot, const PeerConfig& peer,
                           const std::string& channel, const std::string& local_name,
                           const std::string& migration) {
  Dialled d{asio::ip::tcp::socket(s.io), nullptr};
  // The guest whose stream this is, so that the destination can refuse to
  // deliver it into another guest's QEMU.
  const Request request{.migration = migration, .guest_uuid = guest_uuid_of_peer(local.get())};
  try {
    co_await start_dial(s, peer, channel, request, d);
  } catch (const std::exception& e) {
    s.stats.record_refusal();
    s.stats.record_dial(peer.name, false);
    spdlog::warn("refused: entry {} -> peer {} channel {}{}: {}", local_name, peer.name, channel,
                 migration.empty() ? "" : " migration " + migration, e.what());
    reset_on_close(local.get());  // the local client learns at once
    co_return;
  }
  s.stats.record_dial(peer.name, true);
  ConnectionInfo info{.direction = "out",
                      .peer = peer.name,
                      .channel = channel,
                      .migration = migration,
                      .local = local_name,
                      .remote = peer.address.str(),
                      .tls_version = tls::protocol_version(d.ssl.get()),
                      .cipher = tls::cipher_name(d.ssl.get()),
                      .client = describe_client(local.get())};
  spdlog::debug("open: {} -> {} ({}) channel {}", local_name, peer.name, info.remote, channel);
  auto held = std::make_shared<Slot>(std::move(slot));
  start_connection(s, info);
  // The verdict was one record read here: the kernel's RX sequence starts at 1.
  s.workers->start_pump(
      std::move(local), Fd(d.sock.release()), std::move(d.ssl),
      [&s, info, held](const io::PumpStats& stats) { finish_connection(s, info, stats); },
      io::PumpOptions{.ktls = s.config.tls.ktls,
                      .key_limit_records = s.config.tls.key_limit_records,
                      .records_read = 1,
                      .live = info.live});
}

template <class Acceptor>
asio::awaitable<void> serve_entry(Tunnel::State& s, Acceptor& acceptor, const PeerConfig& peer,
                                  std::string channel, std::string local_name,
                                  std::string migration) {
  AcceptBackoff backoff(local_name);
  while (auto sock = co_await accept_next(acceptor, backoff, s.stopping)) {
    // This host's own entries have a budget of their own: no peer, and no
    // stranger, can take their places.
    if (s.outbound >= s.config.limits.max_connections) {
      s.stats.record_refusal();
      spdlog::warn("refused: entry {}: max_connections ({}) reached", local_name,
                   s.config.limits.max_connections);
      reset_on_close(sock->native_handle());
      continue;
    }
    co_await dial(s, Fd(sock->release()), Slot(s.connections, s.outbound), peer, channel,
                  local_name, migration);
  }
}

template asio::awaitable<void> serve_entry(Tunnel::State&, UnixProtocol::acceptor&,
                                           const PeerConfig&, std::string, std::string,
                                           std::string);
template asio::awaitable<void> serve_entry(Tunnel::State&, asio::ip::tcp::acceptor&,
                                           const PeerConfig&, std::string, std::string,
                                           std::string);

}  // namespace xmig::tunnel
