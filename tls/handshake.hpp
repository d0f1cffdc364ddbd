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
// expired"); a cancelled wait surfaces as boost::system::system_error. A
// resumed session is held to the peer rule of a full one (check_resumed_peer).
//
// With `crypto`, each step of the handshake (SSL_do_handshake: the key
// exchange, signing, checking the peer's chain, about a millisecond of CPU
// each) runs on one of its threads, while the waits for the socket stay on the
// caller's executor: a burst of connections is not handshaken one after the
// other on the caller's single thread, and the caller's own state is still
// touched by its thread only. A step on `crypto` does not see a cancel() of
// the socket; a caller that bounds the handshake in time shuts the socket
// down as well, so that the next step fails at once.
asio::awaitable<void> handshake(Socket& sock, SSL* ssl, asio::thread_pool* crypto = nullptr);

// Reads up to n bytes of application data; returns 0 when the peer sent
// close_notify. Throws tls::Error on failure.
asio::awaitable<size_t> read_some(Socket& sock, SSL* ssl, void* buf, size_t n);

// Writes all n bytes. Throws tls::Error on failure.
asio::awaitable<void> write_all(Socket& sock, SSL* ssl, const void* buf, size_t n);

// Sends close_notify (best effort, never waits for the peer's).
void send_close_notify(SSL* ssl);

}  // namespace xmig::tls
