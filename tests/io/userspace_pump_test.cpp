// The "userspace" pump (io/userspace_pump.cpp) in this process, without a
// tunnel: its stream semantics, its AEAD key rotation and its failures, in
// seconds.
//
// Setup of each test: two socketpairs. The pump's TLS side is one end of the
// first; at the other end a plain OpenSSL 3.0 server session (`peer_`) runs a
// TLS 1.3 handshake (TLS_AES_128_GCM_SHA256, so the record limit applies) with
// the client session handed to the pump. The pump's plain side is one end of
// the second; the test holds the other (`local_`). The pass criterion opens
// each test.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/openssl.hpp"
#include "certs/certs.hpp"
#include "harness/files.hpp"
#include "harness/streams.hpp"
#include "io/pump.hpp"
#include "tests/io/pump_result.hpp"

namespace xmig::test {

using namespace harness;

namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1024 * 1024;

// A connected pair of UNIX stream sockets.
std::pair<Fd, Fd> socket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::runtime_error(std::string("socketpair: ") + strerror(errno));
  return {Fd(sv[0]), Fd(sv[1])};
}

class UserspacePump : public ::testing::Test {
 protected:
  void SetUp() override {
    std::signal(SIGPIPE, SIG_IGN);  // the peer may write to a connection the pump has reset
    static const certs::Pem ca = certs::make_ca({});
    static const certs::Pem node = certs::issue(ca, {.name = "hv-b"});
    BioPtr cert_pem(BIO_new_mem_buf(node.cert.data(), static_cast<int>(node.cert.size())));
    BioPtr key_pem(BIO_new_mem_buf(node.key.data(), static_cast<int>(node.key.size())));
    X509Ptr cert(PEM_read_bio_X509(cert_pem.get(), nullptr, nullptr, nullptr));
    PkeyPtr key(PEM_read_bio_PrivateKey(key_pem.get(), nullptr, nullptr, nullptr));
    ASSERT_TRUE(cert && key);

    SslCtxPtr peer_ctx(SSL_CTX_new(TLS_server_method()));
    SslCtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
    for (SSL_CTX* ctx : {peer_ctx.get(), client_ctx.get()}) {
      SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
      ASSERT_EQ(SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256"), 1);
    }
    SSL_CTX_set_num_tickets(peer_ctx.get(), 0);  // as on tunnel links
    ASSERT_EQ(SSL_CTX_use_certificate(peer_ctx.get(), cert.get()), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey(peer_ctx.get(), key.get()), 1);
    SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_NONE, nullptr);

    std::tie(tls_fd_, peer_fd_) = socket_pair();
    peer_.reset(SSL_new(peer_ctx.get()));
    client_.reset(SSL_new(client_ctx.get()));
    SSL_set_fd(peer_.get(), peer_fd_.get());
    SSL_set_fd(client_.get(), tls_fd_.get());
    auto accepted = std::async(std::launch::async, [&] { return SSL_accept(peer_.get()); });
    ASSERT_EQ(SSL_connect(client_.get()), 1);
    ASSERT_EQ(accepted.get(), 1);
  }

  // Hands the client session to a pump; `local_` is its plain side's far end.
  void start_pump(uint64_t key_limit_records = tls::kDefaultKeyLimitRecords) {
    auto [plain, local] = socket_pair();
    local_ = std::move(local);
    workers_.emplace(1);
    workers_->start_pump(
        std::move(plain), std::move(tls_fd_), std::move(client_), result_.callback(),
        io::PumpOptions{
            .ktls = tls::KtlsPolicy::Off, .key_limit_records = key_limit_records, .live = live_});
  }

  // Everything the peer reads until close_notify (or a failure, in `error`).
  std::string peer_read_all(std::string& error) {
    std::string out;
    char buf[65536];
    while (true) {
      int n = SSL_read(peer_.get(), buf, sizeof buf);
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (SSL_get_error(peer_.get(), n) != SSL_ERROR_ZERO_RETURN)
        error = "SSL_read: error " + std::to_string(SSL_get_error(peer_.get(), n));
      return out;
    }
  }

  void peer_write(const std::vector<uint8_t>& data) {
    EXPECT_EQ(SSL_write(peer_.get(), data.data(), static_cast<int>(data.size())),
              static_cast<int>(data.size()));
  }

  // Sends `bytes` of stream `seed` from the plain side, then its EOF; the peer
  // must read exactly those bytes, then the pump's close_notify.
  void expect_plain_to_peer(uint64_t bytes, uint64_t seed) {
    auto sent = std::async(std::launch::async, [&] {
      Hashed h = send_stream(local_.get(), bytes, seed);
      shutdown_write(local_.get());
      return h;
    });
    std::string error;
    const std::string got = peer_read_all(error);
    EXPECT_EQ(error, "") << "no close_notify after the plain side's EOF";
    EXPECT_EQ(sent.get().error, "");
    EXPECT_EQ(got.size(), bytes);
    EXPECT_EQ(sha256_hex({reinterpret_cast<const uint8_t*>(got.data()), got.size()}),
              expected_sha256(bytes, seed));
  }

  SslPtr peer_, client_;
  Fd peer_fd_, tls_fd_, local_;
  std::shared_ptr<io::LiveBytes> live_ = std::make_shared<io::LiveBytes>();
  PumpResult result_;
  std::optional<io::Workers> workers_;  // last: stopped before what its pumps use
};

// Pass: 4 MiB from the plain side arrive at the peer whole and in order (same
// SHA-256), followed by close_notify once the plain side shut down its write
// half; then 4 MiB from the peer arrive at the plain side whole, followed by
// EOF after the peer's close_notify. The pump ends without error, in mode
// "userspace", and its close-line counts and live counts both say 4 MiB each way.
TEST_F(UserspacePump, BothDirectionsArriveWholeWithTheirEnds) {
  start_pump();
  expect_plain_to_peer(4 * kMiB, 1);

  auto received = std::async(std::launch::async, [&] { return recv_stream(local_.get()); });
  std::vector<uint8_t> down(4 * kMiB);
  fill_random(down, 2);
  peer_write(down);
  EXPECT_EQ(SSL_shutdown(peer_.get()), 1);  // close_notify; the pump's came already
  Hashed h = received.get();
  EXPECT_EQ(h.error, "");
  EXPECT_EQ(h.bytes, down.size());
  EXPECT_EQ(h.sha256, sha256_hex(down));

  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.mode, "userspace");
  EXPECT_EQ(stats.error, "");
  EXPECT_EQ(stats.plain_to_tls, 4 * kMiB);
  EXPECT_EQ(stats.tls_to_plain, 4 * kMiB);
  EXPECT_EQ(stats.key_updates, 0u);
  EXPECT_EQ(live_->plain_to_tls.load(), stats.plain_to_tls);
  EXPECT_EQ(live_->tls_to_plain.load(), stats.tls_to_plain);
}

// Pass: with a limit of 16 records per key, 2 MiB (128 full records) from the
// plain side make the pump send at least 7 KeyUpdates, and the peer, following
// them, still reads every byte in order; the pump then ends without error.
TEST_F(UserspacePump, KeyUpdatesBeforeTheRecordLimitLoseNothing) {
  start_pump(16);
  expect_plain_to_peer(2 * kMiB, 3);
  EXPECT_EQ(SSL_shutdown(peer_.get()), 1);
  EXPECT_EQ(recv_stream(local_.get()).bytes, 0u);

  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.error, "");
  EXPECT_EQ(stats.plain_to_tls, 2 * kMiB);
  EXPECT_GE(stats.key_updates, 7u);
}

// Pass: a peer that closes its TCP side without close_notify is a failure, not
// an EOF: the pump ends with a "TLS read: ..." reason, and the plain side got
// only bytes the peer sent, in order, before the stream ended.
TEST_F(UserspacePump, CloseWithoutCloseNotifyFails) {
  start_pump();
  auto received = std::async(std::launch::async, [&] {
    std::string out;
    char buf[65536];
    ssize_t n;
    while ((n = ::recv(local_.get(), buf, sizeof buf, 0)) > 0) out.append(buf, n);
    return out;
  });
  std::vector<uint8_t> data(100000);
  fill_random(data, 4);
  peer_write(data);
  ASSERT_EQ(::shutdown(peer_fd_.get(), SHUT_WR), 0);

  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.mode, "userspace");
  EXPECT_EQ(stats.error.rfind("TLS read: ", 0), 0u) << stats.error;
  const std::string got = received.get();
  ASSERT_LE(got.size(), data.size());
  EXPECT_EQ(std::memcmp(got.data(), data.data(), got.size()), 0) << "bytes differ from those sent";
}

}  // namespace
}  // namespace xmig::test
