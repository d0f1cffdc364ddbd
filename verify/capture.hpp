// Live capture for the wire check: the interface that carries traffic to the
// peer, and a libpcap capture running on its own thread while the canary
// flows.
#pragma once

#include <pcap/pcap.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "verify/probe.hpp"

namespace xmig::verify {

// The interface traffic to `peer` leaves on: lo for a loopback or local
// address, otherwise the interface that owns the source address the kernel
// picks for it. "" and *why set when it cannot be found.
std::string interface_for(const PeerAddress& peer, std::string* why);

class LiveCapture {
 public:
  // Opens `iface` with a BPF filter and starts capturing. Throws
  // std::runtime_error with the reason and the fix (e.g. no CAP_NET_RAW).
  LiveCapture(const std::string& iface, const std::string& filter);
  ~LiveCapture();
  LiveCapture(const LiveCapture&) = delete;
  LiveCapture& operator=(const LiveCapture&) = delete;

  // Stops the capture thread; afterwards frames() is complete.
  void stop();
  int linktype() const { return linktype_; }
  const std::vector<std::string>& frames() const { return frames_; }
  uint64_t dropped() const { return dropped_; }    // by the kernel (pcap_stats)
  bool overflowed() const { return overflowed_; }  // more than the memory cap arrived

 private:
  struct PcapClose {
    void operator()(pcap_t* p) const { pcap_close(p); }
  };
  void run();

  std::unique_ptr<pcap_t, PcapClose> pcap_;
  int linktype_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::string> frames_;
  size_t bytes_ = 0;
  uint64_t dropped_ = 0;
  bool overflowed_ = false;
};

}  // namespace xmig::verify
