#include "tls/records.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>
#include <vector>

#include "base/openssl.hpp"
#include "base/openssl_errors.hpp"
#include "tls/ktls.hpp"
#include "tls/secrets.hpp"

namespace xmig::tls {

namespace {

constexpr uint8_t kLegacyVersion[2] = {0x03, 0x03};  // TLS 1.2 on the wire (RFC 8446 5.1)
constexpr size_t kNonce = 12;
// A KeyUpdate message: type, 24-bit length 1, request_update.
constexpr size_t kKeyUpdateMessage = 5;

uint16_t read_u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

}  // namespace

// One direction's traffic secret, key and sequence number.
struct Records::Direction {
  const EVP_MD* md = nullptr;
  const EVP_CIPHER* cipher = nullptr;
  std::vector<uint8_t> secret;
  uint8_t iv[kNonce] = {};
  uint64_t seq = 0;
  CipherCtxPtr ctx{EVP_CIPHER_CTX_new()};
  bool sealing = true;

  ~Direction() {
    if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
    OPENSSL_cleanse(iv, sizeof iv);
  }

  // Key and IV of the current secret, sequence number 0 (RFC 8446 7.3).
  bool install(std::string& why) {
    uint8_t key[EVP_MAX_KEY_LENGTH];
    const size_t key_len = static_cast<size_t>(EVP_CIPHER_get_key_length(cipher));
    bool ok = ctx && key_len <= sizeof key && expand_label(md, secret, "key", key, key_len) &&
              expand_label(md, secret, "iv", iv, kNonce) &&
              EVP_CipherInit_ex(ctx.get(), cipher, nullptr, nullptr, nullptr, sealing) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_IVLEN, kNonce, nullptr) == 1 &&
              EVP_CipherInit_ex(ctx.get(), nullptr, nullptr, key, nullptr, sealing) == 1;
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
                                               std::string& why) {
  const EVP_MD* md = nullptr;
  const EVP_CIPHER* cipher = nullptr;
  switch (suite) {
    case kAes128GcmSha256:
      md = EVP_sha256();
      cipher = EVP_aes_128_gcm();
      break;
    case kAes256GcmSha384:
      md = EVP_sha384();
      cipher = EVP_aes_256_gcm();
      break;
    case kChacha20Poly1305Sha256:
      md = EVP_sha256();
      cipher = EVP_chacha20_poly1305();
      break;
    default:
      why = "no record protection for cipher suite " + std::to_string(suite);
      return nullptr;
  }
  if (sending.size() != static_cast<size_t>(EVP_MD_get_size(md)) ||
      receiving.size() != sending.size()) {
    why = "traffic secrets of the wrong size for the cipher suite";
    return nullptr;
  }
  std::unique_ptr<Records> r(new Records);  // private constructor
  r->send_ = std::make_unique<Direction>();
  r->receive_ = std::make_unique<Direction>();
  r->send_->secret = sending;
  r->receive_->secret = receiving;
  for (Direction* d : {r->send_.get(), r->receive_.get()}) {
    d->md = md;
    d->cipher = cipher;
    d->sealing = d == r->send_.get();
    if (!d->install(why)) return nullptr;
  }
  return r;
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
  uint8_t* sealed = out + kHeader;
  int n = 0;
  EVP_CIPHER_CTX* c = d.ctx.get();
  // The additional data is the record header; the inner content type follows
  // the data inside the ciphertext (TLSInnerPlaintext, no padding).
  bool ok = EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, nonce) == 1 &&
            EVP_EncryptUpdate(c, nullptr, &n, header, kHeader) == 1 &&
            (len == 0 || EVP_EncryptUpdate(c, sealed, &n, in, static_cast<int>(len)) == 1) &&
            EVP_EncryptUpdate(c, sealed + len, &n, &type, 1) == 1 &&
            EVP_EncryptFinal_ex(c, sealed + len + 1, &n) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, kTag, sealed + len + 1) == 1;
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
  int n = 0;
  EVP_CIPHER_CTX* c = d.ctx.get();
  // The tag is checked (DecryptFinal) before anything decrypted counts.
  bool ok = EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, nonce) == 1 &&
            EVP_DecryptUpdate(c, nullptr, &n, in, kHeader) == 1 &&
            EVP_DecryptUpdate(c, out, &n, sealed, static_cast<int>(inner_len)) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, kTag,
                                const_cast<uint8_t*>(sealed + inner_len)) == 1 &&
            EVP_DecryptFinal_ex(c, out + inner_len, &n) == 1;
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
