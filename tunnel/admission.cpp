#include "tunnel/admission.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace xmig::tunnel {

namespace {

// An IPv6 host's share of its network: the first 64 bits.
constexpr size_t kIpv6HostPrefixBytes = 8;
constexpr std::chrono::seconds kSweepInterval{1};
// Connections that ended since the most were held, after which their freed
// memory is given back (admission.hpp): what stays until then is at most
// that of 15 streams, 1.6 MiB each for both ends once they have carried data
// (README "Memory"), or of 15 handshakes (under 100 KiB each). A migration
// with multifd 16 is 17 streams.
constexpr size_t kTrimAfterBurst = 16;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// The heap's free pages back to the system, in every arena (admission.hpp).
void return_freed_memory(size_t most, size_t now) {
#if defined(__GLIBC__)
  const auto start = std::chrono::steady_clock::now();
  malloc_trim(0);
  spdlog::info(
      "{} connections (pending handshakes and streams) held at once, {} now: the freed memory "
      "returned in {:.1f} ms",
      most, now, seconds(std::chrono::steady_clock::now() - start) * 1000);
#else
  (void)most;
  (void)now;
#endif
}

}  // namespace

std::string source_of(const asio::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + kIpv6HostPrefixBytes, bytes.end(), 0);
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

std::set<std::string> peer_sources(asio::io_context& io, const std::vector<PeerConfig>& peers) {
  std::set<std::string> out;
  asio::ip::tcp::resolver resolver(io);
  for (const auto& peer : peers) {
    boost::system::error_code ec;
    auto results = resolver.resolve(peer.address.host, std::to_string(peer.address.port), ec);
    if (ec) {
      spdlog::warn("peer {}: {} does not resolve ({}); its address has no budget of its own",
                   peer.name, peer.address.host, ec.message());
      continue;
    }
    for (const auto& r : results) out.insert(source_of(r.endpoint().address()));
  }
  return out;
}

Admission::Pending::Pending(std::shared_ptr<Table> table, std::string source, bool peer)
    : table_(std::move(table)), source_(std::move(source)), peer_(peer) {
  ++table_->sources[source_].pending;
  ++(peer_ ? table_->peer_pending : table_->pending);
  table_->most_held = std::max(table_->most_held, table_->held());
}

Admission::Pending::~Pending() {
  if (!table_) return;
  --table_->sources[source_].pending;
  --(peer_ ? table_->peer_pending : table_->pending);
}

Admission::Pending::Pending(Pending&& o) noexcept
    : table_(std::move(o.table_)), source_(std::move(o.source_)), peer_(o.peer_) {}

Admission::Admission(asio::io_context& io, const Limits& limits, std::set<std::string> peers,
                     RefusalLog& log, const std::atomic<size_t>& streams)
    : io_(io), limits_(limits), peers_(std::move(peers)), log_(log) {
  table_->streams = &streams;
  asio::co_spawn(io_, sweep(), asio::detached);
}

std::optional<Admission::Pending> Admission::admit(const std::string& source, Refusal& refusal) {
  const auto now = Clock::now();
  const bool peer = is_peer(source);
  Source& src = table_->sources[source];
  if (src.banned_until) {
    ++src.refused_while_banned;
    refusal = {.kind = "banned",
               .why = fmt::format("banned for {:.0f} s more ({})", seconds(*src.banned_until - now),
                                  src.ban_reason)};
    return std::nullopt;
  }
  // The bucket fills at the rate, up to a burst of as many. A peer's own
  // migrations open connections as fast as they need: its address has no rate.
  const double rate = limits_.handshake_rate_per_source;
  if (src.refilled == Clock::time_point{}) src.tokens = rate;
  src.tokens = std::min(rate, src.tokens + seconds(now - src.refilled) * rate);
  src.refilled = now;
  if (!peer && src.tokens < 1) {
    refusal = {.kind = "rate",
               .why = fmt::format("more than {} new connections a second "
                                  "(handshake_rate_per_source)",
                                  limits_.handshake_rate_per_source)};
    violation(source, src, refusal.why);
    return std::nullopt;
  }
  if (!peer) src.tokens -= 1;
  if (src.pending >= limits_.max_pending_per_source) {
    refusal = {.kind = "pending-source",
               .why = fmt::format("{} handshakes from this source already pending "
                                  "(max_pending_per_source)",
                                  src.pending)};
    violation(source, src, refusal.why);
    return std::nullopt;
  }
  // Not the source's fault: no violation.
  if (!peer && table_->pending >= limits_.max_pending_handshakes) {
    refusal = {.kind = "pending",
               .why = fmt::format("{} handshakes already pending (max_pending_handshakes)",
                                  table_->pending)};
    return std::nullopt;
  }
  return Pending(table_, source, peer);
}

void Admission::failed(const std::string& source, const std::string& why) {
  violation(source, table_->sources[source], why);
}

void Admission::violation(const std::string& source, Source& src, const std::string& why) {
  if (limits_.ban_after == 0 || src.banned_until) return;
  if (limits_.ban_exempt_peers && is_peer(source)) return;
  const auto now = Clock::now();
  src.violations.push_back(now);
  while (!src.violations.empty() && now - src.violations.front() > limits_.ban_window)
    src.violations.pop_front();
  if (src.violations.size() < limits_.ban_after) return;

  const auto until = now + limits_.ban_time;
  src.banned_until = until;
  src.banned_until_unix =
      unix_now() + std::chrono::duration_cast<std::chrono::seconds>(limits_.ban_time).count();
  src.ban_violations = static_cast<unsigned>(src.violations.size());
  src.ban_reason = why;
  src.refused_while_banned = 0;
  src.violations.clear();
  ++bans_total_;
  spdlog::warn(
      "ban: {} refused for {:.0f} s: {} violations within {:.0f} s (ban_after, "
      "ban_window), the last: {}",
      source, seconds(limits_.ban_time), src.ban_violations, seconds(limits_.ban_window), why);
  asio::co_spawn(io_, lift_when_due(source, until), asio::detached);
}

asio::awaitable<void> Admission::lift_when_due(std::string source, Clock::time_point until) {
  asio::steady_timer timer(io_, until);
  co_await timer.async_wait(asio::use_awaitable);
  Source& src = table_->sources[source];
  if (!src.banned_until) co_return;
  src.banned_until.reset();
  spdlog::info("ban lifted: {} after {:.0f} s; {} connections were refused meanwhile", source,
               seconds(limits_.ban_time), src.refused_while_banned);
}

asio::awaitable<void> Admission::sweep() {
  asio::steady_timer timer(io_);
  while (true) {
    timer.expires_after(kSweepInterval);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    const auto now = Clock::now();
    log_.flush(now);
    const size_t held = table_->held();
    table_->most_held = std::max(table_->most_held, held);
    // After a burst, and when the last connection has ended (so that a
    // burst's last few do not stay behind).
    const bool burst_over =
        table_->most_held >= held + kTrimAfterBurst || (held == 0 && table_->most_held > 0);
    if (burst_over && !trimming_->exchange(true)) {
      const size_t most = table_->most_held;
      table_->most_held = held;
      auto trim = [most, held, trimming = trimming_] {
        return_freed_memory(most, held);
        trimming->store(false);
      };
      if (trimmer_)
        asio::post(*trimmer_, std::move(trim));
      else
        trim();
    }
    // A full bucket takes one second to refill from empty.
    const auto bucket_full = std::chrono::seconds(1);
    std::erase_if(table_->sources, [&](const auto& entry) {
      const Source& src = entry.second;
      return src.pending == 0 && !src.banned_until &&
             (src.violations.empty() || now - src.violations.back() > limits_.ban_window) &&
             now - src.refilled > bucket_full;
    });
  }
}

std::vector<BanInfo> Admission::bans() const {
  std::vector<BanInfo> out;
  const auto now = Clock::now();
  for (const auto& [source, src] : table_->sources)
    if (src.banned_until)
      out.push_back({.source = source,
                     .until_unix = src.banned_until_unix,
                     .seconds_left = std::max(0.0, seconds(*src.banned_until - now)),
                     .violations = src.ban_violations,
                     .reason = src.ban_reason,
                     .refused = src.refused_while_banned});
  return out;
}

}  // namespace xmig::tunnel
