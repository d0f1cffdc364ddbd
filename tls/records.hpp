// tls/records: TLS 1.3 record protection of an established session in user
// space (RFC 8446 5), for io/'s userspace data path.
//
// Why not SSL_write/SSL_read: OpenSSL 3.0 seals each record into a buffer of
// its own, which the BIO then copies out, and opens a record only after
// copying it in, then copies the plaintext out: three memmoves per byte over
// a pair of tunnel ends (bench/README "Where the CPU goes"). Here the AEAD
// is the copy: plaintext is sealed straight into the caller's send buffer,
// and records are opened straight into its plaintext buffer.
//
// OpenSSL runs the handshake and protects every record before the hand-off
// (the Request, the verdict, session tickets); Records::take() then derives
// both directions' keys from the traffic secrets the key log kept
// (tls/ktls.hpp) and continues the sequence numbers where OpenSSL left them.
// After the hand-off:
// - the only handshake message either side may send is KeyUpdate (RFC 8446
//   4.6.3): one received rotates the receiving key; one that requests an
//   update makes key_update_owed() true until this side has sent its own;
// - a record that does not authenticate, is longer than RFC 8446 5.2 allows,
//   carries no content type or is of another outer type ends the connection,
//   as does any alert but close_notify (its description is the reason);
// - sequence numbers never wrap: a direction ends before that.
// Keys and secrets live in this object only and are wiped with it. The AEAD
// itself is OpenSSL's or intel-ipsec-mb's (tls/aead.hpp says when each).
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace xmig::tls {

// What seals and opens the records (tls/aead.hpp): Auto is the product's choice.
enum class AeadEngine {
  Auto,     // intel-ipsec-mb for AES-GCM on CPUs with AVX-512 VAES, else OpenSSL
  OpenSsl,  // OpenSSL's EVP, for every suite
  IpsecMb,  // intel-ipsec-mb (AES-GCM only), whatever the CPU offers
};

// What seals and opens AES-GCM records in userspace mode on this machine
// (AeadEngine::Auto), for the tunnel's start-up line: "intel-ipsec-mb 1.3.0
// (AVX512)" or "OpenSSL 3.0.19".
std::string aes_gcm_engine();

class Records {
 public:
  // The most application data one record carries (2^14 bytes).
  static constexpr size_t kMaxData = 16384;
  // What sealing adds to a record's data: header, inner content type, tag.
  static constexpr size_t kHeader = 5;
  static constexpr size_t kTag = 16;
  static constexpr size_t kOverhead = kHeader + 1 + kTag;
  // The longest record a peer may send (RFC 8446 5.2: 2^14 + 256 after the header).
  static constexpr size_t kMaxRecord = kHeader + kMaxData + 256;
  // Room open() needs for one record's inner plaintext (data, type, padding).
  static constexpr size_t kMaxInner = kMaxData + 1;
  // A sealed KeyUpdate, close_notify: their whole size on the wire.
  static constexpr size_t kKeyUpdateSize = kOverhead + 5;
  static constexpr size_t kAlertSize = kOverhead + 2;

  // Takes `ssl`'s traffic secrets from the key log (they are wiped there)
  // once OpenSSL has written `records_written` and read `records_read`
  // records under the application traffic keys. Null, with `why`, when the
  // session is not TLS 1.3, OpenSSL still holds input it has not returned, or
  // the secrets or cipher are missing; the caller then keeps using OpenSSL.
  static std::unique_ptr<Records> take(SSL* ssl, uint64_t records_read, uint64_t records_written,
                                       std::string& why);
  // The three TLS 1.3 cipher suites (IANA numbers) xmig negotiates.
  static constexpr uint16_t kAes128GcmSha256 = 0x1301;
  static constexpr uint16_t kAes256GcmSha384 = 0x1302;
  static constexpr uint16_t kChacha20Poly1305Sha256 = 0x1303;
  // From the two traffic secrets themselves, both sequence numbers at 0: what
  // take() builds on, and what tests and the fuzz target use without a
  // handshake. Null, with `why`, for another suite, secrets of a wrong size
  // or an engine that cannot do the suite.
  static std::unique_ptr<Records> from_secrets(uint16_t suite, const std::vector<uint8_t>& sending,
                                               const std::vector<uint8_t>& receiving,
                                               std::string& why,
                                               AeadEngine engine = AeadEngine::Auto);
  // The engine protecting the records, for logs ("intel-ipsec-mb 1.3.0 (AVX512)").
  std::string aead_name() const;
  ~Records();
  Records(const Records&) = delete;
  Records& operator=(const Records&) = delete;

  // ---- sealing: out needs room for the plaintext + kOverhead -------------------

  // Seals `len` <= kMaxData bytes as one record whose inner content type is
  // `type`; returns the record's size, 0 on failure (`why` set). The three
  // below are the ones the data path sends.
  size_t seal(uint8_t type, const uint8_t* in, size_t len, uint8_t* out, std::string& why);
  // Application data.
  size_t seal_data(const uint8_t* in, size_t len, uint8_t* out, std::string& why);
  // close_notify (warning level), kAlertSize bytes.
  size_t seal_close_notify(uint8_t* out, std::string& why);
  // A KeyUpdate (update_not_requested) under the current key, kKeyUpdateSize
  // bytes; every later record goes under the next key.
  size_t seal_key_update(uint8_t* out, std::string& why);
  // The peer requested a KeyUpdate: one must be sealed before more data.
  bool key_update_owed() const { return key_update_owed_; }

  // ---- opening ------------------------------------------------------------------

  struct Opened {
    enum Kind {
      Data,         // `data` bytes of application data (possibly 0) are at the front of out
      NeedMore,     // `in` holds no whole record yet
      CloseNotify,  // the peer ended its direction
      KeyUpdated,   // the peer rotated its key (see key_update_owed())
      Failed,       // `why`
    } kind;
    size_t consumed = 0;  // bytes of `in` this record took
    size_t data = 0;
    std::string why = {};
  };
  // Opens the record at the front of in[0, len) into out, which has room for
  // kMaxInner bytes. Nothing written to out is data unless kind is Data.
  Opened open(const uint8_t* in, size_t len, uint8_t* out);

  struct Direction;

 private:
  Records();

  std::unique_ptr<Direction> send_, receive_;
  bool key_update_owed_ = false;
};

}  // namespace xmig::tls
