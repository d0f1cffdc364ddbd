// Hot reload of the TLS material in running tunnels: rotation under load, CA
// rollover host by host, broken material refused, SIGHUP.
//
// Every test runs two real xmig-tunnel processes (TunnelPair: hv-a, hv-b) and
// changes their files the way an operator does: with the real `xmig-certs`
// command where one exists, with plain file writes for broken material. What
// a tunnel has loaded is read from its status endpoint (GET /status on
// <run_dir>/status.sock: certificate.serial, reloads.ok / reloads.failed),
// what it presents to new connections from a TLS handshake of our own
// (present_serial), and what it decided from its log lines
// (`reload (<why>): certificate serial X ...` /
// `reload (<why>) refused, still serving certificate serial X: <reason>`).
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/openssl.hpp"
#include "base/socket.hpp"
#include "certs/certs.hpp"
#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tls_probe.hpp"
#include "harness/tunnel_pair.hpp"
#include "tunnel/protocol.hpp"

namespace xmig::test {

using namespace harness;

namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1 << 20;
// How long a reload may take to show: 300 ms settle, a load, a status query.
constexpr auto kReloadWait = 10s;

// ---------------------------------------------------------------------------
// What a tunnel reports and presents

struct Status {
  std::string serial;  // certificate.serial
  long ok = -1;        // reloads.ok
  long failed = -1;    // reloads.failed
  std::string json;    // the whole body, for failure messages
};

// The number after "key": in json, or -1.
long json_number_after(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return -1;
  return std::strtol(json.c_str() + at + key.size() + 3, nullptr, 10);
}

// GET /status from side's status socket (<run_dir>/status.sock).
Status status_of(const TunnelSide& side) {
  Status s;
  s.json = status_request(side, "/status");
  s.json = s.json.substr(0, s.json.find(",\"recent\":"));  // enough for messages
  size_t at = s.json.find("\"certificate\":{\"serial\":\"");
  if (at != std::string::npos) {
    at += std::string("\"certificate\":{\"serial\":\"").size();
    s.serial = s.json.substr(at, s.json.find('"', at) - at);
  }
  size_t reloads = s.json.find("\"reloads\":");
  if (reloads != std::string::npos) {
    std::string tail = s.json.substr(reloads);
    s.ok = json_number_after(tail, "ok");
    s.failed = json_number_after(tail, "failed");
  }
  return s;
}

// Serial (upper-case hex, as the tunnel prints it) of a certificate file.
std::string serial_of_file(const fs::path& cert) {
  return certs::describe(read_file(cert), cert.string()).serial_hex;
}

struct Presented {
  std::string serial;   // of the certificate the server presented
  bool echoed = false;  // the verify channel echoed our bytes
  std::string error;
};

// A new TLS connection to a tunnel's port, as a peer makes one: presents
// `client_dir`'s server-cert.pem/server-key.pem, verifies the server against
// client_dir/ca-cert.pem and its name (DNS SAN `server_name`), asks for the
// verify channel (ALPN xmig/verify), expects the verdict 'A' and an echo of a
// few bytes. Returns the serial of the certificate the server presented.
Presented present_serial(uint16_t port, const fs::path& client_dir,
                         const std::string& server_name) {
  Presented p;
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), (client_dir / "server-cert.pem").c_str()) !=
          1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), (client_dir / "server-key.pem").c_str(),
                                  SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx.get(), (client_dir / "ca-cert.pem").c_str(), nullptr) !=
          1) {
    ERR_clear_error();
    p.error = "cannot load the client's files from " + client_dir.string();
    return p;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SslPtr ssl(SSL_new(ctx.get()));
  SSL_set1_host(ssl.get(), server_name.c_str());
  static const unsigned char kAlpn[] = "\x0bxmig/verify";
  SSL_set_alpn_protos(ssl.get(), kAlpn, sizeof kAlpn - 1);
  Fd fd;
  try {
    fd = connect_tcp(port);
  } catch (const std::exception& e) {
    p.error = e.what();
    return p;
  }
  set_timeouts(fd.get(), 5000ms);
  SSL_set_fd(ssl.get(), fd.get());
  if (SSL_connect(ssl.get()) != 1) {
    ERR_clear_error();
    p.error = std::string("handshake failed: ") +
              X509_verify_cert_error_string(SSL_get_verify_result(ssl.get()));
    return p;
  }
  if (X509* cert = SSL_get0_peer_certificate(ssl.get())) {
    if (BignumPtr bn{ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)}) {
      char* hex = BN_bn2hex(bn.get());
      p.serial = hex;
      OPENSSL_free(hex);
    }
  }
  const std::string request = tunnel::encode(tunnel::Request{});
  SSL_write(ssl.get(), request.data(), static_cast<int>(request.size()));
  char verdict = 0;
  if (SSL_read(ssl.get(), &verdict, 1) != 1 || verdict != 'A') {
    ERR_clear_error();
    p.error = verdict ? std::string("verdict ") + verdict : "no verdict (refused?)";
    return p;
  }
  const std::string ping = "reload-test ping";
  std::string back(ping.size(), '\0');
  size_t got = 0;
  if (SSL_write(ssl.get(), ping.data(), static_cast<int>(ping.size())) ==
      static_cast<int>(ping.size()))
    while (got < back.size()) {
      int n = SSL_read(ssl.get(), back.data() + got, static_cast<int>(back.size() - got));
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
  p.echoed = got == back.size() && back == ping;
  if (!p.echoed) p.error = "no echo";
  SSL_shutdown(ssl.get());
  ERR_clear_error();
  return p;
}

// ---------------------------------------------------------------------------
// Streams

// Sends chunks of pseudo-random data (fill_random, seeded per chunk) on fd at
// about `rate` bytes per second until `stop` is set and at least `min_bytes`
// went out, then shuts the write side down. Returns the bytes and SHA-256 of
// everything sent; error is set when a send failed.
Hashed send_until(int fd, uint64_t seed, uint64_t rate, uint64_t min_bytes,
                  const std::atomic<bool>& stop) {
  Hashed h;
  MdCtxPtr sha(EVP_MD_CTX_new());
  EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr);
  std::vector<uint8_t> buf(256 * 1024);
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t index = 0; !stop || h.bytes < min_bytes; ++index) {
    fill_random(buf, seed * 1000003 + index);
    size_t off = 0;
    while (off < buf.size()) {
      ssize_t n = ::send(fd, buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        h.error = std::string("send: ") + strerror(errno);
        break;
      }
      off += static_cast<size_t>(n);
    }
    EVP_DigestUpdate(sha.get(), buf.data(), off);
    h.bytes += off;
    if (!h.error.empty()) break;
    // Pace: sleep until the schedule for this many bytes.
    auto due = start + std::chrono::microseconds(h.bytes * 1000000 / rate);
    std::this_thread::sleep_until(due);
  }
  shutdown_write(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_DigestFinal_ex(sha.get(), md, &n);
  static const char* digits = "0123456789abcdef";
  for (unsigned i = 0; i < n; ++i) (h.sha256 += digits[md[i] >> 4]) += digits[md[i] & 15];
  return h;
}

// One long connection through the pair, carrying paced data both ways until
// told to stop: client -> hv-a's entry -> TLS -> hv-b -> target, and back.
struct LongStream {
  Fd client, target;
  std::future<Hashed> sent, sent_back, received, received_back;

  // Opens the connection on pair's `channel` and starts the four pumps.
  // Returns an error text ("" on success).
  std::string start(TunnelPair& pair, Listener& sink, const std::string& channel, uint64_t seed,
                    uint64_t rate, uint64_t back_rate, const std::atomic<bool>& stop) {
    client = connect_unix(pair.entry(channel).string());
    target = sink.accept(10s);
    if (!target) return "the target never got the connection";
    // A stall of the tunnel must fail the test, not hang it.
    set_timeouts(client.get(), 30000ms);
    set_timeouts(target.get(), 30000ms);
    int c = client.get(), t = target.get();
    sent =
        std::async(std::launch::async, [=, &stop] { return send_until(c, seed, rate, 0, stop); });
    sent_back = std::async(std::launch::async,
                           [=, &stop] { return send_until(t, seed + 1, back_rate, 0, stop); });
    received = std::async(std::launch::async, [=] { return recv_stream(t); });
    received_back = std::async(std::launch::async, [=] { return recv_stream(c); });
    return "";
  }
};

// A short stream through the pair on a fresh connection: 4 MiB client ->
// target with a clean EOF. "" when it arrived intact, else what went wrong.
std::string fresh_connection_carries(TunnelPair& pair, Listener& sink, const std::string& channel,
                                     uint64_t seed) {
  try {
    Fd client = connect_unix(pair.entry(channel).string());
    set_timeouts(client.get(), 10000ms);
    auto sent = std::async(std::launch::async, [&] {
      auto h = send_stream(client.get(), 4 * kMiB, seed);
      shutdown_write(client.get());
      return h;
    });
    Fd target = sink.accept(10s);
    if (!target) {
      sent.wait();
      return "the target never got the connection";
    }
    set_timeouts(target.get(), 10000ms);
    Hashed got = recv_stream(target.get());
    target.reset();
    Hashed s = sent.get();
    recv_stream(client.get());  // the far side's EOF
    if (!s.error.empty()) return "sender: " + s.error;
    if (!got.error.empty()) return "receiver: " + got.error;
    if (got.bytes != 4 * kMiB || got.sha256 != s.sha256)
      return "arrived " + std::to_string(got.bytes) + " bytes, hash differs";
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Runs `xmig-certs args...`, appending its output to log; its exit code.
int xmig_certs(const fs::path& log, std::vector<std::string> args) {
  args.insert(args.begin(), tool("xmig-certs"));
  {
    std::ofstream out(log, std::ios::app);
    out << "$";
    for (const auto& a : args) out << " " << a;
    out << "\n";
  }
  return run(args, log.string());
}

// Copies a file the way the runbook says: to NAME.new beside it, then rename
// over NAME, so the tunnel never reads a half-copied file.
void copy_into_place(const fs::path& from, const fs::path& to) {
  fs::path tmp = to;
  tmp += ".new";
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
  fs::rename(tmp, to);
}

// Waits until side's status satisfies cond; returns the last status seen.
Status wait_status(const TunnelSide& side, const std::function<bool(const Status&)>& cond,
                   std::chrono::milliseconds timeout = kReloadWait) {
  Status last;
  wait_until(
      [&] {
        last = status_of(side);
        return cond(last);
      },
      timeout);
  return last;
}

// ---------------------------------------------------------------------------

class Reload : public ::testing::Test {
 protected:
  std::string logs() const { return pair_ ? pair_->logs() : ""; }

  std::unique_ptr<TunnelPair> pair_;
};

// Setup: a CA directory made by `xmig-certs ca init`; hv-a and hv-b issued
// from it with `xmig-certs issue` and started. Two long connections through
// the pair carry paced pseudo-random data both ways for the whole test (the
// first opened before any change, the second after the first rotation); a
// certificate of the first CA for hv-a (made at the start, never installed)
// serves as "a peer that has not been rotated yet".
// Action, host by host, the way the runbook (docs/rotating-certificates.md)
// says: 1) `xmig-certs rotate` on hv-b, then hv-a; 2) the same again;
// 3) `xmig-certs ca rollover`, ca-bundle.pem copied to both nodes' ca-cert.pem;
// 4) rotate hv-b, then hv-a, now from the new CA; 5) `xmig-certs ca retire`,
// ca-bundle.pem (new CA only) copied to both nodes again.
// Pass, after every step, on the node just changed: the status
// endpoint shows the serial of the certificate now in its files and
// reloads.ok grew (reloads.failed stays 0); a new TLS connection is presented
// that serial and is accepted with the peer's current files; a new connection
// through the pair carries 4 MiB intact; the not-yet-rotated peer of the
// first CA is accepted until step 5 and refused after it. At the end: both
// long connections were never dropped (every byte arrived, SHA-256 equal both
// ways, `result=ok` close lines on both tunnels), no reload was refused, and
// the only refusal logged is the deliberate one after step 5.
TEST_F(Reload, RotationUnderLoadKeepsStreams) {
  TempDir work("xmig-reload");
  const fs::path ca_dir = work.path() / "ca";
  const fs::path cli_log = work.path() / "xmig-certs.log";
  auto certs_ok = [&](std::vector<std::string> args) {
    int rc = xmig_certs(cli_log, args);
    EXPECT_EQ(rc, 0) << read_file(cli_log);
    return rc == 0;
  };

  TunnelPairOptions opts;
  opts.start = false;
  pair_ = std::make_unique<TunnelPair>(opts);
  TunnelPair& pair = *pair_;
  ASSERT_TRUE(certs_ok({"ca", "init", "--dir", ca_dir.string(), "--name", "reload test CA"}));
  for (TunnelSide* side : {&pair.a, &pair.b})
    ASSERT_TRUE(certs_ok({"issue", "--ca", ca_dir.string(), "--name", side->name, "--ip",
                          "127.0.0.1", "--out", side->pki.string(), "--force"}));
  // hv-a as a peer that is still on the first CA (never installed anywhere).
  const certs::Pem first_ca{read_file(ca_dir / "ca-cert.pem"), read_file(ca_dir / "ca-key.pem")};
  certs::IssueOptions old_peer_opts;
  old_peer_opts.name = "hv-a";
  const certs::Pem old_peer = certs::issue(first_ca, old_peer_opts);
  auto old_peer_accepted = [&] {
    TlsProbeOptions o;
    o.cert_pem = old_peer.cert;
    o.key_pem = old_peer.key;
    o.alpn = {"xmig/verify"};
    TlsProbe probe(o);
    TlsProbeResult r = probe.connect(pair.b.port);
    probe.close();
    return r.verdict == 'A';
  };

  ASSERT_NO_THROW(pair.start(pair.a));
  ASSERT_NO_THROW(pair.start(pair.b));

  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  auto short_sink = Listener::unix_socket(pair.delivery("nbd").string());
  std::atomic<bool> stop{false};
  // 64 MiB/s forward and 8 MiB/s back on each long connection: enough to keep
  // every pump busy during each reload, little enough for a shared machine.
  constexpr uint64_t kRate = 64 * kMiB, kBackRate = 8 * kMiB;
  LongStream first, second;
  // Whatever ends the test, the pumps must stop before the futures are waited for.
  struct StopOnExit {
    std::atomic<bool>& stop;
    ~StopOnExit() { stop = true; }
  } stop_on_exit{stop};
  ASSERT_EQ(first.start(pair, sink, "qemu", 11, kRate, kBackRate, stop), "") << logs();
  const auto t0 = std::chrono::steady_clock::now();

  std::vector<std::string> serials_a{status_of(pair.a).serial};
  std::vector<std::string> serials_b{status_of(pair.b).serial};
  ASSERT_EQ(serials_a[0], serial_of_file(pair.a.pki / "server-cert.pem")) << status_of(pair.a).json;
  ASSERT_EQ(serials_b[0], serial_of_file(pair.b.pki / "server-cert.pem")) << status_of(pair.b).json;
  int step = 0;
  uint64_t seed = 1000;

  // After a change on `side`: it reloaded (serial from its files, reloads.ok
  // above `ok_before`, no failed reload), and new connections get that serial
  // and work.
  auto expect_reloaded = [&](TunnelSide& side, TunnelSide& peer, long ok_before,
                             const std::string& what) {
    SCOPED_TRACE("step " + std::to_string(step) + ": " + what + " on " + side.name);
    const std::string want = serial_of_file(side.pki / "server-cert.pem");
    Status st =
        wait_status(side, [&](const Status& s) { return s.ok > ok_before && s.serial == want; });
    EXPECT_EQ(st.serial, want) << st.json << "\n" << logs();
    EXPECT_GT(st.ok, ok_before) << st.json;
    EXPECT_EQ(st.failed, 0) << st.json << "\n" << logs();
    Presented p = present_serial(side.port, peer.pki, side.name);
    EXPECT_EQ(p.serial, want) << p.error << "\n" << logs();
    EXPECT_TRUE(p.echoed) << p.error << "\n" << logs();
    EXPECT_EQ(fresh_connection_carries(pair, short_sink, "nbd", ++seed), "") << logs();
    return st.serial;
  };
  auto rotate = [&](TunnelSide& side) {
    long ok_before = status_of(side).ok;
    ASSERT_TRUE(certs_ok(
        {"rotate", "--ca", ca_dir.string(), "--dir", side.pki.string(), "--name", side.name}));
    std::string serial =
        expect_reloaded(side, &side == &pair.a ? pair.b : pair.a, ok_before, "xmig-certs rotate");
    (&side == &pair.a ? serials_a : serials_b).push_back(serial);
  };
  auto distribute_bundle = [&](const std::string& what) {
    for (TunnelSide* side : {&pair.b, &pair.a}) {
      long ok_before = status_of(*side).ok;
      copy_into_place(ca_dir / "ca-bundle.pem", side->pki / "ca-cert.pem");
      expect_reloaded(*side, side == &pair.a ? pair.b : pair.a, ok_before, what);
    }
  };

  // 1) and 2): node rotation, twice.
  for (step = 1; step <= 2; ++step) {
    ASSERT_NO_FATAL_FAILURE(rotate(pair.b));
    ASSERT_NO_FATAL_FAILURE(rotate(pair.a));
    EXPECT_TRUE(old_peer_accepted()) << "step " << step << "\n" << logs();
    if (step == 1) {
      ASSERT_EQ(second.start(pair, sink, "qemu", 21, kRate, kBackRate, stop), "") << logs();
    }
  }
  // 3) CA rollover: the bundle (new + old) to every node first.
  step = 3;
  ASSERT_TRUE(certs_ok({"ca", "rollover", "--dir", ca_dir.string()}));
  distribute_bundle("ca-bundle.pem (new + old CA) copied");
  EXPECT_TRUE(old_peer_accepted()) << "step 3\n" << logs();
  // 4) every node gets a certificate from the new CA.
  step = 4;
  ASSERT_NO_FATAL_FAILURE(rotate(pair.b));
  ASSERT_NO_FATAL_FAILURE(rotate(pair.a));
  EXPECT_EQ(certs::verify_chain(read_file(pair.a.pki / "server-cert.pem"),
                                read_file(ca_dir / "ca-cert.pem")),
            std::nullopt)
      << "hv-a's certificate is not from the new CA";
  EXPECT_TRUE(old_peer_accepted()) << "step 4: the overlap must still trust the old CA\n" << logs();
  // 5) retire the old CA and distribute the new-only bundle.
  step = 5;
  ASSERT_TRUE(certs_ok({"ca", "retire", "--dir", ca_dir.string()}));
  distribute_bundle("ca-bundle.pem (new CA only) copied");
  EXPECT_FALSE(old_peer_accepted()) << "step 5: a certificate of the retired CA still gets in\n"
                                    << logs();

  // Let the long connections run a little more under the final material, then
  // end them.
  const double rotation_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::this_thread::sleep_for(1s);
  stop = true;
  uint64_t total = 0;
  int n = 0;
  for (LongStream* ls : {&first, &second}) {
    ++n;
    if (!ls->client) continue;
    Hashed s = ls->sent.get(), sb = ls->sent_back.get();
    Hashed r = ls->received.get(), rb = ls->received_back.get();
    EXPECT_EQ(s.error, "") << "long connection " << n;
    EXPECT_EQ(sb.error, "") << "long connection " << n;
    EXPECT_EQ(r.error, "") << "long connection " << n << "\n" << logs();
    EXPECT_EQ(rb.error, "") << "long connection " << n << "\n" << logs();
    EXPECT_EQ(r.bytes, s.bytes) << "long connection " << n;
    EXPECT_EQ(r.sha256, s.sha256) << "long connection " << n;
    EXPECT_EQ(rb.bytes, sb.bytes) << "long connection " << n;
    EXPECT_EQ(rb.sha256, sb.sha256) << "long connection " << n;
    EXPECT_GT(s.bytes, 0u);
    total += r.bytes + rb.bytes;
    ls->client.reset();
    ls->target.reset();
  }

  // Both long connections and every short one closed cleanly on both sides:
  // 2 long + 10 short through the pair.
  const int carried = 2 + 10;
  const std::string out = "close: dir=out peer=hv-b", in = "close: dir=in peer=hv-a";
  wait_until(
      [&] {
        return count_in_log(pair.a.log, out) >= carried &&
               count_lines_with_all(pair.b.log, {in, "channel=qemu"}) >= 2;
      },
      10s);
  EXPECT_EQ(count_lines_with_all(pair.a.log, {out, "channel=qemu", "result=ok"}), 2) << logs();
  EXPECT_EQ(count_lines_with_all(pair.b.log, {in, "channel=qemu", "result=ok"}), 2) << logs();
  EXPECT_EQ(count_lines_with_all(pair.a.log, {out, "channel=nbd", "result=ok"}), 10) << logs();
  EXPECT_EQ(count_in_log(pair.a.log, "refused, still serving"), 0) << logs();
  EXPECT_EQ(count_in_log(pair.b.log, "refused, still serving"), 0) << logs();
  EXPECT_EQ(count_in_log(pair.a.log, "refused:"), 0) << logs();
  EXPECT_EQ(count_in_log(pair.b.log, "refused:"), 1) << "only the retired CA's peer\n" << logs();

  Status fa = status_of(pair.a), fb = status_of(pair.b);
  std::cout << "[ reload   ] 6 rotations, a rollover and a retire loaded in " << rotation_seconds
            << " s; the 2 long connections carried " << total << " bytes (" << total / kMiB
            << " MiB, both directions)\n"
            << "[ reload   ] hv-a serials:";
  for (auto& s : serials_a) std::cout << " " << s;
  std::cout << "\n[ reload   ] hv-b serials:";
  for (auto& s : serials_b) std::cout << " " << s;
  std::cout << "\n[ reload   ] reloads hv-a ok=" << fa.ok << " failed=" << fa.failed
            << ", hv-b ok=" << fb.ok << " failed=" << fb.failed << std::endl;
  RecordProperty("long_connection_bytes", std::to_string(total));
  EXPECT_EQ(serials_a.size(), 1u + 3);  // the first, and one per rotation
  EXPECT_EQ(serials_b.size(), 1u + 3);
  EXPECT_GE(fa.ok, 3 + 2);  // 3 rotations + 2 bundle copies
  EXPECT_GE(fb.ok, 3 + 2);
  EXPECT_EQ(fa.failed, 0);
  EXPECT_EQ(fb.failed, 0);
}

// Writes `content` over path in place (open, truncate, write): what a careless
// copy looks like to a reader in the middle of it.
void write_in_place(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

// Setup: hv-a and hv-b running with fresh certificates; hv-b serves serial S.
// Action: hv-b's files are replaced, one case at a time, by broken material:
// the key of another certificate; certificate and key from another CA; an
// expired certificate; a certificate for another host; a certificate file cut
// in half in place; a key file cut in half in place; a world-readable key; a
// CA bundle whose second certificate is cut in half. After each case the good
// files are written back.
// Pass, for each case: reloads.failed grows by one and hv-b logs
// `reload (files changed) refused, still serving certificate serial S: ...`
// with the specific reason; the status endpoint still shows S; a new TLS
// connection is presented S and echoed; a new connection through the pair
// carries 4 MiB intact. Writing the good files back is a successful reload
// of S again.
TEST_F(Reload, RefusesBrokenMaterialAndKeepsServing) {
  pair_ = std::make_unique<TunnelPair>();
  TunnelPair& pair = *pair_;
  auto short_sink = Listener::unix_socket(pair.delivery("nbd").string());
  const fs::path ca_file = pair.b.pki / "ca-cert.pem";
  const fs::path cert_file = pair.b.pki / "server-cert.pem";
  const fs::path key_file = pair.b.pki / "server-key.pem";
  const std::string good_ca = read_file(ca_file), good_cert = read_file(cert_file),
                    good_key = read_file(key_file);
  const std::string serial = serial_of_file(cert_file);
  ASSERT_EQ(status_of(pair.b).serial, serial) << logs();

  auto issue = [&](const certs::Pem& ca, const std::string& name, int days = 30,
                   long start_offset = -300) {
    certs::IssueOptions o;
    o.name = name;
    o.ips = {"127.0.0.1"};
    o.days = days;
    o.start_offset_seconds = start_offset;
    return certs::issue(ca, o);
  };
  certs::CaOptions other_opts;
  other_opts.name = "some other CA";
  const certs::Pem other_ca = certs::make_ca(other_opts);
  const certs::Pem sibling = issue(pair.ca, "hv-b");  // valid, but not installed
  const certs::Pem foreign = issue(other_ca, "hv-b");
  const certs::Pem expired = issue(pair.ca, "hv-b", 1, -3 * 24 * 3600);
  const certs::Pem elsewhere = issue(pair.ca, "hv-c");
  auto install = [&](const certs::Pem& node) {
    certs::write_file_atomic(key_file, node.key, 0600);
    certs::write_file_atomic(cert_file, node.cert, 0644);
  };

  struct Case {
    std::string name;
    std::function<void()> write;
    std::string reason;  // in the refusal line
  };
  const std::vector<Case> cases{
      {"key of another certificate", [&] { certs::write_file_atomic(key_file, sibling.key, 0600); },
       "does not match the certificate"},
      {"certificate and key from another CA", [&] { install(foreign); },
       "unable to get local issuer certificate"},
      {"expired certificate", [&] { install(expired); }, "certificate has expired"},
      {"certificate for another host", [&] { install(elsewhere); },
       "does not name this host \"hv-b\""},
      {"certificate file cut in half",
       [&] { write_in_place(cert_file, good_cert.substr(0, good_cert.size() / 2)); },
       "server-cert.pem: certificate 1 is cut short or damaged"},
      {"key file cut in half",
       [&] { write_in_place(key_file, good_key.substr(0, good_key.size() / 2)); },
       "server-key.pem: private key is cut short or damaged"},
      {"world-readable key", [&] { certs::write_file_atomic(key_file, good_key, 0644); },
       "accessible to all users"},
      {"CA bundle with its second certificate cut in half",
       [&] {
         write_in_place(ca_file, good_ca + other_ca.cert.substr(0, other_ca.cert.size() / 2));
       },
       "ca-cert.pem: certificate 2 is cut short or damaged"},
  };

  uint64_t seed = 500;
  long expected_failed = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Status before = status_of(pair.b);
    c.write();
    Status st = wait_status(pair.b, [&](const Status& s) { return s.failed > before.failed; });
    EXPECT_EQ(st.failed, ++expected_failed) << st.json << "\n" << logs();
    EXPECT_EQ(st.ok, before.ok) << st.json;
    EXPECT_EQ(st.serial, serial) << st.json;
    EXPECT_EQ(count_lines_with_all(pair.b.log,
                                   {"reload (files changed) refused, still serving certificate "
                                    "serial " +
                                        serial + ": ",
                                    c.reason}),
              1)
        << logs();
    Presented p = present_serial(pair.b.port, pair.a.pki, "hv-b");
    EXPECT_EQ(p.serial, serial) << p.error << "\n" << logs();
    EXPECT_TRUE(p.echoed) << p.error;
    EXPECT_EQ(fresh_connection_carries(pair, short_sink, "nbd", ++seed), "") << logs();

    // The good files again: a successful reload of the same certificate.
    certs::write_file_atomic(ca_file, good_ca, 0644);
    certs::write_file_atomic(key_file, good_key, 0600);
    certs::write_file_atomic(cert_file, good_cert, 0644);
    st = wait_status(pair.b, [&](const Status& s) { return s.ok > before.ok; });
    EXPECT_EQ(st.ok, before.ok + 1) << st.json << "\n" << logs();
    EXPECT_EQ(st.failed, expected_failed) << st.json << "\n" << logs();
    EXPECT_EQ(st.serial, serial) << st.json;
  }
  EXPECT_EQ(count_in_log(pair.b.log, "refused:"), 0) << logs();
  EXPECT_EQ(count_in_log(pair.a.log, "refused:"), 0) << logs();
}

// Setup: hv-a and hv-b with [tls] client_cert/client_key mapped to
// client-cert.pem/client-key.pem (the Quick start's libvirt layout); hv-a's
// client certificate is its own (serial C1, another certificate for hv-a than
// its server certificate S), so what hv-a dials with is told apart from what
// it serves.
// Action on hv-a, one at a time: its client key replaced by the key of another
// certificate; the good key back but readable by all users; the good key
// with mode 0600; then a new client certificate C2 and its key.
// Pass: each broken client key is a refused reload (reloads.failed
// grows, hv-a logs `reload (files changed) refused, still serving certificate
// serial S: <pki>/client-key.pem: ...` with the reason) and a new connection
// through the pair (hv-a dials hv-b with its client identity) still carries
// 4 MiB intact; the good key is a successful reload; C2 is reloaded (`client
// certificate serial C2` in the log) while the status still shows S, and a
// new connection carries 4 MiB with it.
TEST_F(Reload, BrokenClientKeyIsRefusedAndTheClientCertificateStaysInService) {
  pair_ = std::make_unique<TunnelPair>(TunnelPairOptions{.client_files = true, .start = false});
  TunnelPair& pair = *pair_;
  const fs::path client_cert = pair.a.pki / "client-cert.pem";
  const fs::path client_key = pair.a.pki / "client-key.pem";
  auto issue_a = [&] {
    certs::IssueOptions o;
    o.name = "hv-a";
    return certs::issue(pair.ca, o);
  };
  const certs::Pem c1 = issue_a();
  certs::write_file_atomic(client_key, c1.key, 0600);
  certs::write_file_atomic(client_cert, c1.cert, 0644);
  pair.start(pair.a);
  pair.start(pair.b);
  auto sink = Listener::unix_socket(pair.delivery("nbd").string());
  const std::string serial = serial_of_file(pair.a.pki / "server-cert.pem");
  const std::string c1_serial = serial_of_file(client_cert);
  ASSERT_NE(serial, c1_serial);
  EXPECT_EQ(
      count_lines_with_all(pair.a.log, {" ready: ", "client certificate serial " + c1_serial}), 1)
      << logs();
  ASSERT_EQ(fresh_connection_carries(pair, sink, "nbd", 700), "") << logs();

  const std::string refused =
      "reload (files changed) refused, still serving certificate serial " + serial + ": ";
  struct Case {
    std::string name;
    std::function<void()> write;
    std::string reason;  // in the refusal line
  };
  const std::vector<Case> cases{
      {"client key of another certificate",
       [&] { certs::write_file_atomic(client_key, issue_a().key, 0600); },
       client_key.string() + ": does not match the certificate " + client_cert.string()},
      {"client key readable by all users",
       [&] { certs::write_file_atomic(client_key, c1.key, 0644); },
       client_key.string() + ": the private key is accessible to all users"},
  };
  uint64_t seed = 700;
  long failed = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Status before = status_of(pair.a);
    c.write();
    Status st = wait_status(pair.a, [&](const Status& s) { return s.failed > before.failed; });
    EXPECT_EQ(st.failed, ++failed) << st.json << "\n" << logs();
    EXPECT_EQ(st.serial, serial) << st.json;
    EXPECT_EQ(count_lines_with_all(pair.a.log, {refused, c.reason}), 1) << logs();
    EXPECT_EQ(fresh_connection_carries(pair, sink, "nbd", ++seed), "") << logs();
  }

  Status before = status_of(pair.a);
  fs::permissions(client_key, fs::perms::owner_read | fs::perms::owner_write);
  Status st = wait_status(pair.a, [&](const Status& s) { return s.ok > before.ok; });
  EXPECT_EQ(st.ok, before.ok + 1) << st.json << "\n" << logs();

  const certs::Pem c2 = issue_a();
  before = st;
  certs::write_file_atomic(client_key, c2.key, 0600);
  certs::write_file_atomic(client_cert, c2.cert, 0644);
  const std::string c2_serial = serial_of_file(client_cert);
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.a.log,
                                    {"reload (files changed): certificate serial " + serial,
                                     "client certificate serial " + c2_serial}) == 1;
      },
      kReloadWait))
      << logs();
  st = status_of(pair.a);
  EXPECT_EQ(st.serial, serial) << st.json;
  EXPECT_EQ(st.failed, failed) << st.json;
  EXPECT_EQ(fresh_connection_carries(pair, sink, "nbd", ++seed), "") << logs();
  EXPECT_EQ(count_in_log(pair.a.log, "refused:") + count_in_log(pair.b.log, "refused:"), 0)
      << logs();
}

// Setup: hv-b's certificate and key are symbolic links into another directory
// (as with certificates managed elsewhere, e.g. /etc/letsencrypt/live), so
// replacing the link targets is invisible to the file watch, which looks at
// the configured directory.
// Action: a new certificate and key for hv-b replace the link targets; after
// 1.5 s (well past the 300 ms settle) hv-b gets SIGHUP. Then a key that does
// not match replaces the target key, and SIGHUP again.
// Pass: before the first SIGHUP hv-b still serves the old serial
// with no reload counted (so what follows is SIGHUP's doing); after it the
// status shows the new serial, reloads.ok is 1, the log says `reload (SIGHUP):
// certificate serial NEW`, a new connection is presented NEW and a new
// connection through the pair works. After the second SIGHUP the log says
// `reload (SIGHUP) refused, still serving certificate serial NEW`,
// reloads.failed is 1, and NEW is still served.
TEST_F(Reload, SighupReloads) {
  TunnelPairOptions opts;
  opts.start = false;
  pair_ = std::make_unique<TunnelPair>(opts);
  TunnelPair& pair = *pair_;
  const fs::path store = pair.b.dir / "store";
  fs::create_directories(store);
  for (const char* name : {"server-cert.pem", "server-key.pem"}) {
    fs::rename(pair.b.pki / name, store / name);
    fs::create_symlink(store / name, pair.b.pki / name);
  }
  ASSERT_NO_THROW(pair.start(pair.a));
  ASSERT_NO_THROW(pair.start(pair.b));
  auto short_sink = Listener::unix_socket(pair.delivery("nbd").string());
  const std::string old_serial = serial_of_file(store / "server-cert.pem");
  ASSERT_EQ(status_of(pair.b).serial, old_serial) << logs();

  certs::IssueOptions o;
  o.name = "hv-b";
  o.ips = {"127.0.0.1"};
  const certs::Pem next = certs::issue(pair.ca, o);
  certs::write_file_atomic(store / "server-key.pem", next.key, 0600);
  certs::write_file_atomic(store / "server-cert.pem", next.cert, 0644);
  const std::string new_serial = serial_of_file(pair.b.pki / "server-cert.pem");
  ASSERT_NE(new_serial, old_serial);
  std::this_thread::sleep_for(1500ms);
  Status st = status_of(pair.b);
  ASSERT_EQ(st.serial, old_serial) << "the file watch saw the change; this test proves nothing\n"
                                   << st.json;
  ASSERT_EQ(st.ok, 0) << st.json;

  pair.b.process->signal(SIGHUP);
  st = wait_status(pair.b, [&](const Status& s) { return s.ok > 0; });
  EXPECT_EQ(st.serial, new_serial) << st.json << "\n" << logs();
  EXPECT_EQ(st.ok, 1) << st.json;
  EXPECT_EQ(st.failed, 0) << st.json;
  EXPECT_EQ(count_in_log(pair.b.log, "reload (SIGHUP): certificate serial " + new_serial), 1)
      << logs();
  Presented p = present_serial(pair.b.port, pair.a.pki, "hv-b");
  EXPECT_EQ(p.serial, new_serial) << p.error << "\n" << logs();
  EXPECT_TRUE(p.echoed) << p.error;
  EXPECT_EQ(fresh_connection_carries(pair, short_sink, "nbd", 700), "") << logs();

  // Broken material on SIGHUP: refused, NEW stays.
  certs::write_file_atomic(store / "server-key.pem", certs::issue(pair.ca, o).key, 0600);
  pair.b.process->signal(SIGHUP);
  st = wait_status(pair.b, [&](const Status& s) { return s.failed > 0; });
  EXPECT_EQ(st.failed, 1) << st.json << "\n" << logs();
  EXPECT_EQ(st.ok, 1) << st.json;
  EXPECT_EQ(st.serial, new_serial) << st.json;
  EXPECT_EQ(count_lines_with_all(pair.b.log, {"reload (SIGHUP) refused, still serving certificate "
                                              "serial " +
                                                  new_serial + ": ",
                                              "does not match the certificate"}),
            1)
      << logs();
  p = present_serial(pair.b.port, pair.a.pki, "hv-b");
  EXPECT_EQ(p.serial, new_serial) << p.error << "\n" << logs();
  EXPECT_EQ(fresh_connection_carries(pair, short_sink, "nbd", 701), "") << logs();
}

// Setup: hv-a and hv-b running; hv-b's key is rewritten readable by all users
// (0644), which hv-b refuses (`... accessible to all users ...; fix: chmod 600
// ...`).
// Action: `chmod 600` on the key, as the refusal says, and nothing else.
// Pass: hv-b reloads by itself (reloads.ok grows, no further
// failure): a mode change is a change of the file, like a write.
TEST_F(Reload, ChmodOfRefusedKeyIsPickedUp) {
  pair_ = std::make_unique<TunnelPair>();
  TunnelPair& pair = *pair_;
  const fs::path key_file = pair.b.pki / "server-key.pem";
  Status before = status_of(pair.b);
  certs::write_file_atomic(key_file, read_file(key_file), 0644);
  Status st = wait_status(pair.b, [&](const Status& s) { return s.failed > before.failed; });
  ASSERT_EQ(st.failed, before.failed + 1) << st.json << "\n" << logs();
  ASSERT_EQ(count_in_log(pair.b.log, "accessible to all users"), 1) << logs();

  ASSERT_EQ(::chmod(key_file.c_str(), 0600), 0);
  st = wait_status(pair.b, [&](const Status& s) { return s.ok > before.ok; });
  EXPECT_EQ(st.ok, before.ok + 1) << "chmod 600 was not picked up\n" << st.json << "\n" << logs();
  EXPECT_EQ(st.failed, before.failed + 1) << st.json;
}

// A PEM CRL issued by `ca` revoking the certificates in `revoked` (PEM):
// last update 5 minutes ago, next update in next_update_seconds (a day).
std::string make_crl(const certs::Pem& ca, const std::vector<std::string>& revoked,
                     long next_update_seconds = 86400) {
  auto bio_of = [](const std::string& pem) {
    return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  };
  X509Ptr ca_cert(PEM_read_bio_X509(bio_of(ca.cert).get(), nullptr, nullptr, nullptr));
  PkeyPtr ca_key(PEM_read_bio_PrivateKey(bio_of(ca.key).get(), nullptr, nullptr, nullptr));
  X509CrlPtr crl(X509_CRL_new());
  if (!ca_cert || !ca_key || !crl) throw std::runtime_error("make_crl: bad CA");
  X509_CRL_set_version(crl.get(), 1);  // v2
  X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca_cert.get()));
  Asn1TimePtr last(X509_gmtime_adj(nullptr, -300));
  Asn1TimePtr next(X509_gmtime_adj(nullptr, next_update_seconds));
  X509_CRL_set1_lastUpdate(crl.get(), last.get());
  X509_CRL_set1_nextUpdate(crl.get(), next.get());
  for (const std::string& pem : revoked) {
    X509Ptr cert(PEM_read_bio_X509(bio_of(pem).get(), nullptr, nullptr, nullptr));
    if (!cert) throw std::runtime_error("make_crl: bad certificate");
    X509_REVOKED* r = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(cert.get()));
    X509_REVOKED_set_revocationDate(r, last.get());
    X509_CRL_add0_revoked(crl.get(), r);
  }
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), ca_key.get(), EVP_sha256()) <= 0)
    throw std::runtime_error("make_crl: signing failed");
  BioPtr out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_CRL(out.get(), crl.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// Setup: hv-b has `[tls] crl` set to a CRL of the cluster CA that revokes
// nothing; hv-a and hv-b running; one long connection through the pair
// carries paced data both ways.
// Action: hv-b's CRL file is replaced by one that revokes hv-a's certificate.
// Then it is replaced by a file holding that CRL followed by half of another
// CA's CRL (a half-written file), then by an expired CRL.
// Pass: hv-b reloads the CRL (reloads.ok grows, `(same certificate;
// CA bundle and CRL reloaded)`); from then on a new connection from hv-a is
// refused by hv-b (`refused: ... revoked`) and never reaches the target; the
// long connection opened before the revocation keeps going and ends with
// equal hashes both ways; hv-b resumed that connection's session (in resumed
// 1: hv-a held a ticket), and the refused connection is no resumed one (in
// resumed still 1: hv-b's reload refuses tickets issued before it, so the
// revoked certificate is checked again). The half-written CRL file is refused
// (reloads.failed 1, `crl.pem: CRL 2 is cut short or damaged`), and so is an
// expired CRL (`CRL has expired; fix: put a current CRL ...`).
TEST_F(Reload, CrlChangeRefusesNewConnectionsOnly) {
  TunnelPairOptions opts;
  opts.start = false;
  pair_ = std::make_unique<TunnelPair>(opts);
  TunnelPair& pair = *pair_;
  const fs::path crl_file = pair.b.pki / "crl.pem";
  certs::write_file_atomic(crl_file, make_crl(pair.ca, {}), 0644);
  std::string config = read_file(pair.b.config);
  const std::string key_line = "key = \"" + (pair.b.pki / "server-key.pem").string() + "\"\n";
  ASSERT_NE(config.find(key_line), std::string::npos) << config;
  config.replace(config.find(key_line), key_line.size(),
                 key_line + "crl = \"" + crl_file.string() + "\"\n");
  write_file(pair.b.config, config);
  ASSERT_NO_THROW(pair.start(pair.a));
  ASSERT_NO_THROW(pair.start(pair.b));

  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  auto short_sink = Listener::unix_socket(pair.delivery("nbd").string());
  ASSERT_EQ(fresh_connection_carries(pair, short_sink, "nbd", 900), "") << logs();
  std::atomic<bool> stop{false};
  LongStream running;
  struct StopOnExit {
    std::atomic<bool>& stop;
    ~StopOnExit() { stop = true; }
  } stop_on_exit{stop};
  ASSERT_EQ(running.start(pair, sink, "qemu", 31, 32 * kMiB, 8 * kMiB, stop), "") << logs();
  std::this_thread::sleep_for(500ms);
  const HandshakeCounts resumed_before = status_handshakes(pair.b);
  EXPECT_EQ(resumed_before.in_resumed, 1) << resumed_before.json;

  Status before = status_of(pair.b);
  certs::write_file_atomic(crl_file, make_crl(pair.ca, {read_file(pair.a.pki / "server-cert.pem")}),
                           0644);
  Status st = wait_status(pair.b, [&](const Status& s) { return s.ok > before.ok; });
  EXPECT_EQ(st.ok, before.ok + 1) << st.json << "\n" << logs();
  EXPECT_EQ(st.failed, 0) << st.json;
  EXPECT_EQ(count_in_log(pair.b.log, "(same certificate; CA bundle and CRL reloaded)"), 1)
      << logs();

  // A new connection from hv-a: hv-b refuses the revoked certificate, hv-a
  // closes the entry connection, the target sees nothing.
  {
    Fd client = connect_unix(pair.entry("nbd").string());
    EXPECT_TRUE(wait_readable(client.get(), 10s)) << logs();
    char byte;
    EXPECT_LE(::recv(client.get(), &byte, 1, 0), 0) << "the entry connection was not closed";
    EXPECT_FALSE(short_sink.accept(500ms)) << "a revoked peer reached the target\n" << logs();
    EXPECT_TRUE(wait_until(
        [&] {
          return count_lines_with_all(pair.b.log, {"refused:", "revoked"}) == 1;
        },
        5s))
        << logs();
  }
  const HandshakeCounts resumed_after = status_handshakes(pair.b);
  EXPECT_EQ(resumed_after.in_resumed, 1) << "a revoked client resumed\n" << resumed_after.json;

  // The half-written CRL file is refused; the revoking CRL stays in force.
  certs::CaOptions other_opts;
  other_opts.name = "another CA";
  const std::string other_crl = make_crl(certs::make_ca(other_opts), {});
  before = status_of(pair.b);
  write_in_place(crl_file, make_crl(pair.ca, {read_file(pair.a.pki / "server-cert.pem")}) +
                               other_crl.substr(0, other_crl.size() / 2));
  st = wait_status(pair.b, [&](const Status& s) { return s.failed > before.failed; });
  EXPECT_EQ(st.failed, 1) << st.json << "\n" << logs();
  EXPECT_EQ(count_lines_with_all(
                pair.b.log, {"refused, still serving", "crl.pem: CRL 2 is cut short or damaged"}),
            1)
      << logs();

  // An expired CRL (next update passed) is refused, saying to renew it.
  before = status_of(pair.b);
  certs::write_file_atomic(crl_file, make_crl(pair.ca, {}, -60), 0644);
  st = wait_status(pair.b, [&](const Status& s) { return s.failed > before.failed; });
  EXPECT_EQ(st.failed, 2) << st.json << "\n" << logs();
  EXPECT_EQ(count_lines_with_all(pair.b.log, {"refused, still serving", "CRL has expired",
                                              "fix: put a current CRL of the CA into"}),
            1)
      << logs();

  // The connection opened before the revocation is intact.
  stop = true;
  Hashed s = running.sent.get(), sb = running.sent_back.get();
  Hashed r = running.received.get(), rb = running.received_back.get();
  EXPECT_EQ(r.error, "") << logs();
  EXPECT_EQ(rb.error, "") << logs();
  EXPECT_GT(s.bytes, 0u);
  EXPECT_EQ(r.bytes, s.bytes);
  EXPECT_EQ(r.sha256, s.sha256);
  EXPECT_EQ(rb.bytes, sb.bytes);
  EXPECT_EQ(rb.sha256, sb.sha256);
  running.client.reset();
  running.target.reset();
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with_all(pair.b.log,
                                    {"close: dir=in peer=hv-a channel=qemu", "result=ok"}) == 1;
      },
      10s))
      << logs();
}

// Setup: hv-a and hv-b running; one long connection through the pair carries
// paced data both ways.
// Action: hv-b's certificate and key are replaced and, before the watcher's
// 300 ms settle has passed, hv-b gets SIGTERM, so it drains (stops accepting,
// lets the connection run) with a reload still due; while it drains, its CA
// file is renamed into place once more (the watcher wakes up and ends); a
// second later the connection ends.
// Pass: the connection ends intact (equal hashes both ways) and
// hv-b exits 0 once it has. The reload watcher stops while a reload is
// pending: built with -DXMIG_SANITIZE=ON, a use of its freed state shows up
// here as a non-zero exit (or a crash).
TEST_F(Reload, FileChangeWhileDrainingIsHarmless) {
  pair_ = std::make_unique<TunnelPair>();
  TunnelPair& pair = *pair_;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  std::atomic<bool> stop{false};
  LongStream running;
  struct StopOnExit {
    std::atomic<bool>& stop;
    ~StopOnExit() { stop = true; }
  } stop_on_exit{stop};
  ASSERT_EQ(running.start(pair, sink, "qemu", 41, 16 * kMiB, 4 * kMiB, stop), "") << logs();
  std::this_thread::sleep_for(300ms);

  // A change the watcher is still settling (its reload is due in 300 ms) ...
  make_node_pki(pair.b.pki, pair.ca, "hv-b");
  pair.b.process->signal(SIGTERM);
  ASSERT_TRUE(
      wait_until([&] { return count_in_log(pair.b.log, "SIGTERM: no longer accepting") == 1; }, 5s))
      << logs();
  // ... and one more while hv-b drains: the watcher ends on it.
  const fs::path staged = pair.b.dir / "ca-cert.pem.staged";
  write_file(staged, read_file(pair.b.pki / "ca-cert.pem"));
  fs::rename(staged, pair.b.pki / "ca-cert.pem");
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(pair.b.process->running()) << "hv-b did not wait for the running connection\n"
                                         << logs();

  stop = true;
  Hashed s = running.sent.get(), sb = running.sent_back.get();
  Hashed r = running.received.get(), rb = running.received_back.get();
  EXPECT_EQ(r.error, "") << logs();
  EXPECT_EQ(rb.error, "") << logs();
  EXPECT_EQ(r.bytes, s.bytes);
  EXPECT_EQ(r.sha256, s.sha256);
  EXPECT_EQ(rb.bytes, sb.bytes);
  EXPECT_EQ(rb.sha256, sb.sha256);
  running.client.reset();
  running.target.reset();
  std::optional<int> code = pair.b.process->wait(15s);
  ASSERT_TRUE(code.has_value()) << "hv-b did not exit after its last connection\n" << logs();
  EXPECT_EQ(*code, 0) << logs();
}

}  // namespace
}  // namespace xmig::test
