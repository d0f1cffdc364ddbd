// BufferRing: the receive buffers of one worker, lent to the kernel as an
// io_uring provided-buffer ring (Linux 5.19+).
//
// A receive submitted with buffer selection takes a buffer only when data
// arrives, so an idle connection holds no receive memory at all: a worker's
// memory for receives is count x size, whatever the number of connections.
// The pump that got a buffer (the completion's IORING_CQE_F_BUFFER flag and
// id) holds it as a LentBuffer, which gives it back when reset or destroyed.
//
// When every buffer is lent out, a receive completes with -ENOBUFS; the pump
// then waits on its worker (Worker::wait_for_buffer) and retries once a
// buffer has come back.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace xmig::io {

class LentBuffer;

class BufferRing {
 public:
  // Registers `count` buffers (a power of two) of `size` bytes as group
  // `group` of `ring`, on the ring's thread. Throws with the reason on failure.
  BufferRing(io_uring& ring, uint16_t group, unsigned count, size_t size);
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  // Prepares `sqe` (a recv) to take its buffer from this ring.
  void select(io_uring_sqe* sqe) const;

  // The buffer a receive's completion carries (empty when its flags name
  // none), holding `res` bytes when res > 0.
  LentBuffer take(int res, uint32_t cqe_flags);

  size_t size() const { return size_; }

  // True when a buffer came back since the last call (then resets).
  bool take_recycled() {
    bool r = recycled_;
    recycled_ = false;
    return r;
  }

 private:
  friend class LentBuffer;
  uint8_t* data(uint16_t id) const { return memory_ + size_t{id} * size_; }
  void recycle(uint16_t id);

  io_uring& ring_;
  uint16_t group_;
  unsigned count_;
  size_t size_;
  io_uring_buf_ring* entries_ = nullptr;  // shared with the kernel (mmap)
  uint8_t* memory_ = nullptr;             // count_ x size_ bytes (mmap)
  bool recycled_ = false;
};

// One lent buffer and the bytes received into it. Movable, not copyable.
class LentBuffer {
 public:
  LentBuffer() = default;
  LentBuffer(BufferRing& ring, uint16_t id, size_t bytes) : ring_(&ring), id_(id), bytes_(bytes) {}
  ~LentBuffer() { reset(); }
  LentBuffer(LentBuffer&& o) noexcept
      : ring_(std::exchange(o.ring_, nullptr)), id_(o.id_), bytes_(o.bytes_) {}
  LentBuffer& operator=(LentBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ring_ = std::exchange(o.ring_, nullptr);
      id_ = o.id_;
      bytes_ = o.bytes_;
    }
    return *this;
  }
  LentBuffer(const LentBuffer&) = delete;
  LentBuffer& operator=(const LentBuffer&) = delete;

  explicit operator bool() const { return ring_ != nullptr; }
  const uint8_t* data() const { return ring_->data(id_); }
  size_t bytes() const { return bytes_; }

  // Gives the buffer back to the kernel (nothing when empty).
  void reset() {
    if (ring_) std::exchange(ring_, nullptr)->recycle(id_);
  }

 private:
  BufferRing* ring_ = nullptr;
  uint16_t id_ = 0;
  size_t bytes_ = 0;
};

}  // namespace xmig::io
