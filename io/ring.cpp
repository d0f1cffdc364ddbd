#include "io/ring.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace xmig::io {

Ring::Ring(unsigned entries) {
  const unsigned flag_sets[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
      0,
  };
  int ret = -EINVAL;
  for (unsigned flags : flag_sets) {
    ret = io_uring_queue_init(entries, &ring_, flags);
    if (ret != -EINVAL) break;
  }
  if (ret < 0) throw std::runtime_error(std::string("io_uring_queue_init: ") + strerror(-ret));
}

Ring::~Ring() {
  io_uring_queue_exit(&ring_);
}

io_uring_sqe* Ring::get(uint64_t user_data) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  io_uring_sqe_set_data64(sqe, user_data);
  return sqe;
}

int Ring::submit_and_wait() {
  return io_uring_submit_and_wait(&ring_, 1);
}

}  // namespace xmig::io
