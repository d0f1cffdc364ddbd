#include "tunnel/nftables.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "base/fd.hpp"

namespace xmig::tunnel {

namespace {

bool is_ipv6(const std::string& address) {
  in6_addr ignored{};
  return ::inet_pton(AF_INET6, address.c_str(), &ignored) == 1;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

// Chain names avoid nft's keywords (redirect, ...). Each rule once per address family that has
// peers: "ip daddr @peers4 ..." and "ip6 daddr @peers6 ...".
struct Families {
  std::vector<std::string> v4, v6;
  std::vector<std::string> matches() const {
    std::vector<std::string> out;
    if (!v4.empty()) out.push_back("ip daddr @peers4");
    if (!v6.empty()) out.push_back("ip6 daddr @peers6");
    return out;
  }
};

}  // namespace

std::string nftables_ruleset(const Config& c) {
  const InterceptConfig& in = c.intercept;
  Families peers;
  for (const auto& p : c.peers)
    for (const auto& a : p.addresses) (is_ipv6(a) ? peers.v6 : peers.v4).push_back(a);
  const std::string mark = fmt::format("0x{:08x}", in.mark);
  const std::string driver = std::to_string(in.driver_port);
  const std::string ports = "{ " + driver + ", " + in.ports.str() + " }";
  std::vector<std::string> uids;
  for (unsigned uid : in.uids) uids.push_back(std::to_string(uid));

  std::string t;
  auto line = [&t](const std::string& text) { t += text + "\n"; };
  line("# xmig transparent mode on " + c.name + ", from " + c.path +
       " (xmig-tunnel --nftables). Remove: nft delete table " + kNftTable);
  // Create-then-delete makes the whole file one replacement of the table.
  line(std::string("table ") + kNftTable);
  line(std::string("delete table ") + kNftTable);
  line(std::string("table ") + kNftTable + " {");
  if (!peers.v4.empty())
    line("  set peers4 { type ipv4_addr; elements = { " + join(peers.v4) + " } }");
  if (!peers.v6.empty())
    line("  set peers6 { type ipv6_addr; elements = { " + join(peers.v6) + " } }");

  line("  # Who may reach a peer's libvirtd and QEMU at all: the driver channel is root on the");
  line("  # peer's libvirt, so root only; the migration ports: [intercept].users.");
  line("  chain guard {");
  line("    type filter hook output priority -150; policy accept;");
  line("    meta mark " + mark + " accept");
  for (const auto& m : peers.matches()) {
    line("    " + m + " tcp dport " + driver + " meta skuid != 0 reject with tcp reset");
    if (uids.empty())
      line("    " + m + " tcp dport " + in.ports.str() + " reject with tcp reset");
    else
      line("    " + m + " tcp dport " + in.ports.str() + " meta skuid != { " + join(uids) +
           " } reject with tcp reset");
  }
  line("  }");

  line("  # This host's plain TCP to a peer's libvirtd or migration ports goes into xmig.");
  line("  chain intercept {");
  line("    type nat hook output priority -100; policy accept;");
  line("    meta mark " + mark + " accept");
  for (const auto& m : peers.matches())
    line("    " + m + " tcp dport " + ports + " redirect to :" + std::to_string(in.listen_port));
  line("  }");

  if (in.firewall) {
    line("  # Fail closed: what still heads for a peer's ports in plaintext (a connection older");
    line("  # than the table) never leaves.");
    line("  chain fail_closed {");
    line("    type filter hook output priority 0; policy accept;");
    line("    meta mark " + mark + " accept");
    for (const auto& m : peers.matches())
      // "ct direction" last: "ct direction original ip ..." would parse as "ct original ip".
      line("    " + m + " tcp dport " + ports + " ct direction original drop");
    line("  }");
    line("  # No plaintext migration to this host from the network: only the tunnel (over lo)");
    line("  # connects to libvirtd's port and QEMU's migration ports.");
    line("  chain no_plaintext_in {");
    line("    type filter hook input priority 0; policy accept;");
    line("    iif \"lo\" accept");
    line("    ct state new tcp dport " + ports + " drop");
    line("  }");
  }
  line("}");
  return t;
}

void apply_nftables(const std::string& ruleset) {
  int in[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("nftables: pipe: ") + strerror(errno));
  Fd in_read(in[0]), in_write(in[1]), err_read(err[0]), err_write(err[1]);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("nftables: fork: ") + strerror(errno));
  if (pid == 0) {
    ::dup2(in_read.get(), STDIN_FILENO);
    ::dup2(err_write.get(), STDOUT_FILENO);
    ::dup2(err_write.get(), STDERR_FILENO);
    for (const char* nft : {"/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"})
      ::execl(nft, "nft", "-f", "-", static_cast<char*>(nullptr));
    std::fprintf(stderr, "nft not found (install the nftables package)\n");
    ::_exit(127);
  }
  in_read.reset();
  err_write.reset();
  for (size_t done = 0; done < ruleset.size();) {
    ssize_t n = ::write(in_write.get(), ruleset.data() + done, ruleset.size() - done);
    if (n <= 0) break;  // nft exited early; its words say why
    done += static_cast<size_t>(n);
  }
  in_write.reset();
  std::string said;
  char buf[4096];
  for (ssize_t n; (n = ::read(err_read.get(), buf, sizeof buf)) > 0;) said.append(buf, n);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("nftables: nft -f - refused table " + std::string(kNftTable) +
                             (said.empty() ? "" : ": " + said) +
                             "; fix: run as root with the nftables package installed");
}

}  // namespace xmig::tunnel
