#include "bench/procs.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "certs/certs.hpp"

namespace xmig::bench {

// ---- Measuring a process -------------------------------------------------------

ProcSample sample(pid_t pid) {
  ProcSample s;
  const std::string base = "/proc/" + std::to_string(pid);
  std::ifstream stat(base + "/stat");
  std::string line;
  if (!std::getline(stat, line))
    throw std::runtime_error("process " + std::to_string(pid) + " is gone (" + base + "/stat)");
  // The command name may hold spaces and parentheses; fields resume after the
  // last ')'. From there, field 3 (state) is token 0, so utime (14) and
  // stime (15) are tokens 11 and 12. They cover every thread, dead ones too.
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string tok;
  double ticks = 0;
  for (int i = 0; i <= 12 && fields >> tok; ++i)
    if (i == 11 || i == 12) ticks += std::stod(tok);
  s.cpu_seconds = ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));

  std::ifstream status(base + "/status");
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) s.peak_rss_kib = std::stoull(line.substr(6));
  return s;
}

// ---- Child processes -----------------------------------------------------------

Process::Process(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string out = log.empty() ? "/dev/null" : log.string();
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + out);
  pid_ = ::fork();
  if (pid_ < 0) {
    ::close(fd);
    throw std::system_error(errno, std::generic_category(), "fork");
  }
  if (pid_ == 0) {
    // Own process group: a Ctrl-C on the bench reaches the children through
    // the bench's destructors, in order, not all at once.
    ::setpgid(0, 0);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::execv(args[0], args.data());
    ::dprintf(STDERR_FILENO, "exec %s: %s\n", args[0], strerror(errno));
    ::_exit(127);
  }
  ::close(fd);
}

Process::~Process() {
  if (pid_ > 0) stop();
}

bool Process::running() {
  if (pid_ <= 0 || status_) return false;
  int st = 0;
  if (::waitpid(pid_, &st, WNOHANG) != pid_) return true;
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return false;
}

int Process::stop(std::chrono::milliseconds timeout) {
  if (running()) ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (running()) {
    ::kill(pid_, SIGKILL);
    while (running()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_.value_or(-1);
}

// ---- xmig's two ends -----------------------------------------------------------

namespace {

std::string config_text(const std::string& self, const std::string& other, const fs::path& dir,
                        uint16_t port, uint16_t other_port, const PairOptions& opts,
                        bool is_entry) {
  const fs::path pki = dir / self;
  std::ostringstream t;
  t << "name = \"" << self << "\"\n"
    << "run_dir = \"" << (dir / (self + "-run")).string() << "\"\n"
    << "listen = \"127.0.0.1:" << port
    << "\"\n"
    // info: one line per connection, nothing per byte.
    << "log_level = \"info\"\n"
    << "workers = " << opts.workers << "\n"
    << opts.extra_toml << "\n\n"
    << "[tls]\n"
    << "ca = \"" << (pki / certs::kCaCertFile).string() << "\"\n"
    << "cert = \"" << (pki / certs::kServerCertFile).string() << "\"\n"
    << "key = \"" << (pki / certs::kServerKeyFile).string() << "\"\n"
    << opts.tls_toml << "\n\n"
    << "[[peer]]\n"
    << "name = \"" << other << "\"\n"
    << "address = \"127.0.0.1:" << other_port << "\"\n\n";
  if (is_entry && !opts.entry.empty())
    t << "[[route]]\nlisten = \"" << opts.entry << "\"\npeer = \"" << other << "\"\nchannel = \""
      << opts.channel << "\"\n\n";
  if (!is_entry) t << "[targets]\n" << opts.channel << " = \"" << opts.target << "\"\n";
  return t.str();
}

int count_ready(const fs::path& log) {
  std::ifstream in(log);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(" ready: ") != std::string::npos;
  return n;
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TunnelPair::TunnelPair(PairOptions opts) : opts_(std::move(opts)) {
  fs::create_directories(opts_.dir);
  const certs::Pem ca = certs::make_ca({.name = "xmig-bench CA"});
  for (const char* name : {"hv-a", "hv-b"}) {
    certs::IssueOptions issue;
    issue.name = name;
    issue.ips = {"127.0.0.1"};
    issue.days = 2;
    certs::write_node_dir(opts_.dir / name, ca.cert, certs::issue(ca, issue));
  }
  const uint16_t port_a = free_port(), port_b = free_port();
  const fs::path config_a = opts_.dir / "hv-a.toml", config_b = opts_.dir / "hv-b.toml";
  std::ofstream(config_a) << config_text("hv-a", "hv-b", opts_.dir, port_a, port_b, opts_, true);
  std::ofstream(config_b) << config_text("hv-b", "hv-a", opts_.dir, port_b, port_a, opts_, false);
  entry_ = !opts_.entry.empty()
               ? opts_.entry
               : "unix:" + (opts_.dir / "hv-a-run" / "hv-b" / (opts_.channel + ".sock")).string();

  auto start = [&](std::optional<Process>& p, const fs::path& config, const fs::path& log) {
    const int before = count_ready(log);
    p.emplace(std::vector<std::string>{opts_.tunnel.string(), "--config", config.string()}, log);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (count_ready(log) == before) {
      if (!p->running() || std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("xmig-tunnel (" + config.string() + ") did not become ready:\n" +
                                 read_all(log));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  start(b_, config_b, exit_log());
  start(a_, config_a, entry_log());
}

TunnelPair::~TunnelPair() {
  stop();
}

void TunnelPair::stop() {
  // Entry first: it has nothing left to send once the clients are gone.
  if (a_) a_->stop(std::chrono::seconds(10));
  if (b_) b_->stop(std::chrono::seconds(10));
}

std::string close_line_values(const fs::path& log, const std::string& key) {
  std::ifstream in(log);
  std::vector<std::string> seen;
  const std::string needle = " " + key + "=";
  for (std::string line; std::getline(in, line);) {
    if (line.find("close: ") == std::string::npos) continue;
    size_t at = line.find(needle);
    if (at == std::string::npos) continue;
    at += needle.size();
    std::string value = line.substr(at, line.find(' ', at) - at);
    if (std::find(seen.begin(), seen.end(), value) == seen.end()) seen.push_back(value);
  }
  std::string out;
  for (const auto& v : seen) out += (out.empty() ? "" : ",") + v;
  return out;
}

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace xmig::bench
