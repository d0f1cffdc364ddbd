// certs/: the one host-name match of xmig, for every check that asks "does
// this certificate name host H?": this host's own certificates
// (certs::check_role, so `xmig-tunnel --check`, startup, reload and
// `xmig-certs check`) and the peers' (tls: the server a client dials, the
// peer a server identifies).
//
// A certificate names H when H is one of its DNS SANs, compared as OpenSSL's
// X509_check_host compares (case-insensitive), with no wildcards, and never
// through the subject CN: a certificate whose host name is only in its CN names
// nobody (libvirt's client template makes such certificates; see README,
// "Certificates made with certtool").
#pragma once

#include <openssl/x509v3.h>

#include <string>

namespace xmig::certs {

// X509_check_host / SSL_set_hostflags flags for the rule above.
inline constexpr unsigned int kHostNameCheckFlags =
    X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;

// True when `cert` names `host` by the rule above.
inline bool names_host(X509* cert, const std::string& host) {
  return X509_check_host(cert, host.data(), host.size(), kHostNameCheckFlags, nullptr) == 1;
}

}  // namespace xmig::certs
