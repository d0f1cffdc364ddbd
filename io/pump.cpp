#include "io/pump.hpp"

#include <openssl/err.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "io/asio.hpp"

namespace xmig::io {

namespace {

// Large buffers mean few syscalls per MiB; 256 KiB is 16 full TLS records.
constexpr size_t kBufferSize = 256 * 1024;
// Rounds a direction may run before yielding to other pumps on the worker.
constexpr int kRoundsPerTurn = 8;

using Descriptor = asio::posix::stream_descriptor;
using error_code = boost::system::error_code;

std::string ssl_failure(SSL* ssl, int ret, const char* what) {
  int saved = errno;
  int err = SSL_get_error(ssl, ret);
  std::string queue = tls::openssl_errors();
  std::string why = !queue.empty()                      ? queue
                    : err == SSL_ERROR_SYSCALL && saved ? strerror(saved)
                    : err == SSL_ERROR_SYSCALL          ? "connection closed without close_notify"
                                                        : "SSL error " + std::to_string(err);
  return std::string(what) + ": " + why;
}

// Aborting: a zero linger makes close() send a reset, so the far end learns
// at once instead of waiting for data that will not come.
void set_reset_on_close(int fd) {
  struct linger lg {
    1, 0
  };
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

// Userspace data path: OpenSSL encrypts and decrypts on the worker thread.
// Each direction is a loop of "read what is there, write all of it", that
// waits for readiness only when a call says it would block.
class UserspacePump : public std::enable_shared_from_this<UserspacePump> {
 public:
  using Finished = std::function<void(UserspacePump*, const PumpStats&)>;

  UserspacePump(asio::io_context& io, Fd plain, Fd tls_fd, tls::SslPtr ssl, Finished finished)
      : plain_(io, plain.release()),
        tls_(io, tls_fd.release()),
        ssl_(std::move(ssl)),
        finished_(std::move(finished)),
        up_(kBufferSize),
        down_(kBufferSize),
        started_(std::chrono::steady_clock::now()) {
    stats_.mode = "userspace";
  }

  void start() {
    plain_.native_non_blocking(true);
    tls_.native_non_blocking(true);
    // The control plane has read what it needed record by record; from here
    // on OpenSSL may read ahead, which saves a syscall per record.
    SSL_set_read_ahead(ssl_.get(), 1);
    start_read_plain();
    start_read_tls();
  }

  void abort(const std::string& reason) { finish(reason); }

 private:
  // ---- plain -> TLS ----------------------------------------------------------

  // Reads from the plain socket and encrypts what it got.
  void start_read_plain() {
    for (int round = 0; round < kRoundsPerTurn; ++round) {
      if (done_) return;
      ssize_t n = ::read(plain_.native_handle(), up_.data(), up_.size());
      if (n > 0) {
        up_len_ = static_cast<size_t>(n);
        up_off_ = 0;
        if (!write_tls()) return;  // waiting for the TLS socket, or failed
        continue;
      }
      if (n == 0) return end_up();
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        plain_.async_wait(Descriptor::wait_read, [self = shared_from_this()](error_code ec) {
          self->on_plain_readable(ec);
        });
        return;
      }
      return finish(std::string("local socket read: ") + strerror(errno));
    }
    asio::post(plain_.get_executor(), [self = shared_from_this()] { self->start_read_plain(); });
  }

  void on_plain_readable(error_code ec) {
    if (ec || done_) return;
    start_read_plain();
  }

  // Encrypts up_[up_off_, up_len_). True when all of it went out.
  bool write_tls() {
    while (up_off_ < up_len_) {
      ERR_clear_error();
      errno = 0;
      int r = SSL_write(ssl_.get(), up_.data() + up_off_, static_cast<int>(up_len_ - up_off_));
      if (r > 0) {
        up_off_ += static_cast<size_t>(r);
        stats_.plain_to_tls += static_cast<uint64_t>(r);
        continue;
      }
      int err = SSL_get_error(ssl_.get(), r);
      if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
        auto want = err == SSL_ERROR_WANT_WRITE ? Descriptor::wait_write : Descriptor::wait_read;
        tls_.async_wait(want,
                        [self = shared_from_this()](error_code ec) { self->on_tls_writable(ec); });
        return false;
      }
      finish(ssl_failure(ssl_.get(), r, "TLS write"));
      return false;
    }
    return true;
  }

  void on_tls_writable(error_code ec) {
    if (ec || done_) return;
    if (write_tls()) start_read_plain();
  }

  // Plain EOF: tell the peer with close_notify, then a TCP FIN.
  void end_up() {
    ERR_clear_error();
    int r = SSL_shutdown(ssl_.get());
    if (r < 0) {
      int err = SSL_get_error(ssl_.get(), r);
      if (err == SSL_ERROR_WANT_WRITE) {
        tls_.async_wait(Descriptor::wait_write, [self = shared_from_this()](error_code ec) {
          if (!ec && !self->done_) self->end_up();
        });
        return;
      }
      return finish(ssl_failure(ssl_.get(), r, "TLS close_notify"));
    }
    ::shutdown(tls_.native_handle(), SHUT_WR);
    up_done_ = true;
    if (down_done_) finish({});
  }

  // ---- TLS -> plain ----------------------------------------------------------

  // Decrypts as many records as are there (up to a buffer), then delivers them.
  void start_read_tls() {
    for (int round = 0; round < kRoundsPerTurn; ++round) {
      if (done_) return;
      down_len_ = down_off_ = 0;
      down_want_ = 0;
      while (down_len_ < down_.size()) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_read(ssl_.get(), down_.data() + down_len_,
                         static_cast<int>(down_.size() - down_len_));
        if (r > 0) {
          down_len_ += static_cast<size_t>(r);
          continue;
        }
        int err = SSL_get_error(ssl_.get(), r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          down_want_ = err;
          break;
        }
        if (err == SSL_ERROR_ZERO_RETURN) {
          down_eof_ = true;
          break;
        }
        return finish(ssl_failure(ssl_.get(), r, "TLS read"));
      }
      if (!write_plain()) return;  // waiting for the plain socket, or failed
      if (down_eof_) return end_down();
      if (down_want_) return wait_tls_readable();
    }
    asio::post(tls_.get_executor(), [self = shared_from_this()] { self->start_read_tls(); });
  }

  void wait_tls_readable() {
    auto want = down_want_ == SSL_ERROR_WANT_WRITE ? Descriptor::wait_write : Descriptor::wait_read;
    tls_.async_wait(want, [self = shared_from_this()](error_code ec) {
      if (!ec && !self->done_) self->start_read_tls();
    });
  }

  // Delivers down_[down_off_, down_len_). True when all of it went out.
  bool write_plain() {
    while (down_off_ < down_len_) {
      ssize_t n = ::send(plain_.native_handle(), down_.data() + down_off_, down_len_ - down_off_,
                         MSG_NOSIGNAL);
      if (n > 0) {
        down_off_ += static_cast<size_t>(n);
        stats_.tls_to_plain += static_cast<uint64_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        plain_.async_wait(Descriptor::wait_write, [self = shared_from_this()](error_code ec) {
          self->on_plain_writable(ec);
        });
        return false;
      }
      finish(std::string("local socket write: ") + strerror(errno));
      return false;
    }
    return true;
  }

  void on_plain_writable(error_code ec) {
    if (ec || done_) return;
    if (!write_plain()) return;
    if (down_eof_) return end_down();
    if (down_want_) return wait_tls_readable();
    start_read_tls();
  }

  // close_notify: the peer sends no more; pass the EOF on to the local side.
  void end_down() {
    ::shutdown(plain_.native_handle(), SHUT_WR);
    down_done_ = true;
    if (up_done_) finish({});
  }

  // ---- the one place a pump ends ----------------------------------------------

  void finish(const std::string& error) {
    if (done_) return;
    done_ = true;
    stats_.error = error;
    stats_.duration = std::chrono::steady_clock::now() - started_;
    if (!error.empty()) {
      set_reset_on_close(plain_.native_handle());
      set_reset_on_close(tls_.native_handle());
    }
    error_code ignored;
    plain_.close(ignored);  // cancels pending waits; their handlers see done_
    tls_.close(ignored);
    finished_(this, stats_);
  }

  Descriptor plain_;
  Descriptor tls_;
  tls::SslPtr ssl_;
  Finished finished_;
  std::vector<uint8_t> up_, down_;
  size_t up_len_ = 0, up_off_ = 0;
  size_t down_len_ = 0, down_off_ = 0;
  int down_want_ = 0;
  bool down_eof_ = false;
  bool up_done_ = false, down_done_ = false, done_ = false;
  PumpStats stats_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace

struct Workers::Worker {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  // Touched only on this worker's thread.
  std::unordered_set<std::shared_ptr<UserspacePump>> pumps;
  std::atomic<size_t> active{0};
  std::thread thread;
};

Workers::Workers(unsigned count) {
  if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < count; ++i) {
    auto w = std::make_unique<Worker>();
    w->thread = std::thread([io = &w->io] { io->run(); });
    workers_.push_back(std::move(w));
  }
}

Workers::~Workers() {
  abort_all("shutting down");
  for (auto& w : workers_) w->guard.reset();
  for (auto& w : workers_) w->thread.join();
}

void Workers::start_pump(Fd plain, Fd tls_fd, tls::SslPtr ssl, PumpDone done) {
  Worker* best = workers_.front().get();
  for (auto& w : workers_)
    if (w->active < best->active) best = w.get();
  ++best->active;
  asio::post(best->io, [w = best, plain = std::move(plain), tls_fd = std::move(tls_fd),
                        ssl = std::move(ssl), done = std::move(done)]() mutable {
    auto finished = [w, done](UserspacePump* p, const PumpStats& stats) {
      // Erase after the current handler returns: the pump is still on the stack.
      asio::post(w->io, [w, p] {
        for (auto it = w->pumps.begin(); it != w->pumps.end(); ++it)
          if (it->get() == p) {
            w->pumps.erase(it);
            break;
          }
      });
      --w->active;
      done(stats);
    };
    auto pump = std::make_shared<UserspacePump>(w->io, std::move(plain), std::move(tls_fd),
                                                std::move(ssl), std::move(finished));
    w->pumps.insert(pump);
    pump->start();
  });
}

void Workers::abort_all(const std::string& reason) {
  for (auto& w : workers_)
    asio::post(w->io, [w = w.get(), reason] {
      auto pumps = w->pumps;  // abort() erases from the set
      for (auto& p : pumps) p->abort(reason);
    });
}

size_t Workers::active() const {
  size_t n = 0;
  for (auto& w : workers_) n += w->active;
  return n;
}

}  // namespace xmig::io
