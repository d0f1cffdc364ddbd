// tls/ktls: handing an established TLS session's record protection to the
// Linux kernel (kTLS), so that io/ never encrypts or decrypts in user space
// (it sends with splice, without a copy, and receives decrypted records).
//
// How the offload comes about (OpenSSL 3.0, Debian 12):
// - prepare_session() sets SSL_OP_ENABLE_KTLS before the handshake; OpenSSL
//   then installs the kernel's TX key itself (TLS 1.2 and 1.3) and, for TLS
//   1.2 only, the RX key.
// - For TLS 1.3 RX, complete_offload() installs the key itself: the traffic
//   secrets come from the key-log callback (kept in memory only, attached to
//   the SSL object and wiped with it), key and IV from HKDF-Expand-Label
//   (RFC 8446 7.1, 7.3), rec_seq = the number of records OpenSSL has already
//   read with that key.
//
// AEAD key-usage limits (RFC 8446 5.5) — the policy, decided here per session:
// - a host that may use kTLS prefers ChaCha20-Poly1305 (no practical record
//   limit) and, as a server, imposes its preference: OpenSSL 3.0 and kernels
//   before 6.14 cannot rotate a kTLS key, so a kTLS path must not need to;
// - record_limit() says how many records one key may protect; io/ counts
//   records per direction and, in user space, sends a KeyUpdate before the
//   limit; on a kTLS path that still ended up with AES-GCM it closes the
//   connection with a clear error instead of exceeding the limit.
//
// tls/ktls never moves payload bytes itself.
#pragma once

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace xmig::tls {

// [tls] ktls: "off" never offloads; "auto" offloads when the kernel can and
// falls back to user space before the hand-off; "required" refuses to start
// on a kernel without kTLS and refuses a connection whose offload failed.
enum class KtlsPolicy { Off, Auto, Required };

std::optional<KtlsPolicy> parse_ktls_policy(std::string_view text);
const char* to_string(KtlsPolicy policy);

// RFC 8446 5.5 for AES-GCM is 2^24.5 full records; 2^24 keeps a margin.
constexpr uint64_t kDefaultKeyLimitRecords = uint64_t{1} << 24;

// "" when this kernel accepts the TLS ULP on a connected TCP socket, else the
// reason (e.g. "TCP_ULP \"tls\": No such file or directory"). Probed once.
const std::string& ktls_unavailable_reason();

// Before the handshake. For Auto/Required on a kernel with kTLS: enables
// OpenSSL's kTLS and puts ChaCha20-Poly1305 first (servers impose it).
void prepare_session(SSL* ssl, KtlsPolicy policy);

// The key-log callback Context installs on every SSL_CTX: keeps the two
// application traffic secrets of the session in memory (nothing else, never
// written anywhere), for complete_offload() or tls::Records. Wiped when the SSL is freed or
// by forget_secrets().
void keylog_callback(const SSL* ssl, const char* line);
void forget_secrets(SSL* ssl);

struct Offload {
  bool tx = false;  // the kernel encrypts what is written to the socket
  bool rx = false;  // the kernel decrypts what is read from it
  std::string why;  // when not both: the reason, for the log
};

// After the handshake and any control records, before the first payload byte:
// installs the kernel RX key if OpenSSL did not (TLS 1.3), with rec_seq =
// `records_read` (the records OpenSSL has read under the application traffic
// key: the peer's session tickets, if any (tickets_received() in
// tls/context.hpp), and the control records SSL_read consumed). Never leaves the
// socket half-changed by its own doing: RX is installed only when TX already
// is, and only if OpenSSL holds no buffered input. Wipes the secrets once TX
// is in the kernel; otherwise leaves them to tls::Records (user space).
Offload complete_offload(SSL* ssl, int fd, uint64_t records_read);

// Records one key of this session's cipher may protect before it must be
// rotated; 0 = no practical limit (ChaCha20-Poly1305). `configured` is the
// [tls] key_limit_records value.
uint64_t record_limit(SSL* ssl, uint64_t configured);

// A recvmsg() message for a kTLS RX socket that asks the kernel for the type
// of the records it returns (a TLS_GET_RECORD_TYPE cmsg) instead of failing
// on one that is not application data. Linux returns records of one type per
// call: a record of another type (an alert, a handshake message) comes on its
// own in the next call, after the data before it. Made for io_uring, which
// reads the message when the receive starts and writes msg_controllen back
// when it completes: not movable (it points into itself); reset() before
// each receive.
struct RecordReceive {
  RecordReceive(void* data, size_t size);
  RecordReceive(const RecordReceive&) = delete;
  RecordReceive& operator=(const RecordReceive&) = delete;
  void reset();
  // The type of the records the last receive returned (SSL3_RT_APPLICATION_DATA,
  // SSL3_RT_ALERT, SSL3_RT_HANDSHAKE, ...); 0 when the kernel reported none
  // (end of stream).
  int record_type() const;
  msghdr msg{};
  iovec iov{};
  alignas(cmsghdr) char control[CMSG_SPACE(1)] = {};
};

// One record of `type` (SSL3_RT_ALERT, SSL3_RT_HANDSHAKE, ...) ready for sendmsg()
// on a kTLS TX socket: the type goes in a TLS_SET_RECORD_TYPE cmsg. Points at
// `data`, which must outlive the send; not movable (it points into itself).
struct RecordMessage {
  RecordMessage(uint8_t type, const void* data, size_t size);
  RecordMessage(const RecordMessage&) = delete;
  RecordMessage& operator=(const RecordMessage&) = delete;
  msghdr msg{};
  iovec iov{};
  alignas(cmsghdr) char control[CMSG_SPACE(1)] = {};
};

// A TLS alert as a RecordMessage. close_notify is (SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY).
struct AlertMessage {
  AlertMessage(uint8_t level, uint8_t description) : body{level, description} {}
  uint8_t body[2];
  RecordMessage record{SSL3_RT_ALERT, body, sizeof body};
};

}  // namespace xmig::tls
