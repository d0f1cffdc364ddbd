// Interface selection and live capture (see capture.hpp).
#include "verify/capture.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace xmig::verify {

namespace {

constexpr size_t kMaxCaptureBytes = 512u << 20;

bool same_ip(const sockaddr* a, const sockaddr_storage& b) {
  if (a->sa_family != b.ss_family) return false;
  if (a->sa_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(&b)->sin_addr.s_addr;
  if (a->sa_family == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(&b)->sin6_addr, 16) == 0;
  return false;
}

bool is_loopback(const sockaddr_storage& s) {
  if (s.ss_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&s)->sin_addr.s_addr) >> 24) == 127;
  if (s.ss_family == AF_INET6)
    return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(&s)->sin6_addr);
  return false;
}

}  // namespace

std::string interface_for(const PeerAddress& peer, std::string* why) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    *why = std::string("getifaddrs: ") + strerror(errno);
    return "";
  }
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> owned(list, ::freeifaddrs);
  auto loopback_name = [&]() -> std::string {
    for (ifaddrs* i = list; i; i = i->ifa_next)
      if (i->ifa_flags & IFF_LOOPBACK) return i->ifa_name;
    return "lo";
  };
  if (is_loopback(peer.addr)) return loopback_name();

  // The source address the kernel would use towards the peer (a UDP connect
  // sends nothing), and the interface that owns it.
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  Fd fd(::socket(peer.addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  bool ok = fd &&
            ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&peer.addr), peer.len) == 0 &&
            ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len) == 0;
  if (!ok) {
    *why = "no route to " + peer.ip;
    return "";
  }
  // A peer address that is one of ours travels over loopback.
  for (ifaddrs* i = list; i; i = i->ifa_next)
    if (i->ifa_addr && same_ip(i->ifa_addr, peer.addr)) return loopback_name();
  for (ifaddrs* i = list; i; i = i->ifa_next)
    if (i->ifa_addr && same_ip(i->ifa_addr, local)) return i->ifa_name;
  *why = "no interface owns the source address towards " + peer.ip;
  return "";
}

LiveCapture::LiveCapture(const std::string& iface, const std::string& filter) {
  char errbuf[PCAP_ERRBUF_SIZE] = "";
  pcap_.reset(pcap_create(iface.c_str(), errbuf));
  if (!pcap_) throw std::runtime_error("pcap_create " + iface + ": " + errbuf);
  pcap_t* p = pcap_.get();
  pcap_set_snaplen(p, 262144);
  pcap_set_promisc(p, 0);
  pcap_set_immediate_mode(p, 1);
  pcap_set_buffer_size(p, 64 << 20);
  pcap_set_timeout(p, 50);
  int rc = pcap_activate(p);
  if (rc == PCAP_ERROR_PERM_DENIED || rc == PCAP_ERROR_PROMISC_PERM_DENIED)
    throw std::runtime_error("no permission to capture on " + iface + " (" + pcap_geterr(p) +
                             "); fix: run xmig-verify as root, or grant it "
                             "cap_net_raw,cap_net_admin (setcap cap_net_raw,cap_net_admin+ep)");
  if (rc == PCAP_ERROR_NO_SUCH_DEVICE)
    throw std::runtime_error("no such interface " + iface + "; fix: give --interface");
  if (rc < 0)
    throw std::runtime_error("cannot capture on " + iface + ": " + pcap_statustostr(rc) + " (" +
                             pcap_geterr(p) + ")");
  bpf_program prog{};
  if (pcap_compile(p, &prog, filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0)
    throw std::runtime_error("capture filter \"" + filter + "\": " + pcap_geterr(p));
  int set = pcap_setfilter(p, &prog);
  pcap_freecode(&prog);
  if (set != 0) throw std::runtime_error("capture filter: " + std::string(pcap_geterr(p)));
  if (pcap_setnonblock(p, 1, errbuf) != 0)
    throw std::runtime_error("pcap_setnonblock: " + std::string(errbuf));
  linktype_ = pcap_datalink(p);
  thread_ = std::thread([this] { run(); });
}

LiveCapture::~LiveCapture() {
  stop();
}

void LiveCapture::run() {
  pcap_t* p = pcap_.get();
  int fd = pcap_get_selectable_fd(p);
  auto on_frame = [](u_char* user, const pcap_pkthdr* h, const u_char* data) {
    auto* self = reinterpret_cast<LiveCapture*>(user);
    if (self->bytes_ + h->caplen > kMaxCaptureBytes) {
      self->overflowed_ = true;
      return;
    }
    self->frames_.emplace_back(reinterpret_cast<const char*>(data), h->caplen);
    self->bytes_ += h->caplen;
  };
  // Drains until stop is asked and a final read finds nothing more.
  for (bool last = false;;) {
    if (fd >= 0) {
      pollfd pfd{fd, POLLIN, 0};
      ::poll(&pfd, 1, 20);
    } else {
      ::usleep(20000);
    }
    int n = pcap_dispatch(p, -1, on_frame, reinterpret_cast<u_char*>(this));
    if (n < 0) break;
    if (last && n == 0) break;
    if (stop_) last = true;
  }
  pcap_stat st{};
  if (pcap_stats(p, &st) == 0) dropped_ = st.ps_drop;
}

void LiveCapture::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

}  // namespace xmig::verify
