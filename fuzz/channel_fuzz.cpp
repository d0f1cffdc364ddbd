// Fuzz target: the channel names and the ALPN list a ClientHello offers
// (tls/channel.hpp), the bytes the server's ALPN callback reads before any
// authentication.
// Pass: first_channel_offer() returns a view inside the list that is one of
// its entries and names a valid channel; channel_from_alpn() accepts exactly
// "xmig/" + a valid channel, and alpn_for() gives that string back.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/check.hpp"
#include "tls/channel.hpp"

using namespace xmig::tls;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view wire(reinterpret_cast<const char*>(data), size);

  if (auto proto = first_channel_offer(wire)) {
    XMIG_FUZZ_CHECK(proto->data() > wire.data() &&
                    proto->data() + proto->size() <= wire.data() + wire.size());
    XMIG_FUZZ_CHECK(static_cast<unsigned char>(proto->data()[-1]) == proto->size());
    auto channel = channel_from_alpn(*proto);
    XMIG_FUZZ_CHECK(channel && is_valid_channel(*channel));
    XMIG_FUZZ_CHECK(alpn_for(*channel) == *proto);
  }

  // The whole input as one protocol name.
  if (auto channel = channel_from_alpn(wire)) {
    XMIG_FUZZ_CHECK(is_valid_channel(*channel));
    XMIG_FUZZ_CHECK(alpn_for(*channel) == wire);
  } else {
    XMIG_FUZZ_CHECK(wire.substr(0, 5) != "xmig/" || !is_valid_channel(wire.substr(5)));
  }
  return 0;
}
