// xmig-verify --test-migration: the operator's smoke test, for real. A
// throwaway transient domain (TCG, tiny RAM filled with a known pattern, no
// disk) goes to the peer through the tunnel the way operators migrate
// (xmig-migrate on a socket set of its own; nova's qemu+tcp:// in transparent
// mode) and back, while the wire towards the peer is captured and judged; the
// domain is removed on both hosts whatever happens.
//
// It drives libvirt only through virsh (no libvirt library linked): on this
// host qemu:///system, on the peer the peer's libvirt through the tunnel's own
// driver channel (root's, as libvirtd's own p2p connection is).
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "base/openssl.hpp"
#include "verify/canary.hpp"
#include "verify/classify.hpp"
#include "verify/live_detail.hpp"
#include "verify/status_client.hpp"

namespace xmig::verify {

namespace {

using Clock = std::chrono::steady_clock;
using detail::LiveContext;

const char* kGroup = "test migration";
// The throwaway domain: small enough to cross any migration network in
// seconds, large enough that its pattern fills many TLS records.
constexpr uint64_t kRamMiB = 32;
constexpr uint64_t kRamBytes = kRamMiB << 20;
// --storage: the disk, raw, small next to the RAM (NBD copies all of it).
constexpr uint64_t kDiskMiB = 4;
constexpr uint64_t kDiskBytes = kDiskMiB << 20;
const char* kDiskVolume = "disk.raw";
// Where each host's storage pool of the test lives: libvirt's images folder.
const char* kPoolParent = "/var/lib/libvirt/images/";
// The pattern is the canary text (verify/canary.hpp), one tile repeated over
// the whole RAM: searching for a window of one tile finds any of them.
constexpr size_t kPatternTile = 1u << 20;
// How long a child that was asked to stop (SIGINT) may take before SIGKILL.
constexpr auto kStopGrace = std::chrono::seconds(20);
// Each cleanup command's bound: libvirt answers at once or not at all.
constexpr auto kCleanupTimeout = std::chrono::seconds(30);
// Making the throwaway domain (its disk, `virsh create`, its RAM): not part of
// the round trip that --migration-timeout bounds, but bounded too.
constexpr auto kSetUpTimeout = std::chrono::seconds(120);
constexpr size_t kMaxChildOutput = 1u << 20;
// How long the output pipe may stay open after the child has exited.
constexpr auto kPipeGrace = std::chrono::seconds(2);

// ---- child processes ----------------------------------------------------------

struct ChildResult {
  int status = -1;     // exit status; 128+N when killed by signal N; -1 when it never ran
  std::string output;  // stdout and stderr, in the order written
  bool timed_out = false;
  bool cancelled = false;  // Ctrl-C or SIGTERM arrived while it ran
  double seconds = 0;
  bool ok() const { return status == 0 && !timed_out && !cancelled; }
};

// The signals that cancel the test (see TestMigrationOptions::cancel_fd).
bool drain_cancel(int cancel_fd) {
  if (cancel_fd < 0) return false;
  signalfd_siginfo info;
  bool got = false;
  while (::read(cancel_fd, &info, sizeof info) == sizeof info) got = true;
  return got;
}

// Runs argv (no shell) in a process group of its own, collecting its output,
// until it ends, `deadline` passes or a cancelling signal arrives; then asks
// it to stop with SIGINT (virsh aborts its migration job on SIGINT,
// xmig-migrate passes it on to virsh), and kills it after kStopGrace.
ChildResult run_child(const std::vector<std::string>& argv, Clock::time_point deadline,
                      int cancel_fd) {
  ChildResult r;
  const auto started = Clock::now();
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    r.output = std::string("pipe: ") + strerror(errno);
    return r;
  }
  Fd read_end(out[0]), write_end(out[1]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    r.output = std::string("fork: ") + strerror(errno);
    return r;
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Default dispositions: SIGINT must cancel it even when this process was
    // started with SIGINT ignored (a background job of a shell).
    for (int sig : {SIGPIPE, SIGINT, SIGTERM}) ::signal(sig, SIG_DFL);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, STDIN_FILENO);
    ::dup2(write_end.get(), STDOUT_FILENO);
    ::dup2(write_end.get(), STDERR_FILENO);
    ::execvp(args[0], args.data());
    ::dprintf(STDERR_FILENO, "cannot run %s: %s\n", args[0], strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // either of the two calls wins the race; both are fine
  write_end.reset();
  std::optional<Clock::time_point> kill_at, exited_at;
  bool open = true;
  int wstatus = 0;
  for (;;) {
    auto now = Clock::now();
    if (!exited_at && ::waitpid(pid, &wstatus, WNOHANG) == pid) exited_at = now;
    // Its output ends with it, unless a process it started (virsh in a group
    // of its own under xmig-migrate) still holds the pipe: not waited for long.
    if (exited_at && (!open || now - *exited_at > kPipeGrace)) break;
    if (!exited_at && !kill_at && (now >= deadline || r.cancelled)) {
      r.timed_out = !r.cancelled;
      ::kill(-pid, SIGINT);
      kill_at = now + kStopGrace;
    }
    if (!exited_at && kill_at && now >= *kill_at) ::kill(-pid, SIGKILL);
    pollfd fds[2] = {{.fd = open ? read_end.get() : -1, .events = POLLIN, .revents = 0},
                     {.fd = cancel_fd, .events = POLLIN, .revents = 0}};
    ::poll(fds, 2, 100);
    if (fds[1].revents && drain_cancel(cancel_fd)) r.cancelled = true;
    if (open && fds[0].revents) {
      char buf[4096];
      ssize_t n = ::read(read_end.get(), buf, sizeof buf);
      if (n > 0 && r.output.size() < kMaxChildOutput) r.output.append(buf, static_cast<size_t>(n));
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) open = false;
    }
  }
  r.status = WIFEXITED(wstatus)     ? WEXITSTATUS(wstatus)
             : WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus)
                                    : -1;
  r.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return r;
}

// What virsh said went wrong: its "error:" lines (xmig-migrate's progress
// lines around them are not the cause), else the last line it wrote.
std::string virsh_error(const std::string& output) {
  std::istringstream in(output);
  std::string line, errors, last;
  while (std::getline(in, line)) {
    if (line.rfind("error: ", 0) == 0) {
      if (!errors.empty()) errors += ' ';
      errors.append(line, 7);
    }
    if (!line.empty()) last = line;
  }
  return errors.empty() ? last : errors;
}

// The output of a child on one line, for a finding.
std::string one_line(std::string s) {
  for (auto& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s.size() > 600 ? s.substr(0, 600) + "..." : s;
}

// "4.4"
std::string seconds_text(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", seconds);
  return buf;
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// ---- the test -------------------------------------------------------------------

struct Test {
  LiveContext& c;
  const TestMigrationOptions& o;
  std::string domain{};      // xmig-verify-<hex>: the throwaway domain, and the migration id
  bool transparent = false;  // [intercept]: nova's qemu+tcp:// path
  std::string peer_ip{};     // the peer's migration address (transparent mode)
  Clock::time_point deadline{};
  bool cancelled = false;
  std::string pattern{};  // one tile of the RAM pattern
  std::string ram_sha256{};
  std::string disk_sha256{};
  // --storage: how far the test's storage pool got on each host.
  struct Pool {
    bool defined = false;  // to undefine
    bool built = false;    // its folder made: to delete
  };
  Pool local_pool{}, peer_pool{};

  std::string peer() const { return o.live.peer; }
  // --storage: a pool named like the domain, in a folder of its own (the same
  // path on both hosts, as libvirt's storage migration requires).
  std::string pool_dir() const { return kPoolParent + domain; }
  std::string disk_path() const { return pool_dir() + "/" + kDiskVolume; }
  std::string self() const { return c.config.name; }

  // libvirt on this host, and on the peer through the tunnel's driver channel.
  std::string local_uri() const { return "qemu:///system"; }
  std::string peer_uri() const {
    return transparent
               ? "qemu+tcp://" + url_host(peer_ip) + "/system"
               : "qemu+unix:///system?socket=" + c.config.run_dir + "/" + peer() + "/driver.sock";
  }
  static std::string url_host(const std::string& ip) {
    return ip.find(':') == std::string::npos ? ip : "[" + ip + "]";
  }

  ChildResult virsh(const std::string& uri, std::vector<std::string> args,
                    std::optional<Clock::time_point> until = std::nullopt) {
    std::vector<std::string> argv = {o.virsh, "-q", "-c", uri};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildResult r = run_child(argv, until.value_or(deadline), until ? -1 : o.cancel_fd);
    cancelled = cancelled || r.cancelled;
    return r;
  }
};

std::string random_hex(size_t bytes) {
  std::random_device rd;
  std::string s;
  const char* digits = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    unsigned v = rd() & 0xff;
    s += digits[v >> 4];
    s += digits[v & 15];
  }
  return s;
}

std::string domain_xml(const std::string& name, const std::string& disk_path) {
  // memfd RAM, shared: its pages can be written and read through
  // /proc/<pid>/map_files, and no file of it is left anywhere.
  return "<domain type='qemu'>\n"
         "  <name>" +
         name +
         "</name>\n"
         "  <description>xmig-verify --test-migration: throwaway domain, removed when the test "
         "ends</description>\n"
         "  <memory unit='MiB'>" +
         std::to_string(kRamMiB) +
         "</memory>\n"
         "  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n"
         "  <vcpu>1</vcpu>\n"
         "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
         "  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>"
         "<on_crash>destroy</on_crash>\n"
         "  <devices>" +
         (disk_path.empty() ? std::string()
                            : "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                              "<source file='" +
                                  disk_path + "'/><target dev='vda' bus='virtio'/></disk>") +
         "<memballoon model='none'/></devices>\n"
         "</domain>\n";
}

// The guest RAM of the QEMU that runs `domain` on this host: the shared
// mapping of exactly its RAM size, opened through /proc/<pid>/map_files.
Fd open_guest_ram(const std::string& domain, std::string* why) {
  const std::string pidfile = "/run/libvirt/qemu/" + domain + ".pid";
  std::ifstream pf(pidfile);
  long pid = 0;
  if (!(pf >> pid) || pid <= 0) {
    *why = "cannot read QEMU's pid from " + pidfile;
    return Fd();
  }
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long long start = 0, end = 0;
    char perms[8] = "";
    if (std::sscanf(line.c_str(), "%llx-%llx %7s", &start, &end, perms) != 3) continue;
    if (end - start != kRamBytes || perms[3] != 's') continue;
    const std::string range = line.substr(0, line.find(' '));
    Fd fd(::open(("/proc/" + std::to_string(pid) + "/map_files/" + range).c_str(),
                 O_RDWR | O_CLOEXEC));
    if (fd) return fd;
    *why = "cannot open QEMU's RAM mapping " + range + ": " + strerror(errno);
    return Fd();
  }
  *why = "QEMU (pid " + std::to_string(pid) + ") has no shared mapping of " +
         std::to_string(kRamMiB) + " MiB";
  return Fd();
}

// sha256 of the first `bytes` of fd (the guest's RAM, its disk), hex; ""
// with *why when it cannot be read.
std::string hash_fd(int fd, uint64_t bytes, std::string* why) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(kPatternTile);
  for (uint64_t at = 0; at < bytes;) {
    ssize_t n =
        ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), bytes - at), static_cast<off_t>(at));
    if (n <= 0) {
      *why = std::string("reading: ") + (n == 0 ? "short" : strerror(errno));
      EVP_MD_CTX_free(ctx);
      return "";
    }
    EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(n));
    at += static_cast<uint64_t>(n);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  char two[3];
  for (unsigned i = 0; i < len; ++i) {
    std::snprintf(two, sizeof two, "%02x", md[i]);
    hex += two;
  }
  return hex;
}

// Fills the guest's RAM with the pattern and records its hash.
bool fill_ram(Test& t) {
  std::string why;
  Fd fd = open_guest_ram(t.domain, &why);
  if (fd)
    for (uint64_t at = 0; at < kRamBytes; at += t.pattern.size())
      if (::pwrite(fd.get(), t.pattern.data(), t.pattern.size(), static_cast<off_t>(at)) !=
          static_cast<ssize_t>(t.pattern.size())) {
        why = std::string("writing the guest's RAM: ") + strerror(errno);
        fd.reset();
        break;
      }
  if (fd) t.ram_sha256 = hash_fd(fd.get(), kRamBytes, &why);
  if (t.ram_sha256.empty()) {
    t.c.report.add(kGroup, "test domain", Status::Fail,
                   "cannot fill the throwaway domain " + t.domain + "'s RAM: " + why,
                   "run xmig-verify as root on the hypervisor, with libvirt's QEMU driver "
                   "(qemu:///system)");
    return false;
  }
  return true;
}

// ---- --storage: the disk, in a storage pool of the test's own on each host --------

std::vector<std::string> create_volume(const Test& t) {
  return {"vol-create-as", t.domain, kDiskVolume, std::to_string(kDiskMiB) + "M",
          "--format",      "raw"};
}

// Defines, builds and starts the test's dir pool through `uri` and creates
// the empty raw volume in it: libvirt's storage API is how a file is made on
// the peer, through the tunnel's driver channel (the peer's libvirt needs it
// before an incoming storage migration). "" on success, else what failed.
std::string make_pool(Test& t, const std::string& uri, Test::Pool& pool) {
  const std::vector<std::vector<std::string>> steps = {
      {"pool-define-as", t.domain, "dir", "--target", t.pool_dir()},
      {"pool-build", t.domain},
      {"pool-start", t.domain},
      create_volume(t)};
  pool.defined = true;
  for (const auto& step : steps) {
    ChildResult r = t.virsh(uri, step);
    if (!r.ok()) return "virsh " + step.front() + ": " + one_line(virsh_error(r.output));
    if (step.front() == "pool-build") pool.built = true;
  }
  return "";
}

// Removes the volume, the pool's folder (pool-delete) and the pool; "" when
// all are gone, else what is left.
std::string remove_pool(Test& t, const std::string& uri, const Test::Pool& pool) {
  const auto until = Clock::now() + kCleanupTimeout;
  t.virsh(uri, {"vol-delete", "--pool", t.domain, kDiskVolume}, until);
  t.virsh(uri, {"pool-destroy", t.domain}, until);
  ChildResult deleted;
  if (pool.built) deleted = t.virsh(uri, {"pool-delete", t.domain}, until);
  t.virsh(uri, {"pool-undefine", t.domain}, until);
  if (t.virsh(uri, {"pool-info", t.domain}, until).status == 0)
    return "storage pool " + t.domain + " (" + t.pool_dir() + ")";
  if (pool.built && !deleted.ok())
    return t.pool_dir() + " (" + one_line(virsh_error(deleted.output)) + ")";
  return "";
}

// sha256 of the disk on this host; "" with *why.
std::string hash_disk(const Test& t, std::string* why) {
  Fd fd(::open(t.disk_path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    *why = "cannot open " + t.disk_path() + ": " + strerror(errno);
    return "";
  }
  return hash_fd(fd.get(), kDiskBytes, why);
}

// The disk on this host, in its own pool, filled with the pattern and hashed.
bool make_disk(Test& t) {
  std::string why = make_pool(t, t.local_uri(), t.local_pool);
  if (why.empty()) {
    Fd fd(::open(t.disk_path().c_str(), O_WRONLY | O_CLOEXEC));
    for (uint64_t at = 0; fd && at < kDiskBytes; at += t.pattern.size())
      if (::pwrite(fd.get(), t.pattern.data(), t.pattern.size(), static_cast<off_t>(at)) !=
          static_cast<ssize_t>(t.pattern.size()))
        fd.reset();
    if (!fd || ::fsync(fd.get()) != 0)
      why = "writing " + t.disk_path() + ": " + strerror(errno);
    else
      t.disk_sha256 = hash_disk(t, &why);
  }
  if (t.disk_sha256.empty()) {
    t.c.report.add(kGroup, "test disk", Status::Fail,
                   "libvirt on " + t.self() + " did not make the test's disk in a storage pool " +
                       t.domain + " at " + t.pool_dir() + ": " + why,
                   "run xmig-verify as root on a libvirt host whose libvirt offers the storage "
                   "API (libvirtd, or virtstoraged next to virtqemud)");
    return false;
  }
  return true;
}

// Between the two ways: the disk on this host made anew, empty, so that what
// is in it after the way back came through the tunnel.
std::string empty_local_disk(Test& t) {
  ChildResult r = t.virsh(t.local_uri(), {"vol-delete", "--pool", t.domain, kDiskVolume});
  if (r.ok()) r = t.virsh(t.local_uri(), create_volume(t));
  return r.ok() ? "" : one_line(virsh_error(r.output));
}

// ---- why a migration failed ------------------------------------------------------

struct Cause {
  std::string reason, fix;
};

// What virsh (or xmig-migrate) said, read for the causes an operator meets.
// `dest` is the host the domain was going to.
Cause explain(const Test& t, const ChildResult& r, const std::string& dest,
              const std::string& tunnel_errors) {
  const std::string said = one_line(virsh_error(r.output));
  if (r.cancelled)
    return {"interrupted (Ctrl-C or SIGTERM) after " + seconds_text(r.seconds) +
                " s: the migration was cancelled",
            ""};
  if (r.timed_out)
    return {"timeout: the migration to " + dest + " did not finish within " +
                std::to_string(t.o.migration_timeout.count()) + " s (cancelled); " + said,
            "check the migration network between the hosts and both tunnels' logs, or allow more "
            "time with --migration-timeout SECONDS"};
  if (contains(said, "same host"))
    return {"libvirt refused: " + said,
            "the two hosts have the same host UUID: give each its own host_uuid in "
            "/etc/libvirt/libvirtd.conf (or fix the duplicated SMBIOS UUID / machine-id), then "
            "restart libvirtd"};
  if (contains(said, "Permission denied") && contains(said, t.c.config.run_dir))
    return {"the destination's sockets are not usable by QEMU on " + dest + ": " + said,
            "on " + dest +
                ": set socket_group = \"libvirt-qemu\" (QEMU's group) in its tunnel config, with "
                "a socket_mode that gives the group read and write (0660), and restart "
                "xmig-tunnel there (xmig-tunnel --check warns about it)"};
  if (contains(said, "control socket"))
    return {"this host's tunnel: " + said,
            "start xmig-tunnel on " + t.self() + " with " + t.c.config.path};
  if (!tunnel_errors.empty())
    return {"the tunnel failed the migration's connections (" + tunnel_errors + "); virsh: " + said,
            "see both tunnels' logs (refused: and close: lines); run xmig-verify --config " +
                t.c.config.path + " --peer " + t.peer() + " for the handshake and refusals"};
  if (contains(said, "No such file or directory") && contains(said, "disk"))
    return {"libvirt refused: a disk is missing on " + dest + ": " + said,
            "create the destination's disk image beforehand with the same virtual size"};
  return {"libvirt failed the migration to " + dest + ": " + said,
          "see libvirtd's log on both hosts (journalctl -u libvirtd) and both tunnels' logs"};
}

// The certificate, reachability or identity problem behind a failed
// handshake, naming the host it is on.
Cause explain_handshake(const LiveContext& c) {
  const std::string peer = c.opts.peer;
  const std::string& why = c.handshake_error;
  if (!c.reachable)
    return {"the peer's tunnel is unreachable at " + c.address.str() + ": " + why,
            "start xmig-tunnel on " + peer +
                ", and check its listen address against [[peer]] "
                "address in " +
                c.config.path + " and the firewall between the hosts"};
  if (c.peer_verify_result == X509_V_ERR_CERT_HAS_EXPIRED)
    return {"certificate: " + peer + "'s certificate has expired (on " + peer + ")",
            "on " + peer +
                ": issue a current certificate (xmig-certs rotate, or the CSR flow); "
                "its tunnel loads it without a restart"};
  if (c.peer_verify_result == X509_V_ERR_HOSTNAME_MISMATCH)
    return {"certificate: the certificate " + peer + "'s tunnel presents does not name " + peer +
                " as a DNS SAN (on " + peer + ": another host's certificate?)",
            "on " + peer + ": install a certificate issued for " + peer +
                " (xmig-certs issue --name " + peer + "), and check that [[peer]] address in " +
                c.config.path + " is " + peer + "'s"};
  if (c.peer_verify_result != X509_V_OK)
    return {"certificate: " + peer + "'s certificate does not verify against " + c.config.tls.ca +
                ": " + X509_verify_cert_error_string(c.peer_verify_result),
            "on " + peer + ": install a certificate from the CA in " + c.config.tls.ca +
                " (xmig-certs issue --ca ... --name " + peer + ")"};
  if (contains(why, "expired"))
    return {"certificate: " + peer + " refused this host's certificate as expired (on " +
                c.config.name + "): " + why,
            "on " + c.config.name + ": xmig-certs rotate (or the CSR flow) for " +
                c.config.tls.client_cert};
  if (contains(why, "alert"))
    return {"certificate: " + peer + " refused this host's certificate (" +
                c.config.tls.client_cert + " on " + c.config.name + "): " + why,
            peer + " must trust the CA that issued " + c.config.name +
                "'s client certificate, and the certificate must be current and name " +
                c.config.name + " (xmig-certs check --dir on " + c.config.name + "); " + peer +
                "'s log says why (refused: lines)"};
  if (why.empty())
    return {peer + " refused this host after the handshake (see the mutual TLS finding)",
            "list " + c.config.name + " as a [[peer]] in " + peer + "'s tunnel config"};
  return {"the handshake with " + peer + " failed: " + why,
          "see the handshake findings above, and " + peer + "'s tunnel log (refused: lines)"};
}

// ---- the tunnels' close lines ------------------------------------------------------

// The connections of the test migration in this host's tunnel: out to the
// peer under the migration's id, and in from the peer since `since_unix`.
std::vector<RecentConnection> own_connections(const Test& t, int64_t since_unix,
                                              std::string* error) {
  std::vector<RecentConnection> out;
  try {
    TunnelStatus st = fetch_status(t.c.config.status, t.o.live.timeout);
    for (const auto& rc : st.recent) {
      if (rc.peer != t.peer() || rc.closed_unix + 1 < since_unix) continue;
      bool ours = rc.direction == "out"
                      ? (t.transparent ? rc.channel != "verify" : rc.migration == t.domain)
                      : rc.channel != "verify";
      if (ours) out.push_back(rc);
    }
  } catch (const std::exception& e) {
    *error = e.what();
  }
  return out;
}

std::string close_line(const RecentConnection& rc) {
  return "dir=" + rc.direction + " peer=" + rc.peer + " channel=" + rc.channel +
         (rc.migration.empty() ? "" : " migration=" + rc.migration) + " tls=" + rc.tls +
         " cipher=" + rc.cipher + " mode=" + rc.mode + " to_peer=" + std::to_string(rc.to_peer) +
         " from_peer=" + std::to_string(rc.from_peer) + " result=" + rc.result +
         (rc.error.empty() ? "" : " error=\"" + rc.error + "\"");
}

// What came back to this host after the round trip (the RAM, the disk), judged
// byte for byte: its sha256 now against the one taken before it left.
struct RoundTrip {
  std::string check;   // the finding's name, e.g. "RAM after the round trip"
  std::string before;  // sha256 before it left
  std::string now;     // sha256 now; "" when it could not be read (then `why`)
  std::string why;
  std::string fix;     // what to look at when it differs
  std::string of{};    // where it was read, for the pass text ("" or " of PATH")
  std::string note{};  // said after "as before it left" when it passed
};

void judge_round_trip(Report& report, const RoundTrip& r) {
  if (r.now == r.before)
    report.add(kGroup, r.check, Status::Pass,
               "sha256 " + r.now.substr(0, 16) + "..." + r.of + " as before it left" + r.note);
  else
    report.add(kGroup, r.check, Status::Fail,
               r.now.empty() ? r.why
                             : "sha256 " + r.now.substr(0, 16) + "... differs from " +
                                   r.before.substr(0, 16) + "... before it left",
               r.fix);
}

// ---- the wire ------------------------------------------------------------------------

// Judges the capture of the traffic to and from the peer: the migration's
// bytes crossed, every flow with payload is TLS to a tunnel's port, no
// plaintext migration protocol, the pattern nowhere.
void judge_wire(Test& t, const LiveCapture& cap, const std::string& iface) {
  LiveContext& c = t.c;
  FlowTable table(FlowOptions{.keep_streams = true, .keep_limit = 2 * kRamBytes + (8u << 20)});
  detail::read_capture(cap, table);
  const uint16_t peer_port = c.address.port;
  const uint16_t own_port = c.config.listen.port;
  uint64_t to_peer = 0, from_peer = 0;  // application bytes of the tunnels' flows
  size_t flows = 0, tunnel_flows = 0;
  std::string bad, versions;
  for (const auto& f : table.flows()) {
    FlowVerdict v = classify_flow(*f);
    if (!v.has_payload) continue;
    ++flows;
    const int server = f->client == 0 ? 1 : 0;
    const Address& srv = f->side(server);
    // This host dials the peer's TLS port (there), the peer dials ours (back).
    const bool to_peer_port = srv.str() == c.address.str();
    const bool tunnel_port = to_peer_port || srv.port == own_port;
    if (!tunnel_port || !v.tls || v.status == Status::Fail) {
      bad += (bad.empty() ? "" : "; ") + v.name + ": " + v.reason;
      continue;
    }
    ++tunnel_flows;
    std::string ver = v.reason.substr(0, v.reason.find(','));
    if (!contains(versions, ver)) versions += (versions.empty() ? "" : "; ") + ver;
    const uint64_t from_client = f->dir[f->client].delivered;
    if (to_peer_port)
      to_peer += from_client;
    else
      from_peer += from_client;
  }
  const std::string where = iface + " (to and from " + c.address.ip + ")";
  std::string seen = count(cap.frames().size(), "frame") + ", " + count(flows, "TCP flow") +
                     " with payload (" + std::to_string(tunnel_flows) + " to the tunnels' ports)";
  if (cap.dropped() || cap.overflowed()) {
    c.report.add("wire", "capture", Status::Fail,
                 seen + " on " + where + ", but " + std::to_string(cap.dropped()) +
                     " frames were dropped" + (cap.overflowed() ? " and the memory cap hit" : ""),
                 "run again at a quieter moment");
    return;
  }
  // The RAM crossed both ways (there and back): else the capture missed it.
  if (to_peer < kRamBytes || from_peer < kRamBytes)
    c.report.add("wire", "capture", Status::Fail,
                 seen + " on " + where + ": " + human_bytes(to_peer) + " went to " + t.peer() +
                     "'s TLS port and " + human_bytes(from_peer) +
                     " came to this host's, less "
                     "than the " +
                     human_bytes(kRamBytes) + " of the domain's RAM each way",
                 "capture on the interface that reaches the peer (--interface NAME)");
  else
    c.report.add("wire", "capture", Status::Pass,
                 seen + " on " + where + ": " + human_bytes(to_peer) + " to " + t.peer() + ":" +
                     std::to_string(peer_port) + " (there), " + human_bytes(from_peer) + " to " +
                     t.self() + ":" + std::to_string(own_port) + " (back)");
  if (bad.empty())
    c.report.add("wire", "only TLS to the tunnels", Status::Pass,
                 "every flow with payload is TLS to a tunnel's port (" + versions +
                     "); no plaintext QEMU, NBD or libvirt RPC");
  else
    c.report.add("wire", "only TLS to the tunnels", Status::Fail, bad,
                 "migrations must go through xmig: the operator's path is xmig-migrate (or, "
                 "with nova, [intercept]); nothing else may carry migration data to " +
                     t.peer());
  std::string leak = detail::find_canary(CanaryMatcher(t.pattern), table, cap);
  if (leak.empty())
    c.report.add("wire", "no RAM pattern on the wire", Status::Pass,
                 "no 16-byte window of the domain's RAM pattern" +
                     std::string(t.o.storage ? " (its disk's too)" : "") + " in " +
                     std::to_string(cap.frames().size()) +
                     " captured frames or the reassembled streams");
  else
    c.report.add("wire", "no RAM pattern on the wire", Status::Fail,
                 "the domain's RAM" + std::string(t.o.storage ? " or disk" : "") +
                     " crossed in plaintext: " + leak,
                 "the migration is not encrypted: carry it through xmig (xmig-migrate)");
}

// ---- the steps ---------------------------------------------------------------------

// virsh migrate, there (through xmig-migrate, or nova's URIs) or back (from
// the peer's libvirt, reached through the tunnel).
ChildResult migrate_there(Test& t) {
  if (t.transparent) {
    return t.virsh(t.local_uri(), {"migrate", "--live", "--p2p", t.domain,
                                   "qemu+tcp://" + Test::url_host(t.peer_ip) + "/system",
                                   "--migrateuri", "tcp://" + Test::url_host(t.peer_ip)});
  }
  std::vector<std::string> argv = {t.o.xmig_migrate, "--config", t.c.config.path, "--virsh",
                                   t.o.virsh,        t.domain,   t.peer()};
  if (t.o.storage) argv.push_back("--copy-storage-all");
  ChildResult r = run_child(argv, t.deadline, t.o.cancel_fd);
  t.cancelled = t.cancelled || r.cancelled;
  return r;
}

ChildResult migrate_back(Test& t) {
  const auto& cfg = t.c.config;
  if (t.transparent) {
    const std::string own = Test::url_host(cfg.intercept.address);
    return t.virsh(t.peer_uri(), {"migrate", "--live", "--p2p", t.domain,
                                  "qemu+tcp://" + own + "/system", "--migrateuri", "tcp://" + own});
  }
  // On the peer, its tunnel's entries towards this host (the fixed set: a
  // reservation is made on the source host only); run_dir is the same path on
  // both hosts, as libvirt requires.
  const std::string set = cfg.run_dir + "/" + t.self();
  std::vector<std::string> args = {
      "migrate",      "--live",
      "--p2p",        t.domain,
      "--desturi",    "qemu+unix:///system?socket=" + set + "/driver.sock",
      "--migrateuri", "unix://" + set + "/qemu.sock"};
  if (t.o.storage)
    args.insert(args.end(), {"--copy-storage-all", "--disks-uri", "unix://" + set + "/nbd.sock"});
  return t.virsh(t.peer_uri(), args);
}

// Where the domain is now: "absent" when libvirt does not know it.
std::string state_on(Test& t, const std::string& uri) {
  ChildResult r = t.virsh(uri, {"domstate", t.domain}, Clock::now() + kCleanupTimeout);
  if (r.status != 0)
    return contains(r.output, "ailed to get domain") || contains(r.output, "not found")
               ? "absent"
               : "unknown (" + one_line(r.output) + ")";
  std::string s = one_line(r.output);
  return s.empty() ? "unknown" : s;
}

// Removes the domain from both hosts (it is transient: destroy removes it),
// then the storage pools (--storage), and says what is left, if anything.
void clean_up(Test& t, bool peer_touched) {
  std::string left;
  struct Host {
    std::string name, uri;
  };
  std::vector<Host> hosts = {{t.self(), t.local_uri()}};
  if (peer_touched) hosts.push_back({t.peer(), t.peer_uri()});
  for (const auto& h : hosts) {
    std::string s = state_on(t, h.uri);
    if (s == "absent") continue;
    ChildResult r = t.virsh(h.uri, {"destroy", t.domain}, Clock::now() + kCleanupTimeout);
    s = state_on(t, h.uri);
    if (s != "absent")
      left += (left.empty() ? "" : "; ") + h.name + ": " + s + " (" + one_line(r.output) + ")";
  }
  struct PoolHost {
    Host host;
    const Test::Pool& pool;
  };
  std::vector<PoolHost> pools;
  if (t.local_pool.defined) pools.push_back({{t.self(), t.local_uri()}, t.local_pool});
  if (t.peer_pool.defined) pools.push_back({{t.peer(), t.peer_uri()}, t.peer_pool});
  for (const auto& p : pools) {
    std::string l = remove_pool(t, p.host.uri, p.pool);
    if (!l.empty()) left += (left.empty() ? "" : "; ") + p.host.name + ": " + l;
  }
  if (left.empty())
    t.c.report.add(
        kGroup, "clean-up", Status::Pass,
        "the throwaway domain " + t.domain + " is on neither host" +
            (peer_touched ? "" : " (it never reached " + t.peer() + ")") +
            (pools.empty() ? "" : ", nor its storage pool and disk (" + t.pool_dir() + ")"));
  else
    t.c.report.add(
        kGroup, "clean-up", Status::Fail,
        "the throwaway domain " + t.domain + " is still there: " + left,
        "remove it by hand on each host named: virsh destroy " + t.domain +
            (t.o.storage ? "; virsh vol-delete --pool " + t.domain + " " + kDiskVolume +
                               "; virsh pool-destroy, pool-delete, pool-undefine " + t.domain
                         : ""));
}

}  // namespace

Report run_test_migration(const TestMigrationOptions& o) {
  Report report;
  report.title = "test migration to peer " + o.live.peer + " with " + o.live.config;
  LiveContext c{.opts = o.live, .report = report};
  if (!detail::check_config(c)) return report;
  report.title = "test migration " + c.config.name + " -> " + o.live.peer + " -> " + c.config.name +
                 " (" + c.peer->address.str() + ")";
  Test t{.c = c, .o = o};
  t.transparent = c.config.intercept.enabled;
  t.peer_ip = c.peer->addresses.empty() ? c.address.ip : c.peer->addresses.front();

  // The handshake first: a certificate or reachability problem is named as
  // such, before libvirt turns it into "End of file while reading data".
  detail::check_handshake(c);
  if (!c.control_ok) {
    Cause why = explain_handshake(c);
    report.add(kGroup, "migration", Status::Fail, "not attempted: " + why.reason, why.fix);
    return report;
  }

  t.domain = "xmig-verify-" + random_hex(4);
  t.pattern = make_canary(kPatternTile);
  t.deadline = Clock::now() + kSetUpTimeout;

  // The throwaway domain, paused (its RAM stays as written) and transient
  // (destroy removes it).
  char xml_path[] = "/tmp/xmig-verify-domain-XXXXXX";
  Fd xml_fd(::mkstemp(xml_path));
  if (o.storage && !make_disk(t)) {
    clean_up(t, false);
    return report;
  }
  const std::string xml = domain_xml(t.domain, o.storage ? t.disk_path() : "");
  bool written =
      xml_fd && ::write(xml_fd.get(), xml.data(), xml.size()) == static_cast<ssize_t>(xml.size());
  ChildResult created;
  if (written) created = t.virsh(t.local_uri(), {"create", "--paused", xml_path});
  if (xml_fd) ::unlink(xml_path);
  if (!written || !created.ok()) {
    report.add(kGroup, "test domain", Status::Fail,
               "libvirt on " + c.config.name + " did not create the throwaway domain: " +
                   (!written            ? std::string(strerror(errno))
                    : created.timed_out ? "virsh create did not finish within " +
                                              std::to_string(kSetUpTimeout.count()) + " s"
                                        : one_line(created.output)),
               "run xmig-verify as root on a libvirt host (qemu:///system, QEMU with TCG)");
    clean_up(t, false);
    return report;
  }
  if (!fill_ram(t)) {
    clean_up(t, false);
    return report;
  }
  report.add(
      kGroup, "test domain", Status::Pass,
      t.domain + ": transient, TCG, " + std::to_string(kRamMiB) +
          " MiB of RAM filled with a known pattern (sha256 " + t.ram_sha256.substr(0, 16) +
          "...), paused, " +
          (o.storage ? "a " + std::to_string(kDiskMiB) + " MiB raw disk at " + t.disk_path() +
                           " filled with it (sha256 " + t.disk_sha256.substr(0, 16) + "...)"
                     : std::string("no disk")));
  t.deadline = Clock::now() + o.migration_timeout;  // the round trip starts here

  // The wire towards the peer, from before the first connection.
  std::vector<PeerAddress> towards = {c.address};
  std::string filter = "tcp and (host " + c.address.ip;
  for (const auto& a : c.peer->addresses)
    if (a != c.address.ip) {
      filter += " or host " + a;
      try {
        towards.push_back(resolve(a, c.address.port));
      } catch (const std::exception&) {
      }
    }
  filter += ")";
  detail::CaptureStart capture = detail::start_capture(c, towards, filter);
  const int64_t since = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();

  bool arrived = false, back = false;
  // --storage: the peer's libvirt makes the destination's disk first (the same
  // path and size), in a pool of the test's own.
  std::string peer_disk_error;
  if (o.storage) peer_disk_error = make_pool(t, t.peer_uri(), t.peer_pool);
  ChildResult there;
  if (peer_disk_error.empty()) there = migrate_there(t);
  std::string where_now;
  std::string status_error;
  auto tunnel_errors = [&] {
    std::string errors;
    for (const auto& rc : own_connections(t, since, &status_error))
      if (!rc.error.empty()) errors += (errors.empty() ? "" : "; ") + rc.channel + ": " + rc.error;
    return errors;
  };
  if (there.ok()) {
    arrived = true;
    report.add(kGroup, "there", Status::Pass,
               c.config.name + " -> " + t.peer() + " in " + seconds_text(there.seconds) + " s" +
                   (t.transparent ? " (qemu+tcp://, tcp://: through table inet xmig)"
                                  : " (xmig-migrate, socket set " + c.config.run_dir + "/" +
                                        t.peer() + "/" + t.domain + "/)"));
    const std::string emptied = o.storage ? empty_local_disk(t) : "";
    ChildResult r;
    if (emptied.empty())
      r = migrate_back(t);
    else
      r.output = "error: emptying this host's disk " + t.disk_path() + ": " + emptied;
    if (r.ok()) {
      back = true;
      report.add(kGroup, "back", Status::Pass,
                 t.peer() + " -> " + c.config.name + " in " + seconds_text(r.seconds) +
                     " s (started on " + t.peer() + "'s libvirt, reached through the tunnel at " +
                     t.peer_uri() + ")");
    } else {
      Cause why = explain(t, r, c.config.name, tunnel_errors());
      report.add(kGroup, "back", Status::Fail, why.reason, why.fix);
    }
  } else if (!peer_disk_error.empty()) {
    report.add(kGroup, "there", Status::Fail,
               "not attempted: libvirt on " + t.peer() +
                   " (through the tunnel's driver channel) did not make the destination's disk " +
                   t.disk_path() + " in a storage pool " + t.domain + ": " + peer_disk_error,
               "the peer's libvirt must offer the storage API on the socket the tunnel's driver "
               "channel reaches (libvirtd, or virtstoraged next to virtqemud) and may write " +
                   std::string(kPoolParent));
  } else {
    Cause why = explain(t, there, t.peer(), tunnel_errors());
    report.add(kGroup, "there", Status::Fail, why.reason, why.fix);
  }

  // The domain's RAM, back on this host, byte for byte.
  if (back) {
    std::string why, now;
    Fd fd = open_guest_ram(t.domain, &why);
    if (fd) now = hash_fd(fd.get(), kRamBytes, &why);
    judge_round_trip(report, {.check = "RAM after the round trip",
                              .before = t.ram_sha256,
                              .now = now,
                              .why = why,
                              .fix = "the migration stream was damaged: see both tunnels' logs"});
  }

  // The disk, back on this host (emptied while the domain was away), byte for
  // byte.
  if (back && o.storage) {
    std::string why;
    const std::string now = hash_disk(t, &why);
    judge_round_trip(
        report,
        {.check = "disk after the round trip",
         .before = t.disk_sha256,
         .now = now,
         .why = why,
         .fix = "the storage migration (NBD) was damaged: see both tunnels' logs (nbd channel)",
         .of = " of " + t.disk_path(),
         .note = " (emptied while the domain was on " + t.peer() + ")"});
  }

  // The tunnel's close lines of its connections (both directions: this host
  // dialled for the way there, the peer for the way back).
  std::vector<RecentConnection> lines;
  for (int attempt = 0; attempt < 20; ++attempt) {
    lines = own_connections(t, since, &status_error);
    bool out = false, in = false;
    for (const auto& rc : lines) (rc.direction == "out" ? out : in) = true;
    if ((out || !arrived) && (in || !back)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (lines.empty())
    report.add(
        kGroup, "tunnel connections", arrived ? Status::Warn : Status::Pass,
        status_error.empty() ? "this host's tunnel lists no connection of the test migration"
                             : status_error,
        arrived ? "check that the status endpoint (status = in the config) is readable" : "");
  for (const auto& rc : lines)
    report.add(kGroup, "tunnel connection", rc.result == "error" ? Status::Warn : Status::Pass,
               close_line(rc), rc.result == "error" ? "see the tunnel's log" : "");

  if (t.cancelled)
    report.add(kGroup, "interrupted", Status::Fail,
               "Ctrl-C or SIGTERM: the test stopped early and removed its domain", "");
  // The peer is asked too when the way there was tried: a failed or cancelled
  // incoming migration may have left the domain there (its storage pool is
  // removed whenever it was defined).
  clean_up(t, arrived || (!there.ok() && peer_disk_error.empty()));

  if (capture.capture) {
    capture.capture->stop();
    if (arrived) judge_wire(t, *capture.capture, capture.interface);
  } else {
    report.add("wire", "capture", Status::Fail,
               "no capture, so nothing proves the migration was encrypted: " + capture.error,
               detail::capture_fix(capture.error));
  }
  capture.capture.reset();
  // Transparent mode: the migration went the TCP path; the interception
  // group proves the enforcement around it.
  if (t.transparent && !t.cancelled) detail::check_interception(c);
  return report;
}

}  // namespace xmig::verify
