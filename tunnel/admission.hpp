// Internal to tunnel/: what a source on the migration network may hold of
// this host before it has authenticated, and temporary bans.
//
// The TLS listener is the one thing strangers can reach. Budgets, checked at
// accept, before anything is allocated for the connection:
// - pending handshakes (accepted, not yet authenticated) in all
//   (max_pending_handshakes; the configured peers' addresses are counted
//   apart, so that strangers cannot use up their budget) and from one source
//   (max_pending_per_source);
// - new connections per second from one source (handshake_rate_per_source,
//   a token bucket with a burst of as many; not for the peers' addresses,
//   whose migrations open connections as fast as they need).
// Established streams are counted elsewhere (max_connections), so pending
// handshakes never take their places.
//
// Bans: a source that fails authentication (a handshake that fails or times
// out, a certificate refused) or exceeds its budget ban_after times within
// ban_window is refused at accept for ban_time. Each ban and its end is one
// audit line ("ban: ..." / "ban lifted: ..."). The configured peers'
// addresses are never banned when ban_exempt_peers is set.
//
// A source is an IPv4 address or an IPv6 /64 (one host's share of an IPv6
// network, so that a host cannot escape its budget by changing addresses).
//
// Memory: a connection's TLS session and read buffers are allocated on the
// handshake threads (tls::handshake's pool), a stream's buffers and state on
// the control-plane and worker threads, in glibc's arenas of those threads.
// Freed when the connection ends, they stay in those arenas (glibc gives a
// heap back only from its top, and only when the free block there passes a
// threshold): 1,000 handshakes stopped mid-ClientHello left hv-b 49 MiB above
// idle with 0.8 MiB of its heap in use; 1,000 closed streams left each end
// ~49 MiB above idle with 1.5-1.7 MiB in use (malloc_stats). A stream's big
// buffers (io/userspace_pump.cpp) come from mmap only until the first one is
// freed: glibc then raises its mmap threshold above their size, and from the
// next burst on they stay in the arenas too. So the sweep counts the
// connections held (pending handshakes and established streams), and
// malloc_trim gives every arena's free pages back once it finds at least
// kTrimAfterBurst fewer than the most held since it last did, or none held
// after any: at most once a second, nothing per connection. (Buffers in pages
// of their own, mmap'd and munmap'd per stream, cost ~1 CPU-ms more per
// channel set up: README "Memory".) Used on the control-plane thread only;
// the trim itself runs where trim_on() says.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/asio.hpp"
#include "tunnel/config.hpp"
#include "tunnel/refusal_log.hpp"
#include "tunnel/status.hpp"

namespace xmig::tunnel {

// "192.0.2.7", or "2001:db8:1:2::/64" for any address of that /64; an
// IPv4-mapped IPv6 address counts as its IPv4 address.
std::string source_of(const asio::ip::address& address);

// The sources of the configured peers' addresses (names resolved now; a
// name that does not resolve is logged and left out).
std::set<std::string> peer_sources(asio::io_context& io, const std::vector<PeerConfig>& peers);

class Admission {
 public:
  using Clock = std::chrono::steady_clock;

 private:
  struct Source {
    unsigned pending = 0;
    double tokens = 0;
    Clock::time_point refilled{};
    std::deque<Clock::time_point> violations;
    std::optional<Clock::time_point> banned_until;
    int64_t banned_until_unix = 0;
    unsigned ban_violations = 0;
    std::string ban_reason;
    uint64_t refused_while_banned = 0;
  };
  struct Table {
    std::map<std::string, Source> sources;
    size_t pending = 0;       // from sources that are not peers
    size_t peer_pending = 0;  // from the configured peers' addresses
    // Established streams, counted by the tunnel (any thread).
    const std::atomic<size_t>* streams = nullptr;
    // The most connections held at once (pending and established) since the
    // freed memory was last given back: exact on each accept, sampled by the
    // sweep between accepts.
    size_t most_held = 0;
    size_t held() const { return pending + peer_pending + streams->load(); }
  };

 public:
  // One pending handshake: holds its place from accept until it is destroyed
  // (when the peer has authenticated, or the connection ended).
  class Pending {
   public:
    Pending(std::shared_ptr<Table> table, std::string source, bool peer);
    ~Pending();
    Pending(Pending&& o) noexcept;
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    Pending& operator=(Pending&&) = delete;
    const std::string& source() const { return source_; }

   private:
    std::shared_ptr<Table> table_;  // shared: a coroutine may outlive the Admission
    std::string source_;
    bool peer_ = false;
  };

  // Why admit() refused; the kind keys the rate-limited log line.
  struct Refusal {
    std::string kind;  // "banned", "pending", "pending-source", "rate"
    std::string why;
  };

  // `streams`: the tunnel's count of established streams, for giving back
  // the memory of a burst of them once they have closed (see above).
  Admission(asio::io_context& io, const Limits& limits, std::set<std::string> peers,
            RefusalLog& log, const std::atomic<size_t>& streams);

  // At accept: a Pending when `source` may start a handshake now, else the
  // refusal (a source over its own budget has also committed a violation).
  std::optional<Pending> admit(const std::string& source, Refusal& refusal);
  // The source failed authentication: one violation.
  void failed(const std::string& source, const std::string& why);

  // Where the freed memory is given back from once the tunnel runs (a
  // handshake thread): a malloc_trim takes up to ~150 ms after hundreds of
  // streams, which the control-plane thread's accepts should not wait for.
  // Until then the sweep trims on its own thread.
  void trim_on(asio::any_io_executor executor) { trimmer_ = std::move(executor); }

  size_t pending() const { return table_->pending + table_->peer_pending; }
  // An address of a configured [[peer]].
  bool is_peer(const std::string& source) const { return peers_.count(source) > 0; }
  uint64_t bans_total() const { return bans_total_; }
  std::vector<BanInfo> bans() const;

 private:
  void violation(const std::string& source, Source& src, const std::string& why);
  // Ends a ban when its time has come (one timer per ban).
  asio::awaitable<void> lift_when_due(std::string source, Clock::time_point until);
  // Once a second: the refusal log's counts, and sources with nothing left
  // to remember are forgotten (the table stays as small as the traffic).
  // When a burst of connections has ended, the memory they freed is given
  // back to the system.
  asio::awaitable<void> sweep();

  asio::io_context& io_;
  const Limits& limits_;
  std::set<std::string> peers_;
  RefusalLog& log_;
  std::shared_ptr<Table> table_ = std::make_shared<Table>();
  uint64_t bans_total_ = 0;
  std::optional<asio::any_io_executor> trimmer_;
  // A trim posted to trimmer_ and not finished yet: the next waits for a later sweep.
  std::shared_ptr<std::atomic<bool>> trimming_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace xmig::tunnel
