// The TLS side: a peer connects to `listen`; the tunnel runs the handshake
// (the client certificate must chain to the CA), finds which configured peer
// the certificate names, looks up this host's target for the channel the peer
// asked for, connects it, answers Accepted, then hands the pair to a pump.
// Every refusal is logged with its reason, and not one byte reaches a target
// before all of that has succeeded.
#include <spdlog/spdlog.h>

#include "tls/handshake.hpp"
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
  ConnectionInfo info{"in", "", "", "", source, "", "", source};
  io::Fd target;
  try {
    {
      Deadline deadline(s.io, s.config.limits.handshake_timeout, [&] { sock.cancel(); });
      try {
        co_await tls::handshake(sock, ssl.get());
      } catch (const boost::system::system_error& e) {
        throw std::runtime_error(deadline.expired() ? "TLS handshake timed out"
                                                    : "TLS handshake: " + e.code().message());
      } catch (const tls::Error& e) {
        throw std::runtime_error(std::string("TLS handshake: ") + e.what());
      }
    }
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
    info.channel = tls::negotiated_channel(ssl.get());
    if (info.channel.empty())
      throw Refusal(Verdict::UnknownChannel, "the client named no channel (ALPN xmig/<channel>)");
    auto it = s.config.targets.find(info.channel);
    if (info.channel != kVerifyChannel && it == s.config.targets.end())
      throw Refusal(Verdict::UnknownChannel, "unknown channel \"" + info.channel + "\"");
    if (s.stopping) throw Refusal(Verdict::Busy, "shutting down");
    if (info.channel == kVerifyChannel) {
      info.local = "echo";
      target = start_echo(s);
    } else {
      info.local = it->second.str();
      try {
        target = co_await connect_to(s.io, it->second, s.config.limits.connect_timeout);
      } catch (const std::exception& e) {
        throw Refusal(Verdict::TargetUnavailable, "target " + info.local + ": " + e.what());
      }
    }
    uint8_t accepted = static_cast<uint8_t>(Verdict::Accepted);
    co_await tls::write_all(sock, ssl.get(), &accepted, 1);
  } catch (const Refusal& r) {
    send_verdict_nowait(ssl.get(), r.verdict);
    s.stats.record_refusal();
    if (info.peer.empty())
      spdlog::warn("refused: from {}: {}", source, r.what());
    else
      spdlog::warn("refused: from {} peer {} channel {}: {}", source, info.peer, info.channel,
                   r.what());
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
  s.workers.start_pump(
      std::move(target), io::Fd(sock.release()), std::move(ssl),
      [&s, info, held](const io::PumpStats& stats) { finish_connection(s, info, stats); },
      io::PumpOptions{.ktls = s.config.tls.ktls,
                      .key_limit_records = s.config.tls.key_limit_records,
                      .records_read = 0,
                      .live = info.live});
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
