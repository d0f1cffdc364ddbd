// base/openssl_errors: OpenSSL's thread-local error queue as one line of text,
// for the messages tls/, io/, verify/ and the harness build around a failed
// OpenSSL call. Only the queue: what the call's own result means (a verify
// result, a close_notify, an errno) each caller says in its own words.
#pragma once

#include <string>

namespace xmig {

// The pending errors' reasons ("certificate verify failed; ..."), each once,
// and clears the queue; "" when it is empty.
std::string openssl_errors();

}  // namespace xmig
