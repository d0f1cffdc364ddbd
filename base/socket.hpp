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

// The local port of a bound TCP socket (IPv4 or IPv6), 0 when unknown.
uint16_t local_port_of(int fd);

}  // namespace xmig
