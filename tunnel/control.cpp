// The control socket, <run_dir>/control.sock (mode 0600: root only, since a
// reserved set includes a driver entry, i.e. libvirt RPC on the peer).
//
// One exchange per connection, in lines:
//   client: reserve <peer> <id>
//   tunnel: ok <folder>          (the set <folder>/{driver,qemu,nbd}.sock is open)
//       or: error <reason>
// The set stays open until the client closes the connection, whatever the
// reason (the migration ended, xmig-migrate was killed), so no set outlives
// the command that asked for it.
#include <spdlog/spdlog.h>
#include <sys/un.h>
#include <unistd.h>

#include <sstream>

#include "tunnel/protocol.hpp"
#include "tunnel/state.hpp"

namespace xmig::tunnel {

namespace {

constexpr size_t kMaxControlLine = 256;

// The set's folder and sockets for `peer`/`id`, opened; throws
// std::runtime_error with the reason to send back.
std::shared_ptr<ReservedSet> open_set(Tunnel::State& s, const std::string& peer,
                                      const std::string& id) {
  const Config& c = s.config;
  if (!c.find_peer(peer))
    throw std::runtime_error("no [[peer]] named \"" + peer + "\" in " + c.path);
  if (!is_valid_migration_id(id))
    throw std::runtime_error("invalid migration id \"" + id +
                             "\": use 1-64 of [A-Za-z0-9_.-], starting with a letter or digit, "
                             "not ending in .sock");
  std::string key = peer + "/" + id;
  if (s.reserved.count(key))
    throw std::runtime_error("migration id \"" + id + "\" to " + peer +
                             " is already reserved (a migration with that id is running); "
                             "choose another id");
  if (s.stopping) throw std::runtime_error("the tunnel is shutting down");
  auto set = std::make_shared<ReservedSet>();
  set->peer = peer;
  set->id = id;
  set->folder = c.run_dir + "/" + peer + "/" + id;
  const size_t longest = c.socket_path(peer + "/" + id, "driver").size();
  if (longest >= sizeof(sockaddr_un::sun_path))
    throw std::runtime_error("socket path " + c.socket_path(peer + "/" + id, "driver") + " is " +
                             std::to_string(longest) + " bytes, more than a UNIX socket allows (" +
                             std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                             "); use a shorter id");
  try {
    make_owned_directory(set->folder, entry_folder_access(c));
    for (const auto& channel : kMigrationChannels) {
      std::string path = c.socket_path(peer + "/" + id, channel);
      set->entries.push_back(open_unix_listener(s.io, path, entry_access(c, channel)));
      set->paths.push_back(path);
    }
  } catch (...) {
    set->close();
    throw;
  }
  return set;
}

// One entry of a reserved set; the frame keeps the set alive while it serves.
asio::awaitable<void> serve_reserved_entry(Tunnel::State& s, std::shared_ptr<ReservedSet> set,
                                           UnixProtocol::acceptor& acceptor, const PeerConfig& peer,
                                           std::string channel, std::string path) {
  co_await serve_entry(s, acceptor, peer, std::move(channel), std::move(path), set->id);
}

asio::awaitable<void> hold_reservation(Tunnel::State& s, UnixProtocol::socket sock) {
  std::string line;
  boost::system::error_code ec;
  {
    Deadline deadline(s.io, s.config.limits.handshake_timeout, [&] { sock.cancel(); });
    co_await asio::async_read_until(sock, asio::dynamic_buffer(line, kMaxControlLine), '\n',
                                    asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) co_return;  // nothing asked, or too long: nothing to answer
  line.resize(line.find('\n'));
  std::istringstream words(line);
  std::string verb, peer, id, extra;
  words >> verb >> peer >> id >> extra;
  std::shared_ptr<ReservedSet> set;
  std::string reply;
  try {
    if (verb != "reserve" || peer.empty() || id.empty() || !extra.empty())
      throw std::runtime_error("expected \"reserve <peer> <id>\"");
    set = open_set(s, peer, id);
    reply = "ok " + set->folder + "\n";
  } catch (const std::exception& e) {
    spdlog::warn("refused: control: {}: {}", line, e.what());
    reply = std::string("error ") + e.what() + "\n";
  }
  co_await asio::async_write(sock, asio::buffer(reply),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (!set) co_return;

  const PeerConfig& peer_config = *s.config.find_peer(peer);
  s.reserved[peer + "/" + id] = set;
  auto acceptor = set->entries.begin();
  for (size_t i = 0; i < kMigrationChannels.size(); ++i, ++acceptor)
    asio::co_spawn(
        s.io,
        serve_reserved_entry(s, set, *acceptor, peer_config, kMigrationChannels[i], set->paths[i]),
        asio::detached);
  spdlog::info("migration {} to {}: reserved {}/{{driver,qemu,nbd}}.sock", id, peer, set->folder);

  // Held until the client goes away; what it sends meanwhile is ignored.
  std::array<char, 64> ignored;
  while (!ec)
    co_await sock.async_read_some(asio::buffer(ignored),
                                  asio::redirect_error(asio::use_awaitable, ec));
  set->close();
  s.reserved.erase(peer + "/" + id);
  spdlog::info("migration {} to {}: released its socket set", id, peer);
}

}  // namespace

void ReservedSet::close() {
  boost::system::error_code ignored;
  for (auto& acceptor : entries) acceptor.close(ignored);
  for (auto& path : paths) ::unlink(path.c_str());
  paths.clear();
  ::rmdir(folder.c_str());
}

asio::awaitable<void> serve_control(Tunnel::State& s, UnixProtocol::acceptor& acceptor) {
  AcceptBackoff backoff(s.config.control_path());
  while (auto sock = co_await accept_next(acceptor, backoff, s.stopping))
    asio::co_spawn(s.io, hold_reservation(s, std::move(*sock)), asio::detached);
}

}  // namespace xmig::tunnel
