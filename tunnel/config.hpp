// The tunnel's configuration: one TOML file, parsed and checked as a whole.
//
// load_config() reports every problem it finds at once, each naming the file,
// the key and the fix; it never returns a half-valid Config. It checks only
// what can be known from the file itself: certificate contents are checked by
// tls::Context when they are loaded.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/socket.hpp"
#include "tls/ktls.hpp"
#include "tunnel/endpoint.hpp"

namespace xmig::tunnel {

// The channels every peer directory carries (<run_dir>/<peer>/<channel>.sock).
inline const std::vector<std::string> kMigrationChannels = {"driver", "qemu", "nbd"};

struct PeerConfig {
  std::string name;  // the peer's host name; its certificate must carry it as a DNS SAN
  Endpoint address;  // its TLS listener on the migration network
  // Its migration addresses (IP literals), where transparent mode catches
  // this host's plain TCP to it; default: the host of `address`.
  std::vector<std::string> addresses;
};

// first..last, both included.
struct PortRange {
  uint16_t first = 0, last = 0;
  bool contains(uint16_t port) const { return port >= first && port <= last; }
  std::string str() const { return std::to_string(first) + "-" + std::to_string(last); }
};

// [intercept]: transparent mode (tunnel/intercept.hpp, tunnel/nftables.hpp).
// nova's plain TCP migrations to a peer's addresses are redirected by
// nftables into the intercept listener and carried as channels; the peer
// delivers a port channel only to that port on its own `address`.
struct InterceptConfig {
  bool enabled = false;                            // the section is present
  PortRange ports{.first = 49152, .last = 49215};  // libvirt's migration_port_min..max
  uint16_t driver_port = 16509;                    // libvirtd's TCP port (qemu+tcp://)
  bool firewall = true;         // drop plaintext to those ports from the network and to peers
  uint16_t listen_port = 7445;  // the intercept listener, on 127.0.0.1 (and ::1)
  // This host's own migration address (libvirt's migration_address, nova's
  // live_migration_inbound_addr): where port channels are delivered.
  std::string address;
  uint32_t mark = 0x786d6967;  // SO_MARK of every socket the tunnel dials: never redirected
  // Local users allowed to open connections to the peers' migration ports
  // (QEMU, libvirt); the driver port is root's only.
  std::vector<std::string> users;
  std::vector<unsigned> uids;  // users, resolved
};

// An extra entry point: connections accepted on `listen` travel to `peer` and
// are delivered to that peer's target for `channel`.
struct RouteConfig {
  Endpoint listen;
  std::string peer;
  std::string channel;
};

struct TlsConfig {
  std::string ca;    // PEM bundle of trusted CAs
  std::string cert;  // this host's server certificate, shown to peers that dial it
  std::string key;   // its private key; never accessible to all users nor group-writable
  // The certificate and key shown when this host dials a peer (libvirt's
  // client-cert.pem and client-key.pem); default: cert and key.
  std::string client_cert;
  std::string client_key;
  std::string crl;                  // optional PEM CRL
  std::string min_version = "1.3";  // "1.3" or "1.2"
  // kTLS: "auto" (offload when the kernel can, else user space), "required"
  // (refuse to start without kTLS, refuse connections it could not take),
  // "off".
  tls::KtlsPolicy ktls = tls::KtlsPolicy::Auto;
  // Records one AEAD key may protect before it is rotated (user space) or the
  // connection closes (kTLS with AES-GCM); RFC 8446 5.5. Lowered by tests.
  uint64_t key_limit_records = tls::kDefaultKeyLimitRecords;
  // TLS 1.3 session resumption between this host's channels to one peer
  // (tls/context.hpp); off: every channel runs a full handshake.
  bool resumption = true;
};

// [limits]: what one source, or all of them, may hold of this host, and how
// long anything may take. See the README's configuration reference.
struct Limits {
  std::chrono::milliseconds handshake_timeout{10'000};
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds drain_timeout{30'000};
  // Established streams at once, counted for each direction on its own: peers'
  // streams into this host, and this host's own entries towards its peers
  // (so neither can starve the other).
  unsigned max_connections = 4096;
  // TLS connections accepted and not yet authenticated, in all and from one
  // source (an IPv4 address, or an IPv6 /64).
  unsigned max_pending_handshakes = 256;
  unsigned max_pending_per_source = 64;
  // New TLS connections one source may open per second (a burst of as many;
  // the configured peers' addresses are not rate-limited).
  unsigned handshake_rate_per_source = 100;
  // A source that fails authentication or exceeds the limits above ban_after
  // times within ban_window is refused for ban_time (ban_after 0: never).
  unsigned ban_after = 3;
  std::chrono::milliseconds ban_window{300'000};
  std::chrono::milliseconds ban_time{900'000};
  // The addresses of configured [[peer]]s are never banned (they are still
  // held to the limits).
  bool ban_exempt_peers = true;
  // Keepalive and TCP_USER_TIMEOUT on every TLS connection (base/socket.hpp).
  Liveness liveness;
};

struct Config {
  std::string path;  // the file it was read from, for messages
  std::string name;  // this host
  std::string run_dir;
  Endpoint listen;
  TlsConfig tls;
  std::vector<PeerConfig> peers;
  std::map<std::string, Endpoint> targets;  // channel -> where this host delivers it
  std::vector<RouteConfig> routes;
  Limits limits;
  InterceptConfig intercept;
  Endpoint status;       // the /status and /metrics endpoint; default unix:<run_dir>/status.sock
  unsigned workers = 0;  // data-path threads; 0 = one per core
  std::string log_level = "info";
  std::string log_format = "text";  // or "json": one object per line (tunnel/log_format.hpp)
  unsigned socket_mode = 0660;      // entry sockets under run_dir
  std::string socket_group;         // optional group owning run_dir's sockets (QEMU's)
  // Optional group that may reach the driver entries (libvirt RPC on the
  // peer, root there); without it they are root's only. Never socket_group.
  std::string driver_group;
  // Optional unprivileged user the tunnel becomes once its sockets are bound
  // (tunnel/privileges.hpp); it then owns run_dir and the folders in it. With
  // [intercept] it keeps CAP_NET_ADMIN alone (SO_MARK), otherwise nothing.
  std::string user;

  const PeerConfig* find_peer(const std::string& peer_name) const;
  // SO_MARK for every socket the tunnel dials: [intercept].mark, else 0 (none).
  uint32_t socket_mark() const { return intercept.enabled ? intercept.mark : 0; }
  // <run_dir>/<dir>/<channel>.sock
  std::string socket_path(const std::string& dir, const std::string& channel) const;
  // <run_dir>/control.sock: where xmig-migrate reserves per-migration socket
  // sets (root only).
  std::string control_path() const { return run_dir + "/control.sock"; }
};

class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Reads and validates the file. Throws ConfigError listing every problem.
Config load_config(const std::string& path);

// Same, from text (for tests); `path` is used in messages only.
Config parse_config(const std::string& text, const std::string& path);

// Valid names: a peer or host name is a DNS name; a channel is [a-z0-9_-]{1,32}
// starting with a letter or digit.
bool is_valid_host_name(const std::string& s);
bool is_valid_channel_name(const std::string& s);
// An IPv4 or IPv6 address, written as one (no name, no brackets).
bool is_ip_literal(const std::string& s);

}  // namespace xmig::tunnel
