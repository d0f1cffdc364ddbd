// The "ktls-splice" data path: the kernel holds both TLS keys, and bytes move
// socket -> pipe -> socket with io_uring splice, never entering user space.
//
//   plain --splice--> up pipe --splice--> kTLS socket (the kernel encrypts)
//   kTLS socket --splice--> down pipe --splice--> plain (the kernel decrypts)
//
// Each direction is sequential (fill the pipe, drain it, repeat; the receive
// side in hard-linked chains, see splice_down_in), so a pipe holds at most one
// splice's worth when a socket is spliced into it: no operation waits on a
// full pipe, and bytes never reorder.
//
// Records that are not application data make the kTLS splice fail (EINVAL or
// EIO); the record is then read with recvmsg + TLS_GET_RECORD_TYPE:
// close_notify ends the direction cleanly, a NewSessionTicket is skipped, and
// anything else (another alert, a KeyUpdate the kernel cannot follow) ends the
// connection with the reason logged: never a corrupt byte.
#include <fcntl.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/worker.hpp"

namespace xmig::io {

namespace {

constexpr size_t kPipeSize = 1024 * 1024;
constexpr uint64_t kRecord = 16384;

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

class SplicePump final : public Pump {
  enum Op : unsigned { UpIn, UpOut, DownIn, DownOut, CloseNotify, DownRest };

 public:
  SplicePump(Workers::Worker& w, Fd plain, Fd tls_fd, tls::SslPtr ssl, PumpDone done,
             uint64_t key_limit)
      : Pump(w, std::move(plain), std::move(tls_fd), std::move(ssl), std::move(done),
             "ktls-splice"),
        limit_(tls::record_limit(ssl_.get(), key_limit)),
        cipher_(SSL_get_cipher_name(ssl_.get())) {}

  void start() override {
    if (!up_.open() || !down_.open()) return fail(std::string("pipe: ") + strerror(errno));
    // io_uring runs a splice in its worker pool, as a blocking call: on a
    // non-blocking socket it would just fail with EAGAIN instead of waiting.
    for (int fd : {plain(), tls()}) {
      int flags = ::fcntl(fd, F_GETFL);
      if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        return fail(std::string("fcntl(O_NONBLOCK): ") + strerror(errno));
    }
    splice_up_in();
    splice_down_in();
  }

 private:
  void on_complete(unsigned op, int res, uint32_t) override {
    switch (op) {
      case UpIn:
        if (res < 0) return fail(socket_failure("local socket read", res));
        if (res == 0) return send_close_notify();
        up_pending_ = static_cast<size_t>(res);
        if (!count_records(up_pending_)) return;
        return splice_up_out();
      case UpOut:
        if (res <= 0) return fail(socket_failure("TLS socket write", res ? res : -EPIPE));
        up_pending_ -= static_cast<size_t>(res);
        stats_.plain_to_tls += static_cast<uint64_t>(res);
        return up_pending_ ? splice_up_out() : splice_up_in();
      case CloseNotify:
        if (res < 0) return fail(socket_failure("TLS close_notify", res));
        ::shutdown(tls(), SHUT_WR);
        up_done_ = true;
        if (down_done_) succeed();
        return;
      case DownIn:
        --chain_left_;
        if (res > 0)
          down_pending_ += static_cast<size_t>(res);
        else if (!chain_stopped_) {
          chain_stopped_ = true;  // later splices of the chain fail the same way
          chain_stop_ = res;
        }
        return after_down_op();
      case DownOut:
      case DownRest:
        if (op == DownOut) --chain_left_;
        if (res == -EAGAIN && op == DownOut) return after_down_op();  // the pipe was empty
        if (res <= 0) return fail(socket_failure("local socket write", res ? res : -EPIPE));
        down_pending_ -= static_cast<size_t>(res);
        stats_.tls_to_plain += static_cast<uint64_t>(res);
        if (op == DownRest) rest_busy_ = false;
        return after_down_op();
    }
  }

  // A splice blocks in io_uring's worker pool; a cancellation (which then
  // interrupts it) must name its output file: the pipes' ends.
  std::vector<int> other_files() const override {
    return {up_.read.get(), up_.write.get(), down_.read.get(), down_.write.get()};
  }

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

  void send_close_notify() {
    io_uring_prep_sendmsg(sqe(CloseNotify), tls(), &close_notify_.msg, MSG_NOSIGNAL);
  }

  // ---- TLS -> plain ------------------------------------------------------------

  // Linux 6.1 splices one record (at most 16 KiB) per call out of a kTLS
  // socket. To spend one ring entry on several records, a chain of kChain
  // (socket -> pipe, pipe -> plain) pairs is submitted at once, hard-linked
  // so it runs in order even when a splice is short. The pipe -> plain half
  // does not wait on the pipe (SPLICE_F_NONBLOCK: -EAGAIN when a socket ->
  // pipe splice before it brought nothing); the plain socket stays blocking.
  // The first socket -> pipe that brings no data (EOF, a non-data record, an
  // error) ends the chain's meaning: the rest fail the same way and are
  // ignored, and the stop is handled once the chain has completed and the
  // pipe is empty.
  static constexpr int kChain = 8;

  void splice_down_in() {
    chain_left_ = 2 * kChain;
    chain_stopped_ = false;
    worker_.ring().reserve(2 * kChain);
    for (int i = 0; i < kChain; ++i) {
      io_uring_sqe* in = sqe(DownIn);
      io_uring_prep_splice(in, tls(), -1, down_.write.get(), -1,
                           static_cast<unsigned>(down_.capacity), 0);
      in->flags |= IOSQE_IO_HARDLINK;
      io_uring_sqe* out = sqe(DownOut);
      io_uring_prep_splice(out, down_.read.get(), -1, plain(), -1,
                           static_cast<unsigned>(down_.capacity), SPLICE_F_NONBLOCK);
      if (i + 1 < kChain) out->flags |= IOSQE_IO_HARDLINK;
    }
  }

  // After each completion of the down direction: once the chain is done,
  // deliver what is left in the pipe, then handle a stop or start a new chain.
  void after_down_op() {
    if (chain_left_ > 0 || rest_busy_) return;
    if (down_pending_ > 0) {
      rest_busy_ = true;
      io_uring_prep_splice(sqe(DownRest), down_.read.get(), -1, plain(), -1,
                           static_cast<unsigned>(down_pending_), 0);
      return;
    }
    if (!chain_stopped_) return splice_down_in();
    int res = chain_stop_;
    if (res == 0) return fail("TLS read: connection closed without close_notify");
    if (res == -EINVAL || res == -EIO) return control_record();
    if (res == -EBADMSG) return fail("TLS read: a record failed authentication (bad MAC)");
    return fail(socket_failure("TLS socket read", res));
  }

  // The next record is not application data: read it and decide.
  void control_record() {
    tls::ControlRecord r = tls::read_control_record(tls());
    if (r.error) return fail(std::string("TLS read: ") + strerror(r.error));
    if (r.type == 21 && r.size >= 2) {
      if (r.data[1] != 0)  // not close_notify
        return fail(std::string("TLS alert from the peer: ") +
                    SSL_alert_desc_string_long(r.data[1]));
      ::shutdown(plain(), SHUT_WR);
      down_done_ = true;
      if (up_done_) succeed();
      return;
    }
    if (r.type == 22 && r.size >= 1 && r.data[0] == 4)  // NewSessionTicket: not used
      return splice_down_in();
    if (r.type == 22 && r.size >= 1 && r.data[0] == 24)
      return fail(
          "TLS read: the peer rotated its key (KeyUpdate) and kTLS on this system cannot follow");
    if (r.type == 23)
      return fail("TLS read: splice refused a data record (" + std::to_string(r.size) +
                  " bytes read by recvmsg); closing rather than risk the stream");
    return fail("TLS read: unexpected record type " + std::to_string(r.type));
  }

  uint64_t limit_;
  std::string cipher_;
  uint64_t up_records_ = 0;
  Pipe up_, down_;
  size_t up_pending_ = 0, down_pending_ = 0;
  int chain_left_ = 0;  // operations of the current down chain not yet completed
  bool chain_stopped_ = false, rest_busy_ = false;
  int chain_stop_ = 0;  // result of the chain's first socket -> pipe that brought nothing
  bool up_done_ = false, down_done_ = false;
  tls::AlertMessage close_notify_{1, 0};
};

}  // namespace

std::unique_ptr<Pump> make_splice_pump(Workers::Worker& worker, Fd plain, Fd tls_fd,
                                       tls::SslPtr ssl, PumpDone done, uint64_t key_limit_records) {
  return std::make_unique<SplicePump>(worker, std::move(plain), std::move(tls_fd), std::move(ssl),
                                      std::move(done), key_limit_records);
}

}  // namespace xmig::io
