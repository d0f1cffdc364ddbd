// The offline check: a capture file -> one finding per TCP flow.
#include <pcap/pcap.h>

#include <memory>

#include "verify/classify.hpp"
#include "verify/pcap_flows.hpp"
#include "verify/verify.hpp"

namespace xmig::verify {

namespace {

struct PcapClose {
  void operator()(pcap_t* p) const { pcap_close(p); }
};

}  // namespace

Report analyze_pcap(const std::string& path) {
  char errbuf[PCAP_ERRBUF_SIZE] = "";
  std::unique_ptr<pcap_t, PcapClose> pcap(pcap_open_offline(path.c_str(), errbuf));
  if (!pcap)
    throw CaptureError(path + ": not a readable capture file (" + std::string(errbuf) +
                       "); fix: give a pcap or pcapng file written by tcpdump -w");
  int linktype = pcap_datalink(pcap.get());

  Report report;
  report.title = "capture " + path;
  FlowTable table;
  std::string truncated;
  for (;;) {
    pcap_pkthdr* hdr = nullptr;
    const u_char* data = nullptr;
    int rc = pcap_next_ex(pcap.get(), &hdr, &data);
    if (rc == PCAP_ERROR_BREAK) break;  // end of file
    if (rc == PCAP_ERROR) {
      truncated = pcap_geterr(pcap.get());
      break;
    }
    if (rc != 1 || !hdr || !data) continue;
    table.add_frame(linktype, data, hdr->caplen);
    if (table.counters().unsupported_link) break;
  }
  table.finish();
  const FlowCounters& c = table.counters();

  if (c.unsupported_link) {
    const char* name = pcap_datalink_val_to_name(linktype);
    report.add("capture", "link type", Status::Fail,
               std::string("link type ") + (name ? name : std::to_string(linktype).c_str()) +
                   " is not supported",
               "capture with tcpdump on an Ethernet interface, lo or -i any");
    return report;
  }
  size_t with_payload = 0, tls = 0;
  std::vector<FlowVerdict> verdicts;
  for (const auto& f : table.flows()) {
    FlowVerdict v = classify_flow(*f);
    if (!v.has_payload) continue;
    ++with_payload;
    tls += v.tls;
    verdicts.push_back(std::move(v));
  }
  std::string summary = count(c.frames, "frame") + ", " + count(c.tcp_segments, "TCP segment") +
                        ", " + count(table.flows().size(), "TCP flow") + " (" +
                        std::to_string(with_payload) + " with payload, " + std::to_string(tls) +
                        " TLS)";
  if (c.malformed) summary += ", " + std::to_string(c.malformed) + " malformed frames skipped";
  if (c.fragments) summary += ", " + std::to_string(c.fragments) + " IP fragments skipped";
  if (c.not_tcp) summary += ", " + std::to_string(c.not_tcp) + " non-TCP frames";
  report.add("capture", "file", Status::Pass, summary);
  if (!truncated.empty())
    report.add("capture", "complete", Status::Fail,
               "the capture ends in the middle of a frame after frame " + std::to_string(c.frames) +
                   " (" + truncated + "); the flows up to there are reported below",
               "stop tcpdump cleanly (SIGINT) before reading the file, or copy it again");
  if (c.flows_dropped)
    report.add("capture", "flows", Status::Fail,
               std::to_string(c.flows_dropped) + " frames belong to flows beyond the first " +
                   std::to_string(FlowOptions{}.max_flows) + ", which were not analysed",
               "capture only the migration traffic (a tcpdump filter such as 'port 7443')");
  if (with_payload == 0)
    report.add("capture", "payload", Status::Warn, "no TCP flow carries payload: nothing to judge",
               "capture on the migration interface while a migration runs");
  for (auto& v : verdicts) report.add("flow", v.name, v.status, v.reason, v.fix);
  return report;
}

}  // namespace xmig::verify
