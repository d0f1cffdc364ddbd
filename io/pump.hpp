// io/: the data path. A Pump moves one connection's bytes both ways between a
// plain socket (the local side: QEMU, libvirt, NBD or a route's client) and an
// authenticated TLS session, until both directions have ended.
//
// Stream semantics the migration depends on:
// - bytes arrive in order, none lost or duplicated;
// - EOF is propagated each way on its own: plain EOF -> close_notify (+ TCP
//   FIN); close_notify -> shutdown(SHUT_WR) of the plain socket;
// - any failure (reset, TLS error) aborts both sides with a reset, at once,
//   so neither end waits for data that will never come;
// - except one that is no failure of the transport: the local application
//   closed with delivered bytes unread (on AF_UNIX a reset on the next read,
//   or a broken pipe) while nothing more was to come from the far side. QEMU
//   7.2 does this at the end of a multifd migration: its source may send one
//   empty packet after a channel's last SYNC, and the destination quits
//   without reading it. The pump waits for the far side's close_notify,
//   answers with its own, counts the
//   connection as local_closed_early, and resets only if more data arrives.
//
// Pumps run on Workers: a fixed set of threads, each owning one io_uring ring
// (io/ring.hpp); a pump stays on the worker it was given, and every socket
// operation of a worker goes through its ring in batched submissions. Asio is
// the control plane only; no thread per connection.
//
// Data paths ("mode"), decided once per connection at the hand-off:
// - "ktls-splice": the kernel holds both TLS keys; bytes move plain socket ->
//   pipe -> TLS socket and back with io_uring splice (io/splice_pump.cpp).
// - "userspace": records are sealed and opened on the worker (TLS 1.3 by
//   tls::Records, straight between the pump's buffers; otherwise OpenSSL over
//   memory BIOs), and the ring moves ciphertext with recv/send
//   (io/userspace_pump.cpp).
// Falling back from one to the other happens only before the hand-off.
//
// io/ never sees configuration, peers or certificates: it is handed sockets
// that are already authorized, and a policy.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.hpp"
#include "base/openssl.hpp"
#include "tls/context.hpp"
#include "tls/ktls.hpp"

namespace xmig::io {

struct PumpStats {
  std::string mode;           // data path used: "userspace" or "ktls-splice"
  uint64_t plain_to_tls = 0;  // bytes read from the plain socket and sent encrypted
  uint64_t tls_to_plain = 0;  // bytes decrypted and delivered to the plain socket
  std::chrono::steady_clock::duration duration{};
  std::string error;  // empty when both directions ended cleanly
  // The local application (QEMU, NBD...) closed its socket with bytes the
  // tunnel had delivered still unread, after the far side had sent all it
  // would: not a transport failure. The pump then closed TLS cleanly (see
  // userspace_pump.cpp). `error` stays empty.
  bool local_closed_early = false;
  uint64_t key_updates = 0;  // KeyUpdates sent because of the AEAD key limit
};

// Bytes a pump has moved so far, readable from any thread while it runs, so
// that the status endpoint can show a long migration's progress before its
// connections end. The pump adds to it where it adds to its PumpStats (one
// relaxed atomic add per completion, no system call); at the end the two
// agree.
struct LiveBytes {
  std::atomic<uint64_t> plain_to_tls{0}, tls_to_plain{0};
};

// How a pump treats one connection.
struct PumpOptions {
  // Off: user space. Auto: kTLS when the kernel took both keys, else user
  // space. Required: a connection that could not be offloaded is refused.
  tls::KtlsPolicy ktls = tls::KtlsPolicy::Auto;
  // Records one key may protect (RFC 8446 5.5); see tls/ktls.hpp for the
  // policy. Ignored for ciphers without a practical limit.
  uint64_t key_limit_records = tls::kDefaultKeyLimitRecords;
  // Records the control plane already read under the application traffic key
  // before the hand-off: the peer's session tickets and the control records
  // SSL_read consumed (the kernel's RX rec_seq must start there).
  uint64_t records_read = 0;
  // Records OpenSSL wrote under this end's application traffic key before
  // the hand-off: its session tickets and the control records (user space
  // seals with its own record layer from there: tls/records.hpp).
  uint64_t records_written = 0;
  // Where the pump counts its bytes as they move; null = not counted live.
  std::shared_ptr<LiveBytes> live = nullptr;
  // The local application only receives (QEMU or an NBD server as the
  // destination), so it may close with delivered bytes unread once the far
  // side is done: then the pump ends cleanly as local_closed_early (see
  // above) instead of resetting. Only on a UNIX socket, where such a close
  // is what ECONNRESET means; on TCP a reset stays a failure.
  bool local_may_close_early = false;
};

// Called once, on the pump's worker thread, when the pump has closed both sockets.
using PumpDone = std::function<void(const PumpStats&)>;

class Workers {
 public:
  // Starts `count` worker threads (0 = one per core).
  explicit Workers(unsigned count);
  // Aborts what is still running and joins the threads.
  ~Workers();
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  // Hands over an established connection pair: `plain` is the local socket,
  // `ssl` an authenticated session on socket `tls_fd`. Ownership of all three
  // moves to the least-loaded worker, which decides the mode (see above).
  void start_pump(Fd plain, Fd tls_fd, SslPtr ssl, PumpDone done, PumpOptions options = {});

  // Aborts every running pump (used when a drain deadline passes).
  void abort_all(const std::string& reason);

  // Pumps started and not yet done.
  size_t active() const;
  unsigned size() const { return static_cast<unsigned>(workers_.size()); }

  struct Worker;

 private:
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace xmig::io
