// Concurrent dials, ordered delivery (tunnel/order.hpp) and the Request record
// that carries the order (tunnel/protocol.hpp), in-process: the bounds and
// refusals an attacker with a valid peer certificate could reach. The real
// ordering through two tunnels is tests/e2e/ordering_test.cpp.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "tunnel/order.hpp"
#include "tunnel/protocol.hpp"

namespace xmig::tunnel {
namespace {

using namespace std::chrono_literals;

// Pass: a request with an order decodes to the same fields and encodes to the
// same bytes; an unordered one (xmig-verify's probe) is still valid.
TEST(RequestRecord, OrderTravelsAndEncodesOneWay) {
  const Request r{.migration = "vm-1",
                  .guest_uuid = "",
                  .order = {.entry = 0x0123456789abcdef, .sequence = 70, .waits_for = 0x5}};
  const std::string bytes = encode(r);
  auto back = decode_request(bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->migration, "vm-1");
  EXPECT_EQ(back->order.entry, 0x0123456789abcdefu);
  EXPECT_EQ(back->order.sequence, 70u);
  EXPECT_EQ(back->order.waits_for, 0x5u);
  EXPECT_EQ(encode(*back), bytes);
  EXPECT_TRUE(decode_request(encode(Request{})));
}

Request ordered(ArrivalOrder order) {
  return {.migration = "", .guest_uuid = "", .order = order};
}

// Pass: a version 1 request (what xmig before ordered dials sent) is refused
// with both versions and the fix named; so are an order naming connections
// before place 0 and an order on an unordered request.
TEST(RequestRecord, AnotherVersionOrAnImpossibleOrderIsRefusedWithTheReason) {
  std::string v1 = encode(Request{});
  v1[0] = 1;
  v1.resize(3);  // version 1: [1][0][0]
  std::string why;
  EXPECT_FALSE(decode_request(v1, &why));
  EXPECT_NE(why.find("protocol version 1, while this tunnel speaks version 2"), std::string::npos)
      << why;
  EXPECT_NE(why.find("same xmig version on both hosts"), std::string::npos) << why;

  why.clear();
  EXPECT_FALSE(
      decode_request(encode(ordered({.entry = 9, .sequence = 2, .waits_for = 0b100})), &why));
  EXPECT_NE(why.find("before the entry's first"), std::string::npos) << why;
  EXPECT_FALSE(decode_request(encode(ordered({.entry = 0, .sequence = 3, .waits_for = 0}))));
  EXPECT_TRUE(decode_request(encode(ordered({.entry = 9, .sequence = 2, .waits_for = 0b11}))));
}

// The coroutines below take what they use as parameters (copied into their
// frames): a capturing lambda would leave its captures behind when it returns.
asio::awaitable<void> reach_window(DialOrder::Place* place, bool* reached) {
  co_await place->within_window();
  *reached = true;
}

// Delivers `order` when its turn comes: appends its sequence to *delivered.
asio::awaitable<void> deliver(DeliveryOrder* delivery, ArrivalOrder order, std::string* delivered) {
  auto ticket = delivery->arrive("hv-a", order);
  co_await ticket->turn();
  *delivered += static_cast<char>('0' + order.sequence);
}

asio::awaitable<void> wait_turn(DeliveryOrder* delivery, ArrivalOrder order,
                                DeliveryOrder::Ticket::Waited* waited) {
  auto ticket = delivery->arrive("hv-a", order);
  *waited = co_await ticket->turn();
}

// Pass: places are numbered in the order they are taken; each names exactly
// the predecessors still being dialled; the 65th waits until the first leaves.
TEST(DialOrder, NamesPredecessorsStillDialledAndKeepsAWindow) {
  auto order = DialOrder::make();
  std::vector<DialOrder::Place> places;
  for (int i = 0; i < 3; ++i) places.push_back(order->take());
  EXPECT_EQ(places[2].arrival().sequence, 2u);
  EXPECT_EQ(places[2].arrival().waits_for, 0b11u);
  places[0] = {};                                   // delivered
  EXPECT_EQ(places[2].arrival().waits_for, 0b01u);  // bit 0: the one just before
  EXPECT_EQ(places[1].arrival().waits_for, 0u);
  EXPECT_NE(places[1].arrival().entry, 0u);

  asio::io_context io;
  for (int i = 3; i < 66; ++i) places.push_back(order->take());  // places 1..65 dialled
  bool in_window = false;
  // Place 65 is 64 after place 1, the oldest still dialled.
  asio::co_spawn(io, reach_window(&places.back(), &in_window), asio::detached);
  io.poll();
  EXPECT_FALSE(in_window);
  places[1] = {};
  io.poll();
  EXPECT_TRUE(in_window);
}

// Pass: place 2 arrives first and is held until places 0 and 1 (which arrive
// later, in reverse) have been delivered; the delivery order is 0, 1, 2.
TEST(DeliveryOrder, HoldsASuccessorUntilItsPredecessorsAreDelivered) {
  DeliveryOrder delivery(10s);
  asio::io_context io;
  std::string delivered;
  for (uint64_t seq : {2, 1, 0}) {
    const uint64_t all_before = (uint64_t{1} << seq) - 1;
    asio::co_spawn(
        io, deliver(&delivery, {.entry = 7, .sequence = seq, .waits_for = all_before}, &delivered),
        asio::detached);
    io.poll();
  }
  io.run_for(1s);
  EXPECT_EQ(delivered, "012");
}

// Pass: a predecessor that never arrives holds its successor for the hold
// (200 ms here), not forever; when it comes later it is refused, saying its
// successors went first; a place that arrives twice and one 64 or more places
// behind the latest are refused with their reasons.
TEST(DeliveryOrder, GivesUpAMissingPredecessorAndRefusesItLate) {
  DeliveryOrder delivery(200ms);
  asio::io_context io;
  DeliveryOrder::Ticket::Waited waited;
  asio::co_spawn(io, wait_turn(&delivery, {.entry = 7, .sequence = 1, .waits_for = 0b1}, &waited),
                 asio::detached);
  io.run_for(2s);
  EXPECT_EQ(waited.given_up, 1u);
  EXPECT_GE(waited.time, 200ms);
  auto refusal = [&](ArrivalOrder order) -> std::string {
    try {
      delivery.arrive("hv-a", order);
    } catch (const OrderRefusal& e) {
      return e.what();
    }
    return "accepted";
  };
  EXPECT_NE(refusal({.entry = 7, .sequence = 0, .waits_for = 0}).find("after its successors"),
            std::string::npos);
  EXPECT_NE(refusal({.entry = 7, .sequence = 1, .waits_for = 0}).find("arrived twice"),
            std::string::npos);
  { auto far = delivery.arrive("hv-a", {.entry = 7, .sequence = 100, .waits_for = 0}); }
  EXPECT_NE(refusal({.entry = 7, .sequence = 36, .waits_for = 0}).find("64 places behind"),
            std::string::npos);
  // Another peer's entry with the same id is its own.
  EXPECT_TRUE(delivery.arrive("hv-c", {.entry = 7, .sequence = 0, .waits_for = 0}));
}

// Pass: a peer cannot make this host remember more than kMaxEntriesPerPeer
// entries (the next is refused, saying so), another peer still can, and
// entries with nothing held are forgotten after the hold.
TEST(DeliveryOrder, EntriesPerPeerAreBoundedAndForgotten) {
  DeliveryOrder delivery(100ms);
  for (uint64_t id = 1; id <= DeliveryOrder::kMaxEntriesPerPeer; ++id)
    delivery.arrive("hv-a", {.entry = id, .sequence = 0, .waits_for = 0});
  try {
    delivery.arrive("hv-a", {.entry = 100000, .sequence = 0, .waits_for = 0});
    ADD_FAILURE() << "entry 257 accepted";
  } catch (const OrderRefusal& e) {
    EXPECT_NE(std::string(e.what()).find("the most this host keeps for one peer"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(delivery.arrive("hv-c", {.entry = 1, .sequence = 0, .waits_for = 0}));
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(delivery.arrive("hv-a", {.entry = 100000, .sequence = 0, .waits_for = 0}));
  EXPECT_EQ(delivery.entries(), 1u);
}

}  // namespace
}  // namespace xmig::tunnel
