#include "harness/tunnel_pair.hpp"
#include "base/socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "harness/streams.hpp"
#include "harness/tls_probe.hpp"

namespace xmig::harness {

// A random port below the kernel's ephemeral range (ip_local_port_range),
// checked free by binding it. A port the kernel handed out for bind(0) is an
// ephemeral one, which any outgoing connection may take as its source port
// before the tunnel binds it ("Address already in use" in a busy VM).
uint16_t free_port() {
  unsigned low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> low;
  const unsigned first = 10000, last = std::max(first + 1000, low);
  std::random_device seed;
  std::uniform_int_distribution<unsigned> pick(first, last - 1);
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto port = static_cast<uint16_t>(pick(seed));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (free) return port;
  }
  throw std::runtime_error("free_port: no free port below the ephemeral range");
}

void make_node_pki(const fs::path& dir, const certs::Pem& ca, const std::string& name, int days,
                   long start_offset_seconds) {
  certs::IssueOptions opts;
  opts.name = name;
  opts.ips = {"127.0.0.1"};
  opts.days = days;
  opts.start_offset_seconds = start_offset_seconds;
  certs::write_node_dir(dir, ca.cert, certs::issue(ca, opts));
}

int count_in_log(const fs::path& log, const std::string& needle) {
  std::ifstream in(log);
  int n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

int count_lines_with_all(const fs::path& log, std::initializer_list<std::string> needles) {
  std::ifstream in(log);
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (const std::string& needle : needles) all = all && line.find(needle) != std::string::npos;
    if (all) ++n;
  }
  return n;
}

namespace {

// TOML lines as given, ending in a newline; nothing for none.
std::string lines(const std::string& toml) {
  return toml.empty() || toml.back() == '\n' ? toml : toml + "\n";
}

std::string config_text(const TunnelSide& self, const TunnelSide& other,
                        const std::map<std::string, std::string>& targets,
                        const std::map<std::string, std::string>& routes, const std::string& extra,
                        const TunnelPairOptions& opts) {
  std::ostringstream t;
  t << "name = \"" << self.name << "\"\n"
    << "run_dir = \"" << self.run_dir.string() << "\"\n"
    << "listen = \"" << self.host << ":" << self.port << "\"\n"
    << "log_level = \"" << opts.log_level << "\"\n"
    << lines(opts.top_toml) << "\n"
    << "[tls]\n"
    << "ca = \"" << (self.pki / "ca-cert.pem").string() << "\"\n"
    << "cert = \"" << (self.pki / "server-cert.pem").string() << "\"\n"
    << "key = \"" << (self.pki / "server-key.pem").string() << "\"\n";
  if (opts.client_files)
    t << "client_cert = \"" << (self.pki / "client-cert.pem").string() << "\"\n"
      << "client_key = \"" << (self.pki / "client-key.pem").string() << "\"\n";
  t << lines(opts.tls_toml) << "\n"
    << "[[peer]]\n"
    << "name = \"" << other.name << "\"\n"
    << "address = \""
    << (self.name == "hv-a" && !opts.a_dials.empty()
            ? opts.a_dials
            : other.host + ":" + std::to_string(other.port))
    << "\"\n\n";
  for (const auto& [listen, channel] : routes)
    t << "[[route]]\nlisten = \"" << listen << "\"\npeer = \"" << other.name << "\"\nchannel = \""
      << channel << "\"\n\n";
  if (!targets.empty()) {
    t << "[targets]\n";
    for (const auto& [channel, ep] : targets) t << channel << " = \"" << ep << "\"\n";
    t << "\n";
  }
  t << extra << "\n";
  return t.str();
}

}  // namespace

TunnelPair::TunnelPair(TunnelPairOptions opts)
    : temp(opts.dir.empty() ? TempDir("xmig-pair") : TempDir::at(opts.dir)),
      tunnel_(opts.tunnel.empty() ? fs::path(tool("xmig-tunnel")) : opts.tunnel) {
  ca = certs::make_ca({});
  a.name = "hv-a";
  b.name = "hv-b";
  for (TunnelSide* side : {&a, &b}) {
    side->dir = temp.path() / side->name;
    side->run_dir = side->dir / "run";
    side->pki = side->dir / "pki";
    side->config = side->dir / "tunnel.toml";
    side->log = side->dir / "tunnel.log";
    side->port = free_port();
    side->host = side == &a ? opts.a_host : opts.b_host;
    side->netns = side == &a ? opts.a_netns : opts.b_netns;
    fs::create_directories(side->dir);
    make_node_pki(side->pki, ca, side->name);
  }
  write_file(a.config, config_text(a, b, {}, opts.a_routes, opts.a_extra, opts));
  write_file(b.config, config_text(b, a, opts.b_targets, {}, opts.b_extra, opts));
  if (opts.start) {
    start(a);
    start(b);
  }
}

TunnelPair::~TunnelPair() {
  stop(5s);
}

void TunnelPair::stop(std::chrono::milliseconds timeout) {
  // Entry first: it has nothing left to send once the clients are gone.
  for (TunnelSide* side : {&a, &b})
    if (side->process) side->process->terminate(timeout);
}

void TunnelPair::start(TunnelSide& side) {
  // The ready line as text ("... info ready: ...") or as JSON (log_format = "json").
  auto readies = [&] {
    return count_in_log(side.log, " ready: ") + count_in_log(side.log, "\"message\":\"ready: ");
  };
  int before = readies();
  std::vector<std::string> argv = {tunnel_.string(), "--config", side.config.string()};
  if (!side.netns.empty()) argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", side.netns});
  side.process.emplace(argv, side.log.string());
  bool ready = wait_until([&] { return readies() > before || !side.process->running(); }, 20s);
  if (!ready || !side.process->running())
    throw std::runtime_error(side.name + " did not become ready:\n" + read_file(side.log));
}

fs::path TunnelPair::entry(const std::string& channel) const {
  return a.run_dir / b.name / (channel + ".sock");
}

fs::path TunnelPair::delivery(const std::string& channel) const {
  return b.run_dir / b.name / (channel + ".sock");
}

std::string TunnelPair::logs() const {
  std::string out;
  for (const TunnelSide* side : {&a, &b}) {
    out += "---- " + side->name + " log ----\n";
    try {
      out += read_file(side->log);
    } catch (const std::exception&) {
    }
  }
  return out;
}

Reservation reserve(const TunnelSide& side, const std::string& peer, const std::string& id) {
  Reservation r{.control = connect_unix((side.run_dir / "control.sock").string()), .reply = ""};
  const std::string line = "reserve " + peer + " " + id + "\n";
  if (::send(r.control.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size()))
    return {.control = Fd(), .reply = std::string("send: ") + strerror(errno)};
  char c = 0;
  while (wait_readable(r.control.get(), 5s) && ::recv(r.control.get(), &c, 1, 0) == 1 && c != '\n')
    r.reply += c;
  return r;
}

namespace {

// One HTTP/1.0 GET on a connected socket: the body, or what went wrong.
std::string http_get_on(Fd fd, const std::string& target) {
  std::string reply;
  set_timeouts(fd.get(), std::chrono::milliseconds(5000));
  const std::string request = "GET " + target + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0)
    return std::string("send: ") + strerror(errno);
  char buf[16384];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) reply.append(buf, n);
  size_t body = reply.find("\r\n\r\n");
  return body == std::string::npos ? reply : reply.substr(body + 4);
}

}  // namespace

std::string status_request(const TunnelSide& side, const std::string& path) {
  try {
    return http_get_on(connect_unix((side.run_dir / "status.sock").string()), path);
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::string pending_limits_toml(unsigned count) {
  // Beside `count` strangers, room for the peers' own handshakes.
  const std::string limit = std::to_string(2 * count + 16);
  return "[limits]\nmax_pending_handshakes = " + limit + "\nmax_pending_per_source = " + limit +
         "\nhandshake_rate_per_source = 100000\nhandshake_timeout = 120\n";
}

long status_number(const TunnelSide& side, const std::string& field) {
  std::smatch m;
  const std::string body = status_request(side, "/status");
  if (!std::regex_search(body, m, std::regex("\"" + field + "\":([0-9]+)"))) return -1;
  return std::stol(m[1]);
}

HandshakeCounts status_handshakes(const TunnelSide& side) {
  HandshakeCounts h;
  std::smatch m;
  const std::string body = status_request(side, "/status");
  if (!std::regex_search(
          body, m,
          std::regex("\"handshakes\":\\{\"out\":\\{\"full\":([0-9]+),\"resumed\":([0-"
                     "9]+)\\},\"in\":\\{\"full\":([0-9]+),\"resumed\":([0-9]+)\\}\\}"))) {
    h.json = "no \"handshakes\" in " + body.substr(0, 400);
    return h;
  }
  h.json = m[0];
  h.out_full = std::stol(m[1]);
  h.out_resumed = std::stol(m[2]);
  h.in_full = std::stol(m[3]);
  h.in_resumed = std::stol(m[4]);
  return h;
}

std::string http_get(uint16_t port, const std::string& target) {
  try {
    return http_get_on(connect_tcp(port), target);
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace xmig::harness
