// Helpers for the xmig-verify tests: running the real binary, reading its
// JSON findings, writing pcap files by hand, and misconfigured peers (a
// plaintext echo relay, a TLS server that is too lenient).
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.hpp"
#include "base/openssl.hpp"

namespace xmig::test {

namespace fs = std::filesystem;

// --- the binary --------------------------------------------------------------

struct VerifyRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs xmig-verify with args; output goes to a file under dir.
VerifyRun run_verify(const std::vector<std::string>& args, const fs::path& dir);

struct JsonFinding {
  std::string group, status, reason, fix;
};

// The finding named `check` in xmig-verify --json output (the first one).
std::optional<JsonFinding> find_check(const std::string& json, const std::string& check);
// Every finding, as (check, status).
std::vector<std::pair<std::string, std::string>> all_checks(const std::string& json);

// --- pcap files --------------------------------------------------------------

// Writes a classic pcap file (Ethernet, IPv4, TCP) frame by frame.
class PcapWriter {
 public:
  explicit PcapWriter(const fs::path& path);
  ~PcapWriter();
  // One TCP segment from (src_ip, sport) to (dst_ip, dport); ips in host order.
  void segment(uint32_t src_ip, uint16_t sport, uint32_t dst_ip, uint16_t dport, uint32_t seq,
               uint8_t flags, const std::string& payload);
  // The same over IPv6 (16-byte addresses), optionally behind a hop-by-hop
  // options header and an 802.1Q VLAN tag.
  void segment6(const std::string& src_ip, uint16_t sport, const std::string& dst_ip,
                uint16_t dport, uint32_t seq, uint8_t flags, const std::string& payload,
                bool hop_by_hop = false, bool vlan = false);
  // Raw frame bytes as they are (for hostile input).
  void frame(const std::string& bytes, uint32_t orig_len = 0);

 private:
  FILE* f_ = nullptr;
};

// A TCP conversation written through a PcapWriter: keeps sequence numbers.
class TcpConversation {
 public:
  TcpConversation(PcapWriter& w, uint16_t client_port, uint16_t server_port);
  void open();                                               // SYN, SYN-ACK, ACK
  void client(const std::string& bytes, size_t mss = 1400);  // in segments
  void server(const std::string& bytes, size_t mss = 1400);
  void close();
  uint32_t client_seq = 1000, server_seq = 50000;

 private:
  PcapWriter& w_;
  uint16_t cport_, sport_;
};

// TLS records as a 1.3 client and server put them on the wire.
std::string tls_client_hello(const std::string& alpn);
std::string tls_server_hello(uint16_t version, uint16_t suite);
std::string tls_record(uint8_t type, const std::string& body);
std::string random_bytes(size_t n, uint64_t seed);

// --- misconfigured peers -------------------------------------------------------

// Accepts TCP on 127.0.0.1 and echoes every byte back (a plaintext relay).
class EchoRelay {
 public:
  EchoRelay();
  ~EchoRelay();
  uint16_t port() const { return port_; }

 private:
  Fd listener_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Poses as the local tunnel's verify route: accepts on a UNIX socket and
// forwards each connection to 127.0.0.1:port over plain TCP (what a
// hand-made socat "tunnel" does). With fake_tls_framing, bytes towards the
// peer are wrapped in TLS application-data record headers (and unwrapped on
// the way back): TLS-shaped, yet plaintext.
class PlaintextForwarder {
 public:
  PlaintextForwarder(const fs::path& unix_path, uint16_t port, bool fake_tls_framing);
  ~PlaintextForwarder();

 private:
  void serve(int client);
  Fd listener_;
  uint16_t port_;
  bool framing_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct FakePeerOptions {
  std::string cert_file, key_file, ca_file;  // its identity; the CA it checks clients against
  bool verify_clients = true;                // false: accepts any client (or none)
  bool allow_tls12 = false;
  bool accept_any_channel = false;  // answers 'A' to every channel, not only verify
  bool silent = false;              // sends nothing: a plain TLS terminator forwarding into a sink
};

// A TLS server thread that looks like a peer tunnel: after the handshake it
// answers a verdict ('A' for channel verify, 'C' otherwise unless
// accept_any_channel) and echoes what follows.
class FakeTlsPeer {
 public:
  explicit FakeTlsPeer(FakePeerOptions opts);
  ~FakeTlsPeer();
  uint16_t port() const { return port_; }

 private:
  void serve(int fd);
  FakePeerOptions opts_;
  SslCtxPtr ctx_;
  Fd listener_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace xmig::test
