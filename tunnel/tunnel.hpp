// tunnel/: the xmig-tunnel process — listeners, routing, connection
// lifecycle, reload and drain.
//
// Data flows one way through the code: an entry socket accepts a local
// client, dials the peer (tls/ handshake, verdict), and hands the pair to a
// pump (io/); the TLS listener accepts a peer, authenticates it, connects the
// channel's configured target, and hands that pair to a pump. The remote side
// never chooses a path or an address: it names a channel, and this host's
// config says where that channel goes.
#pragma once

#include <memory>
#include <string>

#include "tunnel/config.hpp"

namespace xmig::tunnel {

class Tunnel {
 public:
  // Loads the TLS material (throws tls::Error naming the file and the fix).
  explicit Tunnel(Config config);
  ~Tunnel();
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;

  // Opens every listener (throws std::runtime_error naming the socket and
  // the fix), serves until SIGTERM or SIGINT, then stops accepting and lets
  // running streams finish for up to limits.drain_timeout. SIGHUP reloads the
  // TLS material. Returns the process exit code.
  int run();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// --check: validates the config file and the TLS material it names. Prints a
// summary to stdout, or every problem to stderr. Returns 0 or 1.
int check(const std::string& config_path);

// --nftables: prints the table that [intercept] applies (tunnel/nftables.hpp).
// Returns 0, or 1 with the problems on stderr.
int print_nftables(const std::string& config_path);

}  // namespace xmig::tunnel
