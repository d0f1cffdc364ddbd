#include "tls/context.hpp"

#include "base/openssl_errors.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>

#include "certs/certs.hpp"
#include "certs/host_name.hpp"
#include "tls/channel.hpp"
#include "tls/ktls.hpp"
#include "tls/session_cache.hpp"

namespace xmig::tls {

namespace {

// "FILE: what; fix: how".
[[noreturn]] void fail(const std::string& file, const std::string& what, const std::string& fix) {
  std::string detail = openssl_errors();
  throw Error(file + ": " + what + (detail.empty() ? "" : " (" + detail + ")") + "; fix: " + fix);
}

// Refuses a file that is not set, missing or cannot be opened, in [tls]'s
// terms (the config key that names it).
void require_file(const std::string& path, const std::string& role) {
  if (path.empty()) throw Error("[tls] " + role + " is not set; fix: give the PEM file's path");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error(path + ": " + role + " file " + strerror(errno) +
                "; fix: check the path in [tls] or create it (xmig-certs issue)");
  if (!BioPtr(BIO_new_file(path.c_str(), "r")))
    fail(path, "cannot open the " + role + " file", "check its permissions");
}

// The file named by [tls] `role`, read by certs/ (`read`: one reader of
// certificates, CRLs and keys for the tunnel and xmig-certs), its refusal as
// a tls::Error.
template <class Read>
auto read_through_certs(const std::string& path, const std::string& role, Read read) {
  require_file(path, role);
  try {
    return read();
  } catch (const certs::Error& e) {
    throw Error(e.what());
  }
}

std::vector<X509Ptr> read_certificates(const std::string& path, const std::string& role) {
  return read_through_certs(path, role,
                            [&] { return certs::parse_certs(certs::read_file(path), path); });
}

// By certs::load_key_file: the key-mode rule of xmig-certs check, no
// encrypted key, the cause of an unreadable one.
PkeyPtr read_key(const std::string& path, const std::string& role) {
  return read_through_certs(path, role, [&] { return certs::load_key_file(path); });
}

// Where a session keeps why its peer's certificate was refused, for the log:
// OpenSSL 3.0 drops the certificate when verification fails. The DNS names
// of a dialled server that failed the host check (whom it claimed to be), or
// what certs::peer_certificate_problem found.
void free_text(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<std::string*>(ptr);
}

int presented_names_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_text);
  return index;
}

int refusal_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_text);
  return index;
}

void keep_text(SSL* ssl, int index, std::string text) {
  delete static_cast<std::string*>(SSL_get_ex_data(ssl, index));
  SSL_set_ex_data(ssl, index, new std::string(std::move(text)));
}

std::string kept_text(SSL* ssl, int index) {
  auto* text = static_cast<std::string*>(SSL_get_ex_data(ssl, index));
  return text ? *text : "";
}

// The verify callback of both sides. After OpenSSL verified the chain (and,
// dialling, the host name), the peer's own certificate must meet the peer
// rule (certs::peer_certificate_problem): a leaf, for its role, with a DNS
// SAN. A failure keeps its reason for the log.
int judge_peer(int ok, X509_STORE_CTX* ctx) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  X509* cert = X509_STORE_CTX_get_current_cert(ctx);
  if (!ssl || !cert) return ok;
  // A server judges the client that dialled it, a client the server it dialled.
  const certs::Purpose role =
      SSL_is_server(ssl) ? certs::Purpose::TlsClient : certs::Purpose::TlsServer;
  if (!ok) {
    // OpenSSL refuses a peer certificate whose extendedKeyUsage lacks its
    // role as "unsuitable certificate purpose"; the rule's words name the
    // missing purpose.
    if (X509_STORE_CTX_get_error(ctx) == X509_V_ERR_INVALID_PURPOSE &&
        X509_STORE_CTX_get_error_depth(ctx) == 0) {
      if (std::string problem = certs::peer_certificate_problem(cert, role); !problem.empty()) {
        keep_text(ssl, refusal_index(), std::move(problem));
        X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
      }
      return 0;
    }
    if (X509_STORE_CTX_get_error(ctx) == X509_V_ERR_HOSTNAME_MISMATCH) {
      // OpenSSL checks the name before it gets here with ok: a certificate
      // that is no peer's at all is refused for that, the clearer reason.
      if (std::string problem = certs::peer_certificate_problem(cert, role); !problem.empty()) {
        keep_text(ssl, refusal_index(), std::move(problem));
        X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
      }
      std::string names;
      for (const auto& n : certs::describe(cert).dns_names)
        names += (names.empty() ? "" : ", ") + n;
      keep_text(ssl, presented_names_index(), names.empty() ? "no DNS name" : names);
    }
    return ok;
  }
  if (X509_STORE_CTX_get_error_depth(ctx) != 0) return ok;
  std::string problem = certs::peer_certificate_problem(cert, role);
  if (problem.empty()) return ok;
  keep_text(ssl, refusal_index(), std::move(problem));
  X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

// ALPN on the server: pick the first "xmig/<channel>" the client offers. Which
// channels exist is decided after authentication, so that an unknown channel
// is refused (and logged) knowing who asked.
int select_channel(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                   unsigned inlen, void*) {
  auto proto = first_channel_offer({reinterpret_cast<const char*>(in), inlen});
  if (!proto) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = reinterpret_cast<const unsigned char*>(proto->data());
  *outlen = static_cast<unsigned char>(proto->size());
  return SSL_TLSEXT_ERR_OK;
}

// --- Session resumption (see context.hpp) ---

// The session id context tickets are bound to (OpenSSL requires one on a
// server that verifies its clients before it resumes anything).
constexpr unsigned char kSessionIdContext[] = {'x', 'm', 'i', 'g'};
// One ticket per full handshake: the dialling end keeps one per peer anyway.
constexpr size_t kTicketsPerHandshake = 1;

// The dialling context owns its SessionCache: freed with the SSL_CTX, which
// outlives the Context while a session made from it is open.
void free_cache(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<SessionCache*>(ptr);
}

int session_cache_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_cache);
  return index;
}

SessionCache* session_cache(SSL_CTX* ctx) {
  return static_cast<SessionCache*>(SSL_CTX_get_ex_data(ctx, session_cache_index()));
}

// The peer a dialling session checks the server's certificate against: the
// [[peer]] name it dialled (Context::new_client, SSL_set1_host).
const char* dialled_peer(SSL* ssl) {
  return X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
}

// A ticket arrived on a dialling session (new-session callback): kept, as a
// copy, for the peer dialled. Returns 0: OpenSSL keeps its own reference.
int keep_ticket(SSL* ssl, SSL_SESSION* session) {
  const char* peer = dialled_peer(ssl);
  if (SessionCache* cache = session_cache(SSL_get_SSL_CTX(ssl)); cache && peer)
    cache->keep(peer, session);
  return 0;
}

// The NewSessionTicket messages a session has read (a dialling one) or
// written (an accepting one), each counted in its ex_data (a number, not a
// pointer) by the message callback.
int tickets_index(bool written) {
  static const int read = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  static const int sent = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return written ? sent : read;
}

uint64_t tickets_counted(SSL* ssl, bool written) {
  return reinterpret_cast<uintptr_t>(SSL_get_ex_data(ssl, tickets_index(written)));
}

void count_tickets(int write_p, int, int content_type, const void* buf, size_t len, SSL* ssl,
                   void*) {
  if (content_type != SSL3_RT_HANDSHAKE || len == 0 ||
      static_cast<const unsigned char*>(buf)[0] != SSL3_MT_NEWSESSION_TICKET)
    return;
  const bool written = write_p != 0;
  const uint64_t count = tickets_counted(ssl, written) + 1;
  SSL_set_ex_data(ssl, tickets_index(written), reinterpret_cast<void*>(count));
}

// Client hello callback of a server that issues tickets: a client whose
// ClientHello lacks the session_ticket extension asked for none (its [tls]
// resumption is off, or it is a version of xmig from before resumption, whose
// kTLS RX counts only the verdict before its first data record): it gets none.
int tickets_only_if_asked(SSL* ssl, int*, void*) {
  const unsigned char* ext = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_session_ticket, &ext, &len) != 1)
    SSL_set_num_tickets(ssl, 0);
  return SSL_CLIENT_HELLO_SUCCESS;
}

// Ticket decryption callback of a server that issues tickets: a ticket that
// decrypts is used and not renewed, so a session is resumed only within
// kTicketLifetime of the full handshake that checked the certificates (a
// renewed ticket would carry that check on for as long as channels keep
// coming) and a resumed handshake costs no ticket to seal (about 0.15 CPU-ms
// here). Any other ticket: a full handshake, which issues a new one.
SSL_TICKET_RETURN use_without_renewal(SSL*, SSL_SESSION*, const unsigned char*, size_t,
                                      SSL_TICKET_STATUS status, void*) {
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
      return SSL_TICKET_RETURN_USE;
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
      return SSL_TICKET_RETURN_ABORT;
  }
}

// Tickets and the session cache of a context: issued (server) and kept and
// offered (client) when `resume`, else none at all, as before resumption.
void set_up_resumption(SSL_CTX* c, bool server, bool resume) {
  // Never a PSK-only handshake (no fresh key exchange: no forward secrecy),
  // even if the system's openssl.cnf allows it; never early data (0-RTT
  // data can be replayed).
  SSL_CTX_clear_options(c, SSL_OP_ALLOW_NO_DHE_KEX);
  // Each ticket is a record under the application traffic key before the
  // first data record: kTLS RX and tls::Records continue the sequence numbers
  // after them (tickets_received, tickets_sent).
  SSL_CTX_set_msg_callback(c, count_tickets);
  SSL_CTX_set_max_early_data(c, 0);
  SSL_CTX_set_recv_max_early_data(c, 0);
  if (!resume) SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  if (server) {
    SSL_CTX_set_session_id_context(c, kSessionIdContext, sizeof kSessionIdContext);
    // Stateless tickets: sealed with this SSL_CTX's own random key, so the
    // server keeps no cache, and a reload (a new SSL_CTX) refuses them all.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c, resume ? kTicketsPerHandshake : 0);
    SSL_CTX_set_timeout(c, static_cast<long>(kTicketLifetime.count()));
    if (resume) {
      SSL_CTX_set_client_hello_cb(c, tickets_only_if_asked, nullptr);
      SSL_CTX_set_session_ticket_cb(c, nullptr, use_without_renewal, nullptr);
    }
    return;
  }
  SSL_CTX_set_num_tickets(c, 0);
  if (!resume) {
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    return;
  }
  // OpenSSL hands each ticket to keep_ticket; the SessionCache, not
  // OpenSSL's internal store, keeps it.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c, keep_ticket);
  SSL_CTX_set_ex_data(c, session_cache_index(), new SessionCache(kTicketLifetime));
}

const char* kTls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
const char* kTls12Suites = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL";
// Key exchange: elliptic curves only. An unauthenticated client must not be
// able to pick a finite-field group (ffdhe8192 costs the server about 100
// times the CPU of X25519 per handshake).
const char* kGroups = "X25519:P-256:P-384";

}  // namespace

Context::~Context() = default;

namespace {

// One identity: a certificate file (the leaf, then any intermediate CAs) and
// its key, read with the config keys that name them ("cert"/"key" or
// "client_cert"/"client_key") for messages.
struct Identity {
  std::string cert_file, key_file;
  std::vector<X509Ptr> chain;
  PkeyPtr key;
};

Identity read_identity(const std::string& cert_file, const std::string& key_file,
                       const std::string& cert_role, const std::string& key_role) {
  return Identity{.cert_file = cert_file,
                  .key_file = key_file,
                  .chain = read_certificates(cert_file, cert_role),
                  .key = read_key(key_file, key_role)};
}

// The trusted CAs and, when set, the CRLs; shared by both contexts.
X509StorePtr load_store(const Settings& settings, const std::vector<X509Ptr>& ca) {
  X509StorePtr store(X509_STORE_new());
  if (!store) throw Error("X509_STORE_new failed: " + openssl_errors());
  for (auto& c : ca) X509_STORE_add_cert(store.get(), c.get());
  if (!settings.crl.empty()) {
    const std::string& file = settings.crl;
    auto crls = read_through_certs(file, "crl",
                                   [&] { return certs::parse_crls(certs::read_file(file), file); });
    for (auto& crl : crls) X509_STORE_add_crl(store.get(), crl.get());
    X509_STORE_set_flags(store.get(), X509_V_FLAG_CRL_CHECK);
  }
  return store;
}

// Whether the identity can serve in `role` (certs::check_role): "" when it
// can, else "FILE: what is missing; fix: how to reissue it".
std::string role_problem(const Settings& settings, const Identity& id, certs::Purpose role) {
  std::optional<std::string> host;
  if (!settings.own_name.empty()) host = settings.own_name;
  // The server certificate serving as client certificate too: made from a
  // server template.
  const bool both_roles = settings.client_cert == settings.cert;
  certs::RoleVerdict verdict =
      certs::check_role(certs::cert_to_pem(id.chain[0].get()), role, host,
                        {.cert = id.cert_file,
                         .key = id.key_file,
                         .ca = settings.ca,
                         .template_file = both_roles ? "server.info" : ""});
  if (verdict.ok()) return {};
  std::string fix = verdict.fix;
  // The usual cause (issue #19): a server-only certificate, as libvirt's
  // server template makes, used for dialling too because client_cert defaults
  // to cert.
  if (role == certs::Purpose::TlsClient && both_roles) {
    const std::filesystem::path parent = std::filesystem::path(settings.cert).parent_path();
    // Built, not assigned: `dir = "."` makes GCC 12 -O3 warn falsely (-Wrestrict).
    const std::string dir = parent.empty() ? std::string(".") : parent.string();
    // Starts from a std::string: "literal" + string&& makes GCC 12 -O3 warn (-Wrestrict).
    fix = std::string("this host also dials its peers with ") + settings.cert +
          " ([tls] client_cert defaults to cert): give it a client certificate, e.g. libvirt's "
          "client_cert = \"" +
          dir + "/client-cert.pem\" and client_key = \"" + dir + "/client-key.pem\" in [tls]; or " +
          fix;
  }
  return id.cert_file + ": " + verdict.message() + "; fix: " + fix;
}

// The identity's own chain, verified as its peers will: against the store,
// with the intermediates it carries, for its role (the EKU of every CA in the
// chain must allow it too).
void verify_identity(const Settings& settings, X509_STORE* store, const Identity& id, int purpose) {
  X509StoreCtxPtr vctx(X509_STORE_CTX_new());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (size_t i = 1; i < id.chain.size(); ++i) sk_X509_push(untrusted, id.chain[i].get());
  X509_STORE_CTX_init(vctx.get(), store, id.chain[0].get(), untrusted);
  X509_STORE_CTX_set_purpose(vctx.get(), purpose);
  int ok = X509_verify_cert(vctx.get());
  int err = X509_STORE_CTX_get_error(vctx.get());
  sk_X509_free(untrusted);
  if (ok == 1) {
    ERR_clear_error();
    return;
  }
  std::string fix;
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_CERT_REVOKED:
      fix = "issue a current certificate (xmig-certs rotate)";
      break;
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_UNABLE_TO_GET_CRL:
      fix = "put a current CRL of the CA into " + settings.crl + " (or remove [tls] crl)";
      break;
    case X509_V_ERR_INVALID_PURPOSE:
      // The leaf passed check_role: a CA of its chain restricts the purposes.
      fix = std::string("a CA in its chain has an extendedKeyUsage without ") +
            (purpose == X509_PURPOSE_SSL_SERVER ? "serverAuth" : "clientAuth") +
            ": issue the certificate from a CA that allows it";
      break;
    default:
      fix = "issue the certificate from the CA in " + settings.ca +
            " or add its CA (and any intermediate CA) to that bundle";
  }
  fail(id.cert_file,
       std::string("does not verify against ") + settings.ca + ": " +
           X509_verify_cert_error_string(err),
       fix);
}

// A context with xmig's protocol settings that presents `id`. `server`: the
// listener's context (ALPN selection); otherwise the dialling one's.
SslCtxPtr new_context(const Settings& settings, X509_STORE* store, const Identity& id,
                      bool server) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) throw Error("SSL_CTX_new failed: " + openssl_errors());
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, settings.allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_ciphersuites(c, kTls13Suites);
  SSL_CTX_set_cipher_list(c, kTls12Suites);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  // A ticket is a non-data record before the first data record: the
  // dialling end's kTLS RX counts it (tickets_received).
  set_up_resumption(c, server, settings.resumption && !settings.allow_tls12);
  // Whole writes (several records per SSL_write call); retries may pass a moved buffer.
  SSL_CTX_set_mode(c, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_set1_groups_list(c, kGroups) != 1)
    throw Error("SSL_CTX_set1_groups_list: " + openssl_errors());
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, judge_peer);
  if (server) SSL_CTX_set_alpn_select_cb(c, select_channel, nullptr);
  // The traffic secrets, kept in memory for installing kTLS RX (tls/ktls.hpp).
  SSL_CTX_set_keylog_callback(c, keylog_callback);
  SSL_CTX_set1_cert_store(c, store);

  if (SSL_CTX_use_certificate(c, id.chain[0].get()) != 1)
    fail(id.cert_file, "certificate rejected", "use the host certificate issued by the CA");
  for (size_t i = 1; i < id.chain.size(); ++i) SSL_CTX_add1_chain_cert(c, id.chain[i].get());
  if (SSL_CTX_use_PrivateKey(c, id.key.get()) != 1 || SSL_CTX_check_private_key(c) != 1)
    fail(id.key_file, "does not match the certificate " + id.cert_file,
         "give the key that was issued with that certificate");
  return ctx;
}

}  // namespace

std::shared_ptr<const Context> Context::load(const Settings& settings) {
  std::shared_ptr<Context> self(new Context);  // private constructor
  Settings& s = self->settings_;
  s = settings;
  if (s.client_cert.empty()) s.client_cert = s.cert;
  if (s.client_key.empty()) s.client_key = s.key;

  auto ca = read_certificates(s.ca, "ca");
  Identity server = read_identity(s.cert, s.key, "cert", "key");
  Identity client = read_identity(s.client_cert, s.client_key, "client_cert", "client_key");
  X509StorePtr store = load_store(s, ca);
  self->server_ctx_ = new_context(s, store.get(), server, true);
  self->client_ctx_ = new_context(s, store.get(), client, false);

  // Each certificate must serve in its role; both are judged, so that one
  // --check names every certificate to reissue.
  std::string problems;
  for (const auto& problem : {role_problem(s, server, certs::Purpose::TlsServer),
                              role_problem(s, client, certs::Purpose::TlsClient)})
    if (!problem.empty()) problems += (problems.empty() ? "" : "\n") + problem;
  if (!problems.empty()) throw Error(problems);

  // The host's own certificates must pass the checks its peers will make.
  verify_identity(s, store.get(), server, X509_PURPOSE_SSL_SERVER);
  verify_identity(s, store.get(), client, X509_PURPOSE_SSL_CLIENT);

  self->cert_ = certs::describe(server.chain[0].get());
  self->client_cert_ = certs::describe(client.chain[0].get());
  return self;
}

SslPtr Context::new_client(const std::string& peer, const std::string& channel) const {
  // An empty name would clear the host check (SSL_set1_host): never dial one.
  if (peer.empty()) throw Error("no peer name to check the server's certificate against");
  SslPtr ssl(SSL_new(client_ctx_.get()));
  if (!ssl) throw Error("SSL_new failed: " + openssl_errors());
  SSL_set_connect_state(ssl.get());
  SSL_set_hostflags(ssl.get(), certs::kHostNameCheckFlags);
  SSL_set_verify(ssl.get(), SSL_VERIFY_PEER, judge_peer);
  if (SSL_set1_host(ssl.get(), peer.c_str()) != 1)
    throw Error("SSL_set1_host: " + openssl_errors());
  std::string alpn = alpn_for(channel);
  std::string wire(1, static_cast<char>(alpn.size()));
  wire += alpn;
  SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(wire.data()), wire.size());
  // The ticket this Context kept for this very peer, if any.
  if (SessionCache* cache = session_cache(client_ctx_.get())) cache->offer(ssl.get(), peer);
  return ssl;
}

SslPtr Context::new_server() const {
  SslPtr ssl(SSL_new(server_ctx_.get()));
  if (!ssl) throw Error("SSL_new failed: " + openssl_errors());
  SSL_set_accept_state(ssl.get());
  return ssl;
}

std::optional<std::string> identify_peer(SSL* ssl, const std::vector<std::string>& peers) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  for (const auto& p : peers)
    if (certs::names_host(cert, p)) return p;
  return std::nullopt;
}

std::string check_resumed_peer(SSL* ssl) {
  if (!SSL_session_reused(ssl)) return "";
  const std::string refused = "certificate verify failed: ";
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) return refused + "the resumed session carries no peer certificate";
  if (SSL_get_verify_result(ssl) != X509_V_OK)
    return refused + X509_verify_cert_error_string(SSL_get_verify_result(ssl));
  const bool server = SSL_is_server(ssl);
  std::string problem = certs::peer_certificate_problem(
      cert, server ? certs::Purpose::TlsClient : certs::Purpose::TlsServer);
  if (!problem.empty()) return refused + problem;
  // Dialling: the cache offers a ticket to the peer it came from only; the
  // session's certificate must still name the peer dialled.
  const char* wanted = server ? nullptr : dialled_peer(ssl);
  if (!server && (!wanted || !certs::names_host(cert, wanted)))
    return refused + "hostname mismatch: the resumed session's certificate does not name " +
           (wanted ? wanted : "the peer dialled");
  return "";
}

uint64_t tickets_received(SSL* ssl) {
  return tickets_counted(ssl, false);
}

uint64_t tickets_sent(SSL* ssl) {
  return tickets_counted(ssl, true);
}

std::string negotiated_channel(SSL* ssl) {
  const unsigned char* data = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl, &data, &len);
  auto ch = channel_from_alpn({reinterpret_cast<const char*>(data), len});
  return ch ? std::string(*ch) : std::string();
}

std::string protocol_version(SSL* ssl) {
  return SSL_get_version(ssl);
}
std::string cipher_name(SSL* ssl) {
  return SSL_get_cipher_name(ssl);
}

std::string presented_names(SSL* ssl) {
  return kept_text(ssl, presented_names_index());
}

std::string refused_certificate(SSL* ssl) {
  return kept_text(ssl, refusal_index());
}

}  // namespace xmig::tls
