// The TLS side: a peer connects to `listen`; the tunnel runs the handshake
// (the client certificate must chain to the CA), finds which configured peer
// the certificate names, reads the peer's Request (which migration, which
// guest, place in its entry's accept order), looks up this host's target for
// the channel the peer asked for (in the migration's own folder when it has
// one), waits until the connections before it in its entry's order have been
// delivered or have failed (tunnel/order.hpp), connects the target, answers
// Accepted, then hands the pair to a pump.
// Every refusal is logged with its reason, and not one byte reaches a target
// before all of that has succeeded.
#include <spdlog/spdlog.h>

#include <bit>

#include "base/socket.hpp"
#include "tls/handshake.hpp"
#include "tunnel/intercept.hpp"
#include "tunnel/migrations.hpp"
#include "tunnel/protocol.hpp"
#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

struct Refusal : std::runtime_error {
  Refusal(Verdict v, const std::string& why) : std::runtime_error(why), verdict(v) {}
  Verdict verdict;
};

// Sends a refusal verdict and close_notify; best effort, never waits.
void send_verdict_nowait(SSL* ssl, Verdict v) {
  if (!ssl) return;
  uint8_t byte = static_cast<uint8_t>(v);
  SSL_write(ssl, &byte, 1);
  tls::send_close_notify(ssl);
}

// Reads the dialling side's Request: exactly one record (see protocol.hpp).
asio::awaitable<Request> read_request(asio::ip::tcp::socket& sock, SSL* ssl) {
  std::array<char, kMaxRequestSize + 1> record;
  size_t n = co_await tls::read_some(sock, ssl, record.data(), record.size());
  if (n == 0) throw std::runtime_error("the peer closed the connection before its request");
  std::string why;
  auto request = decode_request({record.data(), n}, &why);
  if (!request) throw Refusal(Verdict::BadRequest, "its request: " + why);
  if (SSL_has_pending(ssl))
    throw Refusal(Verdict::BadRequest, "its request: longer than one record");
  co_return *request;
}

// The handshake and the request (run within the handshake timeout). The
// pending handshake's place is given back as soon as the peer has
// authenticated.
asio::awaitable<Request> handshake_and_request(Tunnel::State& s, asio::ip::tcp::socket& sock,
                                               SslPtr& ssl, ConnectionInfo& info,
                                               std::optional<Admission::Pending>& pending) {
  // A connection that sends nothing costs no TLS session: it is made when
  // the ClientHello begins to arrive.
  co_await sock.async_wait(asio::socket_base::wait_read, asio::use_awaitable);
  auto context = s.tls;
  ssl = context->new_server();
  tls::prepare_session(ssl.get(), s.config.tls.ktls);
  co_await tls::handshake(sock, ssl.get(), s.handshakes.get());
  s.stats.record_handshake(false, SSL_session_reused(ssl.get()));
  info.tls_version = tls::protocol_version(ssl.get());
  info.cipher = tls::cipher_name(ssl.get());
  auto peer = tls::identify_peer(ssl.get(), s.peer_names);
  if (!peer) {
    std::string names;
    if (X509* cert = SSL_get0_peer_certificate(ssl.get())) {
      char subject[256];
      X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
      names = subject;
    }
    // A certificate of our own CA: its holder may be told why, so that an
    // operator can fix the config on either side.
    throw Refusal(Verdict::NotAPeer, "certificate " + names + " names no configured [[peer]]");
  }
  info.peer = *peer;
  pending.reset();
  info.channel = tls::negotiated_channel(ssl.get());
  if (info.channel.empty())
    throw Refusal(Verdict::UnknownChannel, "the client named no channel (ALPN xmig/<channel>)");
  std::string unknown;
  if (info.channel != kVerifyChannel && !channel_target(s.config, info.channel, &unknown))
    throw Refusal(Verdict::UnknownChannel, unknown);
  Request request = co_await read_request(sock, ssl.get());
  info.migration = request.migration;
  co_return request;
}

// Connects the channel's target for this request: in the migration's own
// folder when it has one, and only to the QEMU of the guest the source named.
// A delivery into the fixed set also claims it (see FixedSetOwner).
asio::awaitable<Fd> connect_target(Tunnel::State& s, const Request& request, ConnectionInfo& info,
                                   std::shared_ptr<FixedSetOwner::Claim>& claim) {
  const Endpoint configured = *channel_target(s.config, info.channel, nullptr);
  const Endpoint where = migration_target(s.config, configured, request.migration);
  info.local = where.str();
  // A target in this host's incoming folder, which socket_group (QEMU) can
  // write: only QEMU, never root, listens there.
  const bool incoming = migration_target(s.config, configured, "x").path != configured.path;
  Fd target;
  try {
    target = co_await connect_to(s.io, where, s.config.limits.connect_timeout,
                                 {.refuse_root = incoming && !s.config.socket_group.empty()},
                                 s.config.socket_mark());
  } catch (const std::exception& e) {
    throw Refusal(Verdict::TargetUnavailable, "target " + info.local + ": " + e.what());
  }
  if (!where.is_unix()) co_return target;
  // Two migrations on one socket set: the second destination QEMU replaced
  // the first one's socket. Nothing may reach it from the other guest.
  const std::string other_migration =
      "another migration is using the same socket set; refusing so that neither guest "
      "receives the other's data (fix: one migration at a time on the fixed set, or "
      "per-migration sets with xmig-migrate)";
  std::string listener = guest_uuid_of_peer(target.get());
  if (!request.guest_uuid.empty() && !listener.empty() && listener != request.guest_uuid) {
    reset_on_close(target.get());
    throw Refusal(Verdict::OtherGuest, "target " + info.local + " belongs to guest " + listener +
                                           ", but this stream carries guest " + request.guest_uuid +
                                           ": " + other_migration);
  }
  const bool fixed_set = request.migration.empty() && incoming;
  if (fixed_set) {
    pid_t owner = 0, pid = listener_pid(target.get());
    claim = s.fixed_set.claim(pid, &owner);
    if (!claim) {
      reset_on_close(target.get());
      throw Refusal(Verdict::OtherGuest, "target " + info.local + " is now served by pid " +
                                             std::to_string(pid) + ", while connections to pid " +
                                             std::to_string(owner) +
                                             " on it are open: " + other_migration);
    }
  }
  co_return target;
}

// A refusal line of the TLS listener: rate-limited per source and kind (see
// refusal_log.hpp), except for the configured peers' addresses, whose every
// refusal stays in the log (xmig-verify's probes among them).
void log_refusal(Tunnel::State& s, const std::string& source, const std::string& kind,
                 const std::string& line) {
  if (s.admission.is_peer(source))
    spdlog::warn("{}", line);
  else
    s.refusal_log.warn(source + " " + kind, line);
}

// A refusal before the source has authenticated: a violation of the source
// (see admission.hpp).
void refuse_stranger(Tunnel::State& s, const std::string& source, const std::string& from,
                     const std::string& why) {
  s.admission.failed(source, why);
  log_refusal(s, source, "handshake", "refused: from " + from + ": " + why);
}

asio::awaitable<void> admit(Tunnel::State& s, asio::ip::tcp::socket sock, std::string from,
                            Admission::Pending pending_place) {
  const std::string source = pending_place.source();
  std::optional<Admission::Pending> pending(std::move(pending_place));
  sock.set_option(asio::ip::tcp::no_delay(true));
  set_liveness(sock.native_handle(), s.config.limits.liveness);
  SslPtr ssl;
  ConnectionInfo info{.direction = "in", .remote = from, .client = from};
  Fd target;
  std::optional<Slot> slot;
  std::shared_ptr<IncomingFolders::Use> folder;
  std::shared_ptr<FixedSetOwner::Claim> claim;
  std::unique_ptr<DeliveryOrder::Ticket> ticket;
  ArrivalOrder order;
  try {
    Request request = co_await within_handshake_timeout(
        s, sock, [&] { return handshake_and_request(s, sock, ssl, info, pending); });
    order = request.order;
    try {
      ticket = s.delivery_order.arrive(info.peer, request.order);
    } catch (const OrderRefusal& e) {
      throw Refusal(Verdict::OutOfOrder, e.what());
    }
    if (s.stopping) throw Refusal(Verdict::Busy, "shutting down");
    if (s.inbound >= s.config.limits.max_connections)
      throw Refusal(Verdict::Busy, fmt::format("max_connections ({}) streams from peers reached",
                                               s.config.limits.max_connections));
    slot.emplace(s.connections, s.inbound);
    if (!request.migration.empty()) {
      try {
        folder = s.incoming.acquire(request.migration);
      } catch (const std::exception& e) {
        throw Refusal(Verdict::TargetUnavailable,
                      "migration " + request.migration + ": " + e.what());
      }
    }
    if (info.channel == kVerifyChannel) {
      info.local = "echo";
      target = start_echo(s);
    } else {
      if (ticket) {
        // Delivered in the order the peer's entry accepted its connections.
        const auto waited = co_await ticket->turn();
        if (waited.given_up > 0)
          spdlog::warn(
              "from {} peer {} channel {}: delivering place {} of its entry after {} ms "
              "without {} predecessor(s) that did not arrive (failed at the peer?)",
              from, info.peer, info.channel, request.order.sequence, waited.time.count(),
              waited.given_up);
      }
      target = co_await connect_target(s, request, info, claim);
      ticket.reset();  // delivered: the successors may go
    }
    uint8_t accepted = static_cast<uint8_t>(Verdict::Accepted);
    co_await tls::write_all(sock, ssl.get(), &accepted, 1);
  } catch (const Refusal& r) {
    send_verdict_nowait(ssl.get(), r.verdict);
    s.stats.record_refusal();
    if (info.peer.empty())
      refuse_stranger(s, source, from, r.what());
    else
      spdlog::warn("refused: from {} peer {} channel {}{}: {}", from, info.peer, info.channel,
                   info.migration.empty() ? "" : " migration " + info.migration, r.what());
    co_return;
  } catch (const std::exception& e) {
    s.stats.record_refusal();
    if (info.peer.empty())
      refuse_stranger(s, source, from, e.what());
    else
      spdlog::warn("refused: from {} peer {}: {}", from, info.peer, e.what());
    co_return;
  }
  spdlog::debug("open: {} ({}) channel {} -> {}{}", info.peer, from, info.channel, info.local,
                order.entry == 0 ? std::string()
                                 : fmt::format(" (place {} of its entry, dialled beside {} "
                                               "predecessor(s) it waited for)",
                                               order.sequence, std::popcount(order.waits_for)));
  auto held = std::make_shared<Slot>(std::move(*slot));
  start_connection(s, info);
  // The records OpenSSL protected here (counted before the session moves):
  // read, the Request; written, this end's session tickets, then the verdict.
  const io::PumpOptions options{.ktls = s.config.tls.ktls,
                                .key_limit_records = s.config.tls.key_limit_records,
                                .records_read = 1,
                                .records_written = tls::tickets_sent(ssl.get()) + 1,
                                .live = info.live,
                                // The target receives (QEMU, NBD server): see io/pump.hpp.
                                .local_may_close_early = true};
  s.workers->start_pump(
      std::move(target), Fd(sock.release()), std::move(ssl),
      [&s, info, held, folder, claim](const io::PumpStats& stats) {
        finish_connection(s, info, stats);
      },
      options);
}

}  // namespace

asio::awaitable<void> serve_peers(Tunnel::State& s, asio::ip::tcp::acceptor& acceptor) {
  AcceptBackoff backoff(s.config.listen.str());
  while (auto sock = co_await accept_next(acceptor, backoff, s.stopping)) {
    boost::system::error_code ec;
    auto remote = sock->remote_endpoint(ec);
    if (ec) continue;  // already gone
    const std::string source = source_of(remote.address());
    const std::string from = remote.address().to_string() + ":" + std::to_string(remote.port());
    Admission::Refusal refusal;
    auto pending = s.admission.admit(source, refusal);
    if (!pending) {
      s.stats.record_refusal();
      log_refusal(s, source, refusal.kind, "refused: from " + from + ": " + refusal.why);
      reset_on_close(sock->native_handle());
      continue;
    }
    asio::co_spawn(s.io, admit(s, std::move(*sock), from, std::move(*pending)), asio::detached);
  }
}

}  // namespace xmig::tunnel
