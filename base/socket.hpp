// base/socket: the socket option every side of xmig sets the same way.
#pragma once

namespace xmig {

// Aborting a connection: a zero linger (SO_LINGER on, 0 s) makes close() send
// a reset, so the far end learns at once instead of waiting for data that will
// not come. Best effort: a failure leaves an ordinary close.
void reset_on_close(int fd);

}  // namespace xmig
