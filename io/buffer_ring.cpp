#include "io/buffer_ring.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace xmig::io {

namespace {

// Anonymous, page-aligned memory (the kernel requires page alignment for the
// ring of entries); pages are only backed once touched.
void* map(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw std::runtime_error("receive buffers: mmap of " + std::to_string(bytes) +
                             " bytes: " + strerror(errno));
  return p;
}

}  // namespace

BufferRing::BufferRing(io_uring& ring, uint16_t group, unsigned count, size_t size)
    : ring_(ring), group_(group), count_(count), size_(size) {
  if (count == 0 || (count & (count - 1)) != 0 || count > 32768)
    throw std::invalid_argument("receive buffers: count must be a power of two up to 32768");
  entries_ = static_cast<io_uring_buf_ring*>(map(count * sizeof(io_uring_buf)));
  try {
    memory_ = static_cast<uint8_t*>(map(count * size));
  } catch (...) {
    ::munmap(entries_, count * sizeof(io_uring_buf));
    throw;
  }
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(entries_);
  reg.ring_entries = count;
  reg.bgid = group;
  int ret = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (ret < 0) {
    ::munmap(memory_, count * size);
    ::munmap(entries_, count * sizeof(io_uring_buf));
    throw std::runtime_error(std::string("io_uring_register_buf_ring: ") + strerror(-ret) +
                             " (provided buffer rings need Linux 5.19 or later)");
  }
  io_uring_buf_ring_init(entries_);
  for (unsigned id = 0; id < count; ++id)
    io_uring_buf_ring_add(entries_, data(static_cast<uint16_t>(id)), static_cast<unsigned>(size),
                          static_cast<unsigned short>(id), io_uring_buf_ring_mask(count),
                          static_cast<int>(id));
  io_uring_buf_ring_advance(entries_, static_cast<int>(count));
}

BufferRing::~BufferRing() {
  io_uring_unregister_buf_ring(&ring_, group_);
  ::munmap(memory_, count_ * size_);
  ::munmap(entries_, count_ * sizeof(io_uring_buf));
}

void BufferRing::select(io_uring_sqe* sqe) const {
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = group_;
}

LentBuffer BufferRing::take(int res, uint32_t cqe_flags) {
  if (!(cqe_flags & IORING_CQE_F_BUFFER)) return {};
  auto id = static_cast<uint16_t>(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
  return LentBuffer(*this, id, res > 0 ? static_cast<size_t>(res) : 0);
}

void BufferRing::recycle(uint16_t id) {
  io_uring_buf_ring_add(entries_, data(id), static_cast<unsigned>(size_), id,
                        io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(entries_, 1);
  recycled_ = true;
}

}  // namespace xmig::io
