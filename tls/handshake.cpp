#include "tls/handshake.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "base/openssl_errors.hpp"
#include "tls/context.hpp"

namespace xmig::tls {

namespace {

// The server chained to our CA but is not the peer we dialled: say whom it
// names, since the usual cause is a [[peer]] address that reaches another host.
std::string wrong_host(SSL* ssl) {
  const char* wanted = X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
  std::string names = presented_names(ssl);
  return "certificate verify failed: hostname mismatch: the server's certificate names " +
         (names.empty() ? std::string("another host") : names) + ", not " +
         (wanted ? wanted : "the peer") + " (is the [[peer]] address right?)";
}

// Why an SSL call failed, in words. Verification failures name the
// certificate problem; a peer that just hangs up is said so.
std::string failure(SSL* ssl, int err, int saved_errno) {
  std::string queue = openssl_errors();
  long verify = SSL_get_verify_result(ssl);
  std::string why;
  if (verify == X509_V_ERR_HOSTNAME_MISMATCH)
    why = wrong_host(ssl);
  else if (verify == X509_V_ERR_APPLICATION_VERIFICATION && !refused_certificate(ssl).empty())
    why = "certificate verify failed: " + refused_certificate(ssl);
  else if (verify != X509_V_OK)
    why = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  else if (!queue.empty())
    why = queue;
  else if (err == SSL_ERROR_SYSCALL)
    why = saved_errno ? std::string(strerror(saved_errno)) : "peer closed the connection";
  else if (err == SSL_ERROR_ZERO_RETURN)
    why = "peer closed the connection (close_notify)";
  else
    why = "SSL error " + std::to_string(err);
  // Add OpenSSL's words only when they say something the sentence does not.
  if (!queue.empty() && why.find(queue) == std::string::npos) why += " (" + queue + ")";
  return why;
}

// What one SSL call did: its return, SSL_get_error's verdict when it did not
// succeed, and why in words when it failed. Made on the thread that made the
// call: OpenSSL's error queue and errno are per thread.
struct Step {
  int ret = 0;
  int err = SSL_ERROR_NONE;
  std::string why;
};

template <class Call>
Step step(SSL* ssl, Call& call) {
  ERR_clear_error();
  errno = 0;
  Step s;
  s.ret = call();
  if (s.ret > 0) return s;
  const int saved = errno;
  s.err = SSL_get_error(ssl, s.ret);
  if (s.err != SSL_ERROR_WANT_READ && s.err != SSL_ERROR_WANT_WRITE &&
      s.err != SSL_ERROR_ZERO_RETURN)
    s.why = failure(ssl, s.err, saved);
  return s;
}

// step() on one of `crypto`'s threads; resumes on the caller's executor. The
// caller's frame (ssl, call) stays alive while it waits. Plain handlers, no
// coroutine frames on the pool's threads.
template <class Call>
asio::awaitable<Step> step_on(asio::thread_pool& crypto, SSL* ssl, Call& call) {
  auto caller = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Step)>(
      [&crypto, caller, ssl, &call](auto resume) {
        asio::post(crypto, [resume = std::move(resume), caller, ssl, &call]() mutable {
          asio::post(caller, [resume = std::move(resume), done = step(ssl, call)]() mutable {
            resume(std::move(done));
          });
        });
      },
      asio::use_awaitable);
}

// Drives an SSL call to completion: its return (> 0), or 0 after the peer's
// close_notify, waiting for the readiness it asks for in between. With
// `crypto`, the call itself runs there (see handshake()).
template <class Call>
asio::awaitable<int> drive(Socket& sock, SSL* ssl, Call call, asio::thread_pool* crypto = nullptr) {
  while (true) {
    // Not a ?: with co_await in it: GCC 12 destroys the result twice.
    Step s;
    if (crypto)
      s = co_await step_on(*crypto, ssl, call);
    else
      s = step(ssl, call);
    if (s.ret > 0) co_return s.ret;
    if (s.err == SSL_ERROR_WANT_READ)
      co_await sock.async_wait(Socket::wait_read, asio::use_awaitable);
    else if (s.err == SSL_ERROR_WANT_WRITE)
      co_await sock.async_wait(Socket::wait_write, asio::use_awaitable);
    else if (s.err == SSL_ERROR_ZERO_RETURN)
      co_return 0;
    else
      throw Error(s.why);
  }
}

}  // namespace

asio::awaitable<void> handshake(Socket& sock, SSL* ssl, asio::thread_pool* crypto) {
  sock.native_non_blocking(true);
  if (SSL_set_fd(ssl, sock.native_handle()) != 1)
    throw Error("SSL_set_fd: " + xmig::openssl_errors());
  int r = co_await drive(
      sock, ssl, [ssl] { return SSL_do_handshake(ssl); }, crypto);
  if (r == 0) throw Error("peer closed the connection during the handshake");
  // A resumed session skipped the verify callback: the peer rule, once more.
  if (std::string why = check_resumed_peer(ssl); !why.empty()) throw Error(why);
}

asio::awaitable<size_t> read_some(Socket& sock, SSL* ssl, void* buf, size_t n) {
  int r = co_await drive(sock, ssl, [&] { return SSL_read(ssl, buf, static_cast<int>(n)); });
  co_return static_cast<size_t>(r);
}

asio::awaitable<void> write_all(Socket& sock, SSL* ssl, const void* buf, size_t n) {
  auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    int r = co_await drive(sock, ssl, [&] { return SSL_write(ssl, p, static_cast<int>(n)); });
    if (r == 0) throw Error("peer closed the connection");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

void send_close_notify(SSL* ssl) {
  ERR_clear_error();
  SSL_shutdown(ssl);
  ERR_clear_error();
}

}  // namespace xmig::tls
