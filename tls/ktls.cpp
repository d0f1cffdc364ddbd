#include "tls/ktls.hpp"

#include <arpa/inet.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "tls/secrets.hpp"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace xmig::tls {

namespace {

void free_secrets(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<Secrets*>(ptr);
}

int secrets_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_secrets);
  return index;
}

bool from_hex(std::string_view hex, std::vector<uint8_t>& out) {
  if (hex.size() % 2) return false;
  out.resize(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// The kernel's crypto_info for one direction of a TLS 1.3 session.
union CryptoInfo {
  tls_crypto_info base;
  tls12_crypto_info_aes_gcm_128 aes128;
  tls12_crypto_info_aes_gcm_256 aes256;
  tls12_crypto_info_chacha20_poly1305 chacha;
};

// Fills `ci` from a traffic secret; returns its size, 0 for an unknown suite.
socklen_t crypto_info_13(SSL* ssl, const std::vector<uint8_t>& secret, uint64_t seq, CryptoInfo& ci,
                         std::string& why) {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(cipher);
  std::string name = SSL_CIPHER_get_name(cipher);
  uint8_t key[32], iv[12], rec_seq[8];
  for (int i = 0; i < 8; ++i) rec_seq[i] = static_cast<uint8_t>(seq >> (56 - 8 * i));
  size_t keylen = name == "TLS_AES_128_GCM_SHA256" ? 16 : 32;
  std::memset(&ci, 0, sizeof ci);
  if (!expand_label(md, secret, "key", key, keylen) || !expand_label(md, secret, "iv", iv, 12)) {
    why = "HKDF-Expand-Label failed";
    return 0;
  }
  socklen_t size = 0;
  ci.base.version = TLS_1_3_VERSION;
  if (name == "TLS_AES_128_GCM_SHA256") {
    ci.base.cipher_type = TLS_CIPHER_AES_GCM_128;
    std::memcpy(ci.aes128.key, key, 16);
    std::memcpy(ci.aes128.salt, iv, 4);
    std::memcpy(ci.aes128.iv, iv + 4, 8);
    std::memcpy(ci.aes128.rec_seq, rec_seq, 8);
    size = sizeof ci.aes128;
  } else if (name == "TLS_AES_256_GCM_SHA384") {
    ci.base.cipher_type = TLS_CIPHER_AES_GCM_256;
    std::memcpy(ci.aes256.key, key, 32);
    std::memcpy(ci.aes256.salt, iv, 4);
    std::memcpy(ci.aes256.iv, iv + 4, 8);
    std::memcpy(ci.aes256.rec_seq, rec_seq, 8);
    size = sizeof ci.aes256;
  } else if (name == "TLS_CHACHA20_POLY1305_SHA256") {
    ci.base.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
    std::memcpy(ci.chacha.key, key, 32);
    std::memcpy(ci.chacha.iv, iv, 12);
    std::memcpy(ci.chacha.rec_seq, rec_seq, 8);
    size = sizeof ci.chacha;
  } else {
    why = "cipher " + name + " has no kernel offload";
  }
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(iv, sizeof iv);
  return size;
}

std::string probe_kernel() {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  std::string why;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || client < 0 ||
      ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      ::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    why = std::string("cannot open a loopback TCP connection to probe kTLS: ") + strerror(errno);
  } else if (::setsockopt(client, SOL_TCP, TCP_ULP, "tls", sizeof "tls") != 0) {
    why = std::string("the kernel refuses the TLS ULP (TCP_ULP \"tls\": ") + strerror(errno) +
          (errno == ENOENT ? "; no tls module" : "") + ")";
  }
  if (client >= 0) ::close(client);
  if (listener >= 0) ::close(listener);
  return why;
}

}  // namespace

Secrets::~Secrets() {
  if (!client.empty()) OPENSSL_cleanse(client.data(), client.size());
  if (!server.empty()) OPENSSL_cleanse(server.data(), server.size());
}

Secrets* kept_secrets(const SSL* ssl) {
  return static_cast<Secrets*>(SSL_get_ex_data(ssl, secrets_index()));
}

bool expand_label(const EVP_MD* md, const std::vector<uint8_t>& secret, const char* label,
                  uint8_t* out, size_t length) {
  std::string full = std::string("tls13 ") + label;
  // HkdfLabel (RFC 8446 7.1): uint16 length, label<7..255>, context<0..255>.
  // Sized once and filled in place: growing it push by push makes GCC 12's
  // -O3 see a write past a zero-size region (-Wstringop-overflow).
  std::vector<uint8_t> info(2 + 1 + full.size() + 1);
  info[0] = static_cast<uint8_t>(length >> 8);
  info[1] = static_cast<uint8_t>(length);
  info[2] = static_cast<uint8_t>(full.size());
  std::copy(full.begin(), full.end(), info.begin() + 3);
  info.back() = 0;  // empty context
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (!kdf) return false;
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (!ctx) return false;
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                       const_cast<char*>(EVP_MD_get0_name(md)), 0),
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()),
                                        secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  bool ok = EVP_KDF_derive(ctx, out, length, params) == 1;
  EVP_KDF_CTX_free(ctx);
  return ok;
}

std::optional<KtlsPolicy> parse_ktls_policy(std::string_view text) {
  if (text == "off") return KtlsPolicy::Off;
  if (text == "auto") return KtlsPolicy::Auto;
  if (text == "required") return KtlsPolicy::Required;
  return std::nullopt;
}

const char* to_string(KtlsPolicy policy) {
  switch (policy) {
    case KtlsPolicy::Off:
      return "off";
    case KtlsPolicy::Auto:
      return "auto";
    case KtlsPolicy::Required:
      return "required";
  }
  return "?";
}

const std::string& ktls_unavailable_reason() {
  static const std::string why = probe_kernel();
  return why;
}

void prepare_session(SSL* ssl, KtlsPolicy policy) {
  if (policy == KtlsPolicy::Off || !ktls_unavailable_reason().empty()) return;
  SSL_set_options(ssl, SSL_OP_ENABLE_KTLS | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_set_ciphersuites(
      ssl, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
  SSL_set_cipher_list(ssl, "ECDHE+CHACHA20:ECDHE+AESGCM:!aNULL:!eNULL");
}

void keylog_callback(const SSL* ssl, const char* line) {
  std::string_view text(line);
  size_t sp1 = text.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : text.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return;
  std::string_view label = text.substr(0, sp1);
  bool client = label == "CLIENT_TRAFFIC_SECRET_0";
  if (!client && label != "SERVER_TRAFFIC_SECRET_0") return;
  Secrets* s = kept_secrets(ssl);
  if (!s) {
    s = new Secrets;
    SSL_set_ex_data(const_cast<SSL*>(ssl), secrets_index(), s);
  }
  from_hex(text.substr(sp2 + 1), client ? s->client : s->server);
}

void forget_secrets(SSL* ssl) {
  delete kept_secrets(ssl);
  SSL_set_ex_data(ssl, secrets_index(), nullptr);
}

Offload complete_offload(SSL* ssl, int fd, uint64_t records_read) {
  Offload o;
  o.tx = BIO_get_ktls_send(SSL_get_wbio(ssl)) != 0;
  o.rx = BIO_get_ktls_recv(SSL_get_rbio(ssl)) != 0;
  Secrets* secrets = kept_secrets(ssl);
  if (!o.tx) {
    o.why = ktls_unavailable_reason().empty()
                ? "OpenSSL did not offload TX (kTLS off for this session or cipher not offloadable)"
                : ktls_unavailable_reason();
  } else if (!o.rx) {
    const std::vector<uint8_t>* secret =
        secrets ? (SSL_is_server(ssl) ? &secrets->client : &secrets->server) : nullptr;
    CryptoInfo ci;
    socklen_t size = 0;
    if (SSL_version(ssl) != TLS1_3_VERSION)
      o.why = "OpenSSL did not offload RX for " + std::string(SSL_get_version(ssl));
    else if (!secret || secret->empty())
      o.why = "no traffic secret from the key log";
    else if (SSL_has_pending(ssl))
      o.why = "OpenSSL holds buffered input; the kernel cannot take over the stream";
    else if ((size = crypto_info_13(ssl, *secret, records_read, ci, o.why)) != 0) {
      if (::setsockopt(fd, SOL_TLS, TLS_RX, &ci, size) == 0)
        o.rx = true;
      else
        o.why = std::string("setsockopt(TLS_RX): ") + strerror(errno);
      OPENSSL_cleanse(&ci, sizeof ci);
    }
  }
  // Without TX in the kernel the userspace data path takes them (tls/records.hpp).
  if (o.tx) forget_secrets(ssl);
  return o;
}

uint64_t record_limit(SSL* ssl, uint64_t configured) {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  if (cipher && std::strstr(SSL_CIPHER_get_name(cipher), "CHACHA20")) return 0;
  return configured;
}

RecordReceive::RecordReceive(void* data, size_t size) {
  iov.iov_base = data;
  iov.iov_len = size;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  reset();
}

void RecordReceive::reset() {
  std::memset(control, 0, sizeof control);  // no type left over from the last receive
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;  // the kernel leaves what it used here
  msg.msg_flags = 0;
}

int RecordReceive::record_type() const {
  // CMSG_FIRSTHDR reads msg_controllen, which the receive set to what it used.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&msg), c))
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
      return *reinterpret_cast<const unsigned char*>(CMSG_DATA(c));
  return 0;
}

RecordMessage::RecordMessage(uint8_t type, const void* data, size_t size) {
  iov.iov_base = const_cast<void*>(data);
  iov.iov_len = size;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_TLS;
  c->cmsg_type = TLS_SET_RECORD_TYPE;
  c->cmsg_len = CMSG_LEN(1);
  *reinterpret_cast<unsigned char*>(CMSG_DATA(c)) = type;
}

}  // namespace xmig::tls
