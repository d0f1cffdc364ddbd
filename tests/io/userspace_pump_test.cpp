// The "userspace" pump (io/userspace_pump.cpp) in this process, without a
// tunnel: its stream semantics, its AEAD key rotation, its record checks and
// its failures, in seconds.
//
// Setup of each test: two socketpairs. The pump's TLS side is one end of the
// first; at the other end a plain OpenSSL 3.0 server session (`peer_`) runs a
// TLS 1.3 handshake with the client session handed to the pump. The pump's
// plain side is one end of the second; the test holds the other (`local_`).
// Every test runs with each record layer the pump has: tls::Records (the
// client session's key log kept its traffic secrets, as on tunnel links;
// mode "userspace") with each TLS 1.3 cipher suite, and OpenSSL over memory
// BIOs (no key log; mode "userspace-openssl"). Records an attacker would
// send are sealed with the peer's own keys (tls::Records over the peer's
// session) and written raw. The pass criterion opens each test.
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
#include "tls/ktls.hpp"
#include "tls/records.hpp"

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

// The record layer a test runs with.
struct Layer {
  const char* name;
  bool own_records;   // tls::Records (else OpenSSL over memory BIOs)
  const char* suite;  // the TLS 1.3 cipher suite both ends allow
  const char* mode;   // what the pump reports
};

void PrintTo(const Layer& layer, std::ostream* os) {
  *os << layer.name;
}

class UserspacePump : public ::testing::TestWithParam<Layer> {
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
      ASSERT_EQ(SSL_CTX_set_ciphersuites(ctx, GetParam().suite), 1);
    }
    // The peer's traffic secrets, for sealing an attacker's records.
    SSL_CTX_set_keylog_callback(peer_ctx.get(), tls::keylog_callback);
    if (GetParam().own_records) SSL_CTX_set_keylog_callback(client_ctx.get(), tls::keylog_callback);
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
  // `records_read`/`records_written`: what the session protected before.
  void start_pump(uint64_t key_limit_records = tls::kDefaultKeyLimitRecords,
                  uint64_t records_read = 0, uint64_t records_written = 0) {
    auto [plain, local] = socket_pair();
    local_ = std::move(local);
    workers_.emplace(1);
    workers_->start_pump(std::move(plain), std::move(tls_fd_), std::move(client_),
                         result_.callback(),
                         io::PumpOptions{.ktls = tls::KtlsPolicy::Off,
                                         .key_limit_records = key_limit_records,
                                         .records_read = records_read,
                                         .records_written = records_written,
                                         .live = live_});
  }

  // Seals records as the peer, with its keys (its own OpenSSL session must
  // send nothing after this), and writes them raw to the pump.
  void peer_sends_raw(const std::vector<std::pair<uint8_t, std::vector<uint8_t>>>& records) {
    std::string why;
    auto sealer = tls::Records::take(peer_.get(), 0, 0, why);
    ASSERT_TRUE(sealer) << why;
    std::vector<uint8_t> wire;
    for (const auto& [type, inner] : records) {
      size_t at = wire.size();
      wire.resize(at + inner.size() + tls::Records::kOverhead);
      size_t n = sealer->seal(type, inner.data(), inner.size(), wire.data() + at, why);
      ASSERT_NE(n, 0u) << why;
      wire.resize(at + n);
    }
    ASSERT_EQ(::send(peer_fd_.get(), wire.data(), wire.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(wire.size()));
  }

  // What the plain side receives until EOF or a reset.
  std::string local_read_all() {
    std::string out;
    char buf[65536];
    ssize_t n;
    while ((n = ::recv(local_.get(), buf, sizeof buf, 0)) > 0) out.append(buf, n);
    return out;
  }

  // The pump's end, which must be a failure whose reason contains `what`
  // (case-insensitive) and that delivered nothing to the plain side.
  void expect_failure_containing(std::string what) {
    io::PumpStats stats = result_.wait();
    std::string error = stats.error;
    for (std::string* t : {&error, &what})
      for (char& c : *t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_NE(error.find(what), std::string::npos) << stats.error;
    EXPECT_EQ(stats.mode, GetParam().mode);
    EXPECT_EQ(local_read_all(), "");
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
TEST_P(UserspacePump, BothDirectionsArriveWholeWithTheirEnds) {
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
  EXPECT_EQ(stats.mode, GetParam().mode);
  EXPECT_EQ(stats.error, "");
  EXPECT_EQ(stats.plain_to_tls, 4 * kMiB);
  EXPECT_EQ(stats.tls_to_plain, 4 * kMiB);
  EXPECT_EQ(stats.key_updates, 0u);
  EXPECT_EQ(live_->plain_to_tls.load(), stats.plain_to_tls);
  EXPECT_EQ(live_->tls_to_plain.load(), stats.tls_to_plain);
}

// Pass: with a limit of 16 records per key, 2 MiB (128 full records) from the
// plain side make the pump send at least 7 KeyUpdates under AES-GCM (none
// under ChaCha20-Poly1305, which has no practical limit: tls/ktls.hpp), and
// the peer, following them, still reads every byte in order; the pump then
// ends without error.
TEST_P(UserspacePump, KeyUpdatesBeforeTheRecordLimitLoseNothing) {
  start_pump(16);
  expect_plain_to_peer(2 * kMiB, 3);
  EXPECT_EQ(SSL_shutdown(peer_.get()), 1);
  EXPECT_EQ(recv_stream(local_.get()).bytes, 0u);

  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.error, "");
  EXPECT_EQ(stats.plain_to_tls, 2 * kMiB);
  if (std::string(GetParam().suite).find("CHACHA20") == std::string::npos)
    EXPECT_GE(stats.key_updates, 7u);
  else
    EXPECT_EQ(stats.key_updates, 0u);
}

// Pass: a peer that closes its TCP side without close_notify is a failure, not
// an EOF: the pump ends with a "TLS read: ..." reason, and the plain side got
// only bytes the peer sent, in order, before the stream ended.
TEST_P(UserspacePump, CloseWithoutCloseNotifyFails) {
  start_pump();
  auto received = std::async(std::launch::async, [&] { return local_read_all(); });
  std::vector<uint8_t> data(100000);
  fill_random(data, 4);
  peer_write(data);
  ASSERT_EQ(::shutdown(peer_fd_.get(), SHUT_WR), 0);

  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.mode, GetParam().mode);
  EXPECT_EQ(stats.error.rfind("TLS read: ", 0), 0u) << stats.error;
  const std::string got = received.get();
  ASSERT_LE(got.size(), data.size());
  EXPECT_EQ(std::memcmp(got.data(), data.data(), got.size()), 0) << "bytes differ from those sent";
}

// Pass: the peer rotates its sending key twice between 1 MiB writes
// (KeyUpdate, update_not_requested); the plain side receives all 3 MiB in
// order (same SHA-256) and EOF after the peer's close_notify, and the pump
// ends without error.
TEST_P(UserspacePump, PeerKeyUpdatesAreFollowed) {
  start_pump();
  auto received = std::async(std::launch::async, [&] { return recv_stream(local_.get()); });
  std::vector<uint8_t> down(3 * kMiB);
  fill_random(down, 5);
  for (int part = 0; part < 3; ++part) {
    if (part > 0) {
      ASSERT_EQ(SSL_key_update(peer_.get(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    }
    EXPECT_EQ(SSL_write(peer_.get(), down.data() + part * kMiB, kMiB), static_cast<int>(kMiB));
  }
  EXPECT_EQ(SSL_shutdown(peer_.get()), 0);  // close_notify sent, the pump's not yet read
  Hashed h = received.get();
  EXPECT_EQ(h.error, "");
  EXPECT_EQ(h.sha256, sha256_hex(down));
  shutdown_write(local_.get());
  std::string error;
  EXPECT_EQ(peer_read_all(error), "");
  EXPECT_EQ(error, "");
  EXPECT_EQ(result_.wait().error, "");
}

// Counts the KeyUpdate messages a session reads.
void count_key_updates(int write_p, int, int content_type, const void* buf, size_t len, SSL*,
                       void* count) {
  if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
      static_cast<const uint8_t*>(buf)[0] == SSL3_MT_KEY_UPDATE)
    ++*static_cast<int*>(count);
}

// Pass: the peer requests a KeyUpdate (update_requested) with 64 KiB of data;
// once those arrived, 1 MiB sent from the plain side reaches the peer whole
// (same SHA-256) after exactly one KeyUpdate from the pump (RFC 8446 4.6.3:
// the answer comes before the next application data).
TEST_P(UserspacePump, ARequestedKeyUpdateIsAnsweredBeforeMoreData) {
  int key_updates = 0;
  SSL_set_msg_callback(peer_.get(), count_key_updates);
  SSL_set_msg_callback_arg(peer_.get(), &key_updates);
  start_pump();
  ASSERT_EQ(SSL_key_update(peer_.get(), SSL_KEY_UPDATE_REQUESTED), 1);
  std::vector<uint8_t> down(64 * 1024);
  fill_random(down, 6);
  peer_write(down);
  std::vector<uint8_t> got(down.size());
  size_t have = 0;
  while (have < got.size()) {
    ssize_t n = ::recv(local_.get(), got.data() + have, got.size() - have, 0);
    ASSERT_GT(n, 0) << "the plain side lost the stream";
    have += static_cast<size_t>(n);
  }
  EXPECT_EQ(got, down);
  expect_plain_to_peer(kMiB, 7);
  EXPECT_EQ(key_updates, 1);
  EXPECT_EQ(SSL_shutdown(peer_.get()), 1);
  EXPECT_EQ(result_.wait().error, "");
}

// Pass: the records OpenSSL protected before the hand-off (one each way: a
// request and its answer) are counted: 1 MiB each way then arrives whole
// (same SHA-256) and the pump ends without error.
TEST_P(UserspacePump, SequenceNumbersContinueWhereOpenSslStopped) {
  ASSERT_EQ(SSL_write(client_.get(), "request", 7), 7);
  char buf[16];
  ASSERT_EQ(SSL_read(peer_.get(), buf, sizeof buf), 7);
  ASSERT_EQ(SSL_write(peer_.get(), "ok", 2), 2);
  ASSERT_EQ(SSL_read(client_.get(), buf, sizeof buf), 2);
  start_pump(tls::kDefaultKeyLimitRecords, 1, 1);
  expect_plain_to_peer(kMiB, 8);
  auto received = std::async(std::launch::async, [&] { return recv_stream(local_.get()); });
  std::vector<uint8_t> down(kMiB);
  fill_random(down, 9);
  peer_write(down);
  EXPECT_EQ(SSL_shutdown(peer_.get()), 1);
  EXPECT_EQ(received.get().sha256, sha256_hex(down));
  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.error, "");
  EXPECT_EQ(stats.mode, GetParam().mode);
}

// Pass: a record whose ciphertext was not sealed with the peer's key (random
// bytes under a valid header) ends the stream as a bad record MAC, and
// nothing reaches the plain side.
TEST_P(UserspacePump, ARecordThatDoesNotAuthenticateEndsTheStream) {
  start_pump();
  std::vector<uint8_t> forged = {SSL3_RT_APPLICATION_DATA, 3, 3, 0, 64};
  forged.resize(5 + 64);
  std::vector<uint8_t> body(64);
  fill_random(body, 10);
  std::copy(body.begin(), body.end(), forged.begin() + 5);
  ASSERT_EQ(::send(peer_fd_.get(), forged.data(), forged.size(), MSG_NOSIGNAL), 69);
  expect_failure_containing("bad record mac");
}

// Pass: a header announcing more than RFC 8446 5.2 allows (2^14 + 256 + 1
// bytes) ends the stream without its body ever being sent ("record overflow"
// from tls::Records, OpenSSL's "TLS read: ..." otherwise).
TEST_P(UserspacePump, AnOversizedRecordIsRefusedBeforeItsBody) {
  start_pump();
  const size_t length = 16384 + 256 + 1;
  const uint8_t header[] = {SSL3_RT_APPLICATION_DATA, 3, 3, static_cast<uint8_t>(length >> 8),
                            static_cast<uint8_t>(length)};
  ASSERT_EQ(::send(peer_fd_.get(), header, sizeof header, MSG_NOSIGNAL), 5);
  expect_failure_containing(GetParam().own_records ? "record overflow" : "TLS read: ");
}

// Pass: a fatal alert from the peer (handshake_failure) ends the stream with
// the alert's description in the reason, not as an orderly end.
TEST_P(UserspacePump, AnAlertOtherThanCloseNotifyEndsTheStream) {
  start_pump();
  peer_sends_raw({{SSL3_RT_ALERT, {SSL3_AL_FATAL, SSL_AD_HANDSHAKE_FAILURE}}});
  expect_failure_containing("handshake failure");
}

// Pass: a handshake message other than KeyUpdate after the hand-off (a
// ClientHello) ends the stream.
TEST_P(UserspacePump, AHandshakeMessageOtherThanKeyUpdateEndsTheStream) {
  start_pump();
  peer_sends_raw({{SSL3_RT_HANDSHAKE, {SSL3_MT_CLIENT_HELLO, 0, 0, 2, 3, 3}}});
  expect_failure_containing(GetParam().own_records ? "unexpected handshake message 1"
                                                   : "TLS read: ");
}

// Pass: a record whose inner plaintext is all zeros (no content type, RFC
// 8446 5.4) ends the stream.
TEST_P(UserspacePump, ARecordWithoutAContentTypeEndsTheStream) {
  start_pump();
  peer_sends_raw({{0, std::vector<uint8_t>(8, 0)}});
  expect_failure_containing(GetParam().own_records ? "no content type" : "TLS read: ");
}

// Pass: padded records (zeros after the inner content type) and an empty
// data record are opened: the plain side receives exactly "hello, world"
// and EOF after the close_notify that follows them, without error.
TEST_P(UserspacePump, PaddingAndEmptyRecordsAreOpened) {
  start_pump();
  // Sealed with inner type 0: the bytes given end with the real type and padding.
  std::vector<uint8_t> hello = {'h', 'e', 'l', 'l', 'o', SSL3_RT_APPLICATION_DATA, 0, 0, 0};
  std::vector<uint8_t> world = {',', ' ', 'w', 'o', 'r', 'l', 'd', SSL3_RT_APPLICATION_DATA};
  world.resize(world.size() + 200, 0);
  peer_sends_raw({{0, hello},
                  {SSL3_RT_APPLICATION_DATA, {}},
                  {0, world},
                  {SSL3_RT_ALERT, {SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY}}});
  EXPECT_EQ(local_read_all(), "hello, world");
  shutdown_write(local_.get());
  io::PumpStats stats = result_.wait();
  EXPECT_EQ(stats.error, "");
  EXPECT_EQ(stats.tls_to_plain, 12u);
}

INSTANTIATE_TEST_SUITE_P(RecordLayers, UserspacePump,
                         ::testing::Values(Layer{.name = "Aes128Gcm",
                                                 .own_records = true,
                                                 .suite = "TLS_AES_128_GCM_SHA256",
                                                 .mode = "userspace"},
                                           Layer{.name = "Aes256Gcm",
                                                 .own_records = true,
                                                 .suite = "TLS_AES_256_GCM_SHA384",
                                                 .mode = "userspace"},
                                           Layer{.name = "Chacha20Poly1305",
                                                 .own_records = true,
                                                 .suite = "TLS_CHACHA20_POLY1305_SHA256",
                                                 .mode = "userspace"},
                                           Layer{.name = "OpenSsl",
                                                 .own_records = false,
                                                 .suite = "TLS_AES_128_GCM_SHA256",
                                                 .mode = "userspace-openssl"}),
                         [](const ::testing::TestParamInfo<Layer>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace xmig::test
