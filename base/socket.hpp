// base/socket: what every side of xmig does the same way with a socket.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace xmig {

// "ip:port" or "[ipv6]:port" of an IPv4/IPv6 address, else "".
std::string address_text(const sockaddr_storage& address);

// Aborting a connection: a zero linger (SO_LINGER on, 0 s) makes close() send
// a reset, so the far end learns at once instead of waiting for data that will
// not come. Best effort: a failure leaves an ordinary close.
void reset_on_close(int fd);

// SO_RCVTIMEO and SO_SNDTIMEO: every blocking read, write and connect() on the
// socket gives up after `timeout` (blocking probes and test clients).
void set_timeouts(int fd, std::chrono::milliseconds timeout);

// Binds a TCP socket, before connect(), to a numeric IPv4 source address
// ("" leaves the choice to the kernel). Throws std::runtime_error saying why.
// Tests knock from other 127/8 addresses, as other hosts would.
void bind_source(int fd, const std::string& source);

// The local port of a bound TCP socket (IPv4 or IPv6), 0 when unknown.
uint16_t local_port_of(int fd);

// How a TCP connection notices that the far host is gone (filled by field
// name). The kernel does the work, so a connection handed to the data path
// keeps it:
// - keepalive: after `idle` without traffic, a probe every `interval`; the
//   kernel answers them for a live process even when it is stopped or idle,
//   so a paused but alive stream is never cut;
// - user_timeout (TCP_USER_TIMEOUT): sent data unacknowledged for this long,
//   or the far window shut for this long (a stopped process whose receive
//   buffer is full), or keepalive probes unanswered for this long, aborts
//   the connection (its next operation fails with ETIMEDOUT). When set, it
//   replaces `count` as the keepalive limit (Linux tcp(7)).
struct Liveness {
  std::chrono::milliseconds idle{10'000};
  std::chrono::milliseconds interval{5'000};
  unsigned count = 4;
  std::chrono::milliseconds user_timeout{30'000};
};

// Sets SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and
// TCP_USER_TIMEOUT on a TCP socket (keepalive times rounded up to whole
// seconds, as the kernel counts them). Returns false, with errno set, when
// one was refused.
bool set_liveness(int fd, const Liveness& liveness);

}  // namespace xmig
