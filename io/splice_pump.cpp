// The "ktls-splice" data path: the kernel holds both TLS keys and does all
// the crypto; OpenSSL never sees a payload byte.
//
//   plain --splice--> up pipe --splice--> kTLS socket (the kernel encrypts)
//   kTLS socket --recvmsg--> buffer --send--> plain (the kernel decrypts)
//
// TX is zero-copy: splices of up to a pipe's size, fill then drain, so a pipe
// holds at most one splice's worth and bytes never reorder.
//
// RX reads the decrypted records into a user-space buffer (one copy): Linux
// 6.1's tls_sw_splice_read hands out one record (16 KiB) per splice, so a
// splice path costs two splices per record, each run by an io_uring worker
// thread (~73,000 io_uring_enter calls per GiB even in hard-linked chains).
// One recvmsg returns every record that has arrived, up to 256 KiB, and
// io_uring waits for it with a poll instead of a thread. In the test VM
// (docs/perf-datapath.md) that took the receiving tunnel from 60,000-100,000
// to 19,000-25,000 io_uring_enter calls per GiB and its CPU down by 25-40 %.
// Two buffers: one recvmsg in flight while the other is sent to the plain
// socket, one send at a time, so bytes never reorder.
//
// Records that are not application data: recvmsg reports the record type
// (TLS_GET_RECORD_TYPE) and returns such a record on its own, after the data
// before it. close_notify ends the direction cleanly once everything before it
// is delivered, a NewSessionTicket is skipped, and anything else (another
// alert, a KeyUpdate the kernel cannot follow) ends the connection with the
// reason logged: never a corrupt byte.
#include <fcntl.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "io/worker.hpp"

namespace xmig::io {

namespace {

constexpr size_t kPipeSize = 1024 * 1024;
// What one recvmsg may return: 16 records (256 KiB). More would rarely fill (a
// receive returns the records that have arrived) and only cost memory per
// connection.
constexpr size_t kRecvBuffer = 16 * kRecord;

struct Pipe {
  Fd read, write;
  size_t capacity = 0;
  // False with errno set when the pipe cannot be made.
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    read = Fd(fds[0]);
    write = Fd(fds[1]);
    ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(kPipeSize));  // best effort
    int size = ::fcntl(fds[1], F_GETPIPE_SZ);
    capacity = size > 0 ? static_cast<size_t>(size) : 65536;
    return true;
  }
};

std::string socket_failure(const char* what, int res) {
  return std::string(what) + ": " + strerror(-res);
}

// One receive buffer of the TLS -> plain direction. The recvmsg message
// lives next to it: io_uring writes back into it when the receive completes.
struct DownBuffer {
  DownBuffer()
      : data(std::make_unique_for_overwrite<uint8_t[]>(kRecvBuffer)),
        recv(data.get(), kRecvBuffer) {}
  std::unique_ptr<uint8_t[]> data;
  tls::RecordReceive recv;
  size_t size = 0;  // bytes received
  size_t sent = 0;  // of which delivered to the plain socket
};

class SplicePump final : public Pump {
  enum Op : unsigned { UpIn, UpOut, DownRecv, DownSend, CloseNotify };
  static_assert(CloseNotify <= kOpMask);

 public:
  SplicePump(Workers::Worker& w, Fd plain, Fd tls_fd, SslPtr ssl, PumpDone done, uint64_t key_limit,
             std::shared_ptr<LiveBytes> live)
      : Pump(w, std::move(plain), std::move(tls_fd), std::move(ssl), std::move(done), "ktls-splice",
             std::move(live)),
        limit_(tls::record_limit(ssl_.get(), key_limit)),
        cipher_(SSL_get_cipher_name(ssl_.get())) {}

  void start() override {
    if (!up_.open()) return fail(std::string("pipe: ") + strerror(errno));
    // io_uring runs a splice in its worker pool, as a blocking call: on a
    // non-blocking socket it would just fail with EAGAIN instead of waiting.
    // The recvmsg and send of the other direction do not mind: io_uring tries
    // them with MSG_DONTWAIT and waits for readiness with a poll.
    for (int fd : {plain(), tls()}) {
      int flags = ::fcntl(fd, F_GETFL);
      if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        return fail(std::string("fcntl(O_NONBLOCK): ") + strerror(errno));
    }
    splice_up_in();
    start_down_recv();
  }

 private:
  void on_complete(unsigned op, int res) override {
    switch (op) {
      case UpIn:
        if (res == -ECONNRESET && local_may_close_early())
          return local_closed(socket_failure("local socket read", res));
        if (res < 0) return fail(socket_failure("local socket read", res));
        if (res == 0) return send_close_notify();
        up_pending_ = static_cast<size_t>(res);
        if (!count_records(up_pending_)) return;
        return splice_up_out();
      case UpOut:
        if (res <= 0) return fail(socket_failure("TLS socket write", res ? res : -EPIPE));
        up_pending_ -= static_cast<size_t>(res);
        count_plain_to_tls(static_cast<uint64_t>(res));
        return up_pending_ ? splice_up_out() : splice_up_in();
      case CloseNotify:
        if (res < 0) return fail(socket_failure("TLS close_notify", res));
        ::shutdown(tls(), SHUT_WR);
        up_done_ = true;
        if (down_done_) succeed();
        return;
      case DownRecv:
        return on_down_recv(res);
      case DownSend:
        return on_down_send(res);
    }
  }

  void on_late_complete(unsigned op, int res) override {
    if (op == UpOut) count_plain_to_tls(static_cast<uint64_t>(res));
    if (op == DownSend) count_tls_to_plain(static_cast<uint64_t>(res));
  }

  // A splice blocks in io_uring's worker pool; a cancellation (which then
  // interrupts it) must name its output file: the pipes' ends.
  std::vector<int> other_files() const override { return {up_.read.get(), up_.write.get()}; }

  // ---- plain -> TLS ------------------------------------------------------------

  void splice_up_in() {
    io_uring_prep_splice(sqe(UpIn), plain(), -1, up_.write.get(), -1,
                         static_cast<unsigned>(up_.capacity), 0);
  }

  void splice_up_out() {
    io_uring_prep_splice(sqe(UpOut), up_.read.get(), -1, tls(), -1,
                         static_cast<unsigned>(up_pending_), 0);
  }

  // The kernel cuts at most one record per 16 KiB of a splice, plus one short
  // record at its end. Neither OpenSSL 3.0 nor kernels before 6.14 can rotate
  // a kTLS key, so a cipher with a record limit closes the connection with a
  // clear error before the limit (RFC 8446 5.5) instead of exceeding it.
  bool count_records(size_t bytes) {
    up_records_ += (bytes + kRecord - 1) / kRecord + 1;
    if (!limit_ || up_records_ <= limit_) return true;
    fail("AEAD key limit: " + cipher_ + " may protect " + std::to_string(limit_) +
         " records under one key and kTLS cannot rotate keys on this system; closing before "
         "the limit (fix: allow TLS_CHACHA20_POLY1305_SHA256, which kTLS hosts prefer)");
    return false;
  }

  // The local application closed with bytes unread (io/pump.hpp): not a
  // transport failure if everything received was delivered and nothing more
  // comes; the far side gets close_notify.
  void local_closed(const std::string& what) {
    if (down_full_ > 0) return fail(what + " with received bytes it can no longer deliver");
    local_closed_ = what;
    stats_.local_closed_early = true;
    // close_notify goes out once the far side's has come with no more data
    // (end_down): a far side still sending must see a failure.
    if (down_done_) send_close_notify();  // it has already
  }

  void send_close_notify() {
    io_uring_prep_sendmsg(sqe(CloseNotify), tls(), &close_notify_.record.msg, MSG_NOSIGNAL);
  }

  // ---- TLS -> plain ------------------------------------------------------------

  // The buffer the next receive fills: the one after the full ones.
  DownBuffer& free_buffer() { return down_[(down_head_ + down_full_) % 2]; }

  // Receive the records that have arrived (up to 256 KiB) with their type.
  void start_down_recv() {
    DownBuffer& b = free_buffer();
    b.recv.reset();
    down_receiving_ = true;
    io_uring_prep_recvmsg(sqe(DownRecv), tls(), &b.recv.msg, 0);
  }

  void on_down_recv(int res) {
    down_receiving_ = false;
    if (res == -EBADMSG) return fail("TLS read: a record failed authentication (bad MAC)");
    if (res < 0) return fail(socket_failure("TLS socket read", res));
    DownBuffer& b = free_buffer();
    int type = b.recv.record_type();
    if (res == 0 && type == 0) return fail("TLS read: connection closed without close_notify");
    if (type != 0 && type != SSL3_RT_APPLICATION_DATA)
      return control_record(type, b.data.get(), static_cast<size_t>(res));
    if (res == 0) return start_down_recv();  // an empty data record
    if (!local_closed_.empty())
      return fail(local_closed_ + ", and the peer sent " + std::to_string(res) +
                  " more bytes it can no longer deliver");
    b.size = static_cast<size_t>(res);
    b.sent = 0;
    ++down_full_;
    if (!down_sending_) start_down_send();
    if (down_full_ < 2) start_down_recv();
  }

  // Deliver the oldest full buffer, one send at a time. MSG_WAITALL makes
  // io_uring send the rest of a short send itself (once the socket has room),
  // so one entry usually delivers the whole buffer.
  void start_down_send() {
    DownBuffer& b = down_[down_head_];
    down_sending_ = true;
    io_uring_prep_send(sqe(DownSend), plain(), b.data.get() + b.sent, b.size - b.sent,
                       MSG_NOSIGNAL | MSG_WAITALL);
  }

  void on_down_send(int res) {
    down_sending_ = false;
    if (res <= 0) return fail(socket_failure("local socket write", res ? res : -EPIPE));
    DownBuffer& b = down_[down_head_];
    b.sent += static_cast<size_t>(res);
    count_tls_to_plain(static_cast<uint64_t>(res));
    if (b.sent < b.size) return start_down_send();  // still short: the rest first
    down_head_ ^= 1;
    --down_full_;
    if (down_full_ > 0) start_down_send();
    if (down_closing_) {
      if (down_full_ == 0) end_down();
      return;
    }
    if (!down_receiving_) start_down_recv();
  }

  // A record that is not application data, returned on its own by recvmsg
  // (the data before it came with earlier receives).
  void control_record(int type, const uint8_t* data, size_t size) {
    if (type == SSL3_RT_ALERT && size >= 2) {  // level, description
      if (data[1] != SSL_AD_CLOSE_NOTIFY)
        return fail(std::string("TLS alert from the peer: ") + SSL_alert_desc_string_long(data[1]));
      down_closing_ = true;  // nothing more is received
      if (down_full_ == 0) end_down();
      return;  // else the send that empties the buffers ends the direction
    }
    // A handshake record: the message type comes first.
    if (type == SSL3_RT_HANDSHAKE && size >= 1 && data[0] == SSL3_MT_NEWSESSION_TICKET)
      return start_down_recv();  // not used
    if (type == SSL3_RT_HANDSHAKE && size >= 1 && data[0] == SSL3_MT_KEY_UPDATE)
      return fail(
          "TLS read: the peer rotated its key (KeyUpdate) and kTLS on this system cannot follow");
    return fail("TLS read: unexpected record type " + std::to_string(type));
  }

  // close_notify, and everything before it delivered: EOF to the plain side.
  void end_down() {
    if (local_closed_.empty()) ::shutdown(plain(), SHUT_WR);
    down_done_ = true;
    if (!local_closed_.empty()) return send_close_notify();  // up ends on its completion
    if (up_done_) succeed();
  }

  uint64_t limit_;
  std::string cipher_;
  std::string local_closed_;  // why, once the local application closed early
  uint64_t up_records_ = 0;
  Pipe up_;
  size_t up_pending_ = 0;
  DownBuffer down_[2];
  unsigned down_head_ = 0;  // the buffer delivered next
  unsigned down_full_ = 0;  // buffers received and not yet fully delivered (0..2)
  bool down_receiving_ = false, down_sending_ = false;
  bool down_closing_ = false;  // close_notify received: end once delivered
  bool up_done_ = false, down_done_ = false;
  tls::AlertMessage close_notify_{SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY};
};

}  // namespace

std::unique_ptr<Pump> make_splice_pump(Workers::Worker& worker, Fd plain, Fd tls_fd, SslPtr ssl,
                                       PumpDone done, uint64_t key_limit_records,
                                       std::shared_ptr<LiveBytes> live) {
  return std::make_unique<SplicePump>(worker, std::move(plain), std::move(tls_fd), std::move(ssl),
                                      std::move(done), key_limit_records, std::move(live));
}

}  // namespace xmig::io
