#include "tunnel/order.hpp"

#include <random>

namespace xmig::tunnel {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds delivery_hold(const Limits& limits) {
  return limits.connect_timeout + limits.handshake_timeout;
}

std::chrono::milliseconds verdict_timeout(const Limits& limits) {
  return delivery_hold(limits) + limits.connect_timeout;
}

// ---- Wakeups ---------------------------------------------------------------------

asio::awaitable<bool> Wakeups::wait(Clock::time_point until) {
  asio::steady_timer timer(co_await asio::this_coro::executor, until);
  auto it = waiting_.insert(waiting_.end(), &timer);
  // Leaves the list even when the coroutine is destroyed while it waits
  // (the tunnel stopping).
  struct Leave {
    std::list<asio::steady_timer*>& list;
    std::list<asio::steady_timer*>::iterator it;
    ~Leave() { list.erase(it); }
  } leave{waiting_, it};
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return ec == asio::error::operation_aborted;
}

void Wakeups::wake() {
  for (auto* timer : waiting_) timer->cancel();
}

// ---- Source: DialOrder -------------------------------------------------------------

std::shared_ptr<DialOrder> DialOrder::make() {
  std::shared_ptr<DialOrder> order(new DialOrder());
  std::random_device random;
  while (order->entry_ == 0)
    order->entry_ = (static_cast<uint64_t>(random()) << 32) ^ static_cast<uint64_t>(random());
  return order;
}

DialOrder::Place DialOrder::take() {
  dialling_.insert(next_);
  return Place(shared_from_this(), next_++);
}

void DialOrder::leave(uint64_t sequence) {
  dialling_.erase(sequence);
  window_.wake();
}

DialOrder::Place::~Place() {
  if (order_) order_->leave(sequence_);
}

DialOrder::Place& DialOrder::Place::operator=(Place&& o) noexcept {
  if (this != &o) {
    if (order_) order_->leave(sequence_);
    order_ = std::move(o.order_);
    sequence_ = o.sequence_;
  }
  return *this;
}

asio::awaitable<void> DialOrder::Place::within_window() {
  if (!order_) co_return;
  auto& dialling = order_->dialling_;
  while (sequence_ - *dialling.begin() >= kMaxDialsInFlight)
    co_await order_->window_.wait(Clock::time_point::max());
}

ArrivalOrder DialOrder::Place::arrival() const {
  if (!order_) return {};
  ArrivalOrder a{.entry = order_->entry_, .sequence = sequence_, .waits_for = 0};
  for (uint64_t before : order_->dialling_) {
    if (before >= sequence_) break;
    const uint64_t bit = sequence_ - 1 - before;
    if (bit < kMaxDialsInFlight) a.waits_for |= uint64_t{1} << bit;
  }
  return a;
}

// ---- Destination: DeliveryOrder ------------------------------------------------------

std::unique_ptr<DeliveryOrder::Ticket> DeliveryOrder::arrive(const std::string& peer,
                                                             const ArrivalOrder& order) {
  if (order.entry == 0) return nullptr;
  const auto now = Clock::now();
  forget_idle(now);
  const auto key = std::make_pair(peer, order.entry);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    size_t of_peer = 0;
    for (auto i = entries_.lower_bound({peer, 0}); i != entries_.end() && i->first.first == peer;
         ++i)
      ++of_peer;
    if (of_peer >= kMaxEntriesPerPeer)
      throw OrderRefusal("the peer has " + std::to_string(of_peer) +
                         " entries whose connections are being delivered in order, the most "
                         "this host keeps for one peer");
    auto entry = std::make_unique<Entry>();
    entry->highest = order.sequence;
    it = entries_.emplace(key, std::move(entry)).first;
  }
  Entry& e = *it->second;
  const std::string place = "place " + std::to_string(order.sequence) + " of its entry";
  if (e.highest >= kMaxDialsInFlight && order.sequence <= e.highest - kMaxDialsInFlight)
    throw OrderRefusal(place + " is " + std::to_string(e.highest - order.sequence) +
                       " places behind the latest (" + std::to_string(e.highest) +
                       "), more than the " + std::to_string(kMaxDialsInFlight) +
                       " a tunnel dials at once");
  if (auto p = e.places.find(order.sequence); p != e.places.end())
    throw OrderRefusal(p->second == Entry::State::GivenUp
                           ? place +
                                 " arrived after its successors were delivered (held for it "
                                 "up to " +
                                 std::to_string(hold_.count()) + " ms)"
                           : place + " arrived twice");
  e.places[order.sequence] = Entry::State::Waiting;
  ++e.waiting;
  e.highest = std::max(e.highest, order.sequence);
  e.last_change = now;
  // What a valid request can still name lies within 2 windows of the latest.
  std::erase_if(e.places, [&e](const auto& p) {
    return p.second != Entry::State::Waiting && p.first + 2 * kMaxDialsInFlight <= e.highest;
  });
  return std::make_unique<Ticket>(*this, e, order);
}

void DeliveryOrder::forget_idle(Clock::time_point now) {
  std::erase_if(entries_, [&](const auto& kv) {
    return kv.second->waiting == 0 && now - kv.second->last_change > hold_;
  });
}

asio::awaitable<DeliveryOrder::Ticket::Waited> DeliveryOrder::Ticket::turn() {
  const auto start = Clock::now();
  const auto deadline = start + owner_.hold_;
  Waited waited;
  for (;;) {
    bool delivering = false, missing = false;
    const auto now = Clock::now();
    for (uint64_t bit = 0; bit < kMaxDialsInFlight; ++bit) {
      if (!(order_.waits_for >> bit & 1)) continue;
      const uint64_t before = order_.sequence - 1 - bit;
      auto p = entry_.places.find(before);
      if (p == entry_.places.end()) {
        if (now < deadline) {
          missing = true;
        } else {
          entry_.places[before] = Entry::State::GivenUp;
          ++waited.given_up;
        }
      } else if (p->second == Entry::State::Waiting) {
        delivering = true;
      }
    }
    if (!delivering && !missing) break;
    co_await entry_.changed.wait(missing ? deadline : Clock::time_point::max());
  }
  waited.time = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  co_return waited;
}

DeliveryOrder::Ticket::~Ticket() {
  entry_.places[order_.sequence] = Entry::State::Resolved;
  --entry_.waiting;
  entry_.last_change = Clock::now();
  entry_.changed.wake();
}

}  // namespace xmig::tunnel
