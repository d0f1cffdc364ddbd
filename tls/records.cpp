#include "tls/records.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>
#include <vector>

#include "base/openssl_errors.hpp"
#include "tls/aead.hpp"
#include "tls/ktls.hpp"
#include "tls/secrets.hpp"

namespace xmig::tls {

namespace {

constexpr uint8_t kLegacyVersion[2] = {0x03, 0x03};  // TLS 1.2 on the wire (RFC 8446 5.1)
constexpr size_t kNonce = Aead::kNonce;
// A KeyUpdate message: type, 24-bit length 1, request_update.
constexpr size_t kKeyUpdateMessage = 5;

uint16_t read_u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

}  // namespace

// One direction's traffic secret, key and sequence number.
struct Records::Direction {
  const EVP_MD* md = nullptr;
  std::unique_ptr<Aead> aead;
  std::vector<uint8_t> secret;
  uint8_t iv[kNonce] = {};
  uint64_t seq = 0;

  ~Direction() {
    if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
    OPENSSL_cleanse(iv, sizeof iv);
  }

  // Key and IV of the current secret, sequence number 0 (RFC 8446 7.3).
  bool install(std::string& why) {
    uint8_t key[EVP_MAX_KEY_LENGTH];
    const size_t key_len = aead->key_length();
    bool ok = key_len <= sizeof key && expand_label(md, secret, "key", key, key_len) &&
              expand_label(md, secret, "iv", iv, kNonce) && aead->set_key(key, key_len);
    OPENSSL_cleanse(key, sizeof key);
    if (!ok) why = "deriving the record key: " + openssl_errors();
    seq = 0;
    return ok;
  }

  // The next secret (RFC 8446 7.2), after a KeyUpdate.
  bool update(std::string& why) {
    std::vector<uint8_t> next(secret.size());
    if (!expand_label(md, secret, "traffic upd", next.data(), next.size())) {
      why = "KeyUpdate: deriving the next traffic secret failed";
      return false;
    }
    OPENSSL_cleanse(secret.data(), secret.size());
    secret.swap(next);
    return install(why);
  }

  // The per-record nonce: the IV with the sequence number XORed into its end.
  // Takes the sequence number; false when it would wrap.
  bool next_nonce(uint8_t* nonce, std::string& why) {
    if (seq == UINT64_MAX) {
      why = "record sequence number exhausted";
      return false;
    }
    std::memcpy(nonce, iv, kNonce);
    for (int i = 0; i < 8; ++i) nonce[kNonce - 1 - i] ^= static_cast<uint8_t>(seq >> (8 * i));
    ++seq;
    return true;
  }
};

Records::Records() = default;
Records::~Records() = default;

std::unique_ptr<Records> Records::take(SSL* ssl, uint64_t records_read, uint64_t records_written,
                                       std::string& why) {
  Secrets* secrets = kept_secrets(ssl);
  if (SSL_version(ssl) != TLS1_3_VERSION) {
    why = std::string("the session is ") + SSL_get_version(ssl) + ", not TLS 1.3";
    return nullptr;
  }
  if (!secrets || secrets->client.empty() || secrets->server.empty()) {
    why = "no traffic secrets from the key log";
    return nullptr;
  }
  if (SSL_has_pending(ssl)) {
    why = "OpenSSL holds input it has not returned";
    return nullptr;
  }
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  if (!cipher) {
    why = "the session has no cipher";
    return nullptr;
  }
  const bool server = SSL_is_server(ssl);
  // Each direction's secret is its sender's: ours seals, the peer's opens.
  std::vector<uint8_t> sending, receiving;
  sending.swap(server ? secrets->server : secrets->client);
  receiving.swap(server ? secrets->client : secrets->server);
  forget_secrets(ssl);
  auto r = from_secrets(static_cast<uint16_t>(SSL_CIPHER_get_id(cipher) & 0xFFFF), sending,
                        receiving, why);
  OPENSSL_cleanse(sending.data(), sending.size());
  OPENSSL_cleanse(receiving.data(), receiving.size());
  if (!r) return nullptr;
  r->send_->seq = records_written;
  r->receive_->seq = records_read;
  return r;
}

std::unique_ptr<Records> Records::from_secrets(uint16_t suite, const std::vector<uint8_t>& sending,
                                               const std::vector<uint8_t>& receiving,
                                               std::string& why, AeadEngine engine) {
  // The suite's hash (RFC 8446 B.4); make_aead refuses other suites.
  const EVP_MD* md = suite == kAes256GcmSha384 ? EVP_sha384() : EVP_sha256();
  std::unique_ptr<Records> r(new Records);  // private constructor
  r->send_ = std::make_unique<Direction>();
  r->receive_ = std::make_unique<Direction>();
  for (Direction* d : {r->send_.get(), r->receive_.get()}) {
    d->aead = make_aead(suite, d == r->send_.get(), engine, why);
    if (!d->aead) return nullptr;
  }
  if (sending.size() != static_cast<size_t>(EVP_MD_get_size(md)) ||
      receiving.size() != sending.size()) {
    why = "traffic secrets of the wrong size for the cipher suite";
    return nullptr;
  }
  r->send_->secret = sending;
  r->receive_->secret = receiving;
  for (Direction* d : {r->send_.get(), r->receive_.get()}) {
    d->md = md;
    if (!d->install(why)) return nullptr;
  }
  return r;
}

std::string aes_gcm_engine() {
  std::string why;
  auto aead = make_aead(Records::kAes128GcmSha256, true, AeadEngine::Auto, why);
  return aead ? aead->name() : why;
}

std::string Records::aead_name() const {
  return send_->aead->name();
}

size_t Records::seal(uint8_t type, const uint8_t* in, size_t len, uint8_t* out, std::string& why) {
  Direction& d = *send_;
  const size_t body = len + 1 + kTag;
  uint8_t nonce[kNonce];
  if (len > kMaxData) {
    why = "sealing: " + std::to_string(len) + " bytes do not fit one record";
    return 0;
  }
  if (!d.next_nonce(nonce, why)) return 0;
  uint8_t* header = out;
  header[0] = SSL3_RT_APPLICATION_DATA;  // the outer type of every protected record
  header[1] = kLegacyVersion[0];
  header[2] = kLegacyVersion[1];
  header[3] = static_cast<uint8_t>(body >> 8);
  header[4] = static_cast<uint8_t>(body);
  // The additional data is the record header; the inner content type follows
  // the data inside the ciphertext (TLSInnerPlaintext, no padding).
  const bool ok = d.aead->seal(nonce, header, kHeader, in, len, type, out + kHeader);
  OPENSSL_cleanse(nonce, sizeof nonce);
  if (!ok) {
    why = "sealing a record: " + openssl_errors();
    return 0;
  }
  return kHeader + body;
}

size_t Records::seal_data(const uint8_t* in, size_t len, uint8_t* out, std::string& why) {
  return seal(SSL3_RT_APPLICATION_DATA, in, len, out, why);
}

size_t Records::seal_close_notify(uint8_t* out, std::string& why) {
  const uint8_t alert[2] = {SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY};
  return seal(SSL3_RT_ALERT, alert, sizeof alert, out, why);
}

size_t Records::seal_key_update(uint8_t* out, std::string& why) {
  const uint8_t message[kKeyUpdateMessage] = {SSL3_MT_KEY_UPDATE, 0, 0, 1,
                                              SSL_KEY_UPDATE_NOT_REQUESTED};
  size_t n = seal(SSL3_RT_HANDSHAKE, message, sizeof message, out, why);
  if (n == 0 || !send_->update(why)) return 0;
  key_update_owed_ = false;
  return n;
}

Records::Opened Records::open(const uint8_t* in, size_t len, uint8_t* out) {
  auto failed = [](std::string why) {
    return Opened{.kind = Opened::Failed, .why = std::move(why)};
  };
  if (len < kHeader) return {.kind = Opened::NeedMore};
  const size_t body = read_u16(in + 3);
  // Checked before waiting for the body: a peer cannot make us wait for, or
  // buffer, more than one legal record.
  if (in[0] != SSL3_RT_APPLICATION_DATA)
    return failed("unexpected record type " + std::to_string(in[0]) + " after the handshake");
  if (body > kMaxRecord - kHeader)
    return failed("record overflow: " + std::to_string(body) + " bytes");
  if (body < 1 + kTag) return failed("record of " + std::to_string(body) + " bytes is too short");
  if (body - kTag > kMaxInner)
    return failed("record overflow: " + std::to_string(body - kTag) + " bytes of plaintext");
  if (len < kHeader + body) return {.kind = Opened::NeedMore};

  Direction& d = *receive_;
  const size_t inner_len = body - kTag;
  const uint8_t* sealed = in + kHeader;
  uint8_t nonce[kNonce];
  std::string why;
  if (!d.next_nonce(nonce, why)) return failed(why);
  // Nothing decrypted counts before the tag has been checked.
  const bool ok = d.aead->open(nonce, in, kHeader, sealed, inner_len, sealed + inner_len, out);
  OPENSSL_cleanse(nonce, sizeof nonce);
  if (!ok) return failed("bad record MAC: a record does not authenticate");

  // TLSInnerPlaintext: data, content type, zero padding (RFC 8446 5.2).
  size_t end = inner_len;
  while (end > 0 && out[end - 1] == 0) --end;
  if (end == 0) return failed("a record carries no content type");
  const uint8_t type = out[end - 1];
  const size_t data = end - 1;
  const size_t consumed = kHeader + body;
  switch (type) {
    case SSL3_RT_APPLICATION_DATA:
      return {.kind = Opened::Data, .consumed = consumed, .data = data};
    case SSL3_RT_ALERT:
      if (data != 2) return failed("malformed alert");
      if (out[1] == SSL_AD_CLOSE_NOTIFY) return {.kind = Opened::CloseNotify, .consumed = consumed};
      return failed(std::string("the peer sent an alert: ") + SSL_alert_desc_string_long(out[1]));
    case SSL3_RT_HANDSHAKE: {
      // Only a whole KeyUpdate, alone in its record, as OpenSSL sends it.
      if (data != kKeyUpdateMessage || out[0] != SSL3_MT_KEY_UPDATE || out[1] != 0 || out[2] != 0 ||
          out[3] != 1)
        return failed(data == 0 ? std::string("an empty handshake record after the hand-off")
                                : "unexpected handshake message " + std::to_string(out[0]) +
                                      " after the hand-off");
      if (out[4] != SSL_KEY_UPDATE_NOT_REQUESTED && out[4] != SSL_KEY_UPDATE_REQUESTED)
        return failed("KeyUpdate with an invalid request_update");
      if (!d.update(why)) return failed(why);
      key_update_owed_ |= out[4] == SSL_KEY_UPDATE_REQUESTED;
      return {.kind = Opened::KeyUpdated, .consumed = consumed};
    }
    default:
      return failed("unexpected inner content type " + std::to_string(type));
  }
}

}  // namespace xmig::tls
