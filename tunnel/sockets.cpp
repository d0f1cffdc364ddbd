#include "tunnel/sockets.hpp"

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace xmig::tunnel {

std::string describe_client(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  if (ss.ss_family == AF_UNIX) {
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
      return "pid " + std::to_string(cred.pid);
    return "";
  }
  return address_text(ss);
}

namespace {

std::string errno_text() {
  return strerror(errno);
}

// True when a process accepts connections on the UNIX socket at path.
bool someone_listens(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return live;
}

}  // namespace

void make_directory(const std::string& path, unsigned mode, gid_t group) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    bool last = pos == std::string::npos;
    if (::mkdir(partial.c_str(), last ? mode : 0755) != 0 && errno != EEXIST)
      throw std::runtime_error("cannot create directory " + partial + ": " + errno_text() +
                               "; fix: check run_dir and the permissions of its parent");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw std::runtime_error(path +
                             " exists and is not a directory; fix: remove it or change run_dir");
  ::chmod(path.c_str(), mode);
  if (group != static_cast<gid_t>(-1) && ::chown(path.c_str(), -1, group) != 0)
    throw std::runtime_error("cannot give " + path + " to group " + std::to_string(group) + ": " +
                             errno_text());
}

UnixProtocol::acceptor open_unix_listener(asio::io_context& io, const std::string& path,
                                          unsigned socket_mode, gid_t group) {
  std::string dir = path.substr(0, path.rfind('/'));
  // The directory must let through whoever the socket's mode lets in.
  make_directory(dir, (socket_mode & 0007) ? 0755 : 0750, group);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw std::runtime_error(path +
                               " exists and is not a socket; fix: move it away (xmig "
                               "never deletes files it did not create)");
    if (someone_listens(path))
      throw std::runtime_error(path +
                               " is in use by a running process (another xmig-tunnel?); "
                               "fix: stop it, or give this tunnel another run_dir");
    ::unlink(path.c_str());  // stale: its listener is gone
  }
  UnixProtocol::acceptor acceptor(io);
  try {
    acceptor.open();
    acceptor.bind(UnixProtocol::endpoint(path));
    acceptor.listen(asio::socket_base::max_listen_connections);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot listen on " + path + ": " + e.code().message() +
                             "; fix: check the permissions of " + dir);
  }
  ::chmod(path.c_str(), socket_mode);
  if (group != static_cast<gid_t>(-1)) (void)::chown(path.c_str(), -1, group);
  return acceptor;
}

asio::ip::tcp::acceptor open_tcp_listener(asio::io_context& io, const Endpoint& ep) {
  asio::ip::tcp::acceptor acceptor(io);
  try {
    asio::ip::tcp::resolver resolver(io);
    auto results =
        resolver.resolve(ep.host, std::to_string(ep.port), asio::ip::tcp::resolver::passive);
    auto endpoint = results.begin()->endpoint();
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot listen on " + ep.str() + ": " + e.code().message() +
                             "; fix: choose a free address and port");
  }
  return acceptor;
}

asio::awaitable<void> connect_tcp(asio::ip::tcp::socket& sock, const Endpoint& ep, uint32_t mark) {
  asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
  auto results =
      co_await resolver.async_resolve(ep.host, std::to_string(ep.port), asio::use_awaitable);
  // Each address in turn, on a fresh socket that carries the mark before it
  // sends its first packet (asio::async_connect opens sockets itself).
  boost::system::error_code last = asio::error::host_not_found;
  for (const auto& entry : results) {
    boost::system::error_code ignored;
    sock.close(ignored);
    sock.open(entry.endpoint().protocol());
    if (mark != 0 &&
        ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
      throw std::runtime_error(
          std::string("SO_MARK (the mark that exempts the tunnel's sockets from the "
                      "[intercept] redirect): ") +
          strerror(errno) + "; fix: run the tunnel with CAP_NET_ADMIN (as root)");
    co_await sock.async_connect(entry.endpoint(), asio::redirect_error(asio::use_awaitable, last));
    if (!last) break;
  }
  if (last) throw boost::system::system_error(last);
  sock.set_option(asio::ip::tcp::no_delay(true));
}

asio::awaitable<Fd> connect_to(asio::io_context& io, const Endpoint& ep,
                               std::chrono::milliseconds timeout, uint32_t mark) {
  try {
    if (ep.is_unix()) {
      UnixProtocol::socket sock(io);
      Deadline deadline(io, timeout, [&] { sock.close(); });
      co_await sock.async_connect(UnixProtocol::endpoint(ep.path), asio::use_awaitable);
      co_return Fd(sock.release());
    }
    asio::ip::tcp::socket sock(io);
    Deadline deadline(io, timeout, [&] { sock.close(); });
    co_await connect_tcp(sock, ep, mark);
    co_return Fd(sock.release());
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error(e.code() == asio::error::operation_aborted ||
                                     e.code() == asio::error::bad_descriptor
                                 ? "connect timed out"
                                 : e.code().message());
  }
}

Deadline::Deadline(asio::io_context& io, std::chrono::milliseconds timeout,
                   std::function<void()> on_expire)
    : state_(std::make_shared<State>()), timer_(io, timeout) {
  state_->on_expire = std::move(on_expire);
  timer_.async_wait([state = state_](boost::system::error_code ec) {
    if (ec || state->disarmed) return;
    state->expired = true;
    state->on_expire();
  });
}

Deadline::~Deadline() {
  state_->disarmed = true;
  timer_.cancel();
}

gid_t lookup_group(const std::string& name) {
  if (name.empty()) return static_cast<gid_t>(-1);
  struct group* g = ::getgrnam(name.c_str());
  if (!g)
    throw std::runtime_error("socket_group \"" + name +
                             "\" does not exist; fix: name an "
                             "existing group (e.g. libvirt-qemu) or remove the key");
  return g->gr_gid;
}

}  // namespace xmig::tunnel
