// base/openssl_errors: why an OpenSSL call failed, in words, for the messages
// tls/, io/, verify/ and the harness build around it: the thread-local error
// queue as one line, and the whole story of a failed call on a blocking socket.
#pragma once

#include <openssl/ssl.h>

#include <string>

namespace xmig {

// The pending errors' reasons ("certificate verify failed; ..."), each once,
// and clears the queue; "" when it is empty.
std::string openssl_errors();

// Why SSL_connect/SSL_read/SSL_write on a blocking socket with SO_RCVTIMEO
// returned `ret`, with `saved_errno` the errno right after the call: the
// error queue, the certificate verify result when the connection asked for
// verification, else a close_notify, an EOF, a timeout or the errno. Clears
// the queue. For the blocking probes (xmig-verify, the test harness); the
// tunnel's asynchronous handshake says it in its own terms (tls/handshake).
std::string blocking_ssl_failure(SSL* ssl, int ret, int saved_errno);

}  // namespace xmig
