// The "userspace" data path: OpenSSL en/decrypts on the worker thread, and
// the worker's ring moves the bytes.
//
// After the hand-off OpenSSL never touches a socket again: its BIO is swapped
// for a Wire, a memory BIO whose write side appends ciphertext to a buffer the
// ring sends, and whose read side hands OpenSSL the ciphertext the ring
// received. Each direction keeps at most one receive and one send in flight,
// so bytes never reorder, and a receive of up to 256 KiB (16 records) is
// decrypted in one go.
//
//   plain --recv--> up_in_ --SSL_write--> wire_.out --send--> TLS socket
//   TLS socket --recv--> down_in_ --SSL_read--> down_out_ --send--> plain
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

namespace xmig::io {

namespace {

constexpr size_t kChunk = 16 * kRecord;  // one receive: 16 full records (256 KiB)
// Plaintext that one round of SSL_read may produce from kChunk of ciphertext
// plus the partial record OpenSSL kept from the last round.
constexpr size_t kDownCapacity = kChunk + 2 * kRecord;

// A fixed-size byte buffer that is not zero-filled: its pages become
// resident only when data first lands in them, so an idle stream costs a few
// KiB, not the 1 MiB its four buffers can hold (README "Memory").
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

// Ciphertext between OpenSSL and the ring.
struct Wire {
  std::vector<uint8_t> out;     // produced by OpenSSL, not yet handed to a send
  const uint8_t* in = nullptr;  // received, not yet read by OpenSSL
  size_t in_len = 0;
  bool in_eof = false;  // the peer's TCP FIN arrived
};

int wire_write(BIO* b, const char* data, int len) {
  auto* w = static_cast<Wire*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  // Same element type on both sides, so libstdc++ copies with memmove; a
  // const char* range would be copied byte by byte (bench: BM_AppendRecord).
  const auto* bytes = reinterpret_cast<const uint8_t*>(data);
  w->out.insert(w->out.end(), bytes, bytes + len);
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

std::string socket_failure(const char* what, int res) {
  return std::string(what) + ": " + strerror(-res);
}

class UserspacePump final : public Pump {
  enum Op : unsigned { RecvPlain, SendTls, RecvTls, SendPlain };
  static_assert(SendPlain <= kOpMask);

 public:
  UserspacePump(Workers::Worker& w, Fd plain, Fd tls_fd, SslPtr ssl, PumpDone done,
                uint64_t key_limit, std::shared_ptr<LiveBytes> live)
      : Pump(w, std::move(plain), std::move(tls_fd), std::move(ssl), std::move(done), "userspace",
             std::move(live)),
        limit_(tls::record_limit(ssl_.get(), key_limit)),
        up_in_(kChunk),
        down_in_(kChunk),
        down_out_(kDownCapacity),
        plain_sending_(kDownCapacity) {
    wire_.out.reserve(2 * kChunk);
    tls_sending_.reserve(2 * kChunk);
  }

  void start() override {
    BIO* bio = BIO_new(wire_method());
    if (!bio) return fail("BIO_new: " + openssl_errors());
    BIO_set_data(bio, &wire_);
    // OpenSSL read exactly what the handshake needed; anything it kept
    // buffered stays in its record layer and is decrypted first.
    SSL_set_bio(ssl_.get(), bio, bio);
    SSL_set_read_ahead(ssl_.get(), 1);
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
        if (res == 0) wire_.in_eof = true;
        wire_.in = down_in_.data();
        wire_.in_len = static_cast<size_t>(std::max(res, 0));
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
                  " bytes still to deliver");
    if (down_len_ > 0)
      return fail(what + " with " + std::to_string(down_len_) + " bytes still to deliver");
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

  // Encrypts what was received once the send queue has room, keeps one
  // receive in flight, and ends the direction after EOF.
  void pump_up() {
    if (ending()) return;
    if (up_off_ < up_len_ && wire_.out.size() < kChunk && !encrypt()) return;
    if (up_off_ == up_len_ && !up_eof_ && !recv_plain_busy_) {
      recv_plain_busy_ = true;
      io_uring_prep_recv(sqe(RecvPlain), plain(), up_in_.data(), kChunk, 0);
    }
    if (up_eof_ && up_off_ == up_len_ && !close_notify_queued_) {
      ERR_clear_error();
      int r = SSL_shutdown(ssl_.get());
      if (r < 0) return fail(ssl_failure(ssl_.get(), r, "TLS close_notify"));
      close_notify_queued_ = true;
    }
    flush_tls();
    if (close_notify_queued_ && !send_tls_busy_ && !up_done_) {
      ::shutdown(tls(), SHUT_WR);
      up_done_ = true;
      if (down_done_) succeed();
    }
  }

  // SSL_write of up_in_[up_off_, up_len_), rotating the key before the
  // configured record limit (RFC 8446 5.5). False when the pump failed.
  bool encrypt() {
    while (up_off_ < up_len_) {
      size_t n = up_len_ - up_off_;
      if (limit_) {
        if (up_records_ >= limit_ && !rotate_key()) return false;
        n = std::min<uint64_t>(n, (limit_ - up_records_) * kRecord);
      }
      ERR_clear_error();
      int r = SSL_write(ssl_.get(), up_in_.data() + up_off_, static_cast<int>(n));
      if (r <= 0) {
        fail(ssl_failure(ssl_.get(), r, "TLS write"));
        return false;
      }
      up_off_ += static_cast<size_t>(r);
      up_records_ += (static_cast<uint64_t>(r) + kRecord - 1) / kRecord;
      count_plain_to_tls(static_cast<uint64_t>(r));
    }
    return true;
  }

  bool rotate_key() {
    if (SSL_version(ssl_.get()) != TLS1_3_VERSION) {
      fail("AEAD key limit: " + std::to_string(limit_) + " records under one key reached on " +
           SSL_get_version(ssl_.get()) + ", which has no KeyUpdate; closing before the limit");
      return false;
    }
    if (SSL_key_update(ssl_.get(), SSL_KEY_UPDATE_NOT_REQUESTED) != 1) {
      fail("KeyUpdate: " + openssl_errors());
      return false;
    }
    ++stats_.key_updates;
    up_records_ = 0;
    spdlog::info("key update: KeyUpdate #{} sent after {} records under one key (the limit)",
                 stats_.key_updates, limit_);
    return true;
  }

  // Hands what OpenSSL produced to a send, one send in flight.
  void flush_tls() {
    if (send_tls_busy_ || wire_.out.empty()) return;
    std::swap(wire_.out, tls_sending_);
    tls_sent_ = 0;
    send_tls_busy_ = true;
    send_tls_rest();
  }

  void send_tls_rest() {
    io_uring_prep_send(sqe(SendTls), tls(), tls_sending_.data() + tls_sent_,
                       tls_sending_.size() - tls_sent_, MSG_NOSIGNAL);
  }

  // ---- TLS -> plain ------------------------------------------------------------

  // Decrypts what was received while the plaintext buffer has room, keeps one
  // send and one receive in flight, and ends the direction after close_notify.
  void pump_down() {
    if (ending()) return;
    while (!down_eof_ && down_len_ < kChunk) {
      ERR_clear_error();
      int r = SSL_read(ssl_.get(), down_out_.data() + down_len_,
                       static_cast<int>(down_out_.size() - down_len_));
      if (r > 0 && local_closed_)
        return fail(local_closed_what_ + ", and the peer sent " + std::to_string(r) +
                    " more bytes it can no longer deliver");
      if (r > 0) {
        down_len_ += static_cast<size_t>(r);
        continue;
      }
      int err = SSL_get_error(ssl_.get(), r);
      if (err == SSL_ERROR_WANT_READ) break;
      if (err == SSL_ERROR_ZERO_RETURN) {
        down_eof_ = true;
        break;
      }
      return fail(ssl_failure(ssl_.get(), r, "TLS read"));
    }
    flush_tls();  // reading may produce records (alerts)
    if (!send_plain_busy_ && down_len_ > 0) {
      std::swap(down_out_, plain_sending_);
      plain_len_ = down_len_;
      plain_sent_ = 0;
      down_len_ = 0;
      send_plain_busy_ = true;
      send_plain_rest();
    }
    if (!down_eof_ && wire_.in_len == 0 && !wire_.in_eof && !recv_tls_busy_) {
      recv_tls_busy_ = true;
      io_uring_prep_recv(sqe(RecvTls), tls(), down_in_.data(), kChunk, 0);
    }
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

  void send_plain_rest() {
    io_uring_prep_send(sqe(SendPlain), plain(), plain_sending_.data() + plain_sent_,
                       plain_len_ - plain_sent_, MSG_NOSIGNAL);
  }

  Wire wire_;
  uint64_t limit_;  // records per key, 0 = none
  uint64_t up_records_ = 0;

  Buffer up_in_;
  size_t up_len_ = 0, up_off_ = 0;
  bool up_eof_ = false, recv_plain_busy_ = false, close_notify_queued_ = false;
  std::vector<uint8_t> tls_sending_;
  size_t tls_sent_ = 0;
  bool send_tls_busy_ = false, up_done_ = false;

  Buffer down_in_;
  bool recv_tls_busy_ = false, down_eof_ = false;
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
                                          PumpDone done, uint64_t key_limit_records,
                                          std::shared_ptr<LiveBytes> live) {
  return std::make_unique<UserspacePump>(worker, std::move(plain), std::move(tls_fd),
                                         std::move(ssl), std::move(done), key_limit_records,
                                         std::move(live));
}

}  // namespace xmig::io
