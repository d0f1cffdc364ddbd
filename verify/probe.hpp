// Blocking clients for the live check: what a legitimate peer, a hostile
// client and a confused one send to the peer's TLS port.
//
// Every socket has send/receive timeouts, so no probe can hang the check.
// Certificates and keys are read into memory only to hand them to OpenSSL;
// nothing here prints them.
#pragma once

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/fd.hpp"
#include "tls/context.hpp"

namespace xmig::verify {

struct PeerAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string ip;  // numeric
  uint16_t port = 0;
  bool v6 = false;
  std::string str() const;  // "10.0.0.2:7443", "[fd00::2]:7443"
};

// Resolves host:port (the first address). Throws std::runtime_error naming the host.
PeerAddress resolve(const std::string& host, uint16_t port);

// A TCP connection with timeouts; an invalid Fd and *error set when it fails.
// From the numeric IPv4 address `source` when given.
Fd connect_with_timeout(const PeerAddress& peer, std::chrono::milliseconds timeout,
                        std::string* error, const std::string& source = "");

// One blocking TLS connection to the peer, up to and including the verdict
// byte the tunnel sends after authorization (tunnel/protocol.hpp).
struct TlsSession {
  Fd fd;
  SslPtr ssl;
  bool connected = false;          // TCP connect worked
  bool handshake_ok = false;       // the client side of the handshake completed
  std::optional<char> verdict;     // the first byte the server sent
  std::string error;               // why the connect, handshake or verdict failed
  bool verdict_timed_out = false;  // handshake done, then neither a byte nor a close
  // Handshake done, then a byte that is no tunnel verdict: a TLS terminator
  // that took the connection and forwards it (e.g. echoes the request).
  bool not_a_verdict = false;
  uint16_t local_port = 0;      // this client's port, as the server logs it
  std::string alpn;             // the protocol the server selected, "" if none
  std::string version, cipher;  // negotiated (when the handshake completed)
  bool aead = false;            // the negotiated suite is an AEAD

  // After an accepted verdict: send all bytes / read up to n (0 at EOF or error).
  bool write_all(std::string_view bytes);
  size_t read_some(char* buf, size_t n);
};

// Connects, attaches `ssl` to the socket, runs the handshake, sends `request`
// (default: the tunnel's Request for the fixed set, no guest; tests of
// malformed requests send other bytes, "" sends nothing) and reads one byte.
// From the numeric IPv4 address `source` when given.
TlsSession open_session(const PeerAddress& peer, SslPtr ssl, std::chrono::milliseconds timeout,
                        std::optional<std::string> request = std::nullopt,
                        const std::string& source = "");

// What a probe presents and accepts.
struct ProbeSpec {
  std::string cert_pem{},
      key_pem{};  // client identity (leaf, then its intermediates); none when empty
  std::vector<std::string> alpn{};       // offered, e.g. {"xmig/verify"}; none when empty
  int min_version = 0, max_version = 0;  // TLS1_2_VERSION, ...; 0 = OpenSSL's default
  // Verify the server against these PEM CAs, and with server_name its DNS SAN;
  // no verification when empty (xmig-verify's refusal probes are judged by
  // what the server refuses, not by who the server is).
  std::string ca_pem{};
  std::string server_name{};
  // Key exchange groups offered, OpenSSL's list syntax (e.g. "ffdhe2048");
  // OpenSSL's default when empty.
  std::string groups{};
};

// A client session as the spec says. Throws tls::Error when the PEM is
// unusable or the key does not match the certificate.
SslPtr probe_session(const ProbeSpec& spec);

struct PlaintextReply {
  std::string reply;        // what came back before close or timeout (capped)
  bool closed = false;      // the server closed or reset within the timeout
  std::string error;        // connect failure; "" otherwise
  uint16_t local_port = 0;  // this client's port, as the server logs it
};

// Sends bytes as they are and collects the answer.
PlaintextReply send_plaintext(const PeerAddress& peer, std::string_view bytes,
                              std::chrono::milliseconds timeout);

// The peer certificate's notAfter, if the session has one.
std::optional<std::chrono::system_clock::time_point> peer_not_after(SSL* ssl);

}  // namespace xmig::verify
