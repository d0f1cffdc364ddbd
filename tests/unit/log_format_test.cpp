// log_format = "json": each of the tunnel's line shapes becomes one JSON object
// with time, level, event, its fields and the whole text (tunnel/log_format.hpp).
#include <gtest/gtest.h>

#include "tunnel/log_format.hpp"

using xmig::tunnel::json_log_line;

namespace {
constexpr const char* kTime = "2026-12-02T03:38:12.123Z";
}

// Pass: a close line's key=value pairs are fields (the quoted error whole, with
// its colon and spaces), after time, level and event, and the text is kept as
// message.
TEST(JsonLogs, CloseLineFieldsAreTheLinesKeyValues) {
  const std::string text =
      "close: dir=out peer=hv-b channel=qemu local=/run/xmig/hv-b/qemu.sock remote=10.0.0.2:7443 "
      "tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 mode=userspace to_peer=1048576 from_peer=0 "
      "duration=0.027s throughput=38.6MB/s result=error error=\"TLS read: unexpected eof\"";
  EXPECT_EQ(
      json_log_line(kTime, "warning", text),
      std::string("{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"warning\",\"event\":"
                  "\"close\",\"dir\":\"out\",\"peer\":\"hv-b\",\"channel\":\"qemu\",\"local\":"
                  "\"/run/xmig/hv-b/qemu.sock\",\"remote\":\"10.0.0.2:7443\",\"tls\":"
                  "\"TLSv1.3\",\"cipher\":\"TLS_AES_128_GCM_SHA256\",\"mode\":\"userspace\","
                  "\"to_peer\":\"1048576\",\"from_peer\":\"0\",\"duration\":\"0.027s\","
                  "\"throughput\":\"38.6MB/s\",\"result\":\"error\",\"error\":\"TLS read: "
                  "unexpected eof\",\"message\":\"") +
          "close: dir=out peer=hv-b channel=qemu local=/run/xmig/hv-b/qemu.sock "
          "remote=10.0.0.2:7443 tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 mode=userspace "
          "to_peer=1048576 from_peer=0 duration=0.027s throughput=38.6MB/s result=error "
          "error=\\\"TLS read: unexpected eof\\\"\"}");
}

// Pass: a refusal's who-and-what words become fields and the text after them
// the reason, for the inbound, entry and intercept shapes.
TEST(JsonLogs, RefusalsNameWhoWhatAndWhy) {
  EXPECT_EQ(
      json_log_line(kTime, "warning",
                    "refused: from 10.0.0.9:4242 peer hv-c channel qemu: not a configured peer"),
      "{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"warning\",\"event\":\"refused\","
      "\"reason\":\"not a configured peer\",\"from\":\"10.0.0.9:4242\",\"peer\":\"hv-c\","
      "\"channel\":\"qemu\",\"message\":\"refused: from 10.0.0.9:4242 peer hv-c channel qemu: "
      "not a configured peer\"}");
  EXPECT_EQ(
      json_log_line(kTime, "warning",
                    "refused: entry /run/xmig/hv-b/qemu.sock -> peer hv-b channel qemu "
                    "migration m1: connect to 10.0.0.2:7443: timed out"),
      "{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"warning\",\"event\":\"refused\","
      "\"reason\":\"connect to 10.0.0.2:7443: timed out\",\"entry\":"
      "\"/run/xmig/hv-b/qemu.sock\",\"peer\":\"hv-b\",\"channel\":\"qemu\",\"migration\":"
      "\"m1\",\"message\":\"refused: entry /run/xmig/hv-b/qemu.sock -> peer hv-b channel qemu "
      "migration m1: connect to 10.0.0.2:7443: timed out\"}");
}

// Pass: "reload (why): ..." and "reload (why) refused, ...: reason" are event
// "reload" with the why as a field; a line of no known shape is event "log".
TEST(JsonLogs, ReloadCarriesWhyAndOtherLinesAreLog) {
  EXPECT_EQ(json_log_line(kTime, "error",
                          "reload (SIGHUP) refused, still serving certificate serial 0A: bad key"),
            "{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"error\",\"event\":\"reload\","
            "\"why\":\"SIGHUP\",\"message\":\"reload (SIGHUP) refused, still serving certificate "
            "serial 0A: bad key\"}");
  EXPECT_EQ(json_log_line(kTime, "info", "Stopped at 3 PM"),
            "{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"info\",\"event\":\"log\","
            "\"message\":\"Stopped at 3 PM\"}");
}

// Pass: what a peer or client put in a line cannot break the object or take a
// reserved field: quotes, backslashes, control bytes and non-ASCII are
// escaped, an unterminated quote ends at the line's end, message=/event=
// tokens are not fields, and a repeated key keeps its first value.
TEST(JsonLogs, HostileTextStaysOneValidObject) {
  const std::string text =
      "close: peer=a\"b\\c event=forged message=forged peer=second error=\"\x01\xff\xfe\nx";
  EXPECT_EQ(json_log_line(kTime, "info", text),
            "{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"info\",\"event\":\"close\","
            "\"peer\":\"a\\\"b\\\\c\",\"error\":\"\\u0001\\u00ff\\u00fe\\nx\",\"message\":\"close: "
            "peer=a\\\"b\\\\c event=forged message=forged peer=second error=\\\"\\u0001\\u00ff"
            "\\u00fe\\nx\"}");
}

// Pass: a warning that is a sentence before its colon is event "log" (its
// text in message), while two-word events such as "ban lifted" stay events.
TEST(JsonLogs, SentencesAreNotEvents) {
  EXPECT_EQ(json_log_line(kTime, "warning", "socket_group is not set: fix: x"),
            "{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"warning\",\"event\":\"log\","
            "\"message\":\"socket_group is not set: fix: x\"}");
  EXPECT_EQ(json_log_line(kTime, "info", "ban lifted: 10.0.0.9 after 900 s"),
            "{\"time\":\"2026-12-02T03:38:12.123Z\",\"level\":\"info\",\"event\":\"ban lifted\","
            "\"message\":\"ban lifted: 10.0.0.9 after 900 s\"}");
}
