// What the tunnel pair must show after a QEMU migration went through it, for
// every QEMU test that migrates through tunnels.
#pragma once

#include <string>

#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

// After both QEMUs have quit: `connections` qemu connections (1 main stream
// plus the multifd channels) were carried without a transport error, once on
// each side, nothing was refused, and every byte hv-a took from the source
// QEMU was handed to the destination QEMU's socket by hv-b (the to_peer
// counts on hv-a equal the from_peer counts on hv-b).
//
// A delivery may end "local-closed-early": QEMU 7.2's multifd source
// sometimes sends one empty packet after a channel's last SYNC (a SYNC that
// carried pages is sent again, empty, under the same packet number; see
// `-trace multifd_send` with XMIG_QEMU_TRACE), and the destination, done
// after the SYNC, quits without reading it. That packet was delivered; QEMU
// did not read it. Whether the destination's receive thread reads it before
// the quit is timing (it often does not under the sanitizers). `context` is
// printed on failure.
void expect_qemu_connections_carried(const TunnelPair& pair, int connections,
                                     const std::string& context);

}  // namespace xmig::test
