#include "harness/qemu_vm.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <system_error>
#include <thread>

#include "base/json.hpp"
#include "harness/files.hpp"

namespace xmig::harness {

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Position just after `"key"` followed by `:` and whitespace, or npos. A key is
// told apart from an equal string value by the colon that follows it.
size_t value_start(std::string_view json, std::string_view key) {
  std::string quoted = "\"";
  quoted += key;
  quoted += '"';
  for (size_t pos = json.find(quoted); pos != std::string_view::npos;
       pos = json.find(quoted, pos + 1)) {
    size_t i = pos + quoted.size();
    while (i < json.size() && std::isspace(static_cast<unsigned char>(json[i]))) ++i;
    if (i < json.size() && json[i] == ':') {
      ++i;
      while (i < json.size() && std::isspace(static_cast<unsigned char>(json[i]))) ++i;
      return i;
    }
  }
  return std::string_view::npos;
}

// QEMU's option parser splits on ','; a literal comma in a value is ",,".
std::string qemu_opt_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

// The first key of a JSON object line, e.g. "return" for {"return": {}}.
std::string first_key(std::string_view line) {
  size_t open = line.find('{');
  if (open == std::string_view::npos) return {};
  size_t q1 = line.find('"', open);
  if (q1 == std::string_view::npos) return {};
  size_t q2 = line.find('"', q1 + 1);
  if (q2 == std::string_view::npos) return {};
  return std::string(line.substr(q1 + 1, q2 - q1 - 1));
}

}  // namespace

// --- JSON --------------------------------------------------------------------

std::optional<std::string> json_string(std::string_view json, std::string_view key) {
  size_t i = value_start(json, key);
  if (i == std::string_view::npos || i >= json.size() || json[i] != '"') return std::nullopt;
  std::string out;
  for (++i; i < json.size(); ++i) {
    char c = json[i];
    if (c == '"') return out;
    if (c == '\\' && i + 1 < json.size()) {
      char e = json[++i];
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'u':  // Error texts are ASCII; keep any \uXXXX as written.
          out += "\\u";
          break;
        default:
          out += e;
      }
    } else {
      out += c;
    }
  }
  return std::nullopt;  // unterminated
}

std::optional<double> json_number(std::string_view json, std::string_view key) {
  size_t i = value_start(json, key);
  if (i == std::string_view::npos) return std::nullopt;
  std::string rest(json.substr(i, 32));
  char* end = nullptr;
  double v = std::strtod(rest.c_str(), &end);
  if (end == rest.c_str()) return std::nullopt;
  return v;
}

// --- QMP ---------------------------------------------------------------------

QmpError::QmpError(const std::string& command, const std::string& reply)
    : std::runtime_error("QMP " + command +
                         " failed: " + json_string(reply, "desc").value_or(reply)),
      reply_(reply) {}

QmpClient::QmpClient(const fs::path& socket_path, std::chrono::milliseconds timeout,
                     const std::function<bool()>& alive) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = socket_path.string();
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("QMP path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

  // QEMU creates the socket early during startup; until then connect fails
  // with ENOENT or ECONNREFUSED, so retry.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw_errno("socket");
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (!alive()) throw std::runtime_error("QEMU exited before its QMP socket accepted");
    if (std::chrono::steady_clock::now() >= deadline) {
      errno = err;
      throw_errno("connect " + path);
    }
    std::this_thread::sleep_for(20ms);
  }

  const std::string greeting = read_line(deadline + 10s);
  if (greeting.find("\"QMP\"") == std::string::npos)
    throw std::runtime_error("unexpected QMP greeting: " + greeting);
  execute("qmp_capabilities");
}

QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

std::string QmpClient::build(std::string_view command, std::string_view arguments,
                             const std::string& id) {
  std::string msg = "{\"execute\": " + json_quote(command);
  if (!arguments.empty()) msg += ", \"arguments\": " + std::string(arguments);
  if (!id.empty()) msg += ", \"id\": " + json_quote(id);
  return msg + "}\n";
}

void QmpClient::write_all(const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("QMP send");
    }
    off += static_cast<size_t>(n);
  }
}

std::string QmpClient::read_line(std::chrono::steady_clock::time_point deadline) {
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) throw std::runtime_error("QMP: timed out waiting for a reply");
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno("QMP poll");
    }
    if (r == 0) continue;  // the deadline check above ends this
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("QMP recv");
    }
    if (n == 0) throw std::runtime_error("QMP: QEMU closed the connection");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

std::string QmpClient::execute(std::string_view command, std::string_view arguments,
                               std::chrono::milliseconds timeout) {
  const std::string id = "xmig-" + std::to_string(next_id_++);
  write_all(build(command, arguments, id));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    std::string line = read_line(deadline);
    // Events ({"timestamp": ..., "event": ...}) interleave with replies; a
    // reply starts with "return" or "error" and echoes our id.
    const std::string key = first_key(line);
    if (key != "return" && key != "error") continue;
    if (json_string(line, "id") != id) continue;
    if (key == "error") throw QmpError(std::string(command), line);
    return line;
  }
}

void QmpClient::send(std::string_view command, std::string_view arguments) {
  write_all(build(command, arguments, {}));
}

// --- QemuGuest ---------------------------------------------------------------

QemuGuest::QemuGuest(QemuGuestConfig config)
    : config_(std::move(config)), log_path_(config_.work_dir / (config_.name + ".log")) {
  const std::string qemu = find_qemu();
  if (qemu.empty()) throw std::runtime_error("qemu-system-x86_64 not found (set XMIG_QEMU)");
  const fs::path qmp_socket = config_.work_dir / (config_.name + ".qmp");
  const std::string size = std::to_string(config_.ram_mib) + "M";

  std::vector<std::string> argv = {
      qemu,
      "-name",
      config_.name,
      // TCG: this machine has no KVM. The machine's RAM comes from ram0 below.
      "-machine",
      "pc,accel=tcg,memory-backend=ram0",
      "-m",
      size,
      // share=on: QEMU maps the file MAP_SHARED, so RAM it receives lands in
      // the file, where the test can hash it.
      "-object",
      "memory-backend-file,id=ram0,size=" + size +
          ",mem-path=" + qemu_opt_escape(config_.ram_file.string()) + ",share=on",
      // No devices, no display, no guest code running: -S keeps the CPU
      // paused, so RAM does not change and migration converges at once.
      "-nodefaults",
      "-nographic",
      "-display",
      "none",
      "-S",
      "-qmp",
      "unix:" + qemu_opt_escape(qmp_socket.string()) + ",server=on,wait=off",
  };
  if (!config_.kernel.empty()) {
    // A booted source runs from the start (no -S); a destination stays
    // paused after the migration until resume(), so that its RAM can be
    // compared with the source's (paused after completion) first.
    if (!config_.incoming) argv.erase(std::find(argv.begin(), argv.end(), "-S"));
    argv.insert(argv.end(), {"-kernel", config_.kernel.string(), "-append", config_.kernel_args,
                             "-serial", "file:" + qemu_opt_escape(config_.serial_log.string())});
  }
  // For investigations: QEMU's trace events (e.g. "multifd_*") in its log.
  if (const char* trace = std::getenv("XMIG_QEMU_TRACE"); trace && *trace)
    argv.insert(argv.end(), {"-trace", trace});
  if (config_.incoming) {
    // defer: migration parameters (multifd) must be set before listening.
    argv.insert(argv.end(), {"-incoming", "defer"});
  }

  if (config_.user) {
    // Appended, never "literal" + temporary: GCC 12 -O3 warns falsely (-Wrestrict) on that.
    std::string groups = "--groups=", reuid = "--reuid=", regid = "--regid=";
    for (gid_t g : config_.user->groups) {
      if (groups.back() != '=') groups += ',';
      groups += std::to_string(g);
    }
    reuid += std::to_string(config_.user->uid);
    regid += std::to_string(config_.user->gid);
    argv.insert(
        argv.begin(),
        {"/bin/sh", "-c", "umask 0002 && exec \"$@\"", "qemu-as-user", "/usr/bin/setpriv", reuid,
         regid, config_.user->groups.empty() ? std::string("--clear-groups") : groups,
         "--inh-caps=-all", "--bounding-set=-all", "--"});
  }
  if (!config_.netns.empty())
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", config_.netns});
  process_.emplace(argv, log_path_.string());
  try {
    qmp_ = std::make_unique<QmpClient>(qmp_socket, 30s, [this] { return process_->running(); });
  } catch (const std::exception& e) {
    throw std::runtime_error(config_.name + " QEMU did not start: " + e.what() + "\n" + log());
  }
}

QemuGuest::~QemuGuest() {
  qmp_.reset();
  // process_'s destructor SIGKILLs QEMU if quit() was not called or failed.
}

void QemuGuest::enable_multifd(int channels) {
  qmp_->execute("migrate-set-capabilities",
                R"({"capabilities": [{"capability": "multifd", "state": true}]})");
  qmp_->execute("migrate-set-parameters",
                "{\"multifd-channels\": " + std::to_string(channels) + "}");
}

void QemuGuest::unlimit_bandwidth() {
  // 1 TiB/s: effectively no limit, and well inside QEMU's accepted range.
  qmp_->execute("migrate-set-parameters", R"({"max-bandwidth": 1099511627776})");
}

void QemuGuest::set_downtime_limit(std::chrono::milliseconds limit) {
  qmp_->execute("migrate-set-parameters",
                "{\"downtime-limit\": " + std::to_string(limit.count()) + "}");
}

void QemuGuest::cancel_migration() {
  qmp_->execute("migrate_cancel");
}

void QemuGuest::resume() {
  qmp_->execute("cont");
}

void QemuGuest::migrate_incoming(const std::string& uri) {
  qmp_->execute("migrate-incoming", "{\"uri\": " + json_quote(uri) + "}");
}

void QemuGuest::migrate(const std::string& uri) {
  qmp_->execute("migrate", "{\"uri\": " + json_quote(uri) + "}");
}

MigrationStatus QemuGuest::query_migration() {
  MigrationStatus s;
  s.reply = qmp_->execute("query-migrate");
  s.status = json_string(s.reply, "status").value_or("");
  s.error = json_string(s.reply, "error-desc").value_or("");
  s.total_time_ms = json_number(s.reply, "total-time");
  return s;
}

MigrationStatus QemuGuest::wait_for_migration(std::chrono::milliseconds timeout) {
  MigrationStatus last;
  wait_until(
      [&] {
        last = query_migration();
        return last.finished();
      },
      timeout);
  return last;
}

void QemuGuest::quit(std::chrono::milliseconds timeout) {
  if (!process_ || !process_->running()) return;
  try {
    // No reply expected: QEMU may exit before it arrives.
    qmp_->send("quit");
  } catch (const std::exception&) {
    // Already going away; terminate() below makes sure.
  }
  if (!process_->wait(timeout)) process_->terminate(5s);
}

std::string QemuGuest::log() const {
  try {
    return "--- " + log_path_.string() + " ---\n" + read_file(log_path_);
  } catch (const std::exception&) {
    return "(no log at " + log_path_.string() + ")";
  }
}

// --- RAM files ---------------------------------------------------------------

std::string find_qemu() {
  if (const char* env = std::getenv("XMIG_QEMU"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    fs::path candidate = fs::path(dir.empty() ? "." : dir) / "qemu-system-x86_64";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return {};
}

void create_random_file(const fs::path& path, uint64_t bytes, uint64_t seed) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw_errno("open " + path.string());
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    ::close(fd);
    throw_errno("ftruncate " + path.string());
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) throw_errno("mmap " + path.string());
  fill_random({static_cast<uint8_t*>(p), bytes}, seed);
  ::munmap(p, bytes);
}

void create_zero_file(const fs::path& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw_errno("open " + path.string());
  int r = ::ftruncate(fd, static_cast<off_t>(bytes));
  ::close(fd);
  if (r != 0) throw_errno("ftruncate " + path.string());
}

RamDir::RamDir(uint64_t bytes, const fs::path& fallback) : path_(fallback) {
  constexpr uint64_t kSlack = 512ull << 20;  // leave tmpfs room for others
  struct statvfs st {};
  if (::statvfs("/dev/shm", &st) == 0 &&
      static_cast<uint64_t>(st.f_bavail) * st.f_frsize >= bytes + kSlack) {
    std::string tmpl = "/dev/shm/xmig-qemu-XXXXXX";
    if (::mkdtemp(tmpl.data())) {
      path_ = tmpl;
      owned_ = true;
    }
  }
}

RamDir::~RamDir() {
  std::error_code ec;
  if (owned_ && !std::getenv("XMIG_KEEP_TEST_DIRS")) fs::remove_all(path_, ec);
}

}  // namespace xmig::harness
