// The TLS side: a peer connects to `listen`; the tunnel runs the handshake
// (the client certificate must chain to the CA), finds which configured peer
// the certificate names, reads the peer's Request (which migration, which
// guest), looks up this host's target for the channel the peer asked for (in
// the migration's own folder when it has one), connects it, answers Accepted,
// then hands the pair to a pump.
// Every refusal is logged with its reason, and not one byte reaches a target
// before all of that has succeeded.
#include <spdlog/spdlog.h>

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
  uint8_t byte = static_cast<uint8_t>(v);
  SSL_write(ssl, &byte, 1);
  tls::send_close_notify(ssl);
}

// Reads the dialling side's Request: exactly one record (see protocol.hpp).
asio::awaitable<Request> read_request(asio::ip::tcp::socket& sock, SSL* ssl) {
  std::array<char, kMaxRequestSize + 1> record;
  size_t n = co_await tls::read_some(sock, ssl, record.data(), record.size());
  if (n == 0) throw std::runtime_error("the peer closed the connection before its request");
  auto request = decode_request({record.data(), n});
  if (!request || SSL_has_pending(ssl))
    throw Refusal(Verdict::BadRequest,
                  "malformed request, or a migration id that is not "
                  "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
  co_return *request;
}

// The handshake and the request, within the handshake timeout.
asio::awaitable<Request> start_admit(Tunnel::State& s, asio::ip::tcp::socket& sock, SSL* ssl,
                                     ConnectionInfo& info) {
  Deadline deadline(s.io, s.config.limits.handshake_timeout, [&] { sock.cancel(); });
  try {
    co_await tls::handshake(sock, ssl);
    info.tls_version = tls::protocol_version(ssl);
    info.cipher = tls::cipher_name(ssl);
    auto peer = tls::identify_peer(ssl, s.peer_names);
    if (!peer) {
      std::string names;
      if (X509* cert = SSL_get0_peer_certificate(ssl)) {
        char subject[256];
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
        names = subject;
      }
      // A certificate of our own CA: its holder may be told why, so that an
      // operator can fix the config on either side.
      throw Refusal(Verdict::NotAPeer, "certificate " + names + " names no configured [[peer]]");
    }
    info.peer = *peer;
    info.channel = tls::negotiated_channel(ssl);
    if (info.channel.empty())
      throw Refusal(Verdict::UnknownChannel, "the client named no channel (ALPN xmig/<channel>)");
    std::string unknown;
    if (info.channel != kVerifyChannel && !channel_target(s.config, info.channel, &unknown))
      throw Refusal(Verdict::UnknownChannel, unknown);
    Request request = co_await read_request(sock, ssl);
    info.migration = request.migration;
    co_return request;
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error(deadline.expired() ? "TLS handshake timed out"
                                                : "TLS handshake: " + e.code().message());
  } catch (const tls::Error& e) {
    throw std::runtime_error(std::string("TLS handshake: ") + e.what());
  }
}

// Connects the channel's target for this request: in the migration's own
// folder when it has one, and only to the QEMU of the guest the source named.
// A delivery into the fixed set also claims it (see FixedSetOwner).
asio::awaitable<Fd> connect_target(Tunnel::State& s, const Request& request, ConnectionInfo& info,
                                   std::shared_ptr<FixedSetOwner::Claim>& claim) {
  const Endpoint configured = *channel_target(s.config, info.channel, nullptr);
  const Endpoint where = migration_target(s.config, configured, request.migration);
  info.local = where.str();
  Fd target;
  try {
    target =
        co_await connect_to(s.io, where, s.config.limits.connect_timeout, s.config.socket_mark());
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
  const bool fixed_set = request.migration.empty() &&
                         migration_target(s.config, configured, "x").path != configured.path;
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

asio::awaitable<void> admit(Tunnel::State& s, asio::ip::tcp::socket sock, Slot slot) {
  std::string source;
  {
    boost::system::error_code ec;
    auto ep = sock.remote_endpoint(ec);
    source = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  sock.set_option(asio::ip::tcp::no_delay(true));
  auto context = s.tls;
  tls::SslPtr ssl = context->new_server();
  tls::prepare_session(ssl.get(), s.config.tls.ktls);
  ConnectionInfo info{.direction = "in", .remote = source, .client = source};
  Fd target;
  std::shared_ptr<IncomingFolders::Use> folder;
  std::shared_ptr<FixedSetOwner::Claim> claim;
  try {
    Request request = co_await start_admit(s, sock, ssl.get(), info);
    if (s.stopping) throw Refusal(Verdict::Busy, "shutting down");
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
      target = co_await connect_target(s, request, info, claim);
    }
    uint8_t accepted = static_cast<uint8_t>(Verdict::Accepted);
    co_await tls::write_all(sock, ssl.get(), &accepted, 1);
  } catch (const Refusal& r) {
    send_verdict_nowait(ssl.get(), r.verdict);
    s.stats.record_refusal();
    if (info.peer.empty())
      spdlog::warn("refused: from {}: {}", source, r.what());
    else
      spdlog::warn("refused: from {} peer {} channel {}{}: {}", source, info.peer, info.channel,
                   info.migration.empty() ? "" : " migration " + info.migration, r.what());
    co_return;
  } catch (const std::exception& e) {
    s.stats.record_refusal();
    spdlog::warn("refused: from {}{}: {}", source, info.peer.empty() ? "" : " peer " + info.peer,
                 e.what());
    co_return;
  }
  spdlog::debug("open: {} ({}) channel {} -> {}", info.peer, source, info.channel, info.local);
  auto held = std::make_shared<Slot>(std::move(slot));
  start_connection(s, info);
  // The request was one record read here: the kernel's RX sequence starts at 1.
  s.workers.start_pump(
      std::move(target), Fd(sock.release()), std::move(ssl),
      [&s, info, held, folder, claim](const io::PumpStats& stats) {
        finish_connection(s, info, stats);
      },
      io::PumpOptions{.ktls = s.config.tls.ktls,
                      .key_limit_records = s.config.tls.key_limit_records,
                      .records_read = 1,
                      .live = info.live,
                      // The target receives (QEMU, NBD server): see io/pump.hpp.
                      .local_may_close_early = true});
}

}  // namespace

asio::awaitable<void> serve_peers(Tunnel::State& s, asio::ip::tcp::acceptor& acceptor) {
  while (!s.stopping) {
    boost::system::error_code ec;
    auto sock = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (s.stopping) co_return;
    if (ec) {
      spdlog::error("accept on {}: {}", s.config.listen.str(), ec.message());
      continue;
    }
    if (s.connections >= s.config.limits.max_connections) {
      s.stats.record_refusal();
      spdlog::warn("refused: TLS listener: max_connections ({}) reached",
                   s.config.limits.max_connections);
      continue;
    }
    asio::co_spawn(s.io, admit(s, std::move(sock), Slot(s.connections)), asio::detached);
  }
}

}  // namespace xmig::tunnel
