// bench/: a plain TCP relay with no crypto — the floor of the tunnel's
// topology. Two relays in a row (entry and exit) make the same two hops the
// tunnel makes, so what is left between them and the tunnel is the price of
// TLS and of the tunnel's own design.
//
// Each accepted connection gets an upstream connection and two threads, one
// per direction, each a loop of read() into a 256 KiB buffer and write() of
// all of it (the same copies the userspace tunnel makes, minus the crypto), or
// splice() through a pipe when asked. EOF is passed on with shutdown(SHUT_WR).
// Both TCP sockets carry TCP_NODELAY, as the tunnel's do: what a read returned
// is sent at once, never held back for an ACK.
// With a delay it stands in for a link's one-way latency: each byte is passed
// on `delay` after it was read (TCP's own SYN round trip is not delayed).
//
// What it must never do: drop, reorder or invent bytes; it has no options
// that change the data.
#pragma once

#include <atomic>
#include <chrono>

#include "bench/load.hpp"

namespace xmig::bench {

struct RelayOptions {
  Endpoint listen;
  Endpoint connect;
  bool splice = false;  // zero-copy splice() through a pipe instead of read()/write()
  std::chrono::microseconds delay{0};  // each direction's latency (read()/write() only)
};

// Serves until *stop becomes true (checked every 100 ms). Throws when it
// cannot listen.
void run_relay(const RelayOptions& opts, const std::atomic<bool>& stop);

}  // namespace xmig::bench
