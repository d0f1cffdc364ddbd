#include "tests/verify/helpers.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <random>
#include <stdexcept>

#include "harness/files.hpp"
#include "harness/process.hpp"

namespace xmig::test {

using namespace harness;

// --- the binary ----------------------------------------------------------------

VerifyRun run_verify(const std::vector<std::string>& args, const fs::path& dir) {
  static int n = 0;
  fs::path log = dir / ("xmig-verify-" + std::to_string(++n) + ".out");
  std::vector<std::string> argv{tool("xmig-verify")};
  argv.insert(argv.end(), args.begin(), args.end());
  VerifyRun r;
  r.exit_code = run(argv, log.string(), 180s);
  r.output = read_file(log);
  return r;
}

namespace {

// The string value of "key":"..." at or after `from` (unescaped), or nullopt.
std::optional<std::string> string_field(const std::string& json, const std::string& key,
                                        size_t from, size_t* end = nullptr) {
  std::string needle = "\"" + key + "\":\"";
  size_t at = json.find(needle, from);
  if (at == std::string::npos) return std::nullopt;
  std::string out;
  size_t i = at + needle.size();
  for (; i < json.size() && json[i] != '"'; ++i) {
    if (json[i] == '\\' && i + 1 < json.size()) ++i;
    out += json[i];
  }
  if (end) *end = i;
  return out;
}

}  // namespace

std::optional<JsonFinding> find_check(const std::string& json, const std::string& check) {
  std::string needle = "\"check\":\"" + check + "\",";
  size_t at = json.find(needle);
  if (at == std::string::npos) return std::nullopt;
  size_t obj = json.rfind("{\"group\":", at);
  JsonFinding f;
  f.group = string_field(json, "group", obj).value_or("");
  f.status = string_field(json, "status", at).value_or("");
  f.reason = string_field(json, "reason", at).value_or("");
  f.fix = string_field(json, "fix", at).value_or("");
  return f;
}

std::vector<std::pair<std::string, std::string>> all_checks(const std::string& json) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t from = json.find("\"findings\":[");
  size_t end = 0;
  while (from != std::string::npos) {
    auto check = string_field(json, "check", from, &end);
    if (!check) break;
    auto status = string_field(json, "status", end, &end);
    out.emplace_back(*check, status.value_or(""));
    from = end;
  }
  return out;
}

// --- pcap files ------------------------------------------------------------------

namespace {

void put16(std::string& s, uint16_t v) {
  s += static_cast<char>(v >> 8);
  s += static_cast<char>(v & 0xff);
}
void put32(std::string& s, uint32_t v) {
  put16(s, static_cast<uint16_t>(v >> 16));
  put16(s, static_cast<uint16_t>(v & 0xffff));
}
void put24(std::string& s, uint32_t v) {
  s += static_cast<char>((v >> 16) & 0xff);
  put16(s, static_cast<uint16_t>(v & 0xffff));
}

}  // namespace

PcapWriter::PcapWriter(const fs::path& path) {
  f_ = std::fopen(path.c_str(), "wb");
  if (!f_) throw std::runtime_error("cannot write " + path.string());
  struct {
    uint32_t magic = 0xa1b2c3d4;
    uint16_t major = 2, minor = 4;
    int32_t zone = 0;
    uint32_t sigfigs = 0, snaplen = 262144, network = 1;
  } header;
  std::fwrite(&header, sizeof header, 1, f_);
}

PcapWriter::~PcapWriter() {
  if (f_) std::fclose(f_);
}

void PcapWriter::frame(const std::string& bytes, uint32_t orig_len) {
  static uint32_t usec = 0;
  uint32_t rec[4] = {1700000000u, ++usec % 1000000, static_cast<uint32_t>(bytes.size()),
                     orig_len ? orig_len : static_cast<uint32_t>(bytes.size())};
  std::fwrite(rec, sizeof rec, 1, f_);
  std::fwrite(bytes.data(), 1, bytes.size(), f_);
}

void PcapWriter::segment(uint32_t src_ip, uint16_t sport, uint32_t dst_ip, uint16_t dport,
                         uint32_t seq, uint8_t flags, const std::string& payload) {
  std::string f(12, '\0');
  f[5] = 1;
  f[11] = 2;
  put16(f, 0x0800);
  put16(f, 0x4500);
  put16(f, static_cast<uint16_t>(40 + payload.size()));
  put32(f, 0x00004000);  // id 0, don't fragment
  put16(f, 0x4006);      // ttl 64, TCP
  put16(f, 0);
  put32(f, src_ip);
  put32(f, dst_ip);
  put16(f, sport);
  put16(f, dport);
  put32(f, seq);
  put32(f, 0);
  f += static_cast<char>(5 << 4);
  f += static_cast<char>(flags);
  put16(f, 65535);
  put32(f, 0);
  frame(f + payload);
}

void PcapWriter::segment6(const std::string& src_ip, uint16_t sport, const std::string& dst_ip,
                          uint16_t dport, uint32_t seq, uint8_t flags, const std::string& payload,
                          bool hop_by_hop, bool vlan) {
  std::string f(12, '\0');
  f[5] = 1;
  f[11] = 2;
  if (vlan) {
    put16(f, 0x8100);
    put16(f, 42);
  }
  put16(f, 0x86dd);
  put32(f, 0x60000000);
  put16(f, static_cast<uint16_t>(20 + payload.size() + (hop_by_hop ? 8 : 0)));
  f += static_cast<char>(hop_by_hop ? 0 : 6);
  f += static_cast<char>(64);
  f += src_ip;
  f += dst_ip;
  if (hop_by_hop) f += std::string("\x06\0\x01\x04\0\0\0\0", 8);  // next TCP, PadN
  put16(f, sport);
  put16(f, dport);
  put32(f, seq);
  put32(f, 0);
  f += static_cast<char>(5 << 4);
  f += static_cast<char>(flags);
  put16(f, 65535);
  put32(f, 0);
  frame(f + payload);
}

TcpConversation::TcpConversation(PcapWriter& w, uint16_t cport, uint16_t sport)
    : w_(w), cport_(cport), sport_(sport) {}

constexpr uint32_t kClientIp = 0x0a000001, kServerIp = 0x0a000002;

void TcpConversation::open() {
  w_.segment(kClientIp, cport_, kServerIp, sport_, client_seq++, 0x02, "");
  w_.segment(kServerIp, sport_, kClientIp, cport_, server_seq++, 0x12, "");
  w_.segment(kClientIp, cport_, kServerIp, sport_, client_seq, 0x10, "");
}

void TcpConversation::client(const std::string& bytes, size_t mss) {
  for (size_t at = 0; at < bytes.size(); at += mss) {
    std::string part = bytes.substr(at, mss);
    w_.segment(kClientIp, cport_, kServerIp, sport_, client_seq, 0x18, part);
    client_seq += static_cast<uint32_t>(part.size());
  }
}

void TcpConversation::server(const std::string& bytes, size_t mss) {
  for (size_t at = 0; at < bytes.size(); at += mss) {
    std::string part = bytes.substr(at, mss);
    w_.segment(kServerIp, sport_, kClientIp, cport_, server_seq, 0x18, part);
    server_seq += static_cast<uint32_t>(part.size());
  }
}

void TcpConversation::close() {
  w_.segment(kClientIp, cport_, kServerIp, sport_, client_seq++, 0x11, "");
  w_.segment(kServerIp, sport_, kClientIp, cport_, server_seq++, 0x11, "");
}

std::string tls_record(uint8_t type, const std::string& body) {
  std::string r;
  r += static_cast<char>(type);
  put16(r, type == 22 && body.size() > 3 && body[0] == 1 ? 0x0301 : 0x0303);
  put16(r, static_cast<uint16_t>(body.size()));
  return r + body;
}

std::string tls_client_hello(const std::string& alpn) {
  std::string b;
  put16(b, 0x0303);
  b += random_bytes(32, 1);
  b += '\0';  // session id
  put16(b, 2);
  put16(b, 0x1302);
  b += '\1';
  b += '\0';
  std::string ext;
  put16(ext, 16);
  put16(ext, static_cast<uint16_t>(alpn.size() + 3));
  put16(ext, static_cast<uint16_t>(alpn.size() + 1));
  ext += static_cast<char>(alpn.size());
  ext += alpn;
  put16(ext, 43);
  put16(ext, 3);
  ext += '\2';
  put16(ext, 0x0304);
  put16(b, static_cast<uint16_t>(ext.size()));
  b += ext;
  std::string hs;
  hs += '\1';
  put24(hs, static_cast<uint32_t>(b.size()));
  return tls_record(22, hs + b);
}

std::string tls_server_hello(uint16_t version, uint16_t suite) {
  std::string b;
  put16(b, 0x0303);
  b += random_bytes(32, 2);
  b += '\0';
  put16(b, suite);
  b += '\0';
  std::string ext;
  if (version == 0x0304) {
    put16(ext, 43);
    put16(ext, 2);
    put16(ext, 0x0304);
  }
  put16(b, static_cast<uint16_t>(ext.size()));
  b += ext;
  std::string hs;
  hs += '\2';
  put24(hs, static_cast<uint32_t>(b.size()));
  return tls_record(22, hs + b);
}

std::string random_bytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  std::mt19937_64 rng(seed);
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// --- misconfigured peers -----------------------------------------------------------

namespace {

Fd listen_loopback(uint16_t* port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd.get(), 64) != 0)
    throw std::runtime_error(std::string("listen: ") + strerror(errno));
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

// Waits up to 100 ms for a connection; an invalid Fd when none came.
Fd accept_some(int listener) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, 100) <= 0) return Fd();
  return Fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

}  // namespace

EchoRelay::EchoRelay() {
  listener_ = listen_loopback(&port_);
  thread_ = std::thread([this] {
    std::vector<Fd> conns;
    while (!stop_) {
      std::vector<pollfd> fds{{listener_.get(), POLLIN, 0}};
      for (auto& c : conns) fds.push_back({c.get(), POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
      if (fds[0].revents & POLLIN)
        conns.emplace_back(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[65536];
        ssize_t n = ::recv(fds[i].fd, buf, sizeof buf, 0);
        if (n <= 0) {
          conns[i - 1].reset();
          continue;
        }
        ::send(fds[i].fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
      }
      std::erase_if(conns, [](const Fd& f) { return !f; });
    }
  });
}

EchoRelay::~EchoRelay() {
  stop_ = true;
  thread_.join();
}

PlaintextForwarder::PlaintextForwarder(const fs::path& unix_path, uint16_t port,
                                       bool fake_tls_framing)
    : port_(port), framing_(fake_tls_framing) {
  listener_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, unix_path.c_str(), sizeof addr.sun_path - 1);
  ::unlink(unix_path.c_str());
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener_.get(), 8) != 0)
    throw std::runtime_error("PlaintextForwarder: " + unix_path.string() + ": " + strerror(errno));
  thread_ = std::thread([this] {
    while (!stop_) {
      Fd c = accept_some(listener_.get());
      if (c) serve(c.get());
    }
  });
}

PlaintextForwarder::~PlaintextForwarder() {
  stop_ = true;
  thread_.join();
}

// One connection: client <-> TCP peer, both directions in one poll loop.
void PlaintextForwarder::serve(int client) {
  Fd peer(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port_);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(peer.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
  std::string back;  // framed bytes from the peer, not yet unwrapped
  bool client_open = true;
  for (int idle = 0; idle < 100 && !stop_;) {
    pollfd fds[2] = {{client, static_cast<short>(client_open ? POLLIN : 0), 0},
                     {peer.get(), POLLIN, 0}};
    if (::poll(fds, 2, 100) <= 0) {
      ++idle;
      continue;
    }
    idle = 0;
    char buf[16000];
    if (fds[0].revents & (POLLIN | POLLHUP)) {
      ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0) {
        client_open = false;
        ::shutdown(peer.get(), SHUT_WR);
      } else {
        std::string out(buf, static_cast<size_t>(n));
        if (framing_)
          out = std::string("\x17\x03\x03", 3) + static_cast<char>(n >> 8) +
                static_cast<char>(n & 0xff) + out;
        ::send(peer.get(), out.data(), out.size(), MSG_NOSIGNAL);
      }
    }
    if (fds[1].revents & (POLLIN | POLLHUP)) {
      ssize_t n = ::recv(peer.get(), buf, sizeof buf, 0);
      if (n <= 0) break;
      back.append(buf, static_cast<size_t>(n));
      std::string out;
      if (!framing_) {
        out.swap(back);
      } else {
        while (back.size() >= 5) {
          size_t len = static_cast<uint8_t>(back[3]) * 256u + static_cast<uint8_t>(back[4]);
          if (back.size() < 5 + len) break;
          out += back.substr(5, len);
          back.erase(0, 5 + len);
        }
      }
      ::send(client, out.data(), out.size(), MSG_NOSIGNAL);
    }
  }
  ::shutdown(client, SHUT_WR);
}

namespace {

int select_any(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned inlen, void*) {
  if (inlen < 1 || in[0] + 1u > inlen) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = in + 1;
  *outlen = in[0];
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

FakeTlsPeer::FakeTlsPeer(FakePeerOptions opts) : opts_(std::move(opts)) {
  // It writes to clients that may have gone (an echo after the verdict was
  // read): a write error, not a signal that ends the test binary.
  ::signal(SIGPIPE, SIG_IGN);
  ctx_.reset(SSL_CTX_new(TLS_server_method()));
  SSL_CTX_set_min_proto_version(ctx_.get(), opts_.allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(ctx_.get(), 0);
  if (SSL_CTX_use_certificate_chain_file(ctx_.get(), opts_.cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx_.get(), opts_.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error("FakeTlsPeer: cannot load its certificate");
  if (opts_.verify_clients) {
    SSL_CTX_load_verify_locations(ctx_.get(), opts_.ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  } else {
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);
  }
  SSL_CTX_set_alpn_select_cb(ctx_.get(), select_any, nullptr);
  listener_ = listen_loopback(&port_);
  thread_ = std::thread([this] {
    while (!stop_) {
      Fd c = accept_some(listener_.get());
      if (c) serve(c.get());
    }
  });
}

FakeTlsPeer::~FakeTlsPeer() {
  stop_ = true;
  thread_.join();
}

void FakeTlsPeer::serve(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  SslPtr owned(SSL_new(ctx_.get()));
  SSL* ssl = owned.get();
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) == 1) {
    const unsigned char* proto = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    std::string channel(reinterpret_cast<const char*>(proto ? proto : (const unsigned char*)""),
                        len);
    bool accept = opts_.accept_any_channel || channel == "xmig/verify";
    char verdict = accept ? 'A' : 'C';
    if (!opts_.silent) SSL_write(ssl, &verdict, 1);
    if (accept) {
      // A silent terminator forwards into a sink; otherwise echo.
      char buf[16384];
      int n;
      while ((n = SSL_read(ssl, buf, sizeof buf)) > 0)
        if (!opts_.silent) SSL_write(ssl, buf, n);
    }
    SSL_shutdown(ssl);
  }
  ERR_clear_error();
}

}  // namespace xmig::test
