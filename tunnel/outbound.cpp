// The entry side: a local client connects to <run_dir>/<peer>/<channel>.sock,
// a per-migration <run_dir>/<peer>/<id>/<channel>.sock, or a [[route]]; the
// tunnel dials the peer, runs the TLS handshake naming the channel in ALPN,
// sends its Request (migration id, guest, place in the entry's accept order),
// waits for the peer's verdict, then hands the pair to a pump. Connections of
// one entry are dialled at once (up to kMaxDialsInFlight); the peer connects
// their targets in the order this side accepted them (tunnel/order.hpp).
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

// The handshake and the request (run within the handshake timeout). The
// request names the predecessors still being dialled as it goes out.
asio::awaitable<void> handshake_and_request(Tunnel::State& s, Dialled& d, const Request& request,
                                            const DialOrder::Place& place) {
  co_await tls::handshake(d.sock, d.ssl.get(), s.handshakes.get());
  s.stats.record_handshake(true, SSL_session_reused(d.ssl.get()));
  Request ordered = request;
  ordered.order = place.arrival();
  std::string record = encode(ordered);  // one write: one record, as the peer expects
  co_await tls::write_all(d.sock, d.ssl.get(), record.data(), record.size());
}

// The peer's verdict: it comes once the peer connected its target, after the
// predecessors of this connection (verdict_timeout).
asio::awaitable<void> read_verdict(Tunnel::State& s, Dialled& d) {
  const auto timeout = verdict_timeout(s.config.limits);
  Deadline deadline(s.io, timeout, [&] { d.sock.cancel(); });
  uint8_t verdict = 0;
  size_t n = 0;
  try {
    n = co_await tls::read_some(d.sock, d.ssl.get(), &verdict, 1);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error(deadline.expired() ? "no verdict from the peer within " +
                                                      std::to_string(timeout.count()) + " ms"
                                                : "waiting for the verdict: " + e.code().message());
  } catch (const tls::Error& e) {
    throw std::runtime_error(std::string("waiting for the verdict: ") + e.what());
  }
  if (n == 0) throw std::runtime_error("peer closed the connection before its verdict");
  if (static_cast<Verdict>(verdict) != Verdict::Accepted)
    throw std::runtime_error("refused by peer: " + describe(static_cast<Verdict>(verdict)));
}

// Connect, handshake, request, verdict. Throws with the reason on any failure.
asio::awaitable<void> start_dial(Tunnel::State& s, const PeerConfig& peer,
                                 const std::string& channel, const Request& request,
                                 DialOrder::Place& place, Dialled& d) {
  const auto& limits = s.config.limits;
  co_await place.within_window();
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
  co_await within_handshake_timeout(s, d.sock,
                                    [&] { return handshake_and_request(s, d, request, place); });
  co_await read_verdict(s, d);
}

}  // namespace

asio::awaitable<void> dial(Tunnel::State& s, Fd local, Slot slot, DialOrder::Place place,
                           const PeerConfig& peer, std::string channel, std::string local_name,
                           std::string migration) {
  Dialled d{asio::ip::tcp::socket(s.io), nullptr};
  // The guest whose stream this is, so that the destination can refuse to
  // deliver it into another guest's QEMU.
  const Request request{.migration = migration, .guest_uuid = guest_uuid_of_peer(local.get())};
  try {
    co_await start_dial(s, peer, channel, request, place, d);
  } catch (const std::exception& e) {
    place = {};  // its successors need not wait for it at the peer
    s.stats.record_refusal();
    s.stats.record_dial(peer.name, false);
    spdlog::warn("refused: entry {} -> peer {} channel {}{}: {}", local_name, peer.name, channel,
                 migration.empty() ? "" : " migration " + migration, e.what());
    reset_on_close(local.get());  // the local client learns at once
    co_return;
  }
  place = {};
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
  // The records OpenSSL protected here (counted before the session moves):
  // read, the peer's session tickets, then the verdict; written, the Request.
  const io::PumpOptions options{.ktls = s.config.tls.ktls,
                                .key_limit_records = s.config.tls.key_limit_records,
                                .records_read = tls::tickets_received(d.ssl.get()) + 1,
                                .records_written = 1,
                                .live = info.live};
  s.workers->start_pump(
      std::move(local), Fd(d.sock.release()), std::move(d.ssl),
      [&s, info, held](const io::PumpStats& stats) { finish_connection(s, info, stats); }, options);
}

template <class Acceptor>
asio::awaitable<void> serve_entry(Tunnel::State& s, Acceptor& acceptor, const PeerConfig& peer,
                                  std::string channel, std::string local_name,
                                  std::string migration) {
  AcceptBackoff backoff(local_name);
  auto order = DialOrder::make();  // this entry's accept order
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
    asio::co_spawn(s.io,
                   dial(s, Fd(sock->release()), Slot(s.connections, s.outbound), order->take(),
                        peer, channel, local_name, migration),
                   asio::detached);
  }
}

template asio::awaitable<void> serve_entry(Tunnel::State&, UnixProtocol::acceptor&,
                                           const PeerConfig&, std::string, std::string,
                                           std::string);
template asio::awaitable<void> serve_entry(Tunnel::State&, asio::ip::tcp::acceptor&,
                                           const PeerConfig&, std::string, std::string,
                                           std::string);

}  // namespace xmig::tunnel
