#include "base/socket.hpp"

#include <sys/socket.h>

namespace xmig {

void reset_on_close(int fd) {
  linger lg{.l_onoff = 1, .l_linger = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

}  // namespace xmig
