// Small services of a running tunnel: the status endpoint, the verify echo,
// and the bookkeeping when a connection ends.
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include "tunnel/protocol.hpp"
#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

// A status client has this long to send its request and take the answer; one
// that connects and says nothing holds a place until then.
constexpr std::chrono::seconds kStatusExchangeTimeout{5};
// Status exchanges at once; more are closed at accept.
constexpr size_t kMaxStatusClients = 16;

StatusFacts facts_of(const Tunnel::State& s) {
  const auto& cert = s.tls->cert();
  return StatusFacts{.name = s.config.name,
                     .active = s.connections.load(),
                     .cert_serial = cert.serial_hex,
                     .cert_not_after_unix = std::chrono::duration_cast<std::chrono::seconds>(
                                                cert.not_after.time_since_epoch())
                                                .count(),
                     .tls_min_version = s.config.tls.min_version,
                     .pending_handshakes = s.admission.pending(),
                     .bans_total = s.admission.bans_total(),
                     .bans = s.admission.bans()};
}

// One HTTP/1.0 exchange: GET /status or GET /metrics, then close.
template <class Socket>
asio::awaitable<void> answer(Tunnel::State& s, Socket sock, std::shared_ptr<size_t> clients) {
  struct Place {  // one of kMaxStatusClients, while the exchange lasts
    std::shared_ptr<size_t> count;
    ~Place() { --*count; }
  } place{clients};
  ++*clients;
  Deadline deadline(s.io, kStatusExchangeTimeout, [&] {
    boost::system::error_code ignored;
    sock.close(ignored);
  });
  std::string request;
  try {
    std::array<char, 1024> buf;
    while (request.find("\r\n\r\n") == std::string::npos &&
           request.find("\n\n") == std::string::npos && request.size() < 8192) {
      size_t n = co_await sock.async_read_some(asio::buffer(buf), asio::use_awaitable);
      request.append(buf.data(), n);
    }
  } catch (const std::exception&) {
    if (request.empty()) co_return;
  }
  std::string path = request.substr(0, request.find('\n'));
  std::string body, type = "application/json", status = "200 OK";
  if (path.rfind("GET /status", 0) == 0) {
    body = status_json(facts_of(s), s.stats.snapshot());
  } else if (path.rfind("GET /metrics", 0) == 0) {
    body = metrics_text(facts_of(s), s.stats.snapshot());
    type = "text/plain; version=0.0.4";
  } else {
    status = "404 Not Found";
    type = "text/plain";
    body = "try GET /status or GET /metrics\n";
  }
  std::string reply = "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
                      "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n" + body;
  boost::system::error_code ec;
  co_await asio::async_write(sock, asio::buffer(reply),
                             asio::redirect_error(asio::use_awaitable, ec));
}

template <class Acceptor>
asio::awaitable<void> serve_status_on(Tunnel::State& s, Acceptor& acceptor) {
  AcceptBackoff backoff("status " + s.config.status.str());
  auto clients = std::make_shared<size_t>(0);
  while (auto sock = co_await accept_next(acceptor, backoff, s.stopping)) {
    if (*clients >= kMaxStatusClients) {
      s.refusal_log.warn("status", fmt::format("refused: status endpoint: {} requests already "
                                               "being answered",
                                               kMaxStatusClients));
      continue;
    }
    asio::co_spawn(s.io, answer(s, std::move(*sock), clients), asio::detached);
  }
}

// Echoes what arrives until EOF or the cap, then closes its write side.
asio::awaitable<void> echo(UnixProtocol::socket sock) {
  std::vector<char> buf(64 * 1024);
  uint64_t total = 0;
  boost::system::error_code ec;
  while (total < kVerifyEchoLimit) {
    size_t n = co_await sock.async_read_some(asio::buffer(buf),
                                             asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    co_await asio::async_write(sock, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    total += n;
  }
  sock.shutdown(UnixProtocol::socket::shutdown_send, ec);
  // Drain what may still come so the pump sees a clean end, not a reset.
  while (!ec)
    co_await sock.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace

void start_connection(Tunnel::State& s, ConnectionInfo& info) {
  info.live = std::make_shared<io::LiveBytes>();
  info.started = std::chrono::steady_clock::now();
  s.stats.record_open(info);
}

void finish_connection(Tunnel::State& s, const ConnectionInfo& info, const io::PumpStats& stats) {
  log_close(info, stats);
  s.stats.record_close(info, stats);
}

asio::awaitable<void> serve_status(Tunnel::State& s, UnixProtocol::acceptor& acceptor) {
  return serve_status_on(s, acceptor);
}

asio::awaitable<void> serve_status(Tunnel::State& s, asio::ip::tcp::acceptor& acceptor) {
  return serve_status_on(s, acceptor);
}

Fd start_echo(Tunnel::State& s) {
  UnixProtocol::socket ours(s.io), theirs(s.io);
  asio::local::connect_pair(ours, theirs);
  asio::co_spawn(s.io, echo(std::move(ours)), asio::detached);
  return Fd(theirs.release());
}

}  // namespace xmig::tunnel
