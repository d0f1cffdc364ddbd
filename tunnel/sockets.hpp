// Socket chores of the control plane: entry sockets under run_dir, connecting
// to a target, and deadlines on asynchronous steps.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/asio.hpp"
#include "base/fd.hpp"
#include "base/socket.hpp"
#include "tunnel/endpoint.hpp"

namespace xmig::tunnel {

using UnixProtocol = asio::local::stream_protocol;

// Binds a listening UNIX socket at `path`, creating its directory (mode
// dir_mode). A stale socket left by a dead process is replaced; a socket that
// a live process still listens on, or a path that is not a socket, is never
// touched: both throw std::runtime_error saying what to do.
UnixProtocol::acceptor open_unix_listener(asio::io_context& io, const std::string& path,
                                          unsigned socket_mode, gid_t group);

asio::ip::tcp::acceptor open_tcp_listener(asio::io_context& io, const Endpoint& ep);

// mkdir -p with a mode (and group, when not -1) on the last component.
void make_directory(const std::string& path, unsigned mode, gid_t group);

// Who is at the other end of an accepted local socket: "ip:port" (TCP),
// "pid N" (UNIX, from SO_PEERCRED), or "" when unknown.
std::string describe_client(int fd);

// Connects to a TCP or UNIX endpoint within `timeout`; returns the connected
// fd. A TCP socket carries SO_MARK `mark` when not 0 (Config::socket_mark()).
// Throws std::runtime_error saying why not.
asio::awaitable<Fd> connect_to(asio::io_context& io, const Endpoint& ep,
                               std::chrono::milliseconds timeout, uint32_t mark = 0);

// Connects a TCP socket to host:port (for the TLS side, which keeps the
// socket), with SO_MARK `mark` when not 0.
asio::awaitable<void> connect_tcp(asio::ip::tcp::socket& sock, const Endpoint& ep,
                                  uint32_t mark = 0);

// Calls on_expire (typically a socket's cancel) when `timeout` passes before
// the Deadline is destroyed. Safe when the timer fires as it is destroyed.
class Deadline {
 public:
  Deadline(asio::io_context& io, std::chrono::milliseconds timeout,
           std::function<void()> on_expire);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  bool expired() const { return state_->expired; }

 private:
  struct State {
    bool expired = false;
    bool disarmed = false;
    std::function<void()> on_expire;
  };
  std::shared_ptr<State> state_;
  asio::steady_timer timer_;
};

// "group name" -> gid; throws std::runtime_error when unknown. "" -> -1.
gid_t lookup_group(const std::string& name);

}  // namespace xmig::tunnel
