// harness/tls_probe: probes for a tunnel's TLS port, as a test client or a
// hostile one sees it: xmig-verify's blocking probe client (verify/probe.hpp),
// with a test's options and loopback addresses.
//
// TlsProbe is a blocking OpenSSL client: it connects to 127.0.0.1:port with
// whatever a test asks for (a client certificate or none, a CA to verify the
// server or no verification, ALPN protocols, a TLS version range), runs the
// handshake, then reads the one-byte verdict the tunnel sends after
// authorization (tunnel/protocol.hpp: 'A' accepted, 'C' unknown channel, ...).
//
// With TLS 1.3 a client finishes its handshake before the server has looked at
// the client certificate, so a refused client certificate shows up as an alert
// while reading the verdict, not as a failed handshake: result.handshake_ok
// only says the client side completed.
//
// send_plaintext() is the other probe: raw bytes onto the port and whatever
// comes back, to see how the tunnel answers something that is not TLS.
//
// Every socket has receive and send timeouts, so no probe can hang a test.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tunnel/protocol.hpp"
#include "verify/probe.hpp"

namespace xmig::harness {

struct TlsProbeOptions {
  // The client certificate and key: PEM text, or files (used when the text is
  // empty). No certificate at all when both are empty.
  std::string cert_pem, key_pem;
  std::string cert_file, key_file;
  // Verify the server against this PEM CA (text or file); no verification
  // when both are empty.
  std::string ca_pem, ca_file;
  // With a CA: the DNS name the server's certificate must carry ("" = any).
  std::string server_name;
  // ALPN protocols offered, e.g. {"xmig/bench"}; none offered when empty.
  std::vector<std::string> alpn;
  // OpenSSL version constants (TLS1_2_VERSION, TLS1_3_VERSION); 0 = OpenSSL's
  // default bound. {TLS1_2_VERSION, TLS1_2_VERSION} is a TLS 1.2-only client.
  int min_version = 0, max_version = 0;
  // The record sent right after the handshake, before the verdict is read:
  // the tunnel's Request (tunnel/protocol.hpp). Default: the fixed set, no
  // guest. Tests of malformed requests put other bytes here.
  std::string request = tunnel::encode(tunnel::Request{});
  // Bound for connect, each read and each write.
  std::chrono::milliseconds timeout{5000};
};

struct TlsProbeResult {
  bool handshake_ok = false;    // the client side of the handshake completed
  std::optional<char> verdict;  // the byte the server sent first, if any
  std::string error;            // why the handshake or the verdict read failed; "" if not
  uint16_t local_port = 0;      // the probe's source port, as the server logs it
  std::string version;          // negotiated, e.g. "TLSv1.3" (when the handshake completed)
  std::string alpn;             // the protocol the server selected, "" if none
};

class TlsProbe {
 public:
  explicit TlsProbe(TlsProbeOptions opts);
  ~TlsProbe();
  TlsProbe(const TlsProbe&) = delete;
  TlsProbe& operator=(const TlsProbe&) = delete;

  // Connects to 127.0.0.1:port, runs the handshake, sends the request and
  // reads one byte (the verdict). Never throws for what the server does; the result says what
  // happened. Throws std::runtime_error only when the options are unusable
  // (unreadable PEM, key not matching). One connection per probe.
  TlsProbeResult connect(uint16_t port);

  // After an accepted verdict: sends bytes as TLS application data. Returns
  // "" on success, else the reason.
  std::string write(std::string_view bytes);
  // Reads application data until `n` bytes came, the peer closed, or the
  // timeout passed; returns what arrived.
  std::string read(size_t n);
  // Sends close_notify and closes the socket.
  void close();

 private:
  TlsProbeOptions opts_;
  verify::ProbeSpec spec_;
  verify::TlsSession session_;
};

using PlaintextResult = verify::PlaintextReply;
using verify::only_tls_alerts;

// Connects to 127.0.0.1:port, sends `bytes` as they are, then collects what
// comes back until the server closes or `timeout` passes.
PlaintextResult send_plaintext(uint16_t port, std::string_view bytes,
                               std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace xmig::harness
