#include "harness/netns.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

#include "harness/files.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::harness {

namespace {

constexpr const char* kIp = "/usr/sbin/ip";

void must(const std::vector<std::string>& argv) {
  if (run(argv) != 0) {
    std::string line;
    for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
    throw std::runtime_error("netns lab: `" + line + "` failed");
  }
}

}  // namespace

bool can_make_namespaces(std::string* why) {
  if (::geteuid() != 0) {
    *why = "not root (network namespaces and nftables need root)";
    return false;
  }
  for (const char* tool : {kIp, "/usr/sbin/nft", "/usr/bin/tcpdump"})
    if (::access(tool, X_OK) != 0) {
      *why = std::string(tool) + " is missing (bash tools/setup installs it)";
      return false;
    }
  return true;
}

NetnsLab::NetnsLab() {
  const std::string tag = "xmig" + std::to_string(::getpid());
  a = tag + "-hv-a";
  b = tag + "-hv-b";
  outsider = tag + "-out";
  a_ip = "10.231.0.1";
  b_ip = "10.231.0.2";
  const std::string outsider_gw = "10.231.1.1";
  outsider_ip = "10.231.1.2";
  a_ip6 = "fd00:231::1";
  b_ip6 = "fd00:231::2";
  for (const auto& ns : {a, b, outsider}) {
    run({kIp, "netns", "del", ns});  // left over by a killed run of this pid
    must({kIp, "netns", "add", ns});
    must({kIp, "-n", ns, "link", "set", "lo", "up"});
  }
  // Made inside the namespaces: no name is ever taken in the host's namespace.
  must({kIp, "-n", a, "link", "add", a_link, "type", "veth", "peer", "name", b_link, "netns", b});
  must({kIp, "-n", b, "link", "add", "out0", "type", "veth", "peer", "name", "out0", "netns",
        outsider});
  must({kIp, "-n", a, "addr", "add", a_ip + "/24", "dev", a_link});
  must({kIp, "-n", b, "addr", "add", b_ip + "/24", "dev", b_link});
  // nodad: usable at once, not after duplicate address detection.
  must({kIp, "-n", a, "addr", "add", a_ip6 + "/64", "dev", a_link, "nodad"});
  must({kIp, "-n", b, "addr", "add", b_ip6 + "/64", "dev", b_link, "nodad"});
  must({kIp, "-n", b, "addr", "add", outsider_gw + "/24", "dev", "out0"});
  must({kIp, "-n", outsider, "addr", "add", outsider_ip + "/24", "dev", "out0"});
  must({kIp, "-n", a, "link", "set", a_link, "up"});
  must({kIp, "-n", b, "link", "set", b_link, "up"});
  must({kIp, "-n", b, "link", "set", "out0", "up"});
  must({kIp, "-n", outsider, "link", "set", "out0", "up"});
  must({kIp, "-n", outsider, "route", "add", "default", "via", outsider_gw});
}

NetnsLab::~NetnsLab() {
  for (const auto& ns : {a, b, outsider}) run({kIp, "netns", "del", ns});
}

void write_lab_info(const NetnsLab& lab, const fs::path& file) {
  const fs::path partial = file.string() + ".tmp";
  {
    std::ofstream out(partial);
    out << "A_NS=" << lab.a << "\nB_NS=" << lab.b << "\nA_IP=" << lab.a_ip << "\nB_IP=" << lab.b_ip
        << "\n";
    if (!out) throw std::runtime_error("cannot write " + partial.string());
  }
  fs::rename(partial, file);  // a reader never sees half of it
}

NetnsNames read_lab_info(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string() + " (from xmig-bench netns)");
  std::map<std::string, std::string> values;
  for (std::string line; std::getline(in, line);)
    if (const size_t eq = line.find('='); eq != std::string::npos)
      values[line.substr(0, eq)] = line.substr(eq + 1);
  auto need = [&](const std::string& key) {
    auto it = values.find(key);
    if (it == values.end() || it->second.empty())
      throw std::runtime_error(file.string() + ": no " + key + "= (written by xmig-bench netns?)");
    return it->second;
  };
  return {.a = need("A_NS"), .b = need("B_NS"), .a_ip = need("A_IP"), .b_ip = need("B_IP")};
}

ScopedNetns::ScopedNetns(const std::string& ns) {
  if (ns.empty()) return;
  Fd previous(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  Fd target(::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
  if (!previous || !target || ::setns(target.get(), CLONE_NEWNET) != 0)
    throw std::runtime_error("cannot enter network namespace " + ns + ": " + strerror(errno) +
                             " (root, and a namespace made by `ip netns add` or xmig-bench netns)");
  previous_ = std::move(previous);
}

ScopedNetns::~ScopedNetns() {
  // Back where the thread was; failing here would leave it on the wrong host.
  if (previous_ && ::setns(previous_.get(), CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "cannot return to the thread's network namespace: %s\n", strerror(errno));
    std::abort();
  }
}

std::string intercept_toml(const std::string& own, bool firewall) {
  return std::string("[intercept]\nports = \"") + kLabMigrationPorts + "\"\ndriver_port = 16509\n" +
         "listen_port = " + std::to_string(kLabInterceptPort) + "\naddress = \"" + own + "\"\n" +
         "firewall = " + (firewall ? "true" : "false") + "\nusers = [\"root\"]\n";
}

TunnelPairOptions intercept_pair(const NetnsLab& lab, bool a_firewall, bool b_firewall, bool ipv6) {
  return TunnelPairOptions{
      .a_extra = intercept_toml(ipv6 ? lab.a_ip6 : lab.a_ip, a_firewall),
      .b_extra = intercept_toml(ipv6 ? lab.b_ip6 : lab.b_ip, b_firewall),
      .a_host = ipv6 ? "[" + lab.a_ip6 + "]" : lab.a_ip,
      .b_host = ipv6 ? "[" + lab.b_ip6 + "]" : lab.b_ip,
      .a_netns = lab.a,
      .b_netns = lab.b,
  };
}

NovaMigration::NovaMigration(const NetnsLab& lab, const fs::path& dir, const std::string& name,
                             uint16_t port, int multifd_channels, bool ipv6)
    : listen_(ipv6 ? "[::]" : "0.0.0.0"),
      destination_address_(ipv6 ? "[" + lab.b_ip6 + "]" : lab.b_ip),
      port_(port),
      ram_(2 * (kRamMib << 20), dir) {
  const fs::path source_ram = ram_.path() / (name + "-source.ram");
  destination_ram_ = ram_.path() / (name + "-destination.ram");
  create_random_file(source_ram, kRamMib << 20, 0x4e4f5641 + port);
  create_zero_file(destination_ram_, kRamMib << 20);
  source_hash_ = sha256_file(source_ram);
  source_ = std::make_unique<QemuGuest>(QemuGuestConfig{.name = name + "-source",
                                                        .work_dir = dir,
                                                        .ram_file = source_ram,
                                                        .ram_mib = kRamMib,
                                                        .incoming = false,
                                                        .netns = lab.a});
  destination_ = std::make_unique<QemuGuest>(QemuGuestConfig{.name = name + "-destination",
                                                             .work_dir = dir,
                                                             .ram_file = destination_ram_,
                                                             .ram_mib = kRamMib,
                                                             .incoming = true,
                                                             .netns = lab.b});
  if (multifd_channels > 0) {
    source_->enable_multifd(multifd_channels);
    destination_->enable_multifd(multifd_channels);
  }
  source_->unlimit_bandwidth();
}

void NovaMigration::start() {
  destination_->migrate_incoming("tcp:" + listen_ + ":" + std::to_string(port_));
  source_->migrate("tcp:" + destination_address_ + ":" + std::to_string(port_));
}

bool NovaMigration::ram_arrived() {
  source_->quit();
  destination_->quit();
  return sha256_file(destination_ram_) == source_hash_;
}

std::vector<std::string> NetnsLab::in(const std::string& ns, std::vector<std::string> argv) {
  std::vector<std::string> out = {kIp, "netns", "exec", ns};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

int NetnsLab::run_in(const std::string& ns, std::vector<std::string> argv, const std::string& log,
                     std::chrono::milliseconds timeout) {
  return run(in(ns, std::move(argv)), log, timeout);
}

Tcpdump::Tcpdump(const std::string& netns, const std::string& interface, const std::string& filter,
                 const std::string& file, const std::string& log)
    : log_(log) {
  std::vector<std::string> argv = {"/usr/bin/tcpdump", "-i", interface, "-s", "0", "-B",
                                   "131072",           "-U", "-w",      file};
  // tcpdump joins the words of its filter expression itself.
  for (size_t start = 0; start < filter.size();) {
    size_t end = filter.find(' ', start);
    if (end == std::string::npos) end = filter.size();
    if (end > start) argv.push_back(filter.substr(start, end - start));
    start = end + 1;
  }
  process_.emplace(netns.empty() ? argv : NetnsLab::in(netns, argv), log);
  // tcpdump says "listening on" once the capture is armed.
  bool ready = wait_until(
      [&] { return count_in_log(log_, "listening on") > 0 || !process_->running(); }, 10s);
  if (!ready || !process_->running())
    throw std::runtime_error("tcpdump did not start:\n" + read_file(log_));
}

std::string Tcpdump::stop() {
  process_->signal(SIGINT);
  process_->wait(10s);
  return read_file(log_);
}

}  // namespace xmig::harness
