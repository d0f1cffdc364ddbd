// tls/: OpenSSL for the tunnel — contexts, certificate checks, peer identity.
//
// A Context is loaded once from PEM files and is immutable afterwards; a reload
// builds a new one and swaps the shared_ptr, so connections in flight keep the
// material they started with. It holds two identities: the server certificate,
// shown to peers that dial this host, and the client certificate, shown when
// this host dials a peer (by default the same files). Loading refuses anything
// a careful operator would: a key that certs::load_key_file refuses (accessible
// to all users or writable by its group, encrypted, damaged), a key that does
// not match its certificate, a certificate that does not chain to the CA, is
// expired, or cannot serve in its role (certs::check_role: the usage and the
// DNS SAN naming this host).
//
// Session resumption (TLS 1.3 only, on by default, [tls] resumption): the
// server side issues one ticket per full handshake (none on a resumed one: a
// session is resumed only within kTicketLifetime of the handshake that
// checked the certificates), sealed with a key that is random per Context (a
// reload refuses every older ticket); the dialling side
// keeps the newest ticket per peer in its Context (tls/session_cache.hpp) and
// offers it when it dials that peer again. Only psk_dhe_ke (every resumed
// session still runs an X25519 exchange: forward secrecy is kept), never early
// data, tickets valid for kTicketLifetime. A resumed handshake skips the
// verify callback: handshake() applies the peer rule to the session's
// certificate itself (check_resumed_peer).
//
// tls/ never decides where bytes go and never forwards a byte itself: it only
// says who the peer is and which channel it asked for.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/openssl.hpp"
#include "certs/certs.hpp"

namespace xmig::tls {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Settings {
  std::string ca;    // PEM bundle of trusted CAs (several during a CA rollover)
  std::string cert;  // this host's server certificate (may carry its intermediate CAs)
  std::string key;   // its private key
  // The certificate and key this host presents when it dials a peer; "" means
  // cert and key.
  std::string client_cert;
  std::string client_key;
  std::string crl;           // optional PEM CRL file
  bool allow_tls12 = false;  // TLS 1.3 only unless set
  std::string own_name;      // this host: both certificates must carry it as a DNS SAN
  // TLS 1.3 session resumption between this host's channels to one peer;
  // never with allow_tls12 (a TLS 1.2 resumption has no fresh key exchange).
  bool resumption = true;
};

// How long a session ticket may be used: a resumed handshake trusts what
// the full one checked this long ago. Short: the channels of one migration
// (and of migrations started together) are dialled within seconds.
constexpr std::chrono::seconds kTicketLifetime{60};

// What a certificate says (serial, validity, names): certs/' description of it.
using CertInfo = certs::CertInfo;

class Context {
 public:
  // Loads and checks the files; throws Error naming the file and the fix.
  static std::shared_ptr<const Context> load(const Settings& settings);

  // A client session that presents the client certificate, offers ALPN
  // "xmig/<channel>" and accepts only a server whose certificate chains to the
  // CA and names `peer` (DNS SAN).
  SslPtr new_client(const std::string& peer, const std::string& channel) const;
  // A server session that presents the server certificate, requires a client
  // certificate chaining to the CA and an ALPN of the form "xmig/<channel>".
  SslPtr new_server() const;

  const CertInfo& cert() const { return cert_; }                // the server certificate
  const CertInfo& client_cert() const { return client_cert_; }  // the client certificate
  // True when the client certificate is another file than the server's.
  bool separate_client_cert() const { return settings_.client_cert != settings_.cert; }
  // Settings with client_cert and client_key filled in.
  const Settings& settings() const { return settings_; }

  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

 private:
  Context() = default;
  SslCtxPtr server_ctx_;  // the server identity: sessions accepted from peers
  SslCtxPtr client_ctx_;  // the client identity: sessions dialled to peers; owns the
                          // SessionCache of the tickets its peers sent
  CertInfo cert_, client_cert_;
  Settings settings_;
};

// The configured peer whose name the authenticated certificate carries as a
// DNS SAN (no wildcards), or nullopt.
std::optional<std::string> identify_peer(SSL* ssl, const std::vector<std::string>& peers);

// The channel named by the negotiated ALPN ("xmig/<channel>"), or "".
std::string negotiated_channel(SSL* ssl);

// After a handshake that resumed a session (SSL_session_reused), which skips
// the verify callback: the peer rule the full handshake applied (the session's
// peer certificate a leaf for its role with a DNS SAN and, dialling, naming the
// peer dialled), in the words of a refused full handshake ("certificate verify
// failed: ..."); "" when it holds or the handshake was a full one.
std::string check_resumed_peer(SSL* ssl);

// Session tickets (TLS 1.3 NewSessionTicket records) this dialling session
// has read since its handshake: the records before the first application data
// record that kTLS RX must count (tls/ktls.hpp complete_offload).
uint64_t tickets_received(SSL* ssl);
// Session tickets this accepting session has written since its handshake:
// records under its application traffic key before its first data record
// (tls::Records continues the sequence number after them).
uint64_t tickets_sent(SSL* ssl);

// "TLSv1.3", "TLS_AES_128_GCM_SHA256".
std::string protocol_version(SSL* ssl);
std::string cipher_name(SSL* ssl);

// After a client handshake failed the host check: the DNS names the server's
// certificate carried ("no DNS name" when none), else "".
std::string presented_names(SSL* ssl);
// After a handshake failed because the peer's certificate broke the peer rule
// (certs::peer_certificate_problem): why, else "".
std::string refused_certificate(SSL* ssl);

}  // namespace xmig::tls
