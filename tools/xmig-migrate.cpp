// xmig-migrate: one live migration through the local tunnel, on a socket set
// of its own. It reserves <run_dir>/<peer>/<id>/ from the tunnel (one line on
// <run_dir>/control.sock, a connection it holds until the end, so the set is
// released even when xmig-migrate is killed), runs `virsh migrate` at that
// set (fork/exec, no shell), shows the migration's progress from the tunnel's
// status endpoint once a second, and exits with virsh's status.
//
// It never touches the data path: it links the config loader and the status
// client (verify/status_client.hpp), nothing of io/.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/fd.hpp"
#include "tunnel/config.hpp"
#include "tunnel/protocol.hpp"
#include "verify/status_client.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using xmig::Fd;

constexpr const char* kDescription =
    R"(xmig-migrate: live-migrate DOMAIN to PEER through the local xmig tunnel, on a socket set
of the migration's own, and show its progress.

  1. Reserves a socket set from the local tunnel: connects <run_dir>/control.sock, sends
     "reserve PEER ID" and gets the directory <run_dir>/PEER/ID/, which holds driver.sock,
     qemu.sock and nbd.sock. The connection stays open while virsh runs: the tunnel
     releases the set when it closes (also when xmig-migrate is killed).
  2. Runs, without a shell (the command is printed first):
       virsh -c qemu:///system migrate --live --p2p [--copy-storage-all|--copy-storage-inc]
         [--parallel --parallel-connections N] [VIRSH_OPTION...] DOMAIN
         --desturi 'qemu+unix:///system?socket=<dir>/driver.sock'
         --migrateuri 'unix://<dir>/qemu.sock'
         [--disks-uri 'unix://<dir>/nbd.sock']   (when storage is copied)
     VIRSH_OPTION...: every argument after "--", passed to virsh migrate as it is.
     virsh runs in its own process group; SIGINT and SIGTERM to xmig-migrate are
     forwarded to it (virsh then cancels the migration).
  3. Once a second, reads GET /status from the tunnel's status endpoint (config key
     `status`, default unix:<run_dir>/status.sock) and prints on stderr the bytes sent,
     the rate and the open connections (channels) of this migration to PEER (one line,
     rewritten in place on a terminal). A status endpoint that cannot be read is a
     warning: the migration goes on without progress.
  At the end it prints the bytes sent, the duration and the average rate.
)";

constexpr const char* kFooter =
    R"(Paths: the config (--config, default /etc/xmig/tunnel.toml) gives run_dir (default /run/xmig)
and the status endpoint; PEER must be one of its [[peer]] names. The migration's id
(--id, default DOMAIN) names its directory <run_dir>/PEER/ID/: 1 to 64 characters of
A-Z a-z 0-9 _ . -, starting with a letter or digit, not ending in ".sock".

Exit status: virsh's (128+N when it was killed by signal N); 1 when the migration could
not be started (options, config, or the tunnel refused or could not be reached).

Example: xmig-migrate vm1 hv-b --copy-storage-all --parallel 4 -- --verbose --timeout 600)";

struct Options {
  std::string config = "/etc/xmig/tunnel.toml";
  std::string id;  // default: domain
  std::string virsh = "virsh";
  std::string domain, peer;
  bool copy_storage_all = false, copy_storage_inc = false;
  unsigned parallel = 0;           // 0 = no --parallel
  std::vector<std::string> extra;  // after "--": passed to virsh migrate as they are
};

// ---- The reservation ---------------------------------------------------------

// A socket set reserved for this migration; the tunnel keeps it while `control`
// stays open.
struct Reservation {
  Fd control;
  std::string dir;  // <run_dir>/<peer>/<id>
};

// Connects <run_dir>/control.sock and asks for the set. Throws with the
// tunnel's reason, or with what kept the request from being asked.
Reservation reserve(const std::string& control_path, const std::string& peer,
                    const std::string& id) {
  const std::string where = "the tunnel's control socket " + control_path;
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));  // virsh must not inherit it
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (control_path.size() >= sizeof addr.sun_path)
    throw std::runtime_error(where + ": path too long");
  std::memcpy(addr.sun_path, control_path.c_str(), control_path.size() + 1);
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error("cannot reach " + where + ": " + strerror(errno) +
                             " (is xmig-tunnel running with this config?)");
  const std::string request = "reserve " + peer + " " + id + "\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    throw std::runtime_error(where + ": sending the request: " + strerror(errno));

  // One line back, within a bound: the tunnel answers at once.
  std::string reply;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (reply.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{.fd = fd.get(), .events = POLLIN, .revents = 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0)
      throw std::runtime_error(where + ": no answer within 10 s");
    char buf[512];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(where + ": " + strerror(errno));
    if (n == 0) throw std::runtime_error(where + ": closed without an answer");
    reply.append(buf, static_cast<size_t>(n));
    if (reply.size() > 4096) throw std::runtime_error(where + ": answer too long");
  }
  reply.resize(reply.find('\n'));
  if (reply.rfind("error ", 0) == 0)
    throw std::runtime_error("the tunnel refused to reserve a socket set for " + id + " to " +
                             peer + ": " + reply.substr(6));
  if (reply.rfind("ok /", 0) != 0)
    throw std::runtime_error(where + ": unexpected answer \"" + reply + "\"");
  return Reservation{.control = std::move(fd), .dir = reply.substr(3)};
}

// ---- virsh -------------------------------------------------------------------

std::vector<std::string> virsh_argv(const Options& o, const std::string& dir) {
  std::vector<std::string> argv = {o.virsh, "-c", "qemu:///system", "migrate", "--live", "--p2p"};
  bool storage = o.copy_storage_all || o.copy_storage_inc;
  if (o.copy_storage_all) argv.push_back("--copy-storage-all");
  if (o.copy_storage_inc) argv.push_back("--copy-storage-inc");
  if (o.parallel > 0)
    argv.insert(argv.end(), {"--parallel", "--parallel-connections", std::to_string(o.parallel)});
  argv.insert(argv.end(), o.extra.begin(), o.extra.end());
  argv.insert(argv.end(),
              {o.domain, "--desturi", "qemu+unix:///system?socket=" + dir + "/driver.sock",
               "--migrateuri", "unix://" + dir + "/qemu.sock"});
  if (storage) argv.insert(argv.end(), {"--disks-uri", "unix://" + dir + "/nbd.sock"});
  return argv;
}

// The command as a shell would need it, for the line printed before it runs.
std::string shell_words(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& arg : argv) {
    bool plain = !arg.empty() && arg.find_first_not_of(
                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                                     "qrstuvwxyz0123456789_@%+=:,./-") == std::string::npos;
    std::string quoted = "'";
    for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += (out.empty() ? "" : " ") + (plain ? arg : quoted + "'");
  }
  return out;
}

// Starts virsh in its own process group (so a Ctrl-C on the terminal reaches
// it once, through xmig-migrate) with the signal mask xmig-migrate started with.
pid_t start_virsh(const std::vector<std::string>& argv, const sigset_t& original_mask) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + strerror(errno));
  if (pid == 0) {
    ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
    ::setpgid(0, 0);
    ::execvp(args[0], args.data());
    ::dprintf(STDERR_FILENO, "xmig-migrate: cannot run %s: %s\n", args[0], strerror(errno));
    ::_exit(127);
  }
  return pid;
}

// ---- Progress ----------------------------------------------------------------

// The migration's connections as the tunnel reported them, each by its id, so
// that bytes are counted once whether a connection was last seen running or
// ended, and the total never goes back when one closes between two scrapes.
class Progress {
 public:
  Progress(std::string peer, std::string migration)
      : peer_(std::move(peer)), migration_(std::move(migration)) {}

  void update(const xmig::verify::TunnelStatus& st) {
    open_.clear();
    for (const auto& c : st.active)
      if (ours(c)) {
        sent_[c.id] = std::max(sent_[c.id], c.to_peer);
        ++open_[c.channel];
      }
    for (const auto& c : st.recent)
      if (ours(c) && c.id != 0) sent_[c.id] = std::max(sent_[c.id], c.to_peer);
  }

  uint64_t bytes_sent() const {
    uint64_t sum = 0;
    for (const auto& [id, bytes] : sent_) sum += bytes;
    return sum;
  }
  unsigned open_connections() const {
    unsigned n = 0;
    for (const auto& [channel, count] : open_) n += count;
    return n;
  }
  // "6 channels (driver x1, nbd x1, qemu x4)"
  std::string channels() const {
    std::string list;
    for (const auto& [channel, count] : open_)
      list += (list.empty() ? "" : ", ") + channel + " x" + std::to_string(count);
    unsigned n = open_connections();
    return std::to_string(n) + (n == 1 ? " channel" : " channels") +
           (list.empty() ? "" : " (" + list + ")");
  }

 private:
  // Only what this host sends to PEER for this migration.
  template <class Connection>
  bool ours(const Connection& c) const {
    return c.direction == "out" && c.peer == peer_ && c.migration == migration_;
  }

  std::string peer_, migration_;
  std::map<uint64_t, uint64_t> sent_;     // connection id -> bytes to the peer
  std::map<std::string, unsigned> open_;  // channel -> connections running now
};

double mib(uint64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

template <class... Numbers>
std::string format(const char* fmt, Numbers... numbers) {
  char buf[128];
  std::snprintf(buf, sizeof buf, fmt, numbers...);
  return buf;
}

// stderr, where a terminal gets one progress line rewritten in place and
// anything else one line per scrape.
class Console {
 public:
  Console() : terminal_(::isatty(STDERR_FILENO) == 1) {}
  void progress(const std::string& line) {
    if (terminal_) {
      std::cerr << "\r" << line << "\033[K" << std::flush;
      pending_ = true;
    } else {
      std::cerr << line << std::endl;
    }
  }
  void say(const std::string& line) {
    if (pending_) std::cerr << "\n";
    pending_ = false;
    std::cerr << line << std::endl;
  }

 private:
  bool terminal_;
  bool pending_ = false;  // a progress line without its newline yet
};

// Reads the status endpoint; a failure is a warning, said once until it works again.
class StatusReader {
 public:
  StatusReader(xmig::tunnel::Endpoint endpoint, Console& console)
      : endpoint_(std::move(endpoint)), console_(console) {}

  std::optional<xmig::verify::TunnelStatus> read() {
    try {
      auto st = xmig::verify::fetch_status(endpoint_, std::chrono::milliseconds(900));
      failing_ = false;
      ever_read_ = true;
      return st;
    } catch (const std::exception& e) {
      if (!failing_)
        console_.say(std::string("xmig-migrate: warning: no progress to show: ") + e.what());
      failing_ = true;
      return std::nullopt;
    }
  }
  bool ever_read() const { return ever_read_; }

 private:
  xmig::tunnel::Endpoint endpoint_;
  Console& console_;
  bool failing_ = false, ever_read_ = false;
};

// ---- The migration -----------------------------------------------------------

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// Runs virsh while the reservation is held; returns virsh's exit code.
int migrate(const Options& o, const xmig::tunnel::Config& config, Reservation reservation) {
  Console console;
  const std::string who = "xmig-migrate: " + o.domain + " -> " + o.peer + ": ";
  std::vector<std::string> argv = virsh_argv(o, reservation.dir);
  console.say("xmig-migrate: running " + shell_words(argv));

  // SIGINT and SIGTERM are forwarded, SIGCHLD ends the wait: all three are
  // read from a signalfd in the loop below instead of interrupting it.
  sigset_t handled, original;
  sigemptyset(&handled);
  for (int sig : {SIGINT, SIGTERM, SIGCHLD}) sigaddset(&handled, sig);
  ::sigprocmask(SIG_BLOCK, &handled, &original);
  Fd signals(::signalfd(-1, &handled, SFD_CLOEXEC));
  if (!signals) throw std::runtime_error(std::string("signalfd: ") + strerror(errno));

  const auto started = Clock::now();
  pid_t virsh = start_virsh(argv, original);
  StatusReader status(config.status, console);
  Progress progress(o.peer, o.id);
  uint64_t last_bytes = 0;
  auto last_time = started, next_scrape = started + std::chrono::seconds(1);
  bool watch_control = true;
  std::optional<int> exit_code;

  while (!exit_code) {
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_scrape - Clock::now());
    pollfd fds[2] = {{.fd = signals.get(), .events = POLLIN, .revents = 0},
                     {.fd = reservation.control.get(), .events = POLLIN, .revents = 0}};
    int ready =
        ::poll(fds, watch_control ? 2 : 1, std::max<int>(0, static_cast<int>(wait.count())));
    if (ready < 0 && errno != EINTR)
      throw std::runtime_error(std::string("poll: ") + strerror(errno));
    if (ready > 0 && fds[0].revents) {
      signalfd_siginfo info;
      if (::read(signals.get(), &info, sizeof info) == sizeof info &&
          static_cast<int>(info.ssi_signo) != SIGCHLD) {
        console.say(std::string("xmig-migrate: SIG") +
                    sigabbrev_np(static_cast<int>(info.ssi_signo)) + ": passed on to virsh");
        ::kill(virsh, static_cast<int>(info.ssi_signo));
      }
    }
    if (watch_control && ready > 0 && fds[1].revents) {
      // The tunnel never writes after "ok": this is its end of the connection.
      console.say(
          "xmig-migrate: warning: the tunnel closed the control connection (restarted?): "
          "its socket set for " +
          o.id + " may be gone");
      watch_control = false;
    }
    int wstatus = 0;
    if (::waitpid(virsh, &wstatus, WNOHANG) == virsh) {
      exit_code = exit_code_of(wstatus);
      break;
    }
    if (Clock::now() < next_scrape) continue;
    // A second from now, not from the last due time: a slow read is not made
    // up with reads back to back.
    next_scrape = Clock::now() + std::chrono::seconds(1);
    if (auto st = status.read()) {
      progress.update(*st);
      auto now = Clock::now();
      uint64_t bytes = progress.bytes_sent();
      double seconds = std::chrono::duration<double>(now - last_time).count();
      double rate = seconds > 0 ? mib(bytes - last_bytes) / seconds : 0;
      console.progress(who + format("%.1f MiB, %.1f MiB/s, ", mib(bytes), rate) +
                       progress.channels());
      last_bytes = bytes;
      last_time = now;
    }
  }
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  // The set is released as soon as virsh is done.
  reservation.control.reset();
  ::sigprocmask(SIG_SETMASK, &original, nullptr);

  // The connections close as the migration ends: give them a moment to turn
  // up in "recent" with their final figures.
  std::string summary = who + "virsh exited with status " + std::to_string(*exit_code) +
                        format(" after %.1f s", seconds);
  for (auto deadline = Clock::now() + std::chrono::seconds(2);;) {
    auto st = status.read();
    if (st) progress.update(*st);
    if (!st || progress.open_connections() == 0 || Clock::now() >= deadline) break;
    ::usleep(100'000);
  }
  if (status.ever_read())
    summary += format("; %.1f MiB sent, %.1f MiB/s on average", mib(progress.bytes_sent()),
                      seconds > 0 ? mib(progress.bytes_sent()) / seconds : 0);
  else
    summary += "; bytes sent unknown (the status endpoint could not be read)";
  console.say(summary);
  return *exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  // Everything after the first "--" goes to virsh as it is.
  int own = argc;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--") == 0) {
      own = i;
      o.extra.assign(argv + i + 1, argv + argc);
      break;
    }

  CLI::App app{kDescription, "xmig-migrate"};
  app.footer(kFooter);
  app.add_option("-c,--config", o.config, "the local tunnel's TOML config file")
      ->type_name("FILE")
      ->capture_default_str();
  app.add_option("--id", o.id, "the migration's id, naming its socket set (default: DOMAIN)")
      ->type_name("ID");
  app.add_option("--virsh", o.virsh, "the virsh program to run (looked up in PATH)")
      ->type_name("PATH")
      ->capture_default_str();
  app.add_option("DOMAIN", o.domain, "the libvirt domain to migrate")->required();
  app.add_option("PEER", o.peer, "the [[peer]] of the config to migrate to")->required();
  auto* all = app.add_flag("--copy-storage-all", o.copy_storage_all,
                           "copy all disks too (NBD through the tunnel: adds --disks-uri)");
  auto* inc = app.add_flag("--copy-storage-inc", o.copy_storage_inc,
                           "copy the disks' top images only (NBD through the tunnel: adds "
                           "--disks-uri)");
  all->excludes(inc);
  app.add_option("--parallel", o.parallel,
                 "migrate memory over N parallel connections (multifd: --parallel "
                 "--parallel-connections N)")
      ->type_name("N")
      ->check(CLI::Range(1, 256));
  try {
    app.parse(own, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }

  const bool id_given = !o.id.empty();
  if (!id_given) o.id = o.domain;
  if (!xmig::tunnel::is_valid_migration_id(o.id)) {
    std::cerr << "xmig-migrate: " << (id_given ? "--id " : "the domain name ") << "\"" << o.id
              << "\" cannot be a migration id: it names the directory <run_dir>/" << o.peer
              << "/<id>/, so it must be 1 to 64 characters of A-Z a-z 0-9 _ . -, starting with a "
                 "letter or digit and not ending in \".sock\"; "
              << (id_given ? "choose another --id" : "give one with --id ID") << "\n";
    return 1;
  }

  xmig::tunnel::Config config;
  try {
    config = xmig::tunnel::load_config(o.config);
  } catch (const xmig::tunnel::ConfigError& e) {
    for (const auto& p : e.problems()) std::cerr << "xmig-migrate: " << p << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "xmig-migrate: " << e.what() << "\n";
    return 1;
  }
  if (!config.find_peer(o.peer)) {
    std::string names;
    for (const auto& p : config.peers) names += (names.empty() ? "" : ", ") + p.name;
    std::cerr << "xmig-migrate: \"" << o.peer << "\" is not a [[peer]] in " << o.config << " ("
              << (names.empty() ? "it names none" : "its peers: " + names) << ")\n";
    return 1;
  }

  try {
    Reservation reservation = reserve(config.run_dir + "/control.sock", o.peer, o.id);
    return migrate(o, config, std::move(reservation));
  } catch (const std::exception& e) {
    std::cerr << "xmig-migrate: " << e.what() << "\n";
    return 1;
  }
}
