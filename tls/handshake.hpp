// The TLS handshake, and the few records the control plane exchanges, driven
// by OpenSSL directly on the socket's file descriptor.
//
// Why not asio::ssl::stream: it runs OpenSSL over memory BIOs, and kTLS only
// engages on a socket BIO. Here OpenSSL reads and writes the non-blocking fd
// itself; Asio only waits for readiness. The fd is attached after connect has
// completed (the kernel TLS ULP needs a connected socket).
#pragma once

#include <openssl/ssl.h>

#include <cstddef>

#include "base/asio.hpp"

namespace xmig::tls {

using Socket = asio::ip::tcp::socket;

// Runs the handshake to completion. Throws tls::Error with a reason an
// operator can act on (e.g. "certificate verify failed: certificate has
// expired"); a cancelled wait surfaces as boost::system::system_error.
asio::awaitable<void> handshake(Socket& sock, SSL* ssl);

// Reads up to n bytes of application data; returns 0 when the peer sent
// close_notify. Throws tls::Error on failure.
asio::awaitable<size_t> read_some(Socket& sock, SSL* ssl, void* buf, size_t n);

// Writes all n bytes. Throws tls::Error on failure.
asio::awaitable<void> write_all(Socket& sock, SSL* ssl, const void* buf, size_t n);

// Sends close_notify (best effort, never waits for the peer's).
void send_close_notify(SSL* ssl);

}  // namespace xmig::tls
