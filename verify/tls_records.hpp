// TLS record framing of one direction of a TCP stream, as an observer on the
// wire sees it: record types and versions, the hellos (which are in the
// clear), and the application-data bytes (for the entropy measure).
//
// It never decrypts anything and never trusts a length: a record header that
// does not look like TLS ends the framing ("desync") instead of being
// followed, and the hello parser checks every length against what it holds.
#pragma once

#include <openssl/ssl3.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace xmig::verify {

// Shannon entropy of a byte stream, counted incrementally.
class ByteEntropy {
 public:
  void add(const uint8_t* p, size_t n);
  uint64_t bytes() const { return total_; }
  // Bits per byte (0..8); 0 for an empty stream.
  double bits_per_byte() const;

 private:
  std::unique_ptr<std::array<uint64_t, 256>> counts_;  // allocated on first use
  uint64_t total_ = 0;
};

// The largest record body TLS allows (2^14 + 2048, TLS 1.2 ciphertext).
inline constexpr size_t kMaxTlsRecordBody = SSL3_RT_MAX_PLAIN_LENGTH + 2048;

// Record content types run from change_cipher_spec (SSL3_RT_CHANGE_CIPHER_SPEC,
// 20) to heartbeat (RFC 6520; 24, which OpenSSL 3.0 has no name for).
inline constexpr uint8_t kFirstContentType = SSL3_RT_CHANGE_CIPHER_SPEC;
inline constexpr uint8_t kLastContentType = 24;

// True when the SSL3_RT_HEADER_LENGTH (5) bytes at p could start a TLS record:
// a content type kFirstContentType..kLastContentType, version 3.0..3.4, a
// length within kMaxTlsRecordBody.
bool plausible_tls_header(const uint8_t* p);

// True when bytes are only TLS alert records (what a TLS server may answer to
// something that is not TLS), or nothing.
bool only_tls_alerts(std::string_view bytes);

// "TLS_AES_128_GCM_SHA256" for the suites xmig and common stacks use, else "0xC0FF".
std::string cipher_suite_name(uint16_t suite);
// True for AEAD suites (TLS 1.3 suites, *_GCM_*, *_CCM*, CHACHA20_POLY1305).
bool cipher_suite_is_aead(uint16_t suite);
// 0x0304 -> "TLS 1.3"
std::string tls_version_name(uint16_t version);

struct TlsDirectionSummary {
  bool framed = false;     // the first bytes were a TLS record
  bool desync = false;     // later bytes were not TLS framing
  uint64_t desync_at = 0;  // stream offset where framing broke
  bool resynced = false;   // framing was (re)found after a gap or mid-stream start
  // Records by content type: records[type - kFirstContentType].
  uint64_t records[kLastContentType - kFirstContentType + 1] = {};
  uint64_t bad_versions = 0;  // records whose version was not 3.1..3.3 (3.0 is SSL 3)
  bool client_hello = false, server_hello = false;
  uint16_t hello_version = 0;  // ServerHello: negotiated (supported_versions or legacy)
  uint16_t cipher_suite = 0;   // ServerHello: chosen suite
  std::string sni;             // ClientHello: server_name, if any
  std::string alpn;            // ClientHello: the first ALPN protocol offered
  uint64_t total_records() const {
    uint64_t n = 0;
    for (uint64_t r : records) n += r;
    return n;
  }
};

// Parses one direction. Feed in-order bytes; call gap() when bytes were lost
// (capture gap) or start_unknown() before the first byte when the stream was
// joined in the middle: the parser then looks for the framing again.
class TlsRecordParser {
 public:
  TlsRecordParser();
  void start_unknown();
  void feed(const uint8_t* p, size_t n);
  void gap(uint64_t missing);

  const TlsDirectionSummary& summary() const { return s_; }
  const ByteEntropy& app_data() const { return app_; }
  uint64_t offset() const { return offset_; }

 private:
  enum class Mode { Header, Body, Resync, Dead };
  void on_record_start();
  void on_body(const uint8_t* p, size_t n);
  void on_record_end();
  void parse_handshake();
  void resync_scan();

  Mode mode_ = Mode::Header;
  TlsDirectionSummary s_;
  ByteEntropy app_;
  uint8_t header_[SSL3_RT_HEADER_LENGTH] = {};
  size_t header_have_ = 0;
  size_t body_left_ = 0;
  uint8_t type_ = 0;
  bool first_ = true;
  bool hello_search_done_ = false;  // a hello was parsed, or cannot be any more
  uint64_t offset_ = 0;             // stream bytes seen (including gaps)
  std::string handshake_;           // handshake bytes until both hellos are seen (capped)
  std::string resync_;              // bytes held while looking for framing (capped)
};

}  // namespace xmig::verify
