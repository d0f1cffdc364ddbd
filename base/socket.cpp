#include "base/socket.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

namespace xmig {

namespace {

bool set_int(int fd, int level, int option, int value) {
  return ::setsockopt(fd, level, option, &value, sizeof value) == 0;
}

// The kernel counts keepalive times in whole seconds, at least one.
int whole_seconds(std::chrono::milliseconds ms) {
  return static_cast<int>(std::max<int64_t>(1, (ms.count() + 999) / 1000));
}

}  // namespace

void reset_on_close(int fd) {
  linger lg{.l_onoff = 1, .l_linger = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

bool set_liveness(int fd, const Liveness& l) {
  return set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1) &&
         set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, whole_seconds(l.idle)) &&
         set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, whole_seconds(l.interval)) &&
         set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, static_cast<int>(l.count)) &&
         set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(l.user_timeout.count()));
}

}  // namespace xmig
