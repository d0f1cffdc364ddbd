// harness/netns: hypervisors in network namespaces made for one test, for
// transparent mode (nftables, SO_ORIGINAL_DST) where loopback cannot stand
// in for a migration network.
//
//   hv-a (a_ip) ==veth== hv-b (b_ip, and outsider_gw)  ==veth== outsider (outsider_ip)
//
// hv-a and hv-b share one subnet on the veth pair; the outsider reaches hv-b
// (and through hv-b's routing nowhere else) over a second pair, so it can try
// hv-b's migration address as any host on the network could. Each namespace
// has its own nftables. Names carry the test's pid, so tests on one machine
// never meet; the destructor deletes the namespaces (and with them the veths
// and tables). Needs root.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.hpp"
#include "harness/process.hpp"
#include "harness/qemu_vm.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::harness {

class NetnsLab {
 public:
  // Throws std::runtime_error with the failing command when `ip` refuses.
  NetnsLab();
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  // argv run inside namespace `ns` (ip netns exec NS ...).
  static std::vector<std::string> in(const std::string& ns, std::vector<std::string> argv);
  // Runs argv inside `ns` to completion; its exit code (output to log when given).
  static int run_in(const std::string& ns, std::vector<std::string> argv,
                    const std::string& log = {}, std::chrono::milliseconds timeout = 60s);

  std::string a, b, outsider;                    // namespace names
  std::string a_ip, b_ip, outsider_ip;           // their addresses
  std::string a_ip6, b_ip6;                      // hv-a's and hv-b's IPv6 addresses, same veth
  std::string a_link = "mig0", b_link = "mig0";  // the veth pair's ends in hv-a and hv-b
};

// A lab made by another process (`xmig-bench netns`), as that process wrote
// it down: hv-a's and hv-b's namespaces and their addresses on the veth pair.
struct NetnsNames {
  std::string a, b, a_ip, b_ip;
};
// Written as shell variables (A_NS=, B_NS=, A_IP=, B_IP=) for scripts;
// read_lab_info throws std::runtime_error naming the file and the missing key.
void write_lab_info(const NetnsLab& lab, const fs::path& file);
NetnsNames read_lab_info(const fs::path& file);

// The calling thread runs in network namespace `ns` (a name `ip netns` knows)
// until this object goes, then in the one it ran in before. Sockets made
// meanwhile stay in `ns` for their life, and threads started meanwhile start
// in it: this is how one benchmark process puts its source on one host and
// its sink on the other. "" changes nothing. Throws std::runtime_error when
// the namespace cannot be entered (not root, no such name).
class ScopedNetns {
 public:
  explicit ScopedNetns(const std::string& ns);
  ~ScopedNetns();
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;

 private:
  Fd previous_;
};

// Transparent mode in the lab (tests/intercept): libvirt's default port
// range and the intercept listener both hosts use.
inline constexpr uint16_t kLabInterceptPort = 7445;
inline constexpr const char* kLabMigrationPorts = "49152-49215";

// [intercept] for a host whose own migration address is `own`.
std::string intercept_toml(const std::string& own, bool firewall = true);

// A tunnel pair in hv-a and hv-b, each with [intercept] (its own address,
// firewall as given) and so its own table inet xmig, applied at start. With
// ipv6, the TLS listeners and the migration addresses are the IPv6 ones.
TunnelPairOptions intercept_pair(const NetnsLab& lab, bool a_firewall = true,
                                 bool b_firewall = true, bool ipv6 = false);

// One migration the way nova makes libvirt do it: the destination QEMU in
// hv-b listens on tcp:0.0.0.0:PORT (tcp:[::]:PORT with ipv6), the source
// QEMU in hv-a migrates to tcp:<hv-b address>:PORT; neither knows of xmig.
// RAM is random on the source and zeros on the destination.
class NovaMigration {
 public:
  static constexpr uint64_t kRamMib = 64;

  NovaMigration(const NetnsLab& lab, const fs::path& dir, const std::string& name, uint16_t port,
                int multifd_channels, bool ipv6 = false);

  // What nova's libvirt asks of both QEMUs.
  void start();
  MigrationStatus wait_source() { return source_->wait_for_migration(120s); }
  MigrationStatus wait_destination() { return destination_->wait_for_migration(60s); }
  // Both QEMUs quit (every page written back); then true when the
  // destination's RAM hashes as the source's did.
  bool ram_arrived();
  std::string logs() const { return source_->log() + destination_->log(); }

 private:
  std::string listen_, destination_address_;
  uint16_t port_;
  RamDir ram_;
  std::string source_hash_;
  fs::path destination_ram_;
  std::unique_ptr<QemuGuest> source_, destination_;
};

// Capture (the capture tests' and the transparent-mode tests'): (root with ip and nft present).
bool can_make_namespaces(std::string* why);

// tcpdump writing every byte of every frame on `interface` (inside `netns`
// when not empty) that matches `filter` to `file`.
class Tcpdump {
 public:
  Tcpdump(const std::string& netns, const std::string& interface, const std::string& filter,
          const std::string& file, const std::string& log);
  // Stops the capture (SIGINT flushes the file); returns tcpdump's summary.
  std::string stop();

 private:
  std::string log_;
  std::optional<Process> process_;
};

}  // namespace xmig::harness
