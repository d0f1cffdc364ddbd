// tunnel/nftables: the netfilter ruleset of transparent mode, one table of
// xmig's own (`table inet xmig`), and its atomic application with `nft -f -`.
//
// What the table does (README "Transparent mode (nova)"):
// - guard (output, filter at -150): only root may open connections to a peer's
//   driver_port (a driver connection is root on the peer's libvirt), and
//   only [intercept].users to its migration ports; others get a reset.
// - intercept (output, nat): TCP this host opens to a peer's address on driver_port or
//   the range goes to the intercept listener instead (REDIRECT).
// - firewall = true: fail_closed (output, filter at 0): plaintext to those ports of a peer
//   that was not redirected is dropped; no_plaintext_in (input): new TCP to those ports
//   arriving from any interface but lo is dropped, so plaintext migration to
//   this host is impossible.
// Sockets carrying [intercept].mark (every socket the tunnel dials) pass
// untouched: the tunnel never catches its own traffic. The table stays when
// the tunnel stops: migrations then fail instead of going out in plaintext.
// It never touches any other table.
//
// Library xmig_nftables: the tunnel applies the table, xmig-verify compares
// the host's table with it (one generator of the rules).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tunnel/config.hpp"

namespace xmig::tunnel {

inline constexpr const char* kNftTable = "inet xmig";

// The whole ruleset for `c` (which must have [intercept]), as `nft -f -`
// reads it: it replaces table inet xmig in one transaction.
std::string nftables_ruleset(const Config& c);

// Feeds the ruleset to `nft -f -`. Throws std::runtime_error with nft's own
// words when nft is missing or refuses it.
void apply_nftables(const std::string& ruleset);

// Runs nft with `args` and `input` on its stdin; ok when it exited 0, output
// is its stdout and stderr together.
struct NftRun {
  bool ok = false;
  std::string output;
};
NftRun run_nft(const std::vector<std::string>& args, const std::string& input = {});

// This network namespace's table inet xmig as `nft list table inet xmig`
// prints it (nft's own spelling), or nullopt when there is none. Throws
// std::runtime_error with nft's words when nft cannot list (no CAP_NET_ADMIN).
std::optional<std::string> listed_table();

// How nft lists `ruleset` once applied, for a comparison with listed_table()
// line by line (xmig-verify: is the table in place what the config demands?).
// It is applied in a private, empty network namespace, never this host's.
// Throws std::runtime_error with the reason (the namespace needs
// CAP_SYS_ADMIN, i.e. root).
std::string listed_form(const std::string& ruleset);

}  // namespace xmig::tunnel
