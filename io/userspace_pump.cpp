// The "userspace" data path: records are sealed and opened on the worker
// thread, and the worker's ring moves the bytes.
//
// Two record protections share one pump (Protection below):
// - tls::Records (TLS 1.3, every connection between two xmig tunnels): the
//   AEAD seals plaintext straight into the send queue and opens records
//   straight into the plaintext buffer, so each byte is touched once per
//   direction in user space;
// - OpenSSL over a Wire, a memory BIO whose write side appends ciphertext to
//   the send queue and whose read side hands OpenSSL received ciphertext: for
//   what tls::Records does not take (TLS 1.2 with `min_version = "1.2"`, or
//   input OpenSSL still held at the hand-off).
// Each direction keeps at most one receive and one send in flight, so bytes
// never reorder, and a receive of up to 256 KiB (16 records) is opened in
// one go.
//
//   plain --recv--> up_in_ --seal--> out_ --send--> TLS socket
//   TLS socket --recv--> down_in_ --open--> down_out_ --send--> plain
//
// Stream ends: plain EOF -> close_notify, then shutdown(SHUT_WR) of the TLS
// socket; close_notify -> shutdown(SHUT_WR) of the plain socket; the local
// application closing with bytes unread (ECONNRESET/EPIPE on the plain
// socket) -> close_notify, and the far side's close_notify is awaited with
// no more data (see io/pump.hpp); anything else (reset, TLS error, TCP EOF
// without close_notify) resets both.
#include <openssl/err.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "base/openssl_errors.hpp"
#include "io/worker.hpp"
#include "tls/records.hpp"

namespace xmig::io {

namespace {

using tls::Records;

constexpr size_t kChunk = 16 * kRecord;  // one receive: 16 full records (256 KiB)
// Received ciphertext: a receive, after the partial record the last one left.
constexpr size_t kInCapacity = kChunk + Records::kMaxRecord;
// Plaintext one round of opening may produce: opening stops at kChunk, and
// one more step yields at most a record's inner plaintext (tls::Records) or
// what OpenSSL returns from a record it had kept.
constexpr size_t kDownCapacity = kChunk + 2 * kRecord;
// Sealed bytes queued for the TLS socket: sealing stops at kChunk queued, and
// one round seals at most one receive (16 records) and a KeyUpdate.
constexpr size_t kOutCapacity = 2 * kChunk + 32 * Records::kOverhead;

// A fixed-size byte buffer that is not zero-filled: its pages become
// resident only when data first lands in them, so an idle stream costs a few
// KiB, not the 1 MiB its buffers can hold (README "Memory").
class Buffer {
 public:
  explicit Buffer(size_t size)
      : bytes_(std::make_unique_for_overwrite<uint8_t[]>(size)), size_(size) {}
  uint8_t* data() { return bytes_.get(); }
  size_t size() const { return size_; }

 private:
  std::unique_ptr<uint8_t[]> bytes_;
  size_t size_;
};

// Sealed records waiting for one send, appended at the end.
class Queue {
 public:
  explicit Queue(size_t capacity) : buffer_(capacity) {}
  uint8_t* data() { return buffer_.data(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() { size_ = 0; }
  // Room for `n` more bytes at the end. Grows only if OpenSSL writes more
  // than kOutCapacity (records it answers with while reading).
  uint8_t* tail(size_t n) {
    if (size_ + n > buffer_.size()) {
      Buffer bigger(std::max(2 * buffer_.size(), size_ + n));
      std::memcpy(bigger.data(), buffer_.data(), size_);
      buffer_ = std::move(bigger);
    }
    return buffer_.data() + size_;
  }
  void commit(size_t n) { size_ += n; }

 private:
  Buffer buffer_;
  size_t size_ = 0;
};

// What the pump needs from a session's record protection.
class Protection {
 public:
  virtual ~Protection() = default;
  // Seals in[0, len) as application data onto `out`.
  virtual bool seal(const uint8_t* in, size_t len, Queue& out, std::string& why) = 0;
  // Puts a KeyUpdate before what is sealed next; that goes under the next key.
  virtual bool key_update(Queue& out, std::string& why) = 0;
  // The peer requested a KeyUpdate that this side has not sent yet.
  virtual bool key_update_owed() const = 0;
  virtual bool close_notify(Queue& out, std::string& why) = 0;

  struct Opened {
    size_t consumed = 0;  // bytes of the input used
    size_t data = 0;      // plaintext written to the front of out
    bool need_more = false;
    bool close_notify = false;
    std::string error = {};  // set: the connection fails
  };
  // Opens from in[0, len) into out, which has room for kDownCapacity - kChunk
  // bytes. `eof`: the peer's TCP FIN came after `in`. Records produced while
  // reading (OpenSSL's answers) go onto `replies`.
  virtual Opened open(const uint8_t* in, size_t len, bool eof, uint8_t* out, Queue& replies) = 0;
};

static_assert(kDownCapacity - kChunk >= Records::kMaxInner);

// TLS 1.3 by tls::Records: the cipher is the copy.
class OwnRecords final : public Protection {
 public:
  explicit OwnRecords(std::unique_ptr<Records> records) : records_(std::move(records)) {}

  bool seal(const uint8_t* in, size_t len, Queue& out, std::string& why) override {
    while (len > 0) {
      const size_t n = std::min(len, Records::kMaxData);
      const size_t sealed = records_->seal_data(in, n, out.tail(n + Records::kOverhead), why);
      if (sealed == 0) return false;
      out.commit(sealed);
      in += n;
      len -= n;
    }
    return true;
  }

  bool key_update(Queue& out, std::string& why) override {
    const size_t n = records_->seal_key_update(out.tail(Records::kKeyUpdateSize), why);
    out.commit(n);
    return n != 0;
  }

  bool key_update_owed() const override { return records_->key_update_owed(); }

  bool close_notify(Queue& out, std::string& why) override {
    const size_t n = records_->seal_close_notify(out.tail(Records::kAlertSize), why);
    out.commit(n);
    return n != 0;
  }

  Opened open(const uint8_t* in, size_t len, bool eof, uint8_t* out, Queue&) override {
    Records::Opened r = records_->open(in, len, out);
    switch (r.kind) {
      case Records::Opened::Data:
        return {.consumed = r.consumed, .data = r.data};
      case Records::Opened::KeyUpdated:
        return {.consumed = r.consumed};
      case Records::Opened::CloseNotify:
        return {.consumed = r.consumed, .close_notify = true};
      case Records::Opened::NeedMore:
        if (!eof) return {.need_more = true};
        return {.error = len == 0 ? "TLS read: connection closed without close_notify"
                                  : "TLS read: connection closed inside a record"};
      case Records::Opened::Failed:
        break;
    }
    return {.error = "TLS read: " + r.why};
  }

 private:
  std::unique_ptr<Records> records_;
};

// ---- OpenSSL over a memory BIO -------------------------------------------------

// Ciphertext between OpenSSL and the pump.
struct Wire {
  Queue* out = nullptr;         // where OpenSSL's records go
  const uint8_t* in = nullptr;  // received, not yet read by OpenSSL
  size_t in_len = 0;
  bool in_eof = false;  // the peer's TCP FIN arrived
};

int wire_write(BIO* b, const char* data, int len) {
  auto* w = static_cast<Wire*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  std::memcpy(w->out->tail(static_cast<size_t>(len)), data, static_cast<size_t>(len));
  w->out->commit(static_cast<size_t>(len));
  return len;
}

int wire_read(BIO* b, char* data, int len) {
  auto* w = static_cast<Wire*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  if (w->in_len == 0) {
    if (w->in_eof) return 0;
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = std::min(w->in_len, static_cast<size_t>(len));
  std::memcpy(data, w->in, n);
  w->in += n;
  w->in_len -= n;
  return static_cast<int>(n);
}

long wire_ctrl(BIO* b, int cmd, long, void*) {
  auto* w = static_cast<Wire*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return w->in_eof && w->in_len == 0;
    case BIO_CTRL_PENDING:
      return static_cast<long>(w->in_len);
    default:
      return 0;
  }
}

int wire_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* wire_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "xmig wire");
    BIO_meth_set_write(m, wire_write);
    BIO_meth_set_read(m, wire_read);
    BIO_meth_set_ctrl(m, wire_ctrl);
    BIO_meth_set_create(m, wire_create);
    return m;
  }();
  return method;
}

std::string ssl_failure(SSL* ssl, int ret, const char* what) {
  int err = SSL_get_error(ssl, ret);
  std::string queue = openssl_errors();
  std::string why = !queue.empty()             ? queue
                    : err == SSL_ERROR_SYSCALL ? "connection closed without close_notify"
                                               : "SSL error " + std::to_string(err);
  return std::string(what) + ": " + why;
}

// SSL_write/SSL_read over a Wire: what tls::Records does not take.
class OpenSslRecords final : public Protection {
 public:
  explicit OpenSslRecords(SSL* ssl) : ssl_(ssl) {}

  // After the hand-off OpenSSL never touches the socket again. It read
  // exactly what the handshake needed; anything it kept buffered stays in its
  // record layer and is opened first.
  bool attach(std::string& why) {
    BIO* bio = BIO_new(wire_method());
    if (!bio) {
      why = "BIO_new: " + openssl_errors();
      return false;
    }
    BIO_set_data(bio, &wire_);
    SSL_set_bio(ssl_, bio, bio);
    SSL_set_read_ahead(ssl_, 1);
    return true;
  }

  bool seal(const uint8_t* in, size_t len, Queue& out, std::string& why) override {
    wire_.out = &out;
    while (len > 0) {
      ERR_clear_error();
      int r = SSL_write(ssl_, in, static_cast<int>(len));
      if (r <= 0) {
        why = ssl_failure(ssl_, r, "TLS write");
        return false;
      }
      in += r;
      len -= static_cast<size_t>(r);
    }
    return true;
  }

  // Sent by OpenSSL with the next SSL_write.
  bool key_update(Queue&, std::string& why) override {
    if (SSL_version(ssl_) != TLS1_3_VERSION) {
      why = std::string("AEAD key limit reached on ") + SSL_get_version(ssl_) +
            ", which has no KeyUpdate; closing before the limit";
      return false;
    }
    if (SSL_key_update(ssl_, SSL_KEY_UPDATE_NOT_REQUESTED) != 1) {
      why = "KeyUpdate: " + openssl_errors();
      return false;
    }
    return true;
  }

  bool key_update_owed() const override { return false; }  // OpenSSL answers on its own

  bool close_notify(Queue& out, std::string& why) override {
    wire_.out = &out;
    ERR_clear_error();
    int r = SSL_shutdown(ssl_);
    if (r < 0) why = ssl_failure(ssl_, r, "TLS close_notify");
    return r >= 0;
  }

  Opened open(const uint8_t* in, size_t len, bool eof, uint8_t* out, Queue& replies) override {
    wire_ = {.out = &replies, .in = in, .in_len = len, .in_eof = eof};
    ERR_clear_error();
    int r = SSL_read(ssl_, out, static_cast<int>(kDownCapacity - kChunk));
    const size_t consumed = len - wire_.in_len;
    if (r > 0) return {.consumed = consumed, .data = static_cast<size_t>(r)};
    switch (SSL_get_error(ssl_, r)) {
      case SSL_ERROR_WANT_READ:
        return {.consumed = consumed, .need_more = true};
      case SSL_ERROR_ZERO_RETURN:
        return {.consumed = consumed, .close_notify = true};
      default:
        return {.error = ssl_failure(ssl_, r, "TLS read")};
    }
  }

 private:
  SSL* ssl_;
  Wire wire_;
};

std::string socket_failure(const char* what, int res) {
  return std::string(what) + ": " + strerror(-res);
}

// ---- the pump ------------------------------------------------------------------

class UserspacePump final : public Pump {
  enum Op : unsigned { RecvPlain, SendTls, RecvTls, SendPlain };
  static_assert(SendPlain <= kOpMask);

 public:
  UserspacePump(Workers::Worker& w, Fd plain, Fd tls_fd, SslPtr ssl, PumpDone done,
                const PumpOptions& options)
      : Pump(w, std::move(plain), std::move(tls_fd), std::move(ssl), std::move(done), "userspace",
             options.live),
        limit_(tls::record_limit(ssl_.get(), options.key_limit_records)),
        records_read_(options.records_read),
        records_written_(options.records_written),
        up_in_(kChunk),
        out_(kOutCapacity),
        tls_sending_(kOutCapacity),
        down_in_(kInCapacity),
        down_out_(kDownCapacity),
        plain_sending_(kDownCapacity) {}

  void start() override {
    std::string why;
    if (auto records = Records::take(ssl_.get(), records_read_, records_written_, why)) {
      protection_ = std::make_unique<OwnRecords>(std::move(records));
    } else {
      spdlog::debug("userspace-openssl: {}", why);
      stats_.mode = "userspace-openssl";
      auto openssl = std::make_unique<OpenSslRecords>(ssl_.get());
      if (!openssl->attach(why)) return fail(why);
      protection_ = std::move(openssl);
    }
    pump_up();
    pump_down();
  }

 private:
  void on_complete(unsigned op, int res) override {
    switch (op) {
      case RecvPlain:
        recv_plain_busy_ = false;
        if (res == -ECONNRESET && local_may_close_early())
          return local_closed(socket_failure("local socket read", res));
        if (res < 0) return fail(socket_failure("local socket read", res));
        if (res == 0) up_eof_ = true;
        up_len_ = static_cast<size_t>(std::max(res, 0));
        up_off_ = 0;
        return pump_up();
      case SendTls:
        if (res < 0) return fail(socket_failure("TLS socket write", res));
        tls_sent_ += static_cast<size_t>(res);
        if (tls_sent_ < tls_sending_.size()) return send_tls_rest();
        tls_sending_.clear();
        send_tls_busy_ = false;
        return pump_up();
      case RecvTls:
        recv_tls_busy_ = false;
        if (res < 0) return fail(socket_failure("TLS socket read", res));
        if (res == 0) in_eof_ = true;
        in_end_ += static_cast<size_t>(std::max(res, 0));
        need_more_ = false;
        return pump_down();
      case SendPlain:
        if (res < 0) return fail(socket_failure("local socket write", res));
        plain_sent_ += static_cast<size_t>(res);
        count_tls_to_plain(static_cast<uint64_t>(res));
        if (plain_sent_ < plain_len_) return send_plain_rest();
        send_plain_busy_ = false;
        return pump_down();
    }
  }

  void on_late_complete(unsigned op, int res) override {
    if (op == SendPlain) count_tls_to_plain(static_cast<uint64_t>(res));
  }

  // The local application closed with bytes unread. Not a transport
  // failure if the far side has nothing more to send: end the plain -> TLS
  // direction as at EOF, and let TLS -> plain wait for close_notify,
  // discarding nothing (any data that still arrives fails the pump).
  void local_closed(const std::string& what) {
    if (local_closed_) return;
    if (send_plain_busy_ && plain_sent_ < plain_len_)
      return fail(what + " with " + std::to_string(plain_len_ - plain_sent_) +
                  " received bytes it can no longer deliver");
    if (down_len_ > 0)
      return fail(what + " with " + std::to_string(down_len_) +
                  " received bytes it can no longer deliver");
    local_closed_ = true;
    local_closed_what_ = what;
    stats_.local_closed_early = true;
    // close_notify goes out only once the far side's has come with no more
    // data (pump_down): a far side still sending must see a failure, not an
    // orderly end.
    if (!down_done_) return pump_down();
    up_eof_ = true;  // it has already: end our side now
    up_len_ = up_off_;
    pump_up();
  }

  // ---- plain -> TLS ------------------------------------------------------------

  // Seals what was received once the send queue has room, keeps one
  // receive in flight, and ends the direction after EOF.
  void pump_up() {
    if (ending()) return;
    if (up_off_ < up_len_ && out_.size() < kChunk && !seal()) return;
    if (up_off_ == up_len_ && !up_eof_ && !recv_plain_busy_) {
      recv_plain_busy_ = true;
      io_uring_prep_recv(sqe(RecvPlain), plain(), up_in_.data(), kChunk, 0);
    }
    if (up_eof_ && up_off_ == up_len_ && !close_notify_queued_) {
      std::string why;
      if (!protection_->close_notify(out_, why)) return fail(why);
      close_notify_queued_ = true;
    }
    flush_tls();
    if (close_notify_queued_ && !send_tls_busy_ && !up_done_) {
      ::shutdown(tls(), SHUT_WR);
      up_done_ = true;
      if (down_done_) succeed();
    }
  }

  // Seals up_in_[up_off_, up_len_), rotating the key before the configured
  // record limit (RFC 8446 5.5) or when the peer asked. False when the pump
  // failed.
  bool seal() {
    std::string why;
    while (up_off_ < up_len_) {
      size_t n = up_len_ - up_off_;
      if (limit_) {
        if (up_records_ >= limit_ && !rotate_key()) return false;
        n = std::min<uint64_t>(n, (limit_ - up_records_) * kRecord);
      }
      if (protection_->key_update_owed() && !protection_->key_update(out_, why)) {
        fail(why);
        return false;
      }
      if (!protection_->seal(up_in_.data() + up_off_, n, out_, why)) {
        fail(why);
        return false;
      }
      up_off_ += n;
      up_records_ += (n + kRecord - 1) / kRecord;
      count_plain_to_tls(n);
    }
    return true;
  }

  bool rotate_key() {
    std::string why;
    if (!protection_->key_update(out_, why)) {
      fail("AEAD key limit: " + std::to_string(limit_) + " records under one key: " + why);
      return false;
    }
    ++stats_.key_updates;
    up_records_ = 0;
    spdlog::info("key update: KeyUpdate #{} sent after {} records under one key (the limit)",
                 stats_.key_updates, limit_);
    return true;
  }

  // Hands what was sealed to a send, one send in flight.
  void flush_tls() {
    if (send_tls_busy_ || out_.empty()) return;
    std::swap(out_, tls_sending_);
    tls_sent_ = 0;
    send_tls_busy_ = true;
    send_tls_rest();
  }

  void send_tls_rest() {
    io_uring_prep_send(sqe(SendTls), tls(), tls_sending_.data() + tls_sent_,
                       tls_sending_.size() - tls_sent_, MSG_NOSIGNAL);
  }

  // ---- TLS -> plain ------------------------------------------------------------

  // Opens what was received while the plaintext buffer has room, keeps one
  // send and one receive in flight, and ends the direction after close_notify.
  void pump_down() {
    if (ending()) return;
    while (!down_eof_ && !need_more_ && down_len_ < kChunk) {
      Protection::Opened r = protection_->open(down_in_.data() + in_begin_, in_end_ - in_begin_,
                                               in_eof_, down_out_.data() + down_len_, out_);
      if (!r.error.empty()) return fail(r.error);
      in_begin_ += r.consumed;
      if (r.data > 0 && local_closed_)
        return fail(local_closed_what_ + ", and the peer sent " + std::to_string(r.data) +
                    " more bytes it can no longer deliver");
      down_len_ += r.data;
      need_more_ = r.need_more;
      down_eof_ = r.close_notify;
    }
    flush_tls();  // opening may produce records (OpenSSL's answers)
    if (!send_plain_busy_ && down_len_ > 0) {
      std::swap(down_out_, plain_sending_);
      plain_len_ = down_len_;
      plain_sent_ = 0;
      down_len_ = 0;
      send_plain_busy_ = true;
      send_plain_rest();
    }
    if (!down_eof_ && need_more_ && !in_eof_ && !recv_tls_busy_) receive_tls();
    if (down_eof_ && !send_plain_busy_ && down_len_ == 0 && !down_done_) {
      if (!local_closed_) ::shutdown(plain(), SHUT_WR);
      down_done_ = true;
      if (local_closed_ && !up_eof_) {
        // Everything the far side sent was delivered: now end our side.
        up_eof_ = true;
        up_len_ = up_off_;
        return pump_up();
      }
      if (up_done_) succeed();
    }
  }

  // Receives after the partial record left from the last receive, moved to
  // the front (at most one record: the rest of the buffer is free).
  void receive_tls() {
    const size_t kept = in_end_ - in_begin_;
    if (in_begin_ > 0 && kept > 0) std::memmove(down_in_.data(), down_in_.data() + in_begin_, kept);
    in_begin_ = 0;
    in_end_ = kept;
    recv_tls_busy_ = true;
    io_uring_prep_recv(sqe(RecvTls), tls(), down_in_.data() + kept, down_in_.size() - kept, 0);
  }

  void send_plain_rest() {
    io_uring_prep_send(sqe(SendPlain), plain(), plain_sending_.data() + plain_sent_,
                       plain_len_ - plain_sent_, MSG_NOSIGNAL);
  }

  uint64_t limit_;  // records per key, 0 = none
  uint64_t up_records_ = 0;
  uint64_t records_read_, records_written_;  // by OpenSSL before the hand-off
  std::unique_ptr<Protection> protection_;

  Buffer up_in_;
  size_t up_len_ = 0, up_off_ = 0;
  bool up_eof_ = false, recv_plain_busy_ = false, close_notify_queued_ = false;
  Queue out_;          // sealed, not yet handed to a send
  Queue tls_sending_;  // the send in flight
  size_t tls_sent_ = 0;
  bool send_tls_busy_ = false, up_done_ = false;

  Buffer down_in_;
  size_t in_begin_ = 0, in_end_ = 0;  // received, not yet opened
  bool recv_tls_busy_ = false, in_eof_ = false, need_more_ = false, down_eof_ = false;
  Buffer down_out_;
  size_t down_len_ = 0;
  Buffer plain_sending_;
  size_t plain_len_ = 0, plain_sent_ = 0;
  bool send_plain_busy_ = false, down_done_ = false;

  bool local_closed_ = false;  // see local_closed()
  std::string local_closed_what_;
};

}  // namespace

std::unique_ptr<Pump> make_userspace_pump(Workers::Worker& worker, Fd plain, Fd tls_fd, SslPtr ssl,
                                          PumpDone done, const PumpOptions& options) {
  return std::make_unique<UserspacePump>(worker, std::move(plain), std::move(tls_fd),
                                         std::move(ssl), std::move(done), options);
}

}  // namespace xmig::io
