// The pieces of the TLS listener's defences that need no network: how
// sources are named, and the rate-limited refusal log.
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "tunnel/admission.hpp"
#include "tunnel/refusal_log.hpp"

namespace xmig::tunnel {
namespace {

// Pass: an IPv4 address is its own source; an IPv4-mapped IPv6 address is
// the IPv4 address; any two IPv6 addresses of one /64 are one source, of two
// /64s two.
TEST(Admission, SourcesAreIpv4AddressesAndIpv6Slash64s) {
  EXPECT_EQ(source_of(asio::ip::make_address("192.0.2.7")), "192.0.2.7");
  EXPECT_EQ(source_of(asio::ip::make_address("::ffff:192.0.2.7")), "192.0.2.7");
  EXPECT_EQ(source_of(asio::ip::make_address("2001:db8:1:2::5")), "2001:db8:1:2::/64");
  EXPECT_EQ(source_of(asio::ip::make_address("2001:db8:1:2:ffff:1:2:3")), "2001:db8:1:2::/64");
  EXPECT_NE(source_of(asio::ip::make_address("2001:db8:1:3::5")), "2001:db8:1:2::/64");
}

// Pass: five lines with one key within the window give one log line; when
// the window has ended, flush writes one line with the last of the others and
// "(4 more like this in the last 10 s)"; a line with another key is written
// at once; a key with nothing counted gives no count line.
TEST(RefusalLog, RepeatedLinesAreCountedAndSummedUpOncePerWindow) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
  RefusalLog log;
  for (int i = 0; i < 5; ++i)
    log.warn("192.0.2.7 rate", "refused: from 192.0.2.7:" + std::to_string(i));
  log.warn("192.0.2.8 rate", "refused: from 192.0.2.8:1");
  log.flush(RefusalLog::Clock::now() + RefusalLog::kWindow + std::chrono::seconds(1));
  auto lines = sink->last_formatted();
  spdlog::set_default_logger(previous);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find("refused: from 192.0.2.7:0"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("refused: from 192.0.2.8:1"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("refused: from 192.0.2.7:4 (4 more like this in the last 10 s)"),
            std::string::npos)
      << lines[2];
}

}  // namespace
}  // namespace xmig::tunnel
