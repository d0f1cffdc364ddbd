#include "tunnel/config.hpp"

#include <arpa/inet.h>
#include <pwd.h>
#include <toml++/toml.h>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "tls/channel.hpp"

namespace xmig::tunnel {

namespace {

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string lower_case(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::string line_of(const toml::node& node) {
  const auto& src = node.source();
  return src.begin.line ? " (line " + std::to_string(src.begin.line) + ")" : "";
}

constexpr double kMinSeconds = 0.001;
constexpr double kMaxSeconds = 86400;

// Reads one TOML table, remembering which keys it consumed so that unknown
// keys (usually typos) are reported instead of silently ignored.
class Section {
 public:
  Section(const toml::table& table, std::string where, std::vector<std::string>& problems,
          const std::string& file)
      : table_(table), where_(std::move(where)), problems_(problems), file_(file) {}

  void problem(const std::string& key, const std::string& text) {
    const toml::node* n = table_.get(key);
    problems_.push_back(file_ + ": " + where_ + key + (n ? line_of(*n) : "") + ": " + text);
  }

  const toml::node* get(const std::string& key) {
    known_.insert(key);
    return table_.get(key);
  }

  // A string value; missing -> fallback (or a problem when required).
  std::string string(const std::string& key, bool required, const std::string& fix,
                     const std::string& fallback = {}) {
    const toml::node* n = get(key);
    if (!n) {
      if (required) problem(key, "missing; " + fix);
      return fallback;
    }
    if (!n->is_string()) {
      problem(key, "must be a string in quotes; " + fix);
      return fallback;
    }
    return **n->as_string();
  }

  std::optional<Endpoint> endpoint(const std::string& key, bool required, const std::string& fix) {
    std::string text = string(key, required, fix);
    if (text.empty()) return std::nullopt;
    std::string why;
    auto ep = parse_endpoint(text, &why);
    if (!ep) problem(key, "\"" + text + "\": " + why + "; " + fix);
    return ep;
  }

  // A non-negative number of seconds (integer or decimal) as milliseconds.
  std::chrono::milliseconds seconds(const std::string& key, std::chrono::milliseconds fallback) {
    const toml::node* n = get(key);
    if (!n) return fallback;
    double s = -1;
    if (n->is_integer()) s = static_cast<double>(**n->as_integer());
    if (n->is_floating_point()) s = **n->as_floating_point();
    // Written so that nan and inf fail too; below a millisecond rounds to 0.
    if (!(std::isfinite(s) && s >= kMinSeconds && s <= kMaxSeconds)) {
      problem(key, "must be a number of seconds from 0.001 to 86400, e.g. 10 or 2.5");
      return fallback;
    }
    return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
  }

  unsigned number(const std::string& key, unsigned fallback, unsigned lo, unsigned hi) {
    const toml::node* n = get(key);
    if (!n) return fallback;
    // Only an integer node is read as one: toml++ converts a float like 1e100
    // to int64_t without a range check.
    const int64_t* i = n->is_integer() ? &n->as_integer()->get() : nullptr;
    if (!i || *i < lo || *i > hi) {
      problem(key,
              "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
      return fallback;
    }
    return static_cast<unsigned>(*i);
  }

  bool boolean(const std::string& key, bool fallback) {
    const toml::node* n = get(key);
    if (!n) return fallback;
    if (!n->is_boolean()) {
      problem(key, "must be true or false (no quotes)");
      return fallback;
    }
    return **n->as_boolean();
  }

  // An array of strings; nullopt when absent (a problem when not such an array).
  std::optional<std::vector<std::string>> strings(const std::string& key, const std::string& fix) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    std::vector<std::string> out;
    const toml::array* arr = n->as_array();
    bool ok = arr != nullptr;
    if (arr)
      for (auto& el : *arr) {
        if (!el.is_string())
          ok = false;
        else
          out.push_back(**el.as_string());
      }
    if (!ok) {
      problem(key, "must be an array of strings; " + fix);
      return std::nullopt;
    }
    return out;
  }

  // Call last: every key the code did not ask for is unknown.
  void reject_unknown_keys() {
    std::vector<std::string> known(known_.begin(), known_.end());
    for (auto&& [k, v] : table_) {
      std::string key(k.str());
      if (!known_.count(key))
        problems_.push_back(file_ + ": " + where_ + key + line_of(v) +
                            ": unknown key; fix: remove it or check the spelling (known here: " +
                            join(known, ", ") + ")");
    }
  }

 private:
  const toml::table& table_;
  std::string where_;  // e.g. "[tls]." or "[[peer]] #2 "
  std::vector<std::string>& problems_;
  const std::string& file_;
  std::set<std::string> known_;
};

// An optional [key] table: nullptr when absent; when present but not a
// table, the problem is reported here, under its own name.
const toml::table* optional_table(Section& s, const std::string& key) {
  const toml::node* n = s.get(key);
  if (!n) return nullptr;
  if (!n->is_table()) {
    s.problem(key, "must be a table, written [" + key + "]");
    return nullptr;
  }
  return n->as_table();
}

// [[peer]] and [[route]] are arrays of tables; accept nothing else.
std::vector<const toml::table*> tables_in_array(Section& s, const std::string& key) {
  std::vector<const toml::table*> out;
  const toml::node* n = s.get(key);
  if (!n) return out;
  const toml::array* arr = n->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    s.problem(key, "must be written as [[" + key + "]] sections");
    return out;
  }
  for (auto& el : *arr) out.push_back(el.as_table());
  return out;
}

}  // namespace

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(join(problems, "\n")), problems_(std::move(problems)) {}

bool is_valid_host_name(const std::string& s) {
  if (s.empty() || s.size() > 253 || s.front() == '.' || s.back() == '.' || s.front() == '-')
    return false;
  char prev = 0;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

bool is_ip_literal(const std::string& s) {
  in6_addr ignored{};
  return ::inet_pton(AF_INET, s.c_str(), &ignored) == 1 ||
         ::inet_pton(AF_INET6, s.c_str(), &ignored) == 1;
}

bool is_valid_channel_name(const std::string& s) {
  return tls::is_valid_channel(s);
}

const PeerConfig* Config::find_peer(const std::string& peer_name) const {
  for (const auto& p : peers)
    if (p.name == peer_name) return &p;
  return nullptr;
}

std::string Config::socket_path(const std::string& dir, const std::string& channel) const {
  return run_dir + "/" + dir + "/" + channel + ".sock";
}

namespace {

// One reader per section: each reads its own keys into its part of Config and
// reports its own problems, so a mistake in one section never shows up as an
// error in another.

void read_host(Section& top, Config& c) {
  const std::string name_fix = "fix: set name = \"<this host>\" (its certificate's DNS SAN)";
  c.name = lower_case(top.string("name", true, name_fix));
  if (top.get("name") && c.name.empty())
    top.problem("name", "is empty; " + name_fix);
  else if (!c.name.empty() && !is_valid_host_name(c.name))
    top.problem("name", "\"" + c.name +
                            "\" is not a valid host name; fix: use letters, digits, "
                            "'-' and '.' only");
  c.run_dir = top.string("run_dir", false, "fix: e.g. run_dir = \"/run/xmig\"", "/run/xmig");
  if (c.run_dir.empty() || c.run_dir[0] != '/')
    top.problem("run_dir", "must be an absolute path; fix: e.g. run_dir = \"/run/xmig\"");
  while (c.run_dir.size() > 1 && c.run_dir.back() == '/') c.run_dir.pop_back();
  if (auto ep = top.endpoint("listen", true, "fix: e.g. listen = \"0.0.0.0:7443\"")) {
    c.listen = *ep;
    if (c.listen.is_unix())
      top.problem("listen", "the TLS listener must be TCP; fix: e.g. listen = \"0.0.0.0:7443\"");
  }
  if (auto ep = top.endpoint("status", false,
                             "fix: e.g. status = \"127.0.0.1:7444\" or "
                             "\"unix:/run/xmig/status.sock\"")) {
    c.status = *ep;
  } else if (!c.run_dir.empty()) {
    std::string ignored;
    if (auto def = parse_endpoint("unix:" + c.run_dir + "/status.sock", &ignored)) c.status = *def;
  }
  c.log_level = top.string("log_level", false, "", "info");
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
  if (!levels.count(c.log_level))
    top.problem("log_level",
                "\"" + c.log_level + "\"; fix: one of trace, debug, info, warn, error");
  c.log_format = top.string("log_format", false, "", "text");
  if (c.log_format != "text" && c.log_format != "json")
    top.problem("log_format", "\"" + c.log_format + "\"; fix: \"text\" or \"json\"");
  c.workers = top.number("workers", 0, 0, 256);
  std::string mode = top.string("socket_mode", false, "", "0660");
  try {
    size_t used = 0;
    c.socket_mode = static_cast<unsigned>(std::stoul(mode, &used, 8));
    if (used != mode.size() || c.socket_mode > 0777) throw std::invalid_argument(mode);
  } catch (const std::exception&) {
    top.problem("socket_mode", "\"" + mode + "\" is not an octal mode; fix: e.g. \"0660\"");
  }
  c.socket_group = top.string("socket_group", false, "");
  c.driver_group = top.string("driver_group", false, "");
  c.user = top.string("user", false, "");
  if (!c.driver_group.empty() && c.driver_group == c.socket_group)
    top.problem("driver_group",
                "\"" + c.driver_group +
                    "\" is socket_group too: the driver channel is libvirt RPC on the peer "
                    "(root there), which QEMU must never reach; fix: remove driver_group (root "
                    "only) or name a group of administrators");
}

void read_tls(Section& tls, TlsConfig& out) {
  const std::string pki = "; libvirt's layout works as is, e.g. ";
  out.ca = tls.string("ca", true, "fix: the CA bundle" + pki + "\"/etc/pki/qemu/ca-cert.pem\"");
  out.cert = tls.string("cert", true,
                        "fix: this host's certificate" + pki + "\"/etc/pki/qemu/server-cert.pem\"");
  out.key = tls.string("key", true,
                       "fix: this host's private key" + pki + "\"/etc/pki/qemu/server-key.pem\"");
  // The client identity: both keys or neither (then cert and key serve both roles).
  const std::string client_fix = "fix: set client_cert and client_key together" + pki +
                                 "client_cert = \"/etc/pki/qemu/client-cert.pem\" and client_key = "
                                 "\"/etc/pki/qemu/client-key.pem\"";
  out.client_cert = tls.string("client_cert", false, client_fix);
  out.client_key = tls.string("client_key", false, client_fix);
  if (out.client_cert.empty() != out.client_key.empty())
    tls.problem(out.client_cert.empty() ? "client_key" : "client_cert",
                "is set without " +
                    std::string(out.client_cert.empty() ? "client_cert" : "client_key") + "; " +
                    client_fix);
  if (out.client_cert.empty()) out.client_cert = out.cert;
  if (out.client_key.empty()) out.client_key = out.key;
  out.crl = tls.string("crl", false, "");
  out.min_version = tls.string("min_version", false, "", "1.3");
  if (out.min_version != "1.3" && out.min_version != "1.2")
    tls.problem("min_version", "\"" + out.min_version + "\"; fix: \"1.3\" (default) or \"1.2\"");
  std::string ktls = tls.string("ktls", false, "", "auto");
  if (auto policy = tls::parse_ktls_policy(ktls))
    out.ktls = *policy;
  else
    tls.problem("ktls", "\"" + ktls + "\"; fix: \"auto\" (default), \"required\" or \"off\"");
  if (out.ktls == tls::KtlsPolicy::Required && !tls::ktls_unavailable_reason().empty())
    tls.problem("ktls",
                "\"required\" but this kernel has no kTLS: " + tls::ktls_unavailable_reason() +
                    "; fix: load the module (modprobe tls) or set ktls = \"auto\"");
  // RFC 8446 5.5: at most 2^24.5 full records under one AES-GCM key.
  out.key_limit_records = tls.number(
      "key_limit_records", static_cast<unsigned>(tls::kDefaultKeyLimitRecords), 1, 23'726'566);
  out.resumption = tls.boolean("resumption", true);
}

PeerConfig read_peer(Section& s, const std::string& own_name, std::set<std::string>& names) {
  PeerConfig p;
  const std::string name_fix = "fix: the peer's host name, e.g. name = \"hv-b\"";
  // Host names are compared case-insensitively (as certificates are): one
  // spelling, lower case, so "HV-B" and "hv-b" are one peer.
  p.name = lower_case(s.string("name", true, name_fix));
  if (s.get("name") && p.name.empty()) {
    // An empty name would check no name at all when dialling it.
    s.problem("name", "is empty; " + name_fix);
  } else if (!p.name.empty()) {
    if (!is_valid_host_name(p.name))
      s.problem("name", "\"" + p.name + "\" is not a valid host name");
    else if (p.name == own_name)
      s.problem("name", "\"" + p.name + "\" is this host's own name; fix: list other hosts only");
    else if (!names.insert(p.name).second)
      s.problem("name", "\"" + p.name +
                            "\" is listed twice (names are compared ignoring case); fix: keep "
                            "one [[peer]] per host");
  }
  if (auto ep = s.endpoint("address", true, "fix: e.g. address = \"10.0.0.2:7443\"")) {
    p.address = *ep;
    if (p.address.is_unix())
      s.problem("address", "a peer is reached over TCP; fix: e.g. address = \"10.0.0.2:7443\"");
  }
  const std::string addresses_fix = "fix: its migration addresses, e.g. addresses = [\"10.0.0.2\"]";
  if (auto list = s.strings("addresses", addresses_fix)) {
    if (list->empty()) s.problem("addresses", "is empty; " + addresses_fix);
    for (const auto& a : *list)
      if (!is_ip_literal(a))
        s.problem("addresses", "\"" + a + "\" is not an IPv4 or IPv6 address; " + addresses_fix);
    p.addresses = *list;
  } else if (!p.address.is_unix() && !p.address.host.empty()) {
    p.addresses = {p.address.host};
  }
  return p;
}

// [intercept]: transparent mode. Overlaps that would redirect or drop the
// tunnel's own traffic are refused here, so --check refuses them too.
void read_intercept(Section& s, Config& c) {
  InterceptConfig& in = c.intercept;
  in.enabled = true;
  const std::string ports_fix =
      "fix: libvirt's migration_port_min-migration_port_max, e.g. "
      "ports = \"49152-49215\"";
  std::string ports = s.string("ports", false, ports_fix, in.ports.str());
  unsigned first = 0, last = 0;
  char dash = 0, extra = 0;
  if (std::sscanf(ports.c_str(), "%u%c%u%c", &first, &dash, &last, &extra) != 3 || dash != '-' ||
      first < 1 || first > last || last > 65535)
    s.problem("ports", "\"" + ports + "\" is not a port range FIRST-LAST; " + ports_fix);
  else
    in.ports = {.first = static_cast<uint16_t>(first), .last = static_cast<uint16_t>(last)};
  in.driver_port = static_cast<uint16_t>(s.number("driver_port", in.driver_port, 1, 65535));
  in.listen_port = static_cast<uint16_t>(s.number("listen_port", in.listen_port, 1, 65535));
  in.firewall = s.boolean("firewall", in.firewall);
  in.mark = s.number("mark", in.mark, 1, 0xffffffff);
  const std::string address_fix =
      "fix: this host's migration address (qemu.conf migration_address, nova's "
      "live_migration_inbound_addr), e.g. address = \"10.0.0.1\"";
  const bool wildcard = c.listen.host == "0.0.0.0" || c.listen.host == "::";
  in.address = s.string("address", false, address_fix,
                        is_ip_literal(c.listen.host) && !wildcard ? c.listen.host : "");
  if (in.address.empty())
    s.problem("address", "missing (listen is not one address to take it from); " + address_fix);
  else if (!is_ip_literal(in.address))
    s.problem("address", "\"" + in.address + "\" is not an IPv4 or IPv6 address; " + address_fix);

  // Who may open connections to the peers' migration ports: QEMU (libvirt
  // runs it as libvirt-qemu) and root (libvirtd). Listed users must exist.
  const std::string users_fix =
      "fix: the users QEMU and libvirtd run as, e.g. users = "
      "[\"root\", \"libvirt-qemu\"]";
  auto users = s.strings("users", users_fix);
  const bool explicit_users = users.has_value();
  if (!users) users = std::vector<std::string>{"root", "libvirt-qemu"};
  for (const auto& user : *users) {
    const passwd* pw = ::getpwnam(user.c_str());
    if (!pw) {
      if (explicit_users) s.problem("users", "no such user \"" + user + "\"; " + users_fix);
      continue;
    }
    in.users.push_back(user);
    in.uids.push_back(pw->pw_uid);
  }

  // Loop-proof and fail-closed only when nothing of the tunnel's own sits in
  // the intercepted ports.
  auto intercepted = [&in](uint16_t port) {
    return in.ports.contains(port) || port == in.driver_port;
  };
  const std::string overlap = " is intercepted by [intercept] (ports " + in.ports.str() +
                              ", driver_port " + std::to_string(in.driver_port) + ")";
  if (in.ports.contains(in.driver_port))
    s.problem("driver_port", std::to_string(in.driver_port) + " lies inside ports " +
                                 in.ports.str() +
                                 "; fix: libvirtd's port (16509) outside the range");
  if (intercepted(in.listen_port))
    s.problem("listen_port", std::to_string(in.listen_port) + overlap +
                                 ": the intercept listener would catch itself; fix: a port "
                                 "outside them, e.g. 7445");
  if (!c.listen.is_unix() && intercepted(c.listen.port))
    s.problem("ports", "the TLS listener's port " + std::to_string(c.listen.port) + overlap +
                           ": peers could not reach it; fix: move listen or the range");
  if (!c.listen.is_unix() && c.listen.port == in.listen_port)
    s.problem("listen_port", std::to_string(in.listen_port) +
                                 " is the TLS listener's port too; fix: another port, e.g. 7445");
  if (!c.status.is_unix() && intercepted(c.status.port))
    s.problem("ports", "status port " + std::to_string(c.status.port) + overlap +
                           "; fix: move status or the range");
  for (const auto& p : c.peers)
    if (!p.address.is_unix() && intercepted(p.address.port))
      s.problem("ports", "peer " + p.name + "'s TLS port " + std::to_string(p.address.port) +
                             overlap + ": the tunnel could not reach it; fix: move the range");
  for (const auto& r : c.routes)
    if (!r.listen.is_unix() && intercepted(r.listen.port))
      s.problem("ports",
                "route " + r.listen.str() + overlap + "; fix: move the route or the range");
  // One address names one peer: otherwise the original destination would be ambiguous.
  std::map<std::string, std::string> owner;
  for (const auto& p : c.peers)
    for (const auto& a : p.addresses) {
      if (a == in.address)
        s.problem("address", "\"" + a + "\" is also an address of peer " + p.name +
                                 "; fix: this host's own address here, the peer's in its [[peer]]");
      auto [it, fresh] = owner.emplace(a, p.name);
      if (!fresh && it->second != p.name)
        s.problem("address", "\"" + a + "\" is listed by peers " + it->second + " and " + p.name +
                                 "; fix: each address belongs to one [[peer]]");
    }
  for (const auto& p : c.peers)
    for (const auto& a : p.addresses)
      if (!is_ip_literal(a))
        s.problem("address", "peer " + p.name + "'s address \"" + a +
                                 "\" is a name, and nftables needs addresses; fix: list them in "
                                 "its [[peer]] as addresses = [\"10.0.0.2\"]");
}

// The defaults: driver to libvirt's socket, qemu/nbd under <run_dir>/<name>/.
void default_targets(Config& c) {
  if (c.name.empty()) return;
  std::string ignored;
  c.targets["driver"] = *parse_endpoint("unix:/run/libvirt/libvirt-sock", &ignored);
  for (const char* ch : {"qemu", "nbd"})
    if (auto ep = parse_endpoint("unix:" + c.socket_path(c.name, ch), &ignored))
      c.targets[ch] = *ep;
}

void read_targets(Section& s, const toml::table& table, std::map<std::string, Endpoint>& out) {
  for (auto&& [k, v] : table) {
    std::string channel(k.str());
    if (channel == "verify") {
      s.problem(channel,
                "is reserved: this host answers the verify channel itself (for "
                "xmig-verify); fix: remove it or pick another channel name");
      s.get(channel);
      continue;
    }
    if (!is_valid_channel_name(channel)) {
      s.problem(channel, "is not a valid channel name; fix: use a-z, 0-9, '-' and '_'");
      s.get(channel);
      continue;
    }
    if (auto ep = s.endpoint(channel, true, "fix: \"HOST:PORT\" or \"unix:PATH\""))
      out[channel] = *ep;
  }
}

RouteConfig read_route(Section& s, const std::set<std::string>& peer_names,
                       std::set<std::string>& listens) {
  RouteConfig r;
  if (auto ep = s.endpoint("listen", true, "fix: e.g. listen = \"127.0.0.1:5000\"")) {
    r.listen = *ep;
    if (!listens.insert(r.listen.str()).second)
      s.problem("listen",
                std::string("\"") + r.listen.str() + "\" is used twice; fix: one listener each");
  }
  r.peer = lower_case(s.string("peer", true, "fix: name one of the [[peer]] hosts"));
  if (!r.peer.empty() && !peer_names.count(r.peer))
    s.problem("peer", "\"" + r.peer +
                          "\" is not a configured [[peer]]; fix: add it or correct "
                          "the name");
  r.channel = s.string("channel", true, "fix: e.g. channel = \"bench\"");
  if (!r.channel.empty() && !is_valid_channel_name(r.channel))
    s.problem("channel", "\"" + r.channel +
                             "\" is not a valid channel name; fix: use a-z, "
                             "0-9, '-' and '_'");
  return r;
}

void read_limits(Section& s, Limits& out) {
  out.handshake_timeout = s.seconds("handshake_timeout", out.handshake_timeout);
  out.connect_timeout = s.seconds("connect_timeout", out.connect_timeout);
  out.drain_timeout = s.seconds("drain_timeout", out.drain_timeout);
  out.max_connections = s.number("max_connections", out.max_connections, 1, 1'000'000);
  out.max_pending_handshakes =
      s.number("max_pending_handshakes", out.max_pending_handshakes, 1, 1'000'000);
  out.max_pending_per_source =
      s.number("max_pending_per_source", out.max_pending_per_source, 1, 1'000'000);
  out.handshake_rate_per_source =
      s.number("handshake_rate_per_source", out.handshake_rate_per_source, 1, 1'000'000);
  out.ban_after = s.number("ban_after", out.ban_after, 0, 1'000'000);
  out.ban_window = s.seconds("ban_window", out.ban_window);
  out.ban_time = s.seconds("ban_time", out.ban_time);
  if (const toml::node* n = s.get("ban_exempt_peers")) {
    if (n->is_boolean())
      out.ban_exempt_peers = **n->as_boolean();
    else
      s.problem("ban_exempt_peers", "must be true or false");
  }
  Liveness& live = out.liveness;
  live.idle = s.seconds("keepalive_idle", live.idle);
  live.interval = s.seconds("keepalive_interval", live.interval);
  live.count = s.number("keepalive_count", live.count, 1, 127);
  live.user_timeout = s.seconds("user_timeout", live.user_timeout);
}

toml::table parse_toml(const std::string& text, const std::string& path) {
  try {
    return toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << path << ": line " << e.source().begin.line << ", column " << e.source().begin.column
        << ": " << e.description() << "; fix: correct the TOML syntax there";
    throw ConfigError({msg.str()});
  }
}

}  // namespace

Config parse_config(const std::string& text, const std::string& path) {
  toml::table root = parse_toml(text, path);
  std::vector<std::string> problems;
  Config c;
  c.path = path;
  Section top(root, "", problems, path);
  read_host(top, c);

  if (const toml::table* t = optional_table(top, "tls")) {
    Section s(*t, "[tls].", problems, path);
    read_tls(s, c.tls);
    s.reject_unknown_keys();
  } else if (!root.get("tls")) {
    problems.push_back(path + ": [tls]: missing; fix: add a [tls] section with ca, cert and key");
  }

  std::set<std::string> peer_names;
  int index = 0;
  for (const toml::table* t : tables_in_array(top, "peer")) {
    Section s(*t, "[[peer]] #" + std::to_string(++index) + " ", problems, path);
    c.peers.push_back(read_peer(s, c.name, peer_names));
    s.reject_unknown_keys();
  }

  default_targets(c);
  if (const toml::table* t = optional_table(top, "targets")) {
    Section s(*t, "[targets].", problems, path);
    read_targets(s, *t, c.targets);
    s.reject_unknown_keys();
  }

  std::set<std::string> listens = {c.listen.str()};
  index = 0;
  for (const toml::table* t : tables_in_array(top, "route")) {
    Section s(*t, "[[route]] #" + std::to_string(++index) + " ", problems, path);
    c.routes.push_back(read_route(s, peer_names, listens));
    s.reject_unknown_keys();
  }

  if (const toml::table* t = optional_table(top, "limits")) {
    Section s(*t, "[limits].", problems, path);
    read_limits(s, c.limits);
    s.reject_unknown_keys();
  }

  if (const toml::table* t = optional_table(top, "intercept")) {
    Section s(*t, "[intercept].", problems, path);
    read_intercept(s, c);
    s.reject_unknown_keys();
  }
  top.reject_unknown_keys();
  if (!problems.empty()) throw ConfigError(std::move(problems));
  return c;
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw ConfigError({path + ": cannot be read (" + std::string(strerror(errno)) +
                       "); fix: check the path given to --config"});
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace xmig::tunnel
