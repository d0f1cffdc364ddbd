// Hot reload of the TLS material (CA bundle, server and client certificate
// and key, CRL). New connections use the new material; established
// connections keep the session they have. The new Context comes with no
// session tickets to offer and a new ticket key: the next channel to or from
// every peer runs a full handshake under the new material. Material that fails any check
// (parses, key matches, chains to the CA, not expired, fit for its role and
// naming this host) is refused and the old stays in service.
#include <spdlog/spdlog.h>
#include <sys/inotify.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <vector>

#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

// Writers replace the files one after another (CA, key, certificate): wait
// for a quiet moment before loading, so a half-replaced set is not judged.
constexpr auto kSettle = std::chrono::milliseconds(300);

}  // namespace

void reload(Tunnel::State& s, const std::string& why);

namespace {

// The settle timer, and whether a reload is waiting on it. Shared by the watch
// loop and the reload it spawns, as either may end first (the watch loop ends
// on shutdown while a reload may be waiting).
struct Settle {
  explicit Settle(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  bool pending = false;
};

// Waits until the files have been quiet for kSettle (each event pushes the
// timer's expiry out), then reloads once.
asio::awaitable<void> settle_then_reload(Tunnel::State& s, std::shared_ptr<Settle> settle) {
  while (true) {
    boost::system::error_code ec;
    co_await settle->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ec || s.stopping) break;
  }
  settle->pending = false;
  if (!s.stopping) reload(s, "files changed");
}

}  // namespace

tls::Settings tls_settings(const Config& c) {
  return tls::Settings{.ca = c.tls.ca,
                       .cert = c.tls.cert,
                       .key = c.tls.key,
                       .client_cert = c.tls.client_cert,
                       .client_key = c.tls.client_key,
                       .crl = c.tls.crl,
                       .allow_tls12 = c.tls.min_version == "1.2",
                       .own_name = c.name,
                       .resumption = c.tls.resumption};
}

std::string describe_certificates(const tls::Context& context) {
  std::string out = "certificate serial " + context.cert().serial_hex + " expires in " +
                    std::to_string(days_left(context.cert())) + " days";
  if (context.separate_client_cert())
    out += ", client certificate serial " + context.client_cert().serial_hex + " expires in " +
           std::to_string(days_left(context.client_cert())) + " days";
  return out;
}

long days_left(const tls::CertInfo& cert) {
  auto left = cert.not_after - std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::hours>(left).count() / 24;
}

void reload(Tunnel::State& s, const std::string& why) {
  try {
    auto fresh = tls::Context::load(tls_settings(s.config));
    bool changed = fresh->cert().serial_hex != s.tls->cert().serial_hex ||
                   fresh->client_cert().serial_hex != s.tls->client_cert().serial_hex;
    s.tls = fresh;
    s.stats.record_reload(true);
    spdlog::info("reload ({}): {}{}", why, describe_certificates(*fresh),
                 changed ? "" : " (same certificate; CA bundle and CRL reloaded)");
  } catch (const std::exception& e) {
    s.stats.record_reload(false);
    spdlog::error("reload ({}) refused, still serving certificate serial {}: {}", why,
                  s.tls->cert().serial_hex, e.what());
  }
}

namespace {

// True when one of the inotify events in buf[0, n) names one of `names`.
// (A plain function: an inotify_event cannot live in a coroutine frame.)
bool names_one_of(const char* buf, size_t n, const std::set<std::string>& names) {
  bool hit = false;
  for (size_t at = 0; at + sizeof(inotify_event) <= n;) {
    inotify_event ev;
    std::memcpy(&ev, buf + at, sizeof ev);
    const char* name = buf + at + sizeof ev;
    if (ev.len && at + sizeof ev + ev.len <= n &&
        names.count(std::string(name, ::strnlen(name, ev.len))))
      hit = true;
    at += sizeof ev + ev.len;
  }
  return hit;
}

// Reads inotify events; a change to one of `names` (re)arms the settle timer.
asio::awaitable<void> watch_loop(Tunnel::State& s, int fd, std::set<std::string> names) {
  asio::posix::stream_descriptor watch(s.io, fd);
  auto settle = std::make_shared<Settle>(s.io);
  // Coroutine frames do not honour alignas on locals (UBSan caught it):
  // events are copied out of the buffer before their fields are read.
  std::vector<char> buf(4096);
  while (!s.stopping) {
    boost::system::error_code ec;
    co_await watch.async_wait(asio::posix::stream_descriptor::wait_read,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    ssize_t n;
    bool relevant = false;
    while ((n = ::read(fd, buf.data(), buf.size())) > 0)
      relevant = names_one_of(buf.data(), static_cast<size_t>(n), names) || relevant;
    if (!relevant) continue;
    settle->timer.expires_after(kSettle);
    if (settle->pending) continue;  // the running wait picks up the new expiry
    settle->pending = true;
    asio::co_spawn(s.io, settle_then_reload(s, settle), asio::detached);
  }
}

}  // namespace

void watch_tls_files(Tunnel::State& s) {
  namespace fs = std::filesystem;
  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    spdlog::warn("inotify unavailable ({}); certificates reload on SIGHUP only", strerror(errno));
    return;
  }
  std::set<std::string> names;  // file names to react to, in the watched directories
  std::set<std::string> dirs;
  for (const std::string& file :
       {s.config.tls.ca, s.config.tls.cert, s.config.tls.key, s.config.tls.client_cert,
        s.config.tls.client_key, s.config.tls.crl}) {
    if (file.empty()) continue;
    fs::path p(file);
    names.insert(p.filename().string());
    dirs.insert(p.parent_path().empty() ? "." : p.parent_path().string());
  }
  // IN_ATTRIB: a mode or owner change can make refused material valid (the
  // fix for a world-readable key is `chmod 600`).
  const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB;
  for (const auto& dir : dirs)
    if (::inotify_add_watch(fd, dir.c_str(), mask) < 0)
      spdlog::warn("cannot watch {} ({}); certificates there reload on SIGHUP only", dir,
                   strerror(errno));
  asio::co_spawn(s.io, watch_loop(s, fd, std::move(names)), asio::detached);
}

}  // namespace xmig::tunnel
