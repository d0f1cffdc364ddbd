// xmig-verify's offline check on capture files written by hand: TLS flows
// pass, plaintext migration protocols fail by name, reassembly copes with
// reordering, retransmits and late joins, and hostile files (truncated,
// random, mutated) give a clear error, never a crash.
//
// Most tests run the real binary; the fuzz test calls the library directly so
// it can afford thousands of files.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include "harness/files.hpp"
#include "tests/verify/helpers.hpp"
#include "verify/canary.hpp"
#include "verify/capture.hpp"
#include "verify/pcap_flows.hpp"
#include "verify/signatures.hpp"
#include "verify/status_client.hpp"
#include "verify/tls_records.hpp"
#include "verify/verify.hpp"

namespace xmig::test {

using namespace harness;

namespace {

using namespace std::string_literals;

::testing::AssertionResult contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << needle << "\" not found in: " << text;
}

// A TLS 1.3 conversation: hellos, then `app` bytes of ciphertext-like records each way.
void write_tls_conversation(PcapWriter& w, uint16_t cport, uint16_t sport, size_t app,
                            uint16_t version = 0x0304, uint16_t suite = 0x1302,
                            bool low_entropy = false) {
  TcpConversation t(w, cport, sport);
  t.open();
  t.client(tls_client_hello("xmig/qemu"));
  t.server(tls_server_hello(version, suite));
  for (size_t done = 0, i = 0; done < app; done += 16000, ++i) {
    std::string body = low_entropy ? std::string(16000, 'a') : random_bytes(16000, 100 + i);
    t.client(tls_record(23, body));
    t.server(tls_record(23, body.substr(0, 100)));
  }
  t.close();
}

class VerifyPcap : public ::testing::Test {
 protected:
  fs::path file(const std::string& name) { return dir_.path() / name; }
  VerifyRun check(const fs::path& pcap) {
    return run_verify({"--pcap", pcap.string(), "--json"}, dir_.path());
  }
  TempDir dir_{"xmig-verify-pcap"};
};

// Setup: a capture of one TLS 1.3 flow (ClientHello with ALPN xmig/qemu,
// ServerHello choosing TLS_AES_256_GCM_SHA384, 320 KB of random records).
// Pass: exit 0; the flow PASSes and names version, suite, ALPN and an
// entropy above 7.5.
TEST_F(VerifyPcap, PcapPassesTls13Flow) {
  {
    PcapWriter w(file("tls.pcap"));
    write_tls_conversation(w, 40000, 7443, 320000);
  }
  VerifyRun r = check(file("tls.pcap"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto f = find_check(r.output, "10.0.0.1:40000 -> 10.0.0.2:7443");
  ASSERT_TRUE(f) << r.output;
  EXPECT_EQ(f->status, "pass");
  EXPECT_TRUE(contains(f->reason, "TLS 1.3 TLS_AES_256_GCM_SHA384, ALPN xmig/qemu"));
  EXPECT_TRUE(contains(f->reason, "entropy 7.9"));
}

// Setup: one capture with four plaintext flows: a QEMU migration stream
// (QEVM, version 3), a multifd channel, an NBD handshake and a libvirt RPC
// call, plus one TLS flow.
// Pass: exit 1; each plaintext flow FAILs naming its protocol, its
// addresses and ports; the TLS flow still PASSes.
TEST_F(VerifyPcap, PcapFlagsPlaintextProtocolsBySignature) {
  {
    PcapWriter w(file("plain.pcap"));
    TcpConversation qemu(w, 40001, 4444);
    qemu.open();
    qemu.client("QEVM\0\0\0\3"s + random_bytes(5000, 1));
    TcpConversation multifd(w, 40002, 4444);
    multifd.open();
    multifd.client("\x11\x22\x33\x44\0\0\0\1"s + random_bytes(3000, 2));
    TcpConversation nbd(w, 40003, 10809);
    nbd.open();
    nbd.server("NBDMAGICIHAVEOPT\0\3"s);
    std::string rpc;
    for (uint32_t v : {40u, 0x20008086u, 1u, 66u, 0u, 1u, 0u}) {
      rpc += static_cast<char>(v >> 24);
      rpc += static_cast<char>(v >> 16);
      rpc += static_cast<char>(v >> 8);
      rpc += static_cast<char>(v);
    }
    TcpConversation libvirt(w, 40004, 16509);
    libvirt.open();
    libvirt.client(rpc + "\0\0\0\0\0\0\0\0\0\0\0\0"s);
    write_tls_conversation(w, 40005, 7443, 50000);
  }
  VerifyRun r = check(file("plain.pcap"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  struct Case {
    std::string flow, protocol;
  };
  for (const Case& c :
       {Case{"10.0.0.1:40001 -> 10.0.0.2:4444", "QEMU migration stream in plaintext"},
        Case{"10.0.0.1:40002 -> 10.0.0.2:4444", "QEMU multifd channel in plaintext"},
        Case{"10.0.0.1:40003 -> 10.0.0.2:10809", "NBD in plaintext"},
        Case{"10.0.0.1:40004 -> 10.0.0.2:16509", "libvirt RPC in plaintext"}}) {
    auto f = find_check(r.output, c.flow);
    ASSERT_TRUE(f) << c.flow << "\n" << r.output;
    EXPECT_EQ(f->status, "fail") << c.flow;
    EXPECT_TRUE(contains(f->reason, c.protocol));
    EXPECT_FALSE(f->fix.empty());
  }
  auto tls = find_check(r.output, "10.0.0.1:40005 -> 10.0.0.2:7443");
  ASSERT_TRUE(tls) << r.output;
  EXPECT_EQ(tls->status, "pass") << r.output;
}

// Setup: a QEMU stream whose magic is split over two segments that arrive
// in reverse order, with a duplicate and an overlapping retransmit; and a
// TLS flow whose record segments are shuffled and partly repeated.
// Pass: the QEMU flow FAILs as "QEMU migration stream in plaintext" at
// stream byte 0; the TLS flow PASSes (framing intact: no desync).
TEST_F(VerifyPcap, ReassemblesOutOfOrderAndRetransmittedSegments) {
  {
    PcapWriter w(file("reorder.pcap"));
    TcpConversation q(w, 41000, 4444);
    q.open();
    uint32_t s = q.client_seq;
    std::string data = "QEVM\0\0\0\3"s + random_bytes(2000, 9);
    auto seg = [&](size_t from, size_t len) {
      w.segment(0x0a000001, 41000, 0x0a000002, 4444, s + static_cast<uint32_t>(from), 0x18,
                data.substr(from, len));
    };
    seg(2, 1000);  // second part first
    seg(2, 1000);  // duplicate
    seg(0, 2);     // "QE"
    seg(0, 6);     // overlapping retransmit
    seg(1002, 998);

    TcpConversation t(w, 41001, 7443);
    t.open();
    std::string stream = tls_client_hello("xmig/nbd");
    for (int i = 0; i < 8; ++i) stream += tls_record(23, random_bytes(3000, 50 + i));
    uint32_t base = t.client_seq;
    std::vector<size_t> order;
    for (size_t at = 0; at < stream.size(); at += 700) order.push_back(at);
    std::mt19937 rng(7);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t k = 0; k < order.size(); ++k) {
      size_t at = order[k];
      w.segment(0x0a000001, 41001, 0x0a000002, 7443, base + static_cast<uint32_t>(at), 0x18,
                stream.substr(at, 700));
      if (k % 3 == 0)  // retransmit some
        w.segment(0x0a000001, 41001, 0x0a000002, 7443, base + static_cast<uint32_t>(at), 0x18,
                  stream.substr(at, 700));
    }
  }
  VerifyRun r = check(file("reorder.pcap"));
  auto q = find_check(r.output, "10.0.0.1:41000 -> 10.0.0.2:4444");
  ASSERT_TRUE(q) << r.output;
  EXPECT_EQ(q->status, "fail");
  EXPECT_TRUE(
      contains(q->reason, "QEMU migration stream in plaintext (client->server at stream byte 0"));
  auto t = find_check(r.output, "10.0.0.1:41001 -> 10.0.0.2:7443");
  ASSERT_TRUE(t) << r.output;
  EXPECT_EQ(t->status, "pass") << t->reason;
  EXPECT_TRUE(contains(t->reason, "records 9/0"));
}

// Setup: no SYNs: a capture that starts in the middle of a QEMU stream
// (the magic appears later, as in a second migration on one connection)
// and in the middle of a TLS record.
// Pass: the QEMU flow FAILs by signature; the TLS flow is recognised
// as TLS after resynchronising (PASS, "hello not captured").
TEST_F(VerifyPcap, JoinsStreamsMidwayAndStillJudgesThem) {
  {
    PcapWriter w(file("midway.pcap"));
    w.segment(0x0a000001, 42000, 0x0a000002, 4444, 777, 0x18,
              random_bytes(3000, 3) + "QEVM\0\0\0\3"s + random_bytes(100, 4));
    std::string stream;
    for (int i = 0; i < 6; ++i) stream += tls_record(23, random_bytes(5000, 60 + i));
    for (size_t at = 1234; at < stream.size(); at += 1400)
      w.segment(0x0a000001, 42001, 0x0a000002, 7443, 5000 + static_cast<uint32_t>(at), 0x18,
                stream.substr(at, 1400));
  }
  VerifyRun r = check(file("midway.pcap"));
  auto q = find_check(r.output, "10.0.0.1:42000 -> 10.0.0.2:4444");
  ASSERT_TRUE(q) << r.output;
  EXPECT_EQ(q->status, "fail");
  EXPECT_TRUE(contains(q->reason,
                       "QEMU migration stream in plaintext (client->server at stream byte 3000"));
  auto t = find_check(r.output, "10.0.0.1:42001 -> 10.0.0.2:7443");
  ASSERT_TRUE(t) << r.output;
  EXPECT_EQ(t->status, "pass") << t->reason;
  EXPECT_TRUE(contains(t->reason, "hello not captured"));
}

// Setup: four TLS-looking flows: TLS 1.2 with an AEAD suite, TLS 1.2 with a
// CBC suite, TLS 1.3 whose "ciphertext" is all 'a', and TLS 1.3 followed by
// plaintext bytes that are not TLS records.
// Pass: 1.2+AEAD WARNs ("TLS 1.2 negotiated"); the CBC suite FAILs
// ("not an AEAD suite"); the low-entropy flow WARNs ("entropy below 7.5");
// the broken framing FAILs ("TLS framing broke").
TEST_F(VerifyPcap, JudgesTlsVersionsSuitesFramingAndEntropy) {
  {
    PcapWriter w(file("tls-kinds.pcap"));
    write_tls_conversation(w, 43000, 7443, 20000, 0x0303, 0xC02B);
    write_tls_conversation(w, 43001, 7443, 20000, 0x0303, 0xC013);
    write_tls_conversation(w, 43002, 7443, 40000, 0x0304, 0x1301, true);
    TcpConversation t(w, 43003, 7443);
    t.open();
    t.client(tls_client_hello("xmig/qemu") + "and then plaintext follows the hello");
  }
  VerifyRun r = check(file("tls-kinds.pcap"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  auto expect = [&](uint16_t port, const std::string& status, const std::string& why) {
    auto f = find_check(r.output, "10.0.0.1:" + std::to_string(port) + " -> 10.0.0.2:7443");
    ASSERT_TRUE(f) << port << "\n" << r.output;
    EXPECT_EQ(f->status, status) << port << ": " << f->reason;
    EXPECT_TRUE(contains(f->reason, why));
  };
  expect(43000, "warn", "TLS 1.2 negotiated");
  expect(43001, "fail", "ECDHE-RSA-AES128-SHA is not an AEAD suite");
  expect(43002, "warn", "entropy below 7.5");
  expect(43003, "fail", "TLS framing broke at stream byte");
}

// Setup: IPv6 flows in VLAN-tagged Ethernet frames, some segments behind a
// hop-by-hop options header: a plaintext QEMU stream fd00::1 -> fd00::2
// port 4444 and a TLS 1.3 flow to port 7443.
// Pass: the QEMU flow FAILs named "[fd00::1]:46000 -> [fd00::2]:4444";
// the TLS flow PASSes with its suite.
TEST_F(VerifyPcap, JudgesIpv6FlowsBehindVlanTagsAndExtensionHeaders) {
  std::string a(16, '\0'), b(16, '\0');
  a[0] = b[0] = '\xfd';
  a[15] = 1;
  b[15] = 2;
  {
    PcapWriter w(file("v6.pcap"));
    std::string q = "QEVM\0\0\0\3"s + random_bytes(3000, 21);
    w.segment6(a, 46000, b, 4444, 100, 0x02, "", false, true);
    for (size_t at = 0; at < q.size(); at += 1000)
      w.segment6(a, 46000, b, 4444, 101 + static_cast<uint32_t>(at), 0x18, q.substr(at, 1000),
                 at % 2000 == 0, true);
    std::string c = tls_client_hello("xmig/nbd");
    std::string srv = tls_server_hello(0x0304, 0x1301) + tls_record(23, random_bytes(9000, 22));
    w.segment6(a, 46001, b, 7443, 500, 0x02, "", true, true);
    w.segment6(b, 7443, a, 46001, 9000, 0x12, "", false, true);
    w.segment6(a, 46001, b, 7443, 501, 0x18, c, true, true);
    for (size_t at = 0; at < srv.size(); at += 1400)
      w.segment6(b, 7443, a, 46001, 9001 + static_cast<uint32_t>(at), 0x18, srv.substr(at, 1400),
                 at % 2800 == 0, true);
  }
  VerifyRun r = check(file("v6.pcap"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  auto q = find_check(r.output, "[fd00::1]:46000 -> [fd00::2]:4444");
  ASSERT_TRUE(q) << r.output;
  EXPECT_EQ(q->status, "fail");
  EXPECT_TRUE(contains(q->reason, "QEMU migration stream in plaintext"));
  auto t = find_check(r.output, "[fd00::1]:46001 -> [fd00::2]:7443");
  ASSERT_TRUE(t) << r.output;
  EXPECT_EQ(t->status, "pass") << t->reason;
  EXPECT_TRUE(contains(t->reason, "TLS 1.3 TLS_AES_128_GCM_SHA256, ALPN xmig/nbd"));
}

// Setup: a valid capture (a plaintext QEMU flow) cut in the middle of its
// last frame, and one cut inside the 24-byte file header.
// Pass: the first gives exit 1, a FAIL "capture ends in the middle of
// a frame" and still the QEMU finding for what was read; the second gives
// exit 2 and "not a readable capture file".
TEST_F(VerifyPcap, TruncatedCaptureIsReportedNotCrashed) {
  {
    PcapWriter w(file("full.pcap"));
    TcpConversation q(w, 44000, 4444);
    q.open();
    q.client("QEVM\0\0\0\3"s + random_bytes(4000, 5));
  }
  std::string full = read_file(file("full.pcap"));
  write_file(file("cut.pcap"), full.substr(0, full.size() - 300));
  write_file(file("header.pcap"), full.substr(0, 10));

  VerifyRun cut = check(file("cut.pcap"));
  EXPECT_EQ(cut.exit_code, 1) << cut.output;
  auto f = find_check(cut.output, "complete");
  ASSERT_TRUE(f) << cut.output;
  EXPECT_EQ(f->status, "fail");
  EXPECT_TRUE(contains(f->reason, "ends in the middle of a frame"));
  EXPECT_TRUE(contains(cut.output, "QEMU migration stream in plaintext"));

  VerifyRun header = check(file("header.pcap"));
  EXPECT_EQ(header.exit_code, 2) << header.output;
  EXPECT_TRUE(contains(header.output, "not a readable capture file"));
}

// Setup: 64 KiB of random bytes, and an empty file.
// Pass: exit 2 with "not a readable capture file" naming the file.
TEST_F(VerifyPcap, RandomFileGivesClearError) {
  write_file(file("random.pcap"), random_bytes(65536, 11));
  write_file(file("empty.pcap"), "");
  for (const char* name : {"random.pcap", "empty.pcap"}) {
    VerifyRun r = check(file(name));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(contains(r.output, file(name).string() + ": not a readable capture file"));
  }
}

// Setup: a valid capture with TLS, QEMU, NBD and libvirt flows; 3000
// variants with random byte flips, random 32-bit values written over
// length fields, truncation, and frames of random bytes appended.
// Action: analyze_pcap on each, in process.
// Pass: every call returns a report or throws CaptureError: no crash,
// no other exception (run it under -DXMIG_SANITIZE=ON to catch overreads).
TEST_F(VerifyPcap, SurvivesThousandsOfMutatedCaptures) {
  {
    PcapWriter w(file("seed.pcap"));
    write_tls_conversation(w, 45000, 7443, 40000);
    TcpConversation q(w, 45001, 4444);
    q.open();
    q.client("QEVM\0\0\0\3"s + random_bytes(3000, 6));
    TcpConversation n(w, 45002, 10809);
    n.open();
    n.server("NBDMAGICIHAVEOPT"s);
    for (int i = 0; i < 20; ++i) w.frame(random_bytes(60 + i * 7, 1000 + i));
  }
  const std::string seed = read_file(file("seed.pcap"));
  std::mt19937_64 rng(12345);
  int reports = 0, errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string m = seed;
    int kind = static_cast<int>(rng() % 4);
    int edits = 1 + static_cast<int>(rng() % 20);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % m.size();
      if (kind == 0 || kind == 3) {
        m[at] = static_cast<char>(rng());
      } else if (kind == 1 && at + 4 <= m.size()) {
        uint32_t v = static_cast<uint32_t>(rng());
        if (rng() % 2) v &= 0xffff;
        std::memcpy(&m[at], &v, 4);
      }
    }
    if (kind == 2) m.resize(rng() % m.size());
    if (kind == 3) m += random_bytes(rng() % 3000, rng());
    fs::path p = file("mutated.pcap");
    write_file(p, m);
    try {
      verify::Report r = verify::analyze_pcap(p.string());
      ++reports;
      (void)verify::render_json(r);
    } catch (const verify::CaptureError&) {
      ++errors;
    }
  }
  EXPECT_GT(reports, 1000);
  RecordProperty("reports", reports);
  RecordProperty("errors", errors);
}

// Setup: frames for every link type the decoder knows (Ethernet with VLAN
// tags, BSD null, loop, raw IP, Linux cooked v1/v2) around IPv4 and IPv6
// TCP segments (with extension headers), then mutated: random bytes over
// headers and payload, random truncation. 200000 frames, in process.
// Pass: no crash; valid frames are decoded (some segments are seen).
TEST(VerifyParts, FlowTableSurvivesRandomFramesOnEveryLinkType) {
  std::mt19937_64 rng(4242);
  const int links[] = {0, 1, 12, 101, 108, 113, 228, 229, 276, 147 /* unsupported */};
  verify::FlowTable table;
  for (int i = 0; i < 200000; ++i) {
    int link = links[rng() % (sizeof links / sizeof links[0])];
    bool v6 = rng() % 2;
    std::string ip;
    std::string payload = random_bytes(rng() % 300, rng());
    if (i % 7 == 0) payload = "QEVM\0\0\0\3"s + payload;
    if (!v6) {
      ip = "\x45\x00"s + std::string(1, static_cast<char>((40 + payload.size()) >> 8)) +
           std::string(1, static_cast<char>((40 + payload.size()) & 0xff)) +
           "\0\0\x40\0\x40\x06\0\0\x0a\0\0\x01\x0a\0\0\x02"s;
    } else {
      bool ext = rng() % 2;
      size_t plen = 20 + payload.size() + (ext ? 8 : 0);
      ip = "\x60\0\0\0"s + std::string(1, static_cast<char>(plen >> 8)) +
           std::string(1, static_cast<char>(plen & 0xff)) + (ext ? "\x00"s : "\x06"s) + "\x40"s +
           random_bytes(32, rng());
      if (ext) ip += "\x06\0\0\0\0\0\0\0"s;  // hop-by-hop, then TCP
    }
    std::string tcp =
        "\x9c\x40\x1d\x13"s + random_bytes(4, rng() % 4) + "\0\0\0\0\x50\x18\xff\xff\0\0\0\0"s;
    std::string l3 = ip + tcp + payload;
    std::string proto = v6 ? "\x86\xdd"s : "\x08\x00"s;
    std::string frame;
    switch (link) {
      case 1:
        frame = std::string(12, '\x02') + (rng() % 3 == 0 ? "\x81\x00\0\x05"s : ""s) + proto + l3;
        break;
      case 0:
        frame = (v6 ? "\x1e\0\0\0"s : "\x02\0\0\0"s) + l3;
        break;
      case 108:
        frame = (v6 ? "\0\0\0\x1e"s : "\0\0\0\x02"s) + l3;
        break;
      case 113:
        frame = std::string(14, '\0') + proto + l3;
        break;
      case 276:
        frame = proto + std::string(18, '\0') + l3;
        break;
      default:
        frame = l3;
        break;
    }
    int edits = static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !frame.empty(); ++e)
      frame[rng() % frame.size()] = static_cast<char>(rng());
    if (rng() % 5 == 0 && !frame.empty()) frame.resize(rng() % frame.size());
    table.add_frame(link, reinterpret_cast<const uint8_t*>(frame.data()), frame.size());
  }
  table.finish();
  EXPECT_GT(table.counters().tcp_segments, 10000u);
  EXPECT_GT(table.counters().malformed, 0u);
  for (const auto& f : table.flows()) (void)f->dir[0].tls.summary().total_records();
}

// Pass: random bytes, random record-like bytes and gaps fed in chunks
// of 1..5000 bytes never crash the parser, and real TLS records split at
// every possible point still count exactly.
TEST(VerifyParts, TlsParserSurvivesRandomStreamsFedInRandomChunks) {
  std::mt19937_64 rng(99);
  for (int i = 0; i < 2000; ++i) {
    verify::TlsRecordParser p;
    if (rng() % 2) p.start_unknown();
    std::string s = random_bytes(rng() % 20000, rng());
    for (size_t at = 0; at + 5 < s.size(); at += 1 + rng() % 4000)
      if (rng() % 2) s.replace(at, 3, "\x17\x03\x03"s);
    for (size_t at = 0; at < s.size();) {
      size_t n = std::min<size_t>(s.size() - at, 1 + rng() % 5000);
      p.feed(reinterpret_cast<const uint8_t*>(s.data()) + at, n);
      if (rng() % 10 == 0) p.gap(rng() % 3000);
      at += n;
    }
  }
  std::string records = tls_client_hello("xmig/qemu");
  for (int i = 0; i < 5; ++i) records += tls_record(23, random_bytes(1000 + i, i));
  for (size_t cut = 0; cut <= records.size(); ++cut) {
    verify::TlsRecordParser p;
    p.feed(reinterpret_cast<const uint8_t*>(records.data()), cut);
    p.feed(reinterpret_cast<const uint8_t*>(records.data()) + cut, records.size() - cut);
    ASSERT_EQ(p.summary().total_records(), 6u) << cut;
    ASSERT_TRUE(p.summary().client_hello) << cut;
    ASSERT_EQ(p.summary().alpn, "xmig/qemu");
    ASSERT_FALSE(p.summary().desync);
  }
}

// Pass: 127.0.0.1 and ::1 are captured on the loopback interface, and
// so is an address of this host's own (traffic to it never leaves lo); an
// address reached through a route is captured on a real interface (checked
// when this host has a default route).
TEST(VerifyParts, CaptureInterfaceFollowsThePeerAddress) {
  std::string why;
  EXPECT_EQ(verify::interface_for(verify::resolve("127.0.0.1", 7443), &why), "lo") << why;
  EXPECT_EQ(verify::interface_for(verify::resolve("::1", 7443), &why), "lo") << why;
  ifaddrs* list = nullptr;
  ASSERT_EQ(getifaddrs(&list), 0);
  std::string own;
  for (ifaddrs* i = list; i; i = i->ifa_next)
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK)) {
      char buf[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
      own = buf;
      break;
    }
  freeifaddrs(list);
  if (own.empty()) GTEST_SKIP() << "no non-loopback IPv4 address";
  EXPECT_EQ(verify::interface_for(verify::resolve(own, 7443), &why), "lo") << own;
  // TEST-NET-3 is never local; with a default route it leaves on some interface.
  std::string out = verify::interface_for(verify::resolve("203.0.113.9", 7443), &why);
  if (out.empty()) GTEST_SKIP() << "no route: " << why;
  EXPECT_NE(out, "lo");
  EXPECT_EQ(if_nametoindex(out.c_str()) != 0, true) << out;
}

// Pass: the "recent" entries of a /status body (as tunnel/status.cpp
// writes it, with braces and quotes inside strings) are read field by
// field; /proc/net/tls_stat lines become name -> value; a missing file
// gives no counters.
TEST(VerifyParts, ReadsTunnelStatusAndKtlsCounters) {
  std::string json =
      R"({"name":"hv-a","certificate":{"serial":"AB","not_after_unix":1,"seconds_left":2},)"
      R"("connections":{"active":0},"modes":{"userspace":2},"recent":[)"
      R"({"direction":"in","peer":"hv-b","channel":"qemu","tls":"TLSv1.3","cipher":"X",)"
      R"("mode":"userspace","to_peer":5,"from_peer":6,"seconds":0.1,"closed_unix":100,)"
      R"("error":"odd \"}{\" text"},)"
      R"({"direction":"out","peer":"hv-b","channel":"verify","tls":"TLSv1.3",)"
      R"("cipher":"TLS_AES_128_GCM_SHA256","mode":"ktls-splice","to_peer":1048576,)"
      R"("client":"127.0.0.1:40123","from_peer":1048576,"seconds":0.2,"closed_unix":200,)"
      R"("error":""}]})";
  verify::TunnelStatus st = verify::parse_status(json);
  EXPECT_EQ(st.name, "hv-a");
  ASSERT_EQ(st.recent.size(), 2u);
  EXPECT_EQ(st.recent[0].error, "odd \"}{\" text");
  EXPECT_EQ(st.recent[1].direction, "out");
  EXPECT_EQ(st.recent[1].channel, "verify");
  EXPECT_EQ(st.recent[1].mode, "ktls-splice");
  EXPECT_EQ(st.recent[1].to_peer, 1048576u);
  EXPECT_EQ(st.recent[1].closed_unix, 200);
  EXPECT_EQ(st.recent[1].client, "127.0.0.1:40123");
  EXPECT_EQ(st.recent[0].client, "");

  TempDir dir("xmig-verify-ktls");
  write_file(dir / "tls_stat", "TlsCurrTxSw                     \t1\nTlsTxSw 7\nTlsRxSw 0\n");
  auto counters = verify::read_ktls_counters((dir / "tls_stat").string());
  EXPECT_EQ(counters.size(), 3u);
  EXPECT_EQ(counters["TlsTxSw"], 7u);
  EXPECT_EQ(counters["TlsCurrTxSw"], 1u);
  EXPECT_TRUE(verify::read_ktls_counters((dir / "absent").string()).empty());
}

// Pass: a 16-byte window cut from anywhere in the canary is found in
// random bytes around it; 15 bytes are not enough; random bytes alone give
// no match; the canary's entropy is far below the ciphertext threshold.
TEST(VerifyParts, CanaryWindowIsFoundAcrossAnyOffsetAndCanaryIsLowEntropy) {
  std::string canary = verify::make_canary(200000);
  ASSERT_EQ(canary.size(), 200000u);
  verify::CanaryMatcher m(canary);
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    size_t at = rng() % (canary.size() - 16);
    // 0xff (never in the ASCII canary) fences the window off from the noise.
    std::string hay =
        random_bytes(1000, i) + "\xff" + canary.substr(at, 16) + "\xff" + random_bytes(1000, i + 1);
    EXPECT_EQ(m.find_in(hay), 1001u) << at;
    std::string short_hay = random_bytes(1000, i) + "\xff" + canary.substr(at, 15) + "\xff";
    EXPECT_EQ(m.find_in(short_hay), std::string::npos) << at;
  }
  EXPECT_EQ(m.find_in(random_bytes(1 << 20, 99)), std::string::npos);
  verify::ByteEntropy e;
  e.add(reinterpret_cast<const uint8_t*>(canary.data()), canary.size());
  EXPECT_LT(e.bits_per_byte(), 6.0);
}

// Pass: a QEMU magic fed one byte at a time after 100 random bytes is
// found once, at offset 100; the same bytes with a gap in the middle of
// the magic are not matched.
TEST(VerifyParts, SignatureScannerFindsMagicSplitOverOneByteFeeds) {
  std::string s = random_bytes(100, 8) + "QEVM\0\0\0\3"s + random_bytes(100, 9);
  verify::SignatureScanner one;
  for (char c : s) one.feed(reinterpret_cast<const uint8_t*>(&c), 1);
  one.finish();
  ASSERT_EQ(one.hits().size(), 1u);
  EXPECT_EQ(one.hits()[0].protocol, "QEMU migration stream");
  EXPECT_EQ(one.hits()[0].offset, 100u);

  verify::SignatureScanner gap;
  gap.feed(reinterpret_cast<const uint8_t*>(s.data()), 102);
  gap.gap(1);
  gap.feed(reinterpret_cast<const uint8_t*>(s.data()) + 103, s.size() - 103);
  gap.finish();
  EXPECT_TRUE(gap.hits().empty());
}

}  // namespace
}  // namespace xmig::test
