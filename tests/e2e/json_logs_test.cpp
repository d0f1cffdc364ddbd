// log_format = "json": a tunnel's whole log is one JSON object per line, and
// the events an operator's tools look for carry their fields
// (tunnel/log_format.hpp).
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tls_probe.hpp"
#include "harness/tunnel_pair.hpp"

using namespace xmig;
using namespace xmig::harness;
using namespace std::chrono_literals;

namespace {

// Python's json module parses each line of `log` on its own; prints one line
// per problem (line number and why). Empty output: every line is one object
// with string fields time, level, event and message.
std::string problems_of_json_log(const TempDir& dir, const fs::path& log) {
  const fs::path out = dir / "json-check.txt";
  const std::string script =
      "import json,sys\n"
      "for n,line in enumerate(open(sys.argv[1]),1):\n"
      "  try:\n"
      "    o=json.loads(line)\n"
      "  except Exception as e:\n"
      "    print(n,'not JSON:',e,line.strip()[:200]); continue\n"
      "  for k in ('time','level','event','message'):\n"
      "    if not isinstance(o.get(k),str): print(n,'no string',k,line.strip()[:200])\n";
  write_file(dir / "check.py", script);
  run({"/bin/sh", "-c",
       "python3 " + (dir / "check.py").string() + " " + log.string() + " > " + out.string() +
           " 2>&1"});
  return read_file(out);
}

}  // namespace

// Pass: with log_format = "json" on both sides, after a 1 MiB stream, a
// plaintext knock on hv-b's TLS port and a clean stop, every line of both logs
// parses as a JSON object with time, level, event and message; hv-a has one
// "ready" object with name "hv-a", one "close" object with peer "hv-b",
// channel "qemu", to_peer "1048576" and result "ok"; hv-b has a "refused"
// object with a non-empty reason and a "close" object with from_peer
// "1048576".
TEST(JsonLogs, WholeLogIsOneObjectPerLineWithTheEventsFields) {
  constexpr uint64_t kBytes = 1 << 20;
  TunnelPair pair({.top_toml = "log_format = \"json\""});
  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  {
    Fd client = connect_unix(pair.entry("qemu").string());
    auto sent = send_stream(client.get(), kBytes, 7);
    shutdown_write(client.get());
    Fd server = sink.accept(10s);
    ASSERT_TRUE(server) << pair.logs();
    Hashed got = recv_stream(server.get());
    EXPECT_EQ(got.sha256, sent.sha256);
  }
  send_plaintext(pair.b.port, "GET / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(
      wait_until([&] { return count_in_log(pair.b.log, "\"event\":\"refused\"") > 0; }, 10s))
      << pair.logs();
  ASSERT_TRUE(wait_until([&] { return count_in_log(pair.a.log, "\"event\":\"close\"") > 0; }, 10s))
      << pair.logs();
  pair.stop();

  TempDir dir("xmig-json-logs");
  EXPECT_EQ(problems_of_json_log(dir, pair.a.log), "") << pair.logs();
  EXPECT_EQ(problems_of_json_log(dir, pair.b.log), "") << pair.logs();
  EXPECT_EQ(count_lines_with_all(pair.a.log, {"\"event\":\"ready\"", "\"name\":\"hv-a\""}), 1)
      << pair.logs();
  EXPECT_EQ(count_lines_with_all(
                pair.a.log, {"\"event\":\"close\"", "\"peer\":\"hv-b\"", "\"channel\":\"qemu\"",
                             "\"to_peer\":\"1048576\"", "\"result\":\"ok\""}),
            1)
      << pair.logs();
  EXPECT_EQ(count_lines_with_all(pair.b.log, {"\"event\":\"close\"", "\"peer\":\"hv-a\"",
                                              "\"from_peer\":\"1048576\"", "\"result\":\"ok\""}),
            1)
      << pair.logs();
  EXPECT_GE(count_lines_with_all(pair.b.log, {"\"event\":\"refused\"", "\"reason\":\""}), 1)
      << pair.logs();
  EXPECT_EQ(count_lines_with_all(pair.b.log, {"\"event\":\"refused\"", "\"reason\":\"\""}), 0)
      << pair.logs();
}
