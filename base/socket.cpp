#include "base/socket.hpp"

#include <sys/socket.h>

namespace xmig {

void reset_on_close(int fd) {
  struct linger lg {
    1, 0
  };
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

}  // namespace xmig
