// Ring: sole owner of one io_uring instance, used by exactly one thread (the
// worker that created it). Submissions are batched: get() hands out SQEs and
// only submit_and_wait() enters the kernel, once for everything queued.
#pragma once

#include <liburing.h>

#include <cstdint>

namespace xmig::io {

class Ring {
 public:
  // Creates the ring on the calling thread: single issuer and deferred task
  // work where the kernel has them (6.1+), plain otherwise. Throws on failure.
  explicit Ring(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // A fresh SQE carrying user_data; submits what is queued when the SQ is full.
  io_uring_sqe* get(uint64_t user_data);

  // Submits everything queued and waits for at least one completion.
  int submit_and_wait();

  io_uring* raw() { return &ring_; }

 private:
  io_uring ring_{};
};

}  // namespace xmig::io
