// Micro-benchmarks of the hot pieces of the data path, without a network:
//
// - TLS 1.3 record seal/open through real OpenSSL SSL objects joined by a
//   BIO pair (what the userspace pump does per byte: one seal at the entry,
//   one open at the exit), per cipher suite and per SSL_write size; and the
//   same through tls::Records with each AEAD engine (what the pump runs now);
// - the plain copies around it: memcpy of a pump buffer, and a loopback TCP
//   send+recv of one (the kernel's share of each relay hop);
// - the load generator's own cost (xmig-bench's sink check), to show it is
//   small next to what it measures.
//
// Built as xmig_micro, never run by ctest. Run e.g.
//   build/bench/xmig_micro --benchmark_filter=Tls --benchmark_min_time=0.5
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "base/openssl.hpp"
#include "bench/load.hpp"
#include "certs/certs.hpp"
#include "tls/records.hpp"

namespace {

// ---- A TLS 1.3 session over a BIO pair ------------------------------------------

// A client and a server SSL whose records travel through an in-memory BIO
// pair: the handshake is done once, then the benchmark only moves records.
class TlsPair {
 public:
  explicit TlsPair(const char* suite) {
    static const xmig::certs::Pem ca = xmig::certs::make_ca({});
    static const xmig::certs::Pem node = xmig::certs::issue(ca, {.name = "hv-b"});
    server_ctx_.reset(SSL_CTX_new(TLS_server_method()));
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    for (SSL_CTX* c : {server_ctx_.get(), client_ctx_.get()}) {
      SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
      SSL_CTX_set_ciphersuites(c, suite);
      // No tickets: like the tunnel's links, nothing but data after the handshake.
      SSL_CTX_set_num_tickets(c, 0);
    }
    xmig::BioPtr cert_bio(BIO_new_mem_buf(node.cert.data(), static_cast<int>(node.cert.size())));
    xmig::BioPtr key_bio(BIO_new_mem_buf(node.key.data(), static_cast<int>(node.key.size())));
    xmig::X509Ptr cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    xmig::PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (!cert || !key || SSL_CTX_use_certificate(server_ctx_.get(), cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(server_ctx_.get(), key.get()) != 1)
      throw std::runtime_error("TlsPair: cannot load the test certificate");

    server_.reset(SSL_new(server_ctx_.get()));
    client_.reset(SSL_new(client_ctx_.get()));
    BIO *c = nullptr, *s = nullptr;
    // Room for a whole 256 KiB write plus record overhead.
    BIO_new_bio_pair(&c, 1 << 20, &s, 1 << 20);
    SSL_set_bio(client_.get(), c, c);
    SSL_set_bio(server_.get(), s, s);
    SSL_set_connect_state(client_.get());
    SSL_set_accept_state(server_.get());
    for (int i = 0; i < 20; ++i) {
      int a = SSL_do_handshake(client_.get()), b = SSL_do_handshake(server_.get());
      if (a == 1 && b == 1) return;
    }
    throw std::runtime_error("TlsPair: handshake did not complete");
  }

  SSL* client() { return client_.get(); }
  SSL* server() { return server_.get(); }
  // The client's side of the pair: where its records wait for the server.
  BIO* wire() { return SSL_get_rbio(server_.get()); }

 private:
  xmig::SslCtxPtr server_ctx_, client_ctx_;
  xmig::SslPtr server_, client_;
};

void write_all(SSL* ssl, const uint8_t* data, size_t len) {
  while (len > 0) {
    int n = SSL_write(ssl, data, static_cast<int>(len));
    if (n <= 0) throw std::runtime_error("SSL_write failed");
    data += n;
    len -= static_cast<size_t>(n);
  }
}

void read_all(SSL* ssl, uint8_t* data, size_t len) {
  while (len > 0) {
    int n = SSL_read(ssl, data, static_cast<int>(len));
    if (n <= 0) throw std::runtime_error("SSL_read failed");
    data += n;
    len -= static_cast<size_t>(n);
  }
}

// Seal only: SSL_write of `write_size` bytes (16 KiB records), ciphertext
// drained from the pair and dropped.
void BM_TlsSeal(benchmark::State& state, const char* suite) {
  TlsPair tls(suite);
  const size_t size = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> plain(size, 0x5a), sink(1 << 20);
  for (auto _ : state) {
    write_all(tls.client(), plain.data(), size);
    while (BIO_read(tls.wire(), sink.data(), static_cast<int>(sink.size())) > 0) {
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

// Seal and open: what one byte costs across the tunnel in crypto and record
// handling (entry seals, exit opens).
void BM_TlsSealOpen(benchmark::State& state, const char* suite) {
  TlsPair tls(suite);
  const size_t size = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> plain(size, 0x5a), out(size);
  for (auto _ : state) {
    write_all(tls.client(), plain.data(), size);
    read_all(tls.server(), out.data(), size);
  }
  benchmark::DoNotOptimize(out.data());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

BENCHMARK_CAPTURE(BM_TlsSeal, aes128gcm, "TLS_AES_128_GCM_SHA256")->Arg(16 << 10)->Arg(256 << 10);
BENCHMARK_CAPTURE(BM_TlsSeal, aes256gcm, "TLS_AES_256_GCM_SHA384")->Arg(16 << 10)->Arg(256 << 10);
BENCHMARK_CAPTURE(BM_TlsSeal, chacha20, "TLS_CHACHA20_POLY1305_SHA256")->Arg(256 << 10);
BENCHMARK_CAPTURE(BM_TlsSealOpen, aes128gcm, "TLS_AES_128_GCM_SHA256")
    ->Arg(4 << 10)
    ->Arg(16 << 10)
    ->Arg(256 << 10);
BENCHMARK_CAPTURE(BM_TlsSealOpen, aes256gcm, "TLS_AES_256_GCM_SHA384")->Arg(256 << 10);

using xmig::tls::AeadEngine;
using xmig::tls::Records;

// tls::Records, the userspace pump's own record layer: seal 256 KiB as 16
// records and open them again, with each AEAD engine (tls/aead.hpp).
void BM_RecordsSealOpen(benchmark::State& state, uint16_t suite, AeadEngine engine) {
  const size_t secret = suite == Records::kAes256GcmSha384 ? 48 : 32;
  std::vector<uint8_t> a(secret, 0x11), b(secret, 0x22);
  std::string why;
  auto sealer = Records::from_secrets(suite, a, b, why, engine);
  auto opener = Records::from_secrets(suite, b, a, why, engine);
  if (!sealer || !opener) {
    state.SkipWithError(why.c_str());
    return;
  }
  state.SetLabel(sealer->aead_name());
  constexpr size_t kRecords = 16;
  std::vector<uint8_t> plain(kRecords * Records::kMaxData, 0x5a),
      wire(kRecords * (Records::kMaxData + Records::kOverhead)), out(Records::kMaxInner);
  for (auto _ : state) {
    size_t at = 0;
    for (size_t i = 0; i < kRecords; ++i)
      at += sealer->seal_data(plain.data() + i * Records::kMaxData, Records::kMaxData,
                              wire.data() + at, why);
    for (size_t off = 0; off < at;) {
      Records::Opened r = opener->open(wire.data() + off, at - off, out.data());
      if (r.kind != Records::Opened::Data) {
        state.SkipWithError(r.why.c_str());
        return;
      }
      off += r.consumed;
    }
  }
  benchmark::DoNotOptimize(out.data());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * plain.size()));
}

BENCHMARK_CAPTURE(BM_RecordsSealOpen, aes128gcm_openssl, Records::kAes128GcmSha256,
                  AeadEngine::OpenSsl);
BENCHMARK_CAPTURE(BM_RecordsSealOpen, aes128gcm_ipsec_mb, Records::kAes128GcmSha256,
                  AeadEngine::IpsecMb);
BENCHMARK_CAPTURE(BM_RecordsSealOpen, aes256gcm_openssl, Records::kAes256GcmSha384,
                  AeadEngine::OpenSsl);
BENCHMARK_CAPTURE(BM_RecordsSealOpen, aes256gcm_ipsec_mb, Records::kAes256GcmSha384,
                  AeadEngine::IpsecMb);
BENCHMARK_CAPTURE(BM_RecordsSealOpen, chacha20_openssl, Records::kChacha20Poly1305Sha256,
                  AeadEngine::OpenSsl);

// ---- Plain copies ------------------------------------------------------------------

void BM_Memcpy(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> a(size, 1), b(size);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), size);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}
BENCHMARK(BM_Memcpy)->Arg(16 << 10)->Arg(256 << 10)->Arg(8 << 20);

// Appending a TLS record (16 KiB + overhead) to a ciphertext buffer, as a
// write callback of a memory BIO does: from OpenSSL's `const char*` into a
// std::vector<uint8_t>. With char iterators libstdc++ cannot use memmove and
// copies element by element; through uint8_t pointers it is one memmove.
template <typename Source>
void BM_AppendRecord(benchmark::State& state) {
  // A full TLS 1.3 record on the wire: header, plaintext, content type, AEAD tag.
  constexpr size_t kRecordBytes = SSL3_RT_HEADER_LENGTH + SSL3_RT_MAX_PLAIN_LENGTH + 1 + 16;
  std::vector<char> record(kRecordBytes, 'x');
  std::vector<uint8_t> out;
  out.reserve(512 << 10);
  for (auto _ : state) {
    out.clear();
    for (int i = 0; i < 16; ++i) {
      const auto* p = reinterpret_cast<const Source*>(record.data());
      out.insert(out.end(), p, p + kRecordBytes);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 16 * kRecordBytes));
}
BENCHMARK_TEMPLATE(BM_AppendRecord, char);
BENCHMARK_TEMPLATE(BM_AppendRecord, uint8_t);

// One relay hop's kernel work for a buffer: send() into loopback TCP and
// recv() it on the other end (two copies, the TCP stack, two syscalls or more).
void BM_LoopbackTcp(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  xmig::bench::Listener listener(xmig::bench::parse_endpoint("127.0.0.1:0"));
  int tx = xmig::bench::connect_to(listener.endpoint());
  int rx = listener.accept(std::chrono::seconds(5));
  int big = 4 << 20;
  ::setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  ::setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  std::vector<uint8_t> a(size, 7), b(size);
  for (auto _ : state) {
    size_t sent = 0, got = 0;
    while (got < size) {
      if (sent < size) {
        ssize_t n = ::send(tx, a.data() + sent, size - sent, MSG_DONTWAIT);
        if (n > 0) sent += static_cast<size_t>(n);
      }
      ssize_t n = ::recv(rx, b.data() + got, size - got, MSG_DONTWAIT);
      if (n > 0) got += static_cast<size_t>(n);
    }
  }
  ::close(tx);
  ::close(rx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}
BENCHMARK(BM_LoopbackTcp)->Arg(16 << 10)->Arg(256 << 10);

// ---- The load generator ----------------------------------------------------------

void BM_SinkCheck(benchmark::State& state) {
  static const xmig::bench::Pattern pattern;
  const size_t size = 256 << 10;
  std::vector<uint8_t> data(size);
  std::vector<iovec> iov(64);
  std::vector<xmig::bench::Pattern::Header> headers(64);
  size_t n = pattern.describe(0, 0, size, iov.data(), iov.size(), headers.data());
  size_t off = 0;
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(data.data() + off, iov[i].iov_base, iov[i].iov_len);
    off += iov[i].iov_len;
  }
  for (auto _ : state)
    if (!pattern.check(0, 0, data.data(), size)) state.SkipWithError("pattern mismatch");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}
BENCHMARK(BM_SinkCheck);

}  // namespace

BENCHMARK_MAIN();
