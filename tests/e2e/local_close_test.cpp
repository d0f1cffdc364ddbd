// The local application closing early: when a target closes with bytes the
// tunnel delivered still unread, after the far side sent all it would, the
// connection ends cleanly as "local-closed-early" (QEMU 7.2 does this at the
// end of some multifd migrations); when more bytes were still coming, it is
// a truncation and both ends see an error. Each test states its pass
// criterion first.
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <future>

#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;
namespace {

constexpr uint64_t kKiB = 1024;

// Bytes waiting unread in fd's receive queue.
int unread(int fd) {
  int n = 0;
  ::ioctl(fd, FIONREAD, &n);
  return n;
}

// Pass: 64 KiB and EOF go into hv-a's qemu entry; the target on hv-b reads
// none of it, waits until all 64 KiB sit in its socket, and closes. hv-b logs
// result=local-closed-early with from_peer=65536, hv-a logs result=ok with
// to_peer=65536, and the client sees a clean EOF, not a reset.
TEST(Tunnel, TargetClosingWithDeliveredBytesUnreadIsNotATransportError) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  Hashed sent = send_stream(client.get(), 64 * kKiB, 7);
  shutdown_write(client.get());
  Fd target = sink.accept(10s);
  ASSERT_TRUE(target) << pair.logs();
  ASSERT_TRUE(wait_until([&] { return unread(target.get()) == 64 * kKiB; }, 10s))
      << unread(target.get()) << "\n"
      << pair.logs();
  target.reset();  // closes with 64 KiB unread

  Hashed back = recv_stream(client.get());
  EXPECT_EQ(back.error, "") << pair.logs();
  EXPECT_EQ(back.bytes, 0u);
  EXPECT_EQ(sent.bytes, 64 * kKiB);
  ASSERT_TRUE(wait_until(
      [&] {
        return count_in_log(pair.a.log, "close:") == 1 && count_in_log(pair.b.log, "close:") == 1;
      },
      10s))
      << pair.logs();
  EXPECT_EQ(count_lines_with_all(pair.b.log,
                                 {"close: dir=in", "from_peer=65536", "result=local-closed-early"}),
            1)
      << pair.logs();
  EXPECT_EQ(count_lines_with_all(pair.a.log, {"close: dir=out", "to_peer=65536", "result=ok"}), 1)
      << pair.logs();
  EXPECT_NE(status_request(pair.b, "/metrics")
                .find("xmig_connections_total{direction=\"in\",result=\"local-closed-early\"} 1"),
            std::string::npos)
      << status_request(pair.b, "/metrics");
}

// Pass: as above, but the client goes on sending 4 MiB after the target has
// closed, then ends its stream: that is a truncation, so hv-b logs an error
// saying bytes could no longer be delivered (never local-closed-early), and
// hv-a ends with an error too. Which comes first, the target's close or more
// of the 4 MiB, is a race; both pumps word both orders the same way. (The
// client itself, on a UNIX socket, cannot be sent a reset: the close lines are
// the record of the truncation.)
TEST(Tunnel, TargetClosingWhileBytesStillComeIsATruncation) {
  TunnelPair pair;
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  Fd client = connect_unix(pair.entry("qemu").string());
  send_stream(client.get(), 64 * kKiB, 8);
  Fd target = sink.accept(10s);
  ASSERT_TRUE(target) << pair.logs();
  ASSERT_TRUE(wait_until([&] { return unread(target.get()) == 64 * kKiB; }, 10s)) << pair.logs();
  target.reset();
  send_stream(client.get(), 4096 * kKiB, 9);
  shutdown_write(client.get());
  recv_stream(client.get());
  ASSERT_TRUE(wait_until(
      [&] {
        return count_in_log(pair.a.log, "close:") == 1 && count_in_log(pair.b.log, "close:") == 1;
      },
      10s))
      << pair.logs();
  EXPECT_EQ(
      count_lines_with_all(pair.b.log, {"close: dir=in", "result=error error=\"local socket read",
                                        "can no longer deliver"}),
      1)
      << pair.logs();
  EXPECT_EQ(count_in_log(pair.b.log, "local-closed-early"), 0) << pair.logs();
  EXPECT_EQ(count_lines_with_all(pair.a.log, {"close: dir=out", "result=error error=\""}), 1)
      << pair.logs();
}

}  // namespace
}  // namespace xmig::test
