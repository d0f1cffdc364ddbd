// The monitoring kit against a real Prometheus (Debian's): it scrapes a tunnel
// pair's /metrics while a stream runs, loads deploy/monitoring/xmig-alerts.yml
// and evaluates every rule, and answers every query of the Grafana dashboard.
// The per-peer metrics the kit is built on are checked to the byte.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/files.hpp"
#include "harness/process.hpp"
#include "harness/streams.hpp"
#include "harness/tunnel_pair.hpp"

using namespace xmig;
using namespace xmig::harness;

namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr int kAlertRules = 10;  // in xmig-alerts.yml
// What Grafana substitutes in the dashboard's queries, as it would for a
// dashboard showing the last minutes of a 1 s scrape.
const std::vector<std::pair<std::string, std::string>> kGrafanaVariables = {
    {"$__rate_interval", "5s"}, {"$__range", "5m"}, {"$instance", ".*"}};

std::string url_encoded(const std::string& s) {
  std::string out;
  char buf[4];
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

class Prometheus {
 public:
  // Scrapes hv-a and hv-b (instance labels "hv-a", "hv-b", job "xmig") every
  // second and evaluates the kit's rules every second.
  Prometheus(const TempDir& dir, uint16_t a_status, uint16_t b_status) : port_(free_port()) {
    std::ostringstream yml;
    yml << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        << "rule_files: ['" << XMIG_MONITORING_KIT << "/xmig-alerts.yml']\n"
        << "scrape_configs:\n"
        << "  - job_name: xmig\n"
        << "    static_configs:\n"
        << "      - {targets: ['127.0.0.1:" << a_status << "'], labels: {instance: hv-a}}\n"
        << "      - {targets: ['127.0.0.1:" << b_status << "'], labels: {instance: hv-b}}\n";
    write_file(dir / "prometheus.yml", yml.str());
    process_.emplace(
        std::vector<std::string>{"/usr/bin/prometheus",
                                 "--config.file=" + (dir / "prometheus.yml").string(),
                                 "--storage.tsdb.path=" + (dir / "tsdb").string(),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(port_)},
        (dir / "prometheus.log").string());
    log_ = dir / "prometheus.log";
  }
  bool ready() { return http_get(port_, "/-/ready").find("Ready") != std::string::npos; }
  std::string query(const std::string& promql) {
    return http_get(port_, "/api/v1/query?query=" + url_encoded(promql));
  }
  std::string get(const std::string& target) { return http_get(port_, target); }
  std::string log() const { return read_file(log_); }

 private:
  uint16_t port_;
  fs::path log_;
  std::optional<Process> process_;
};

// A query answer with at least one series (or sample).
bool has_data(const std::string& answer) {
  return answer.find("\"status\":\"success\"") != std::string::npos &&
         answer.find("\"result\":[{") != std::string::npos;
}

int occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The dashboard's queries as dashboard_queries.py prints them (it also checks
// the dashboard's shape: a failure there fails this test too).
std::vector<std::string> dashboard_queries(const TempDir& dir) {
  const fs::path out = dir / "queries.txt";
  int rc = run({"/bin/sh", "-c",
                std::string("python3 ") + XMIG_DASHBOARD_QUERIES + " " + XMIG_MONITORING_KIT +
                    "/xmig-dashboard.json " + XMIG_STATUS_HPP + " > " + out.string() + " 2>&1"});
  std::vector<std::string> queries;
  std::istringstream lines(read_file(out));
  for (std::string line; std::getline(lines, line);) queries.push_back(line);
  if (rc != 0) throw std::runtime_error("dashboard_queries.py failed:\n" + read_file(out));
  return queries;
}

std::string with_grafana_variables(std::string query) {
  for (const auto& [name, value] : kGrafanaVariables)
    for (size_t at; (at = query.find(name)) != std::string::npos;)
      query.replace(at, name.size(), value);
  return query;
}

// Writes `status = "127.0.0.1:port"` at the top of a side's config.
void serve_status_on(const TunnelSide& side, uint16_t port) {
  write_file(side.config,
             "status = \"127.0.0.1:" + std::to_string(port) + "\"\n" + read_file(side.config));
}

// One metric line's value from /metrics text; -1 when absent.
int64_t metric(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + series.size() + 2));
}

}  // namespace

// Pass: while a 512 MiB stream runs hv-a -> hv-b, Prometheus (scraping both
// /metrics every second) answers every query of the dashboard with data,
// including throughput per peer and channel; all 10 alert rules are loaded and
// evaluated with health "ok"; XmigCertificateExpiresSoon is pending or firing
// for hv-a (certificate with 10 days left) and not for hv-b (30 days); the
// stream's SHA-256 matches, and afterwards xmig_peer_bytes_total counts exactly
// its bytes (plus a 1 MiB stream before it) on both sides, with no connection
// left active and two dials ok, none failed.
TEST(Monitoring, PrometheusScrapesAPairDuringATransferAndEveryRuleAndQueryAnswers) {
  constexpr uint64_t kWarmup = 1 * kMiB, kTotal = 512 * kMiB;
  TunnelPair pair({.start = false});
  make_node_pki(pair.a.pki, pair.ca, "hv-a", /*days=*/10);
  const uint16_t a_status = free_port(), b_status = free_port();
  serve_status_on(pair.a, a_status);
  serve_status_on(pair.b, b_status);
  pair.start(pair.b);
  pair.start(pair.a);

  TempDir dir("xmig-prometheus");
  Prometheus prometheus(dir, a_status, b_status);
  ASSERT_TRUE(wait_until([&] { return prometheus.ready(); }, 60s)) << prometheus.log();

  auto sink = Listener::unix_socket(pair.delivery("qemu").string());
  {  // A short stream first, so that counters of ended connections exist.
    Fd client = connect_unix(pair.entry("qemu").string());
    send_stream(client.get(), kWarmup, 1);
    shutdown_write(client.get());
    Fd server = sink.accept(10s);
    ASSERT_TRUE(server) << pair.logs();
    ASSERT_EQ(recv_stream(server.get()).bytes, kWarmup);
  }

  Fd client = connect_unix(pair.entry("qemu").string());
  auto sent = std::async(std::launch::async, [&] {
    auto h = send_stream(client.get(), kTotal, 2);
    shutdown_write(client.get());
    return h;
  });
  Fd server = sink.accept(10s);
  ASSERT_TRUE(server) << pair.logs();
  StreamReceiver receiver(server.get());
  // Read a slice at a time, so that the stream runs for several scrapes,
  // until Prometheus sees bytes moving on the qemu channel of both sides.
  const std::string moving =
      "sum by (instance) (rate(xmig_peer_bytes_total{channel=\"qemu\",peer=~\"hv-a|hv-b\"}[5s])) > "
      "0";
  uint64_t read_so_far = 0;
  auto sides_moving = [&] {
    return occurrences(prometheus.query(moving), "\"instance\":\"hv-") == 2;
  };
  // About 10 MiB/s: a few scrapes see it before half of it has gone.
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (read_so_far < kTotal / 2 && std::chrono::steady_clock::now() < give_up &&
         !sides_moving()) {
    read_so_far = receiver.receive_until(read_so_far + kMiB);
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(sides_moving()) << "Prometheus never saw the stream move\n"
                              << prometheus.query(moving) << "\n"
                              << prometheus.log();

  for (const std::string& query : dashboard_queries(dir)) {
    const std::string asked = with_grafana_variables(query);
    std::string answer = prometheus.query(asked);
    EXPECT_TRUE(has_data(answer)) << "dashboard query without data: " << asked << "\n" << answer;
  }

  // Every rule evaluated at least once, without error.
  std::string rules;
  wait_until(
      [&] {
        rules = prometheus.get("/api/v1/rules");
        return occurrences(rules, "\"health\":\"ok\"") == kAlertRules;
      },
      30s);
  EXPECT_EQ(occurrences(rules, "\"type\":\"alerting\""), kAlertRules) << rules;
  EXPECT_EQ(occurrences(rules, "\"health\":\"ok\""), kAlertRules) << rules;
  EXPECT_EQ(occurrences(rules, "\"health\":\"err\""), 0) << rules;

  const std::string alerts = prometheus.get("/api/v1/alerts");
  EXPECT_NE(alerts.find("\"alertname\":\"XmigCertificateExpiresSoon\",\"instance\":\"hv-a\""),
            std::string::npos)
      << alerts;
  EXPECT_EQ(alerts.find("\"alertname\":\"XmigCertificateExpiresSoon\",\"instance\":\"hv-b\""),
            std::string::npos)
      << alerts;
  EXPECT_EQ(alerts.find("XmigCertificateExpiresVerySoon"), std::string::npos) << alerts;

  Hashed got = receiver.finish();
  Hashed want = sent.get();
  ASSERT_TRUE(want.error.empty()) << want.error;
  EXPECT_EQ(got.bytes, kTotal);
  EXPECT_EQ(got.sha256, want.sha256);
  server = Fd();  // the target's end: both directions are over, the connection ends

  // The per-peer series count exactly what went through.
  ASSERT_TRUE(wait_until(
      [&] {
        return metric(
                   http_get(a_status, "/metrics"),
                   "xmig_peer_connections_active{peer=\"hv-b\",channel=\"qemu\",side=\"out\"}") ==
                   0 &&
               metric(http_get(b_status, "/metrics"),
                      "xmig_peer_connections_active{peer=\"hv-a\",channel=\"qemu\",side=\"in\"}") ==
                   0;
      },
      10s))
      << http_get(a_status, "/metrics") << http_get(b_status, "/metrics") << pair.logs();
  const std::string a = http_get(a_status, "/metrics"), b = http_get(b_status, "/metrics");
  const auto total = static_cast<int64_t>(kWarmup + kTotal);
  EXPECT_EQ(metric(a,
                   "xmig_peer_bytes_total{peer=\"hv-b\",channel=\"qemu\",side=\"out\",direction="
                   "\"to_peer\"}"),
            total)
      << a;
  EXPECT_EQ(metric(a,
                   "xmig_peer_bytes_total{peer=\"hv-b\",channel=\"qemu\",side=\"out\","
                   "direction=\"from_peer\"}"),
            0)
      << a;
  EXPECT_EQ(metric(b,
                   "xmig_peer_bytes_total{peer=\"hv-a\",channel=\"qemu\",side=\"in\","
                   "direction=\"from_peer\"}"),
            total)
      << b;
  EXPECT_EQ(metric(a, "xmig_peer_dials_total{peer=\"hv-b\",result=\"ok\"}"), 2) << a;
  EXPECT_EQ(metric(a, "xmig_peer_dials_total{peer=\"hv-b\",result=\"failed\"}"), 0) << a;
}

// Pass: with hv-b stopped, a connection to hv-a's entry fails and
// xmig_peer_dials_total{peer="hv-b",result="failed"} becomes 1 (ok stays 0):
// the series XmigPeerUnreachable is built on.
TEST(Monitoring, AFailedDialIsCountedForItsPeer) {
  TunnelPair pair({.start = false});
  pair.start(pair.a);  // hv-b never starts: nothing listens on its port
  Fd client = connect_unix(pair.entry("qemu").string());
  EXPECT_TRUE(wait_readable(client.get(), 10s)) << "hv-a never gave up on the dial\n"
                                                << pair.logs();
  std::string m;
  ASSERT_TRUE(wait_until(
      [&] {
        m = status_request(pair.a, "/metrics");
        return metric(m, "xmig_peer_dials_total{peer=\"hv-b\",result=\"failed\"}") == 1;
      },
      10s))
      << m << pair.logs();
  EXPECT_EQ(metric(m, "xmig_peer_dials_total{peer=\"hv-b\",result=\"ok\"}"), 0) << m;
}
