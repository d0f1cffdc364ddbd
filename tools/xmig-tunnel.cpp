// xmig-tunnel: the sidecar. Wires tunnel/ to the command line; nothing else.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>

#include "tunnel/log_format.hpp"
#include "tunnel/tunnel.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "xmig-tunnel: carries libvirt/QEMU live-migration streams (driver RPC, RAM/multifd, NBD)\n"
      "between hypervisors inside mutual TLS 1.3.\n\n"
      "For every [[peer]] it listens on <run_dir>/<peer>/{driver,qemu,nbd}.sock and on each\n"
      "[[route]]; each connection accepted there is carried to that peer over its own TLS\n"
      "connection and delivered to the peer's configured target for the channel. It accepts\n"
      "peers on `listen`, requiring a certificate from the CA that names a configured peer.\n\n"
      "Transparent mode ([intercept]): nftables redirects this host's plain TCP to a peer's\n"
      "driver_port and migration ports into the tunnel (nova, unchanged); see --nftables.\n\n"
      "Signals: SIGTERM/SIGINT stop accepting and drain running streams (bounded by\n"
      "[limits].drain_timeout), then exit 0. SIGHUP reloads the [tls] files (CA, server and\n"
      "client certificates and keys, CRL); invalid new material is refused and the old stays\n"
      "in service."};
  std::string config_path = "/etc/xmig/tunnel.toml";
  bool check_only = false;
  app.add_option("-c,--config", config_path, "TOML configuration file")->capture_default_str();
  app.add_flag("--check", check_only,
               "Validate the configuration and the certificates it names, print a summary and "
               "exit: 0 when usable, 1 with every problem (file, key and fix) otherwise");
  bool nftables = false;
  app.add_flag("--nftables", nftables,
               "Print the nftables table (table inet xmig) that [intercept] applies at start and "
               "exit; apply it by hand with: xmig-tunnel --nftables | nft -f -; remove it with: "
               "nft delete table inet xmig");
  CLI11_PARSE(app, argc, argv);

  if (check_only) return xmig::tunnel::check(config_path);
  if (nftables) return xmig::tunnel::print_nftables(config_path);

  // A peer that hangs up must surface as EPIPE on that connection, not kill
  // the process.
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  try {
    auto config = xmig::tunnel::load_config(config_path);
    spdlog::set_level(spdlog::level::from_str(config.log_level));
    // From here on; a configuration that cannot be read is reported as text.
    if (config.log_format == "json") spdlog::set_formatter(xmig::tunnel::json_log_formatter());
    xmig::tunnel::Tunnel tunnel(std::move(config));
    return tunnel.run();
  } catch (const xmig::tunnel::ConfigError& e) {
    for (const auto& p : e.problems()) spdlog::critical("{}", p);
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
  }
  return 1;
}
