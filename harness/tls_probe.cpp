#include "harness/tls_probe.hpp"

#include <openssl/err.h>
#include <signal.h>

#include <stdexcept>

#include "harness/files.hpp"

namespace xmig::harness {

namespace {

std::string pem_text(const std::string& text, const std::string& file) {
  if (!text.empty() || file.empty()) return text;
  return read_file(file);
}

verify::PeerAddress loopback(uint16_t port) {
  return verify::resolve("127.0.0.1", port);
}

}  // namespace

TlsProbe::TlsProbe(TlsProbeOptions opts) : opts_(std::move(opts)) {
  // It writes to servers that may have reset the connection (a refusal):
  // that is a write error to report, not a signal that ends the test binary.
  ::signal(SIGPIPE, SIG_IGN);
  spec_ = {.cert_pem = pem_text(opts_.cert_pem, opts_.cert_file),
           .key_pem = pem_text(opts_.key_pem, opts_.key_file),
           .alpn = opts_.alpn,
           .min_version = opts_.min_version,
           .max_version = opts_.max_version,
           .ca_pem = pem_text(opts_.ca_pem, opts_.ca_file),
           .server_name = opts_.server_name};
  verify::probe_session(spec_);  // unusable options throw here, not at connect()
}

TlsProbe::~TlsProbe() {
  close();
}

TlsProbeResult TlsProbe::connect(uint16_t port) {
  close();
  session_ = verify::open_session(loopback(port), verify::probe_session(spec_), opts_.timeout,
                                  opts_.request);
  return {.handshake_ok = session_.handshake_ok,
          .verdict = session_.verdict,
          .error = session_.error,
          .local_port = session_.local_port,
          .version = session_.version,
          .alpn = session_.alpn};
}

std::string TlsProbe::write(std::string_view bytes) {
  if (!session_.ssl) return "not connected";
  session_.error.clear();
  return session_.write_all(bytes) ? "" : session_.error;
}

std::string TlsProbe::read(size_t n) {
  std::string out;
  if (!session_.ssl) return out;
  char buf[16384];
  while (out.size() < n) {
    size_t got = session_.read_some(buf, std::min(sizeof buf, n - out.size()));
    if (got == 0) break;
    out.append(buf, got);
  }
  return out;
}

void TlsProbe::close() {
  if (session_.ssl) {
    ERR_clear_error();
    SSL_shutdown(session_.ssl.get());  // close_notify, without waiting for the peer's
    ERR_clear_error();
  }
  session_ = {};
}

PlaintextResult send_plaintext(uint16_t port, std::string_view bytes,
                               std::chrono::milliseconds timeout) {
  return verify::send_plaintext(loopback(port), bytes, timeout);
}

}  // namespace xmig::harness
