#include "io/pump.hpp"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <future>

#include "base/socket.hpp"
#include "io/worker.hpp"

namespace xmig::io {

namespace {

constexpr unsigned kRingEntries = 256;
constexpr uint64_t kWakeTag = 1;    // user_data of the worker's eventfd read
constexpr uint64_t kIgnoreTag = 0;  // user_data of cancellations

}  // namespace

// ---- Pump ---------------------------------------------------------------------

Pump::Pump(Workers::Worker& worker, Fd plain, Fd tls_fd, SslPtr ssl, PumpDone done,
           const char* mode, std::shared_ptr<LiveBytes> live)
    : worker_(worker),
      ssl_(std::move(ssl)),
      plain_(std::move(plain)),
      tls_fd_(std::move(tls_fd)),
      done_(std::move(done)),
      live_(std::move(live)),
      started_(std::chrono::steady_clock::now()) {
  stats_.mode = mode;
}

io_uring_sqe* Pump::sqe(unsigned op) {
  ++inflight_;
  return worker_.ring().get(reinterpret_cast<uint64_t>(this) | op);  // each pump: op <= kOpMask
}

void Pump::complete(unsigned op, int res) {
  --inflight_;
  if (!ending_) return on_complete(op, res);
  if (res > 0) on_late_complete(op, res);
  close_if_idle();
}

void Pump::succeed() {
  if (ending_) return;
  ending_ = true;
  close_if_idle();
}

void Pump::fail(const std::string& reason) {
  if (ending_) return;
  ending_ = true;
  stats_.error = reason;
  reset_on_close(plain());
  reset_on_close(tls());
  // Nothing more is read: a splice blocked on either socket returns at once.
  // SHUT_RD sends nothing on TCP, so the reset on close is still the first
  // thing the far end learns.
  ::shutdown(plain(), SHUT_RD);
  ::shutdown(tls(), SHUT_RD);
  // Cancel what is in flight on either socket; their completions then come
  // back (with -ECANCELED or whatever they had done) and close_if_idle() runs.
  std::vector<int> files = other_files();
  files.push_back(plain());
  files.push_back(tls());
  for (int fd : files) {
    io_uring_sqe* s = worker_.ring().get(kIgnoreTag);
    io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL);
  }
  close_if_idle();
}

void Pump::close_if_idle() {
  if (inflight_ > 0 || finished_) return;
  finished_ = true;
  stats_.duration = std::chrono::steady_clock::now() - started_;
  plain_.reset();
  tls_fd_.reset();
  ssl_.reset();
  --worker_.active;
  done_(stats_);
}

// ---- Worker -------------------------------------------------------------------

Workers::Worker::Worker() : wake_(::eventfd(0, EFD_CLOEXEC)) {
  if (!wake_) throw std::runtime_error(std::string("eventfd: ") + strerror(errno));
  // The ring must be created by the thread that submits to it.
  std::promise<std::string> created;
  auto result = created.get_future();
  thread_ = std::thread([this, &created] {
    try {
      ring_ = std::make_unique<Ring>(kRingEntries);
      created.set_value({});
    } catch (const std::exception& e) {
      created.set_value(e.what());
      return;
    }
    run();
  });
  std::string error = result.get();
  if (!error.empty()) {
    thread_.join();
    throw std::runtime_error("data-path worker: " + error);
  }
}

Workers::Worker::~Worker() {
  post([this] { stopping_ = true; });
  thread_.join();
}

void Workers::Worker::post(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void Workers::Worker::adopt(std::unique_ptr<Pump> pump) {
  Pump* p = pump.get();
  pumps_.emplace(p, std::move(pump));
  p->start();
}

void Workers::Worker::arm_wake() {
  io_uring_sqe* s = ring_->get(kWakeTag);
  io_uring_prep_read(s, wake_.get(), &wake_value_, sizeof wake_value_, 0);
}

void Workers::Worker::run_tasks() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(mutex_);
    tasks.swap(tasks_);
  }
  for (auto& t : tasks) t();
}

void Workers::Worker::reap() {
  for (auto it = pumps_.begin(); it != pumps_.end();)
    it = it->second->finished() ? pumps_.erase(it) : std::next(it);
}

// One loop per worker: submit everything the last round queued and wait for
// at least one completion (one io_uring_enter), then hand every completion to
// its pump. Pumps queue their next operations while handling completions, so
// a busy worker makes one system call per round, not one per operation.
void Workers::Worker::run() {
  arm_wake();
  while (!stopping_ || !pumps_.empty()) {
    int ret = ring_->submit_and_wait();
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
      spdlog::error("data-path worker: io_uring_submit_and_wait: {}", strerror(-ret));
    io_uring* ring = ring_->raw();
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    bool woken = false, reap_needed = false;
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      uint64_t data = cqe->user_data;
      if (data == kWakeTag) {
        woken = true;
        continue;
      }
      if (data == kIgnoreTag) continue;
      auto* pump = reinterpret_cast<Pump*>(data & ~Pump::kOpMask);
      pump->complete(static_cast<unsigned>(data & Pump::kOpMask), cqe->res);
      reap_needed |= pump->finished();
    }
    io_uring_cq_advance(ring, seen);
    if (woken) {
      run_tasks();
      if (!stopping_) arm_wake();
      reap_needed = true;
    }
    if (reap_needed) reap();
  }
}

// ---- Workers ------------------------------------------------------------------

Workers::Workers(unsigned count) {
  if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < count; ++i) workers_.push_back(std::make_unique<Worker>());
}

Workers::~Workers() {
  abort_all("shutting down");
  workers_.clear();  // each worker finishes its pumps, then stops
}

namespace {

bool is_unix_socket(int fd) {
  int domain = 0;
  socklen_t len = sizeof domain;
  return ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

// Decides the data path of one connection (on its worker), or refuses it.
std::unique_ptr<Pump> make_pump(Workers::Worker& w, Fd& plain, Fd& tls_fd, SslPtr& ssl,
                                PumpDone& done, const PumpOptions& options, std::string& refusal) {
  tls::Offload off = tls::complete_offload(ssl.get(), tls_fd.get(), options.records_read);
  if (off.tx && off.rx)
    return make_splice_pump(w, std::move(plain), std::move(tls_fd), std::move(ssl), std::move(done),
                            options.key_limit_records, options.live);
  if (options.ktls == tls::KtlsPolicy::Required) {
    refusal = "kTLS required but not in place (" + std::string(off.tx ? "TX only" : "no TX") +
              ": " + off.why + ")";
    return nullptr;
  }
  if (off.tx || off.rx) {
    // OpenSSL handed one direction to the kernel already: user space cannot
    // take the socket back, so there is no fallback for this connection.
    refusal = "kTLS is in place for " + std::string(off.tx ? "TX" : "RX") +
              " only and cannot be undone: " + off.why;
    return nullptr;
  }
  if (options.ktls != tls::KtlsPolicy::Off && !off.why.empty())
    spdlog::debug("kTLS not used: {}", off.why);
  return make_userspace_pump(w, std::move(plain), std::move(tls_fd), std::move(ssl),
                             std::move(done), options);
}

}  // namespace

void Workers::start_pump(Fd plain, Fd tls_fd, SslPtr ssl, PumpDone done, PumpOptions options) {
  Worker* best = workers_.front().get();
  for (auto& w : workers_)
    if (w->active < best->active) best = w.get();
  ++best->active;
  // std::function needs a copyable callable: carry the owners in a shared_ptr.
  struct Handoff {
    Fd plain, tls_fd;
    SslPtr ssl;
    PumpDone done;
  };
  auto h = std::make_shared<Handoff>(Handoff{.plain = std::move(plain),
                                             .tls_fd = std::move(tls_fd),
                                             .ssl = std::move(ssl),
                                             .done = std::move(done)});
  best->post([w = best, h, options] {
    std::string refusal;
    const bool local_is_unix = is_unix_socket(h->plain.get());
    auto pump = make_pump(*w, h->plain, h->tls_fd, h->ssl, h->done, options, refusal);
    if (!pump) {
      // Nothing flowed: reset both sockets so each end learns at once.
      reset_on_close(h->plain.get());
      reset_on_close(h->tls_fd.get());
      h->plain.reset();
      h->tls_fd.reset();
      --w->active;
      h->done(PumpStats{.mode = "refused", .error = refusal});
      return;
    }
    if (options.local_may_close_early && local_is_unix) pump->allow_local_close_early();
    w->adopt(std::move(pump));
  });
}

void Workers::abort_all(const std::string& reason) {
  for (auto& w : workers_)
    w->post([w = w.get(), reason] {
      for (auto& [p, pump] : w->pumps_) pump->abort(reason);
      w->reap();
    });
}

size_t Workers::active() const {
  size_t n = 0;
  for (auto& w : workers_) n += w->active;
  return n;
}

}  // namespace xmig::io
