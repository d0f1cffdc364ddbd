// certs/: the one host-name match and the one peer-certificate rule of xmig, for every check that
// asks "does this certificate name host H?": this host's own certificates (certs::check_role, so
// `xmig-tunnel --check`, startup, reload and `xmig-certs check`) and the peers' (tls: the server a
// client dials, the peer a server identifies).
//
// A certificate names H when H is one of its DNS SANs, compared as OpenSSL's
// X509_check_host compares (case-insensitive), with no wildcards, and never
// through the subject CN: a certificate whose host name is only in its CN names
// nobody (libvirt's client template makes such certificates; see README,
// "Certificates made with certtool").
#pragma once

#include <openssl/x509v3.h>

#include <string>

#include "certs/certs.hpp"

namespace xmig::certs {

// X509_check_host / SSL_set_hostflags flags for the rule above.
inline constexpr unsigned int kHostNameCheckFlags =
    X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;

// True when `cert` names `host` by the rule above.
inline bool names_host(X509* cert, const std::string& host) {
  return X509_check_host(cert, host.data(), host.size(), kHostNameCheckFlags, nullptr) == 1;
}

// True when `cert` may serve in `role`: it is not a CA (a host certificate is
// a leaf, basicConstraints CA:FALSE or none), and when it has an
// extendedKeyUsage, that allows the role (serverAuth for TlsServer, clientAuth
// for TlsClient). The one usage rule for this host's certificates
// (check_role) and the peers' (peer_certificate_problem).
bool is_leaf(X509* cert);
bool allows_role(X509* cert, Purpose role);

// The rule a peer's certificate meets, checked on the leaf during every
// handshake (tls/: a dialled server for TlsServer, a client that dialled this
// host for TlsClient), after its chain verified: a leaf allowing the role,
// with at least one DNS SAN (which name is the peer's is checked by
// names_host). "" when it passes, else why not, in words for the log.
std::string peer_certificate_problem(X509* cert, Purpose role);

}  // namespace xmig::certs
