// TLS record framing as seen on the wire (see tls_records.hpp).
#include "verify/tls_records.hpp"

#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include <cmath>
#include <cstdio>

namespace xmig::verify {

namespace {

// Handshake bytes kept per direction while looking for a hello, and bytes
// held while looking for framing again: both bound memory per flow.
// A hello fits in one record (16 KiB) in practice; framing is confirmed by
// two chained headers, so one record plus two headers is enough.
constexpr size_t kMaxHandshake = 20 * 1024;
constexpr size_t kMaxResync = 24 * 1024;

constexpr size_t kHeader = SSL3_RT_HEADER_LENGTH;           // type, version (2), length (2)
constexpr size_t kHandshakeHeader = SSL3_HM_HEADER_LENGTH;  // type, length (3)
constexpr size_t kExtensionHeader = 4;                      // type (2), length (2)

// The second byte of a protocol version (TLS 1.2 is 3.3 on the wire).
constexpr uint8_t minor_of(int version) {
  return static_cast<uint8_t>(version & 0xff);
}

// A record header's length field (bytes 3 and 4).
size_t record_length(const uint8_t* header) {
  return static_cast<size_t>(header[3]) << 8 | header[4];
}

// Frees a buffer's memory (clear() keeps the capacity).
void release(std::string& s) {
  std::string().swap(s);
}

// A bounds-checked cursor over untrusted bytes: every read says whether it fit.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool u8(uint8_t& v) {
    if (n_ < 1) return false;
    v = p_[0];
    skip_unchecked(1);
    return true;
  }
  bool u16(uint16_t& v) {
    if (n_ < 2) return false;
    v = static_cast<uint16_t>(p_[0] << 8 | p_[1]);
    skip_unchecked(2);
    return true;
  }
  bool skip(size_t k) {
    if (n_ < k) return false;
    skip_unchecked(k);
    return true;
  }
  // A sub-reader over the next k bytes (consumed).
  bool sub(size_t k, Reader& out) {
    if (n_ < k) return false;
    out = Reader(p_, k);
    skip_unchecked(k);
    return true;
  }
  const uint8_t* data() const { return p_; }
  size_t left() const { return n_; }

 private:
  void skip_unchecked(size_t k) {
    p_ += k;
    n_ -= k;
  }
  const uint8_t* p_;
  size_t n_;
};

struct Suite {
  uint16_t id;
  const char* name;
  bool aead;
};
constexpr Suite kSuites[] = {
    {0x1301, "TLS_AES_128_GCM_SHA256", true},
    {0x1302, "TLS_AES_256_GCM_SHA384", true},
    {0x1303, "TLS_CHACHA20_POLY1305_SHA256", true},
    {0x1304, "TLS_AES_128_CCM_SHA256", true},
    {0x1305, "TLS_AES_128_CCM_8_SHA256", true},
    {0xC02B, "ECDHE-ECDSA-AES128-GCM-SHA256", true},
    {0xC02C, "ECDHE-ECDSA-AES256-GCM-SHA384", true},
    {0xC02F, "ECDHE-RSA-AES128-GCM-SHA256", true},
    {0xC030, "ECDHE-RSA-AES256-GCM-SHA384", true},
    {0xCCA8, "ECDHE-RSA-CHACHA20-POLY1305", true},
    {0xCCA9, "ECDHE-ECDSA-CHACHA20-POLY1305", true},
    {0x009C, "AES128-GCM-SHA256", true},
    {0x009D, "AES256-GCM-SHA384", true},
    {0x009E, "DHE-RSA-AES128-GCM-SHA256", true},
    {0x009F, "DHE-RSA-AES256-GCM-SHA384", true},
    {0xC009, "ECDHE-ECDSA-AES128-SHA", false},
    {0xC00A, "ECDHE-ECDSA-AES256-SHA", false},
    {0xC013, "ECDHE-RSA-AES128-SHA", false},
    {0xC014, "ECDHE-RSA-AES256-SHA", false},
    {0xC023, "ECDHE-ECDSA-AES128-SHA256", false},
    {0xC027, "ECDHE-RSA-AES128-SHA256", false},
    {0x002F, "AES128-SHA", false},
    {0x0035, "AES256-SHA", false},
    {0x003C, "AES128-SHA256", false},
    {0x000A, "DES-CBC3-SHA", false},
    {0x0005, "RC4-SHA", false},
};

}  // namespace

void ByteEntropy::add(const uint8_t* p, size_t n) {
  if (n == 0) return;
  if (!counts_) counts_ = std::make_unique<std::array<uint64_t, 256>>();
  auto& c = *counts_;
  for (size_t i = 0; i < n; ++i) ++c[p[i]];
  total_ += n;
}

double ByteEntropy::bits_per_byte() const {
  if (!counts_ || total_ == 0) return 0;
  double h = 0, total = static_cast<double>(total_);
  for (uint64_t c : *counts_) {
    if (c == 0) continue;
    double q = static_cast<double>(c) / total;
    h -= q * std::log2(q);
  }
  return h;
}

bool plausible_tls_header(const uint8_t* p) {
  size_t len = record_length(p);
  return p[0] >= kFirstContentType && p[0] <= kLastContentType && p[1] == SSL3_VERSION_MAJOR &&
         p[2] <= minor_of(TLS1_3_VERSION) && len > 0 && len <= kMaxTlsRecordBody;
}

std::string cipher_suite_name(uint16_t suite) {
  for (const auto& s : kSuites)
    if (s.id == suite) return s.name;
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%04X", suite);
  return buf;
}

bool cipher_suite_is_aead(uint16_t suite) {
  for (const auto& s : kSuites)
    if (s.id == suite) return s.aead;
  return false;
}

std::string tls_version_name(uint16_t v) {
  switch (v) {
    case SSL3_VERSION:
      return "SSL 3.0";
    case TLS1_VERSION:
      return "TLS 1.0";
    case TLS1_1_VERSION:
      return "TLS 1.1";
    case TLS1_2_VERSION:
      return "TLS 1.2";
    case TLS1_3_VERSION:
      return "TLS 1.3";
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "version 0x%04X", v);
  return buf;
}

TlsRecordParser::TlsRecordParser() = default;

void TlsRecordParser::start_unknown() {
  if (offset_ == 0) mode_ = Mode::Resync;
}

void TlsRecordParser::gap(uint64_t missing) {
  offset_ += missing;
  if (mode_ == Mode::Dead) return;
  mode_ = Mode::Resync;
  header_have_ = 0;
  body_left_ = 0;
  release(resync_);
  release(handshake_);
  hello_search_done_ = true;  // a hello after a gap cannot be trusted to be whole
}

void TlsRecordParser::feed(const uint8_t* p, size_t n) {
  while (n > 0) {
    switch (mode_) {
      case Mode::Dead:
        offset_ += n;
        return;
      case Mode::Resync: {
        size_t take = std::min(n, kMaxResync - resync_.size());
        resync_.append(reinterpret_cast<const char*>(p), take);
        offset_ += take;
        p += take;
        n -= take;
        resync_scan();
        break;
      }
      case Mode::Header: {
        size_t take = std::min(n, sizeof header_ - header_have_);
        for (size_t i = 0; i < take; ++i) header_[header_have_ + i] = p[i];
        header_have_ += take;
        offset_ += take;
        p += take;
        n -= take;
        if (header_have_ == sizeof header_) on_record_start();
        break;
      }
      case Mode::Body: {
        size_t take = std::min(n, body_left_);
        on_body(p, take);
        body_left_ -= take;
        offset_ += take;
        p += take;
        n -= take;
        if (body_left_ == 0) on_record_end();
        break;
      }
    }
  }
}

void TlsRecordParser::on_record_start() {
  header_have_ = 0;
  if (!plausible_tls_header(header_)) {
    if (first_) {
      s_.framed = false;
    } else {
      s_.desync = true;
      s_.desync_at = offset_ - sizeof header_;
    }
    first_ = false;
    mode_ = Mode::Dead;
    return;
  }
  if (first_) s_.framed = true;
  first_ = false;
  type_ = header_[0];
  ++s_.records[type_ - kFirstContentType];
  if (header_[2] < minor_of(TLS1_VERSION) || header_[2] > minor_of(TLS1_2_VERSION))
    ++s_.bad_versions;
  body_left_ = record_length(header_);
  mode_ = Mode::Body;
}

void TlsRecordParser::on_body(const uint8_t* p, size_t n) {
  if (type_ == SSL3_RT_APPLICATION_DATA) {
    app_.add(p, n);
  } else if (type_ == SSL3_RT_HANDSHAKE && !hello_search_done_) {
    if (handshake_.size() + n <= kMaxHandshake)
      handshake_.append(reinterpret_cast<const char*>(p), n);
    else
      hello_search_done_ = true;  // no hello this large: stop looking, free below
  }
}

void TlsRecordParser::on_record_end() {
  mode_ = Mode::Header;
  if (type_ == SSL3_RT_HANDSHAKE && !handshake_.empty()) parse_handshake();
  if (hello_search_done_) release(handshake_);
}

void TlsRecordParser::parse_handshake() {
  const auto* base = reinterpret_cast<const uint8_t*>(handshake_.data());
  Reader r(base, handshake_.size());
  while (r.left() >= kHandshakeHeader) {
    uint8_t type = 0, l0 = 0;
    uint16_t l12 = 0;
    Reader save = r;
    r.u8(type);
    r.u8(l0);
    r.u16(l12);
    size_t len = static_cast<size_t>(l0) << 16 | l12;
    Reader msg(nullptr, 0);
    if (!r.sub(len, msg)) {  // incomplete: wait for the next record, if it can fit
      r = save;
      if (len + kHandshakeHeader > kMaxHandshake) hello_search_done_ = true;
      break;
    }
    if (type != SSL3_MT_CLIENT_HELLO && type != SSL3_MT_SERVER_HELLO) continue;
    // Both hellos: legacy_version, random, session id, then what differs.
    uint16_t legacy = 0;
    uint8_t sid_len = 0;
    if (!msg.u16(legacy) || !msg.skip(32) || !msg.u8(sid_len) || !msg.skip(sid_len)) continue;
    uint16_t suite = 0;
    if (type == SSL3_MT_CLIENT_HELLO) {
      uint16_t cs_len = 0;
      uint8_t comp_len = 0;
      if (!msg.u16(cs_len) || !msg.skip(cs_len) || !msg.u8(comp_len) || !msg.skip(comp_len))
        continue;
      s_.client_hello = true;
    } else {
      if (!msg.u16(suite) || !msg.skip(1)) continue;
      s_.server_hello = true;
      s_.cipher_suite = suite;
      s_.hello_version = legacy;
    }
    uint16_t ext_total = 0;
    Reader exts(nullptr, 0);
    if (!msg.u16(ext_total) || !msg.sub(ext_total, exts)) continue;
    while (exts.left() >= kExtensionHeader) {
      uint16_t ext_type = 0, ext_len = 0;
      exts.u16(ext_type);
      exts.u16(ext_len);
      Reader e(nullptr, 0);
      if (!exts.sub(ext_len, e)) break;
      if (type == SSL3_MT_SERVER_HELLO && ext_type == TLSEXT_TYPE_supported_versions) {
        // The chosen version.
        uint16_t v = 0;
        if (e.u16(v)) s_.hello_version = v;
      } else if (type == SSL3_MT_CLIENT_HELLO && ext_type == TLSEXT_TYPE_server_name) {
        uint16_t list = 0, name_len = 0;
        uint8_t name_type = 0;
        if (e.u16(list) && e.u8(name_type) && e.u16(name_len) &&
            name_type == TLSEXT_NAMETYPE_host_name && e.left() >= name_len)
          s_.sni.assign(reinterpret_cast<const char*>(e.data()), std::min<size_t>(name_len, 255));
      } else if (type == SSL3_MT_CLIENT_HELLO &&
                 ext_type == TLSEXT_TYPE_application_layer_protocol_negotiation) {
        uint16_t list = 0;
        uint8_t proto_len = 0;
        if (e.u16(list) && e.u8(proto_len) && e.left() >= proto_len)
          s_.alpn.assign(reinterpret_cast<const char*>(e.data()), proto_len);
      }
    }
  }
  handshake_.erase(0, static_cast<size_t>(r.data() - base));
  if (s_.client_hello || s_.server_hello) hello_search_done_ = true;
  if (hello_search_done_) release(handshake_);
}

void TlsRecordParser::resync_scan() {
  const auto* b = reinterpret_cast<const uint8_t*>(resync_.data());
  size_t n = resync_.size();
  for (size_t i = 0; i + kHeader <= n; ++i) {
    if (!plausible_tls_header(b + i)) continue;
    size_t next = i + kHeader + record_length(b + i);
    if (next + kHeader > n) {
      // Cannot confirm yet: keep from i and wait for more bytes.
      resync_.erase(0, i);
      if (resync_.size() >= kMaxResync) resync_.erase(0, 1);  // cannot ever confirm
      return;
    }
    if (!plausible_tls_header(b + next)) continue;
    // Two chained headers: framing found. Replay the held bytes from i.
    std::string held = resync_.substr(i);
    release(resync_);
    s_.resynced = true;
    mode_ = Mode::Header;
    header_have_ = 0;
    offset_ -= held.size();
    feed(reinterpret_cast<const uint8_t*>(held.data()), held.size());
    return;
  }
  // Nothing plausible: keep the last kHeader - 1 bytes (a header may straddle).
  if (n > kHeader - 1) resync_.erase(0, n - (kHeader - 1));
}

bool only_tls_alerts(std::string_view reply) {
  while (!reply.empty()) {
    if (reply.size() < SSL3_RT_HEADER_LENGTH) return false;
    size_t len = static_cast<uint8_t>(reply[3]) * 256u + static_cast<uint8_t>(reply[4]);
    if (static_cast<uint8_t>(reply[0]) != SSL3_RT_ALERT || reply[1] != SSL3_VERSION_MAJOR ||
        reply.size() < SSL3_RT_HEADER_LENGTH + len)
      return false;
    reply.remove_prefix(SSL3_RT_HEADER_LENGTH + len);
  }
  return true;
}

}  // namespace xmig::verify
