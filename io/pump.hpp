// io/: the data path. A Pump moves one connection's bytes both ways between a
// plain socket (the local side: QEMU, libvirt, NBD or a route's client) and an
// authenticated TLS session, until both directions have ended.
//
// Stream semantics the migration depends on:
// - bytes arrive in order, none lost or duplicated;
// - EOF is propagated each way on its own: plain EOF -> close_notify (+ TCP
//   FIN); close_notify -> shutdown(SHUT_WR) of the plain socket;
// - any failure (reset, TLS error) aborts both sides with a reset, at once,
//   so neither end waits for data that will never come.
//
// Pumps run on Workers: a fixed set of threads, each with its own event loop;
// a pump stays on the worker it was given. io/ never sees configuration, peers
// or certificates: it is handed sockets that are already authorized.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "io/fd.hpp"
#include "tls/context.hpp"

namespace xmig::io {

struct PumpStats {
  std::string mode;           // data path used, e.g. "userspace"
  uint64_t plain_to_tls = 0;  // bytes read from the plain socket and sent encrypted
  uint64_t tls_to_plain = 0;  // bytes decrypted and delivered to the plain socket
  std::chrono::steady_clock::duration duration{};
  std::string error;  // empty when both directions ended cleanly
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
  // moves to the least-loaded worker.
  void start_pump(Fd plain, Fd tls_fd, tls::SslPtr ssl, PumpDone done);

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
