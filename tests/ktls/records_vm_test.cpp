// The receive direction of the ktls-splice pump against records a tunnel
// never sends: session tickets between data, a KeyUpdate, an alert, a forged
// record, a TCP close without close_notify. Runs inside the test VM (see
// ktls_vm_test.cpp); on a kernel without kTLS every test is skipped.
//
// Setup of each test: a TCP connection on loopback; its client end is a kTLS
// session handed to a pump (io::Workers, ktls = required) whose plain side is
// one end of a socketpair (`local_`); its server end (`peer_`) is a plain
// OpenSSL 3.0 session, with kTLS TX only where a test needs to send a record
// type OpenSSL has no call for. The pass criterion opens each test.
#include <gtest/gtest.h>
#include <linux/tls.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <csignal>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "base/openssl.hpp"
#include "harness/streams.hpp"
#include "io/pump.hpp"
#include "tests/io/pump_result.hpp"
#include "tests/ktls/ktls_test.hpp"
#include "tls/ktls.hpp"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace xmig::test {

using namespace harness;

namespace {

using namespace std::chrono_literals;

// Deterministic bytes, different for each `seed`.
std::string pattern(size_t size, unsigned seed) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + seed * 7 + i / 251) & 0xff);
  return s;
}

// Everything readable on `fd` until EOF or an error (named in `error`).
std::string read_all(int fd, std::string& error) {
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = strerror(errno);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

class KtlsRecords : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tls::ktls_unavailable_reason().empty())
      GTEST_SKIP() << "no kTLS here: " << tls::ktls_unavailable_reason();
    std::signal(SIGPIPE, SIG_IGN);  // the peer may write to a connection the pump has reset
  }

  // Handshake (TLS 1.3) between the kTLS client and the peer; the pump is
  // not started yet, so what the peer sends first queues up in the socket.
  void connect(bool peer_ktls_tx) {
    PkeyPtr key(EVP_EC_gen("P-256"));
    ASSERT_TRUE(key);
    X509Ptr cert(X509_new());
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_set_pubkey(cert.get(), key.get());
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("peer"), -1, -1, 0);
    X509_set_issuer_name(cert.get(), name);
    ASSERT_GT(X509_sign(cert.get(), key.get(), EVP_sha256()), 0);

    peer_ctx_.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX_set_min_proto_version(peer_ctx_.get(), TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(peer_ctx_.get(), 0);  // tickets only when a test asks
    ASSERT_EQ(SSL_CTX_use_certificate(peer_ctx_.get(), cert.get()), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey(peer_ctx_.get(), key.get()), 1);
    if (peer_ktls_tx) SSL_CTX_set_options(peer_ctx_.get(), SSL_OP_ENABLE_KTLS);
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_min_proto_version(client_ctx_.get(), TLS1_3_VERSION);
    SSL_CTX_set_verify(client_ctx_.get(), SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_keylog_callback(client_ctx_.get(), tls::keylog_callback);  // RX key for the kernel

    auto listener = Listener::tcp();
    client_fd_ = connect_tcp(listener.port());
    peer_fd_ = listener.accept(5s);
    ASSERT_TRUE(client_fd_ && peer_fd_);
    peer_.reset(SSL_new(peer_ctx_.get()));
    SSL_set_fd(peer_.get(), peer_fd_.get());
    client_.reset(SSL_new(client_ctx_.get()));
    tls::prepare_session(client_.get(), tls::KtlsPolicy::Required);
    SSL_set_fd(client_.get(), client_fd_.get());
    auto accepted = std::async(std::launch::async, [&] { return SSL_accept(peer_.get()); });
    ASSERT_EQ(SSL_connect(client_.get()), 1);
    ASSERT_EQ(accepted.get(), 1);
    if (peer_ktls_tx) {
      ASSERT_NE(BIO_get_ktls_send(SSL_get_wbio(peer_.get())), 0);
    }
  }

  // Runs what the peer sends on its own thread (a write may wait for the
  // pump to read), gives it up to 300 ms to queue up, then starts the pump.
  template <class F>
  void peer_sends_then_start_pump(F&& send) {
    auto sending = std::async(std::launch::async, std::forward<F>(send));
    sending.wait_for(300ms);
    ASSERT_NO_FATAL_FAILURE(start_pump());
    peer_sent_ = std::move(sending);
  }

  // Hands the client end to a ktls-splice pump; `local_` is its plain side.
  void start_pump() {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    local_ = Fd(sv[1]);
    workers_.emplace(1);
    workers_->start_pump(Fd(sv[0]), std::move(client_fd_), std::move(client_), result_.callback(),
                         io::PumpOptions{.ktls = tls::KtlsPolicy::Required});
  }

  // Application data from the peer (user-space OpenSSL or its kTLS TX).
  void peer_write(const std::string& data) {
    EXPECT_EQ(SSL_write(peer_.get(), data.data(), static_cast<int>(data.size())),
              static_cast<int>(data.size()));
  }

  // One record of `type` from the peer's kTLS TX socket.
  void peer_record(uint8_t type, std::vector<uint8_t> body) {
    tls::RecordMessage record(type, body.data(), body.size());
    EXPECT_EQ(::sendmsg(peer_fd_.get(), &record.msg, MSG_NOSIGNAL),
              static_cast<ssize_t>(body.size()));
  }

  // Reads what the pump delivers until it fails, and checks that it ended
  // with `reason` and delivered only a prefix of `sent`, never other bytes.
  void expect_failure(const std::string& sent, const std::string& reason) {
    std::string error;
    std::string got = read_all(local_.get(), error);
    io::PumpStats stats = result_.wait();
    EXPECT_EQ(stats.mode, "ktls-splice");
    EXPECT_EQ(stats.error, reason);
    ASSERT_LE(got.size(), sent.size());
    EXPECT_TRUE(got == sent.substr(0, got.size())) << "delivered bytes differ from those sent";
  }

  SslCtxPtr peer_ctx_, client_ctx_;
  SslPtr peer_, client_;
  Fd peer_fd_, client_fd_, local_;
  PumpResult result_;
  std::future<void> peer_sent_;         // joined before the sockets close
  std::optional<io::Workers> workers_;  // last: stopped before what its pumps use
};

// Pass: data, a NewSessionTicket, data, another ticket, data and close_notify,
// all queued before the pump's first receive (so data and a ticket wait side
// by side in the kernel), arrive at the plain side complete and in order,
// followed by a clean EOF; after the local EOF the pump ends with no error.
TEST_F(KtlsRecords, TicketsAmongDataAreSkippedAndNothingIsLost) {
  ASSERT_NO_FATAL_FAILURE(connect(false));
  std::string a = pattern(60000, 1), b = pattern(60000, 2), c = pattern(1000, 3);
  peer_sends_then_start_pump([&] {
    peer_write(a);
    EXPECT_EQ(SSL_new_session_ticket(peer_.get()), 1);
    EXPECT_EQ(SSL_do_handshake(peer_.get()), 1);  // sends the ticket
    peer_write(b);
    EXPECT_EQ(SSL_new_session_ticket(peer_.get()), 1);
    EXPECT_EQ(SSL_do_handshake(peer_.get()), 1);
    peer_write(c);
    SSL_shutdown(peer_.get());  // close_notify
  });
  std::string error;
  std::string got = read_all(local_.get(), error);
  EXPECT_EQ(error, "");
  EXPECT_EQ(got.size(), a.size() + b.size() + c.size());
  EXPECT_TRUE(got == a + b + c) << "bytes lost, added or reordered";
  shutdown_write(local_.get());
  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.mode, "ktls-splice");
  EXPECT_EQ(stats.error, "");
  EXPECT_EQ(stats.tls_to_plain, a.size() + b.size() + c.size());
}

// Pass: a KeyUpdate from the peer ends the pump with the clear reason (kTLS on
// Linux 6.1 cannot take a new key), and no corrupt byte reaches the plain side.
TEST_F(KtlsRecords, KeyUpdateFailsWithAClearReason) {
  ASSERT_NO_FATAL_FAILURE(connect(false));
  std::string a = pattern(100000, 4);
  peer_sends_then_start_pump([&] {
    peer_write(a);
    EXPECT_EQ(SSL_key_update(peer_.get(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    EXPECT_EQ(SSL_do_handshake(peer_.get()), 1);  // sends the KeyUpdate
  });
  expect_failure(a,
                 "TLS read: the peer rotated its key (KeyUpdate) and kTLS on this system cannot "
                 "follow");
}

// Pass: a fatal alert other than close_notify ends the pump with the alert's
// description.
TEST_F(KtlsRecords, AlertFromThePeerFailsWithItsDescription) {
  ASSERT_NO_FATAL_FAILURE(connect(true));
  std::string a = pattern(100000, 6);
  peer_sends_then_start_pump([&] {
    peer_write(a);
    peer_record(SSL3_RT_ALERT, {SSL3_AL_FATAL, SSL_AD_HANDSHAKE_FAILURE});
  });
  expect_failure(a, "TLS alert from the peer: handshake failure");
}

// Pass: a record of a type the tunnel does not know (change_cipher_spec after
// the handshake) ends the pump and names the type.
TEST_F(KtlsRecords, UnexpectedRecordTypeFails) {
  ASSERT_NO_FATAL_FAILURE(connect(true));
  std::string a = pattern(50000, 7);
  peer_sends_then_start_pump([&] {
    peer_write(a);
    peer_record(SSL3_RT_CHANGE_CIPHER_SPEC, {1});
  });
  expect_failure(a, "TLS read: unexpected record type 20");
}

// Pass: a record that fails authentication (bytes forged on the TCP stream)
// ends the pump with "bad MAC", and the kernel counts a decryption error.
TEST_F(KtlsRecords, ForgedRecordFailsAuthentication) {
  auto before = tls_stat();
  ASSERT_NO_FATAL_FAILURE(connect(false));
  std::string a = pattern(100000, 8);
  peer_sends_then_start_pump([&] {
    peer_write(a);
    // An application-data record header (TLS 1.2 in the legacy version field), 32 bytes.
    std::vector<uint8_t> forged = {SSL3_RT_APPLICATION_DATA, 0x03, 0x03, 0x00, 0x20};
    forged.resize(forged.size() + 32, 0xab);
    EXPECT_EQ(::send(peer_fd_.get(), forged.data(), forged.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(forged.size()));
  });
  expect_failure(a, "TLS read: a record failed authentication (bad MAC)");
  EXPECT_GE(tls_stat()["TlsDecryptError"], before["TlsDecryptError"] + 1);
}

// Pass: a TCP close (FIN) without close_notify is a failure, not an EOF.
TEST_F(KtlsRecords, CloseWithoutCloseNotifyFails) {
  ASSERT_NO_FATAL_FAILURE(connect(false));
  std::string a = pattern(100000, 9);
  peer_sends_then_start_pump([&] {
    peer_write(a);
    EXPECT_EQ(::shutdown(peer_fd_.get(), SHUT_WR), 0);
  });
  expect_failure(a, "TLS read: connection closed without close_notify");
}

}  // namespace
}  // namespace xmig::test
