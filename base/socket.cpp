#include "base/socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

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

std::string address_text(const sockaddr_storage& ss) {
  char ip[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    // Appended, not "[" + std::string(ip): GCC 12 at -O3 warns (-Wrestrict,
    // a false positive) on a literal plus a temporary string.
    std::string text = "[";
    text.append(ip).append("]:").append(std::to_string(ntohs(a->sin6_port)));
    return text;
  }
  return "";
}

void reset_on_close(int fd) {
  linger lg{.l_onoff = 1, .l_linger = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

void set_timeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{.tv_sec = static_cast<time_t>(timeout.count() / 1000),
             .tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void bind_source(int fd, const std::string& source) {
  if (source.empty()) return;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  if (::inet_pton(AF_INET, source.c_str(), &from.sin_addr) != 1 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0)
    throw std::runtime_error("bind " + source + ": " + std::strerror(errno));
}

uint16_t local_port_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

bool set_liveness(int fd, const Liveness& l) {
  return set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1) &&
         set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, whole_seconds(l.idle)) &&
         set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, whole_seconds(l.interval)) &&
         set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, static_cast<int>(l.count)) &&
         set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(l.user_timeout.count()));
}

}  // namespace xmig
