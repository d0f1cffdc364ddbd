#include "tunnel/nftables.hpp"

#include <arpa/inet.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>
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
  char mark_text[16];
  std::snprintf(mark_text, sizeof mark_text, "0x%08x", in.mark);
  const std::string mark = mark_text;
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

NftRun run_nft(const std::vector<std::string>& args, const std::string& input) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("nftables: pipe: ") + strerror(errno));
  Fd in_read(in[0]), in_write(in[1]), out_read(out[0]), out_write(out[1]);
  std::vector<char*> argv = {const_cast<char*>("nft")};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("nftables: fork: ") + strerror(errno));
  if (pid == 0) {
    ::dup2(in_read.get(), STDIN_FILENO);
    ::dup2(out_write.get(), STDOUT_FILENO);
    ::dup2(out_write.get(), STDERR_FILENO);
    for (const char* nft : {"/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"})
      ::execv(nft, argv.data());
    std::fprintf(stderr, "nft not found (install the nftables package)\n");
    ::_exit(127);
  }
  in_read.reset();
  out_write.reset();
  for (size_t done = 0; done < input.size();) {
    ssize_t n = ::write(in_write.get(), input.data() + done, input.size() - done);
    if (n <= 0) break;  // nft exited early; its words say why
    done += static_cast<size_t>(n);
  }
  in_write.reset();
  NftRun r;
  char buf[4096];
  for (ssize_t n; (n = ::read(out_read.get(), buf, sizeof buf)) > 0;) r.output.append(buf, n);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return r;
}

void apply_nftables(const std::string& ruleset) {
  NftRun r = run_nft({"-f", "-"}, ruleset);
  if (!r.ok)
    throw std::runtime_error("nftables: nft -f - refused table " + std::string(kNftTable) +
                             (r.output.empty() ? "" : ": " + r.output) +
                             "; fix: run as root with the nftables package installed");
}

std::optional<std::string> listed_table() {
  // "list tables" first: a missing table and an nft that cannot list at all
  // both make "list table" fail.
  NftRun tables = run_nft({"list", "tables"});
  if (!tables.ok)
    throw std::runtime_error("nft list tables: " + tables.output +
                             "; fix: run as root (nft needs CAP_NET_ADMIN)");
  if (tables.output.find(std::string("table ") + kNftTable + "\n") == std::string::npos)
    return std::nullopt;
  NftRun table = run_nft({"list", "table", "inet", "xmig"});
  if (!table.ok)
    throw std::runtime_error("nft list table " + std::string(kNftTable) + ": " + table.output);
  return table.output;
}

std::string listed_form(const std::string& ruleset) {
  // A thread of our own moves to a new, empty network namespace (the
  // namespace is a per-thread attribute, so the rest of the process stays);
  // the nft processes it starts inherit it, and it vanishes with them.
  std::string listing, error;
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      error = std::string("unshare(CLONE_NEWNET): ") + strerror(errno) +
              " (a private network namespace needs CAP_SYS_ADMIN; fix: run as root)";
      return;
    }
    try {
      NftRun applied = run_nft({"-f", "-"}, ruleset);
      if (!applied.ok) {
        error = "nft -f - refused the ruleset: " + applied.output;
        return;
      }
      auto listed = listed_table();
      if (listed)
        listing = *listed;
      else
        error = "nft applied the ruleset but lists no table " + std::string(kNftTable);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }).join();
  if (!error.empty()) throw std::runtime_error(error);
  return listing;
}

}  // namespace xmig::tunnel
