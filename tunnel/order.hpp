// Internal to tunnel/: connections of one entry dialled at once, delivered in
// the order the entry accepted them.
//
// QEMU before 8.0 tells its multifd channels apart by the order in which they
// arrive, so the destination must connect its target in the order the source
// accepted them. Dialling them one after another keeps that order but costs a
// round trip, a handshake and the far side's target connect per channel. Here
// the dials run at once:
// - Source (DialOrder): every accepted connection takes a Place, numbered in
//   accept order, before it is dialled; its Request names that place and the
//   predecessors still being dialled (ArrivalOrder in protocol.hpp). At most
//   kMaxDialsInFlight of one entry are dialled at once.
// - Destination (DeliveryOrder): a connection is held after its Request until
//   each predecessor it names has been delivered (its target connected) or has
//   failed; then its own target is connected.
//
// What must never happen: two connections of one entry reach the target in
// another order than accepted. A predecessor that never arrives (it failed
// before its Request reached this host) is waited for at most
// delivery_hold(): longer than any dial that could still succeed; when it
// arrives after that, its successors went first, so it is refused (verdict
// OutOfOrder) rather than delivered late. A peer with a valid certificate
// that sends nonsense (a place it used already, one far behind, thousands of
// entries) is refused with the reason logged, and what it can make this host
// remember is bounded: kMaxEntriesPerPeer entries of at most 2 *
// kMaxDialsInFlight places each (plus the connections it holds open, which
// max_connections bounds); an entry with nothing held is forgotten after
// delivery_hold().
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>

#include "base/asio.hpp"
#include "tunnel/config.hpp"
#include "tunnel/protocol.hpp"

namespace xmig::tunnel {

// How long the destination holds a connection for a predecessor that has not
// arrived: the predecessor's dial started earlier and, to succeed, had to
// connect (connect_timeout) and send its Request (handshake_timeout).
std::chrono::milliseconds delivery_hold(const Limits& limits);
// How long the source waits for a verdict after its Request: the far side's
// hold plus its target connect.
std::chrono::milliseconds verdict_timeout(const Limits& limits);

// Timers of coroutines that wait for something to change; wake() cancels
// them all, and each waiter looks again.
class Wakeups {
 public:
  // Waits until wake() or `until`; true when woken.
  asio::awaitable<bool> wait(std::chrono::steady_clock::time_point until);
  void wake();

 private:
  std::list<asio::steady_timer*> waiting_;
};

// Source side: one entry's accept order. Lives as long as its entry and its
// last Place (shared).
class DialOrder : public std::enable_shared_from_this<DialOrder> {
 public:
  static std::shared_ptr<DialOrder> make();

  // One accepted connection's place; it leaves the order (delivered or
  // failed, for this side) when destroyed.
  class Place {
   public:
    Place() = default;
    Place(std::shared_ptr<DialOrder> order, uint64_t sequence)
        : order_(std::move(order)), sequence_(sequence) {}
    ~Place();
    Place(Place&& o) noexcept = default;
    Place& operator=(Place&& o) noexcept;
    Place(const Place&) = delete;
    Place& operator=(const Place&) = delete;

    // Waits until this connection is within kMaxDialsInFlight of the oldest
    // one still being dialled (no wait for the first 64).
    asio::awaitable<void> within_window();
    // What the Request carries, computed now: the predecessors still being
    // dialled at this moment. {} for a Place of no order.
    ArrivalOrder arrival() const;

   private:
    std::shared_ptr<DialOrder> order_;
    uint64_t sequence_ = 0;
  };

  // The next place, in accept order (never waits).
  Place take();
  // True when no dial of this order is running.
  bool idle() const { return dialling_.empty(); }

 private:
  DialOrder() = default;
  void leave(uint64_t sequence);

  uint64_t entry_ = 0;
  uint64_t next_ = 0;
  std::set<uint64_t> dialling_;
  Wakeups window_;
};

// Why the destination refuses to deliver a connection in order.
struct OrderRefusal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Destination side: the entries of every peer whose connections are being
// delivered in order. Control-plane thread only.
class DeliveryOrder {
 public:
  // Ordered entries a peer may have at once (a few per migration running
  // towards this host: driver, qemu and nbd entries, or intercepted ports).
  static constexpr size_t kMaxEntriesPerPeer = 256;

  explicit DeliveryOrder(std::chrono::milliseconds hold) : hold_(hold) {}

  struct Entry;
  // One arrived connection: delivered in order after turn(); it counts as
  // delivered or failed (its successors may go) when destroyed.
  class Ticket {
   public:
    Ticket(DeliveryOrder& owner, Entry& entry, ArrivalOrder order)
        : owner_(owner), entry_(entry), order_(order) {}
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;

    // Waits until every predecessor the request named has been delivered or
    // has failed here; one that has not arrived within the hold is given up
    // (and refused if it comes later).
    struct Waited {
      std::chrono::milliseconds time{0};
      unsigned given_up = 0;  // predecessors that never arrived
    };
    asio::awaitable<Waited> turn();

   private:
    DeliveryOrder& owner_;
    Entry& entry_;
    ArrivalOrder order_;
  };

  // Registers the arrival of `order` from `peer` (the authenticated peer's
  // name). nullptr for an unordered request (entry 0). Throws OrderRefusal
  // saying why it cannot be delivered in order.
  std::unique_ptr<Ticket> arrive(const std::string& peer, const ArrivalOrder& order);

  // Entries remembered now (for tests of the bound, and /status one day).
  size_t entries() const { return entries_.size(); }

  struct Entry {
    enum class State : uint8_t {
      Waiting,   // arrived, not yet delivered or failed
      Resolved,  // delivered, or failed here
      GivenUp,   // did not arrive within the hold; a successor went first
    };
    std::map<uint64_t, State> places;
    uint64_t highest = 0;
    unsigned waiting = 0;  // places in Waiting
    std::chrono::steady_clock::time_point last_change;
    Wakeups changed;
  };

 private:
  void forget_idle(std::chrono::steady_clock::time_point now);

  std::chrono::milliseconds hold_;
  // By (peer, entry id): a peer's ids never touch another peer's.
  std::map<std::pair<std::string, uint64_t>, std::unique_ptr<Entry>> entries_;
};

}  // namespace xmig::tunnel
