// Socket chores of the control plane: entry sockets under run_dir, connecting
// to a target, and deadlines on asynchronous steps.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/asio.hpp"
#include "base/fd.hpp"
#include "base/socket.hpp"
#include "tunnel/endpoint.hpp"

namespace xmig::tunnel {

using UnixProtocol = asio::local::stream_protocol;

// Who may reach a socket or folder the tunnel makes: its mode, and the group
// owning it (-1: the tunnel's own group).
struct Access {
  unsigned mode = 0600;
  gid_t group = static_cast<gid_t>(-1);
  uid_t owner = static_cast<uid_t>(-1);  // folders only; -1: the tunnel's own user
};

// Binds a listening UNIX socket at `path` with `access`. The folder must
// exist: the tunnel never creates or changes the folder of a socket (the
// folders it owns are made by make_owned_directory). A stale socket left by a
// dead process is replaced; a socket that a live process still listens on, or
// a path that is not a socket, is never touched: both throw
// std::runtime_error saying what to do.
UnixProtocol::acceptor open_unix_listener(asio::io_context& io, const std::string& path,
                                          Access access);

asio::ip::tcp::acceptor open_tcp_listener(asio::io_context& io, const Endpoint& ep);

// A folder the tunnel owns (<run_dir> and the folders in it): created with
// `access` when missing (missing parents 0755, never changed when present);
// when present it must be a directory (not a link) owned by access.owner (the
// tunnel's user by default), and then gets `access`. A folder of another user is refused, never
// taken over: throws std::runtime_error saying why.
void make_owned_directory(const std::string& path, Access access);

// Who is at the other end of an accepted local socket: "ip:port" (TCP),
// "pid N" (UNIX, from SO_PEERCRED), or "" when unknown.
std::string describe_client(int fd);

// What a UNIX target must be besides a socket that is not a link.
struct UnixTargetRule {
  // Neither the socket file nor its listener may be root's: for targets in a
  // folder others can write, where only unprivileged QEMU listens.
  bool refuse_root = false;
};

// Connects to a TCP or UNIX endpoint within `timeout`; returns the connected
// fd. Throws std::runtime_error saying why not.
// A UNIX endpoint is opened without following a link and connected through
// that very file (/proc/self/fd/N), so what is checked is what is connected,
// before a connection is made: it must be a socket, not a symbolic link, and
// obey `rule`; after connecting, the process listening on it must be the
// socket file's owner (a hard link to another user's socket is refused).
// A TCP socket carries SO_MARK `mark` when not 0 (Config::socket_mark()).
asio::awaitable<Fd> connect_to(asio::io_context& io, const Endpoint& ep,
                               std::chrono::milliseconds timeout, UnixTargetRule rule = {},
                               uint32_t mark = 0);

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

// What an accept loop does after an error. An error like EMFILE (no file
// descriptor left) repeats at once as long as its cause lasts: without a
// pause the loop would spin on a core and write a line each time. So it waits
// before the next accept, 10 ms after the first error, doubling up to 1 s
// while errors follow one another, and logs one line per wait; an accept that
// succeeds starts again from 10 ms.
class AcceptBackoff {
 public:
  static constexpr std::chrono::milliseconds kFirst{10}, kLongest{1000};

  explicit AcceptBackoff(std::string where) : where_(std::move(where)) {}
  asio::awaitable<void> after_error(const boost::system::error_code& ec);
  void succeeded() { delay_ = kFirst; }

 private:
  std::string where_;  // the listener, for the log
  std::chrono::milliseconds delay_ = kFirst;
};

// The next connection on `acceptor`, for the tunnel's accept loops:
//   while (auto sock = co_await accept_next(acceptor, backoff, s.stopping)) ...
// nullopt once the loop must end: the tunnel is stopping, or the acceptor was
// closed (a released reservation). After an accept error it waits as
// `backoff` says and accepts again.
template <class Acceptor>
asio::awaitable<std::optional<typename Acceptor::protocol_type::socket>> accept_next(
    Acceptor& acceptor, AcceptBackoff& backoff, const bool& stopping) {
  while (!stopping) {
    boost::system::error_code ec;
    auto sock = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping || !acceptor.is_open()) break;
    if (!ec) {
      backoff.succeeded();
      co_return std::move(sock);
    }
    co_await backoff.after_error(ec);
  }
  co_return std::nullopt;
}

// The credentials of the process at the other end of a UNIX socket
// (SO_PEERCRED: for a connected socket, its listener's), or nullopt.
std::optional<ucred> peer_credentials(int unix_fd);

// "group name" -> gid; throws std::runtime_error naming the config `key` when
// unknown. "" -> -1.
gid_t lookup_group(const std::string& name, const std::string& key = "socket_group");

}  // namespace xmig::tunnel
