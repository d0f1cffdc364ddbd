// Internal to io/: a worker thread with its ring, and the base every pump
// shares (operation bookkeeping, the one place a pump ends).
//
// Completions find their pump through the SQE's user_data: the pump's address
// with the operation's number in the low kOpBits bits, which the pump's
// alignment keeps free (static_assert below). A pump is destroyed only once
// every operation it submitted has completed, so no completion ever points at
// freed memory; ending early cancels what is in flight first.
#pragma once

#include <openssl/ssl3.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/fd.hpp"
#include "io/pump.hpp"
#include "io/ring.hpp"

namespace xmig::io {

// The most plaintext one TLS record carries (2^14 bytes): the pumps size their
// buffers and count records against the AEAD key limit by it.
inline constexpr size_t kRecord = SSL3_RT_MAX_PLAIN_LENGTH;

class Pump;

struct Workers::Worker {
  Worker();
  ~Worker();

  // Runs `task` on the worker thread, soon (any thread).
  void post(std::function<void()> task);

  // Worker thread only.
  void adopt(std::unique_ptr<Pump> pump);
  Ring& ring() { return *ring_; }

  std::atomic<size_t> active{0};

 private:
  void run();
  void arm_wake();
  void run_tasks();
  void reap();

  std::unique_ptr<Ring> ring_;  // created on the worker thread
  Fd wake_;                     // eventfd: post() writes, the ring reads
  uint64_t wake_value_ = 0;
  std::mutex mutex_;
  std::vector<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::unordered_map<Pump*, std::unique_ptr<Pump>> pumps_;
  std::thread thread_;

  friend class Workers;
};

class Pump {
 public:
  Pump(Workers::Worker& worker, Fd plain, Fd tls_fd, SslPtr ssl, PumpDone done, const char* mode,
       std::shared_ptr<LiveBytes> live);
  virtual ~Pump() = default;
  Pump(const Pump&) = delete;
  Pump& operator=(const Pump&) = delete;

  virtual void start() = 0;

  // A completion of operation `op` (worker thread).
  void complete(unsigned op, int res);

  // Ends the pump with `reason`: both sockets are reset (any state).
  void abort(const std::string& reason) { fail(reason); }

  // Set before start() when PumpOptions::local_may_close_early applies.
  void allow_local_close_early() { local_may_close_early_ = true; }

  // True once the pump has ended and nothing of it is in flight.
  bool finished() const { return finished_; }

  // user_data = the pump's address | the operation's number (up to 8 of them).
  static constexpr unsigned kOpBits = 3;
  static constexpr uint64_t kOpMask = (uint64_t{1} << kOpBits) - 1;

 protected:
  virtual void on_complete(unsigned op, int res) = 0;
  // A completion with res > 0 that came back after the pump had ended (its
  // operation was done before the cancellation reached it): the bytes it
  // moved into a socket still count, so that the close line says exactly
  // what the far side or the application got.
  virtual void on_late_complete(unsigned /*op*/, int /*res*/) {}
  // Extra files whose operations fail() must cancel besides the two sockets
  // (io_uring matches a cancellation by an operation's own file: for a
  // splice, its output). Up to four.
  virtual std::vector<int> other_files() const { return {}; }

  // An SQE for operation `op`, counted as in flight.
  io_uring_sqe* sqe(unsigned op);

  // Whether the local application may close early (PumpOptions), on a UNIX
  // socket only.
  bool local_may_close_early() const { return local_may_close_early_; }

  // The two ways a pump ends; the second and later calls do nothing.
  void succeed();
  void fail(const std::string& reason);
  bool ending() const { return ending_; }

  int plain() const { return plain_.get(); }
  int tls() const { return tls_fd_.get(); }

  // Bytes moved, counted once for the close line (stats_) and once for
  // readers while the pump runs (live_): every pump counts through these.
  void count_plain_to_tls(uint64_t n) {
    stats_.plain_to_tls += n;
    if (live_) live_->plain_to_tls.fetch_add(n, std::memory_order_relaxed);
  }
  void count_tls_to_plain(uint64_t n) {
    stats_.tls_to_plain += n;
    if (live_) live_->tls_to_plain.fetch_add(n, std::memory_order_relaxed);
  }

  Workers::Worker& worker_;
  SslPtr ssl_;
  PumpStats stats_;

 private:
  void close_if_idle();

  Fd plain_, tls_fd_;
  PumpDone done_;
  std::shared_ptr<LiveBytes> live_;
  std::chrono::steady_clock::time_point started_;
  unsigned inflight_ = 0;
  bool ending_ = false, finished_ = false;
  bool local_may_close_early_ = false;
};

// A pump's address has its low kOpBits bits clear, so they can carry the operation.
static_assert(alignof(Pump) >= (1u << Pump::kOpBits),
              "user_data = pump address | operation: the low kOpBits bits must be free");

// The data paths (io/userspace_pump.cpp, io/splice_pump.cpp).
std::unique_ptr<Pump> make_userspace_pump(Workers::Worker& worker, Fd plain, Fd tls_fd, SslPtr ssl,
                                          PumpDone done, const PumpOptions& options);
std::unique_ptr<Pump> make_splice_pump(Workers::Worker& worker, Fd plain, Fd tls_fd, SslPtr ssl,
                                       PumpDone done, uint64_t key_limit_records,
                                       std::shared_ptr<LiveBytes> live);

}  // namespace xmig::io
