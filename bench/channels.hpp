// bench/: channel setup — how long a migration waits before all of its
// channels carry data. QEMU opens its main channel and its multifd channels
// back to back; each crosses the path in its own connection (for xmig: TCP
// connect, TLS handshake, request and the far side's verdict, with the far
// side connecting its target in the order the channels were opened).
//
// What it must never do: report a time for a run in which a channel did not
// arrive, or arrived out of the order it was opened in.
#pragma once

#include <chrono>
#include <string>

#include "bench/load.hpp"

namespace xmig::bench {

struct ChannelSetupOptions {
  Endpoint connect;  // the entry of the path (for xmig: hv-a's qemu entry socket)
  unsigned channels = 4;
  std::chrono::seconds timeout{60};
};

struct ChannelSetupResult {
  // From the first connect() until the sink has the first bytes of every
  // channel.
  double seconds = 0;
  // "" when every channel arrived, in the order it was opened, with its bytes.
  std::string error;
};

// Opens opts.channels connections to opts.connect back to back; each sends a
// 16-byte header naming its index at once. The sink accepts them and reads
// each header; the channels' order at the sink must be the order they were
// opened in.
ChannelSetupResult run_channel_setup(const ChannelSetupOptions& opts, Listener& sink);

}  // namespace xmig::bench
