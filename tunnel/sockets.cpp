#include "tunnel/sockets.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
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

void make_owned_directory(const std::string& path, Access access) {
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    const std::string parent = path.substr(0, pos);
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST)
      throw std::runtime_error("cannot create directory " + parent + ": " + errno_text() +
                               "; fix: check run_dir and the permissions of its parent");
  }
  const bool created = ::mkdir(path.c_str(), access.mode & 07777) == 0;
  if (!created && errno != EEXIST)
    throw std::runtime_error("cannot create directory " + path + ": " + errno_text() +
                             "; fix: check run_dir and the permissions of its parent");
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw std::runtime_error(path +
                             " exists and is not a directory (or is a symbolic link); fix: "
                             "remove it or change run_dir");
  const uid_t owner = access.owner != static_cast<uid_t>(-1) ? access.owner : ::geteuid();
  // Just made (by root) for the user the tunnel becomes: handed over.
  if (created && st.st_uid != owner && ::chown(path.c_str(), owner, -1) == 0) st.st_uid = owner;
  if (st.st_uid != owner)
    throw std::runtime_error(path + " belongs to uid " + std::to_string(st.st_uid) +
                             ", not to the tunnel (uid " + std::to_string(owner) +
                             "), which owns run_dir and the folders in it and never changes "
                             "another user's folder; fix: remove it, or give run_dir a path of "
                             "its own");
  if (::chmod(path.c_str(), access.mode & 07777) != 0 ||
      (access.group != static_cast<gid_t>(-1) && ::chown(path.c_str(), -1, access.group) != 0))
    throw std::runtime_error("cannot set mode and group of " + path + ": " + errno_text());
}

UnixProtocol::acceptor open_unix_listener(asio::io_context& io, const std::string& path,
                                          Access access) {
  const std::string dir = path.substr(0, path.rfind('/'));
  struct stat st {};
  if (::stat(dir.empty() ? "/" : dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw std::runtime_error("cannot listen on " + path + ": its folder " + dir +
                             " does not exist (outside run_dir the tunnel only creates the "
                             "socket, never its folder); fix: create the folder, or put the "
                             "socket under run_dir");
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
  ::chmod(path.c_str(), access.mode);
  if (access.group != static_cast<gid_t>(-1)) (void)::chown(path.c_str(), -1, access.group);
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
  // An address needs no lookup: asio's resolver hands every lookup to a
  // thread of its own and back, a wait in front of each channel's dial.
  boost::system::error_code not_an_address;
  const auto address = asio::ip::make_address(ep.host, not_an_address);
  asio::ip::tcp::resolver::results_type results;
  if (not_an_address)  // not with ?: around a co_await: GCC 12 miscompiles it
    results =
        co_await resolver.async_resolve(ep.host, std::to_string(ep.port), asio::use_awaitable);
  else
    results = asio::ip::tcp::resolver::results_type::create(
        asio::ip::tcp::endpoint(address, ep.port), ep.host, std::to_string(ep.port));
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
          strerror(errno) +
          "; fix: start the tunnel as root (with user =, it keeps CAP_NET_ADMIN alone) or "
          "with CAP_NET_ADMIN (tools/xmig-tunnel-transparent.conf)");
    co_await sock.async_connect(entry.endpoint(), asio::redirect_error(asio::use_awaitable, last));
    if (!last) break;
  }
  if (last) throw boost::system::system_error(last);
  sock.set_option(asio::ip::tcp::no_delay(true));
}

namespace {

// The UNIX target at `path`, opened as a file without following a link: the
// fd names the inode that was checked, and connecting through
// /proc/self/fd/N reaches that inode, whatever is renamed in meanwhile.
Fd open_unix_target(const std::string& path, uid_t* owner) {
  Fd node(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!node) throw std::runtime_error(errno_text());
  struct stat st {};
  if (::fstat(node.get(), &st) != 0) throw std::runtime_error(errno_text());
  if (S_ISLNK(st.st_mode))
    throw std::runtime_error(
        "is a symbolic link, which the tunnel never follows to a target (someone who can write "
        "its folder may have planted it); fix: point the target at the socket itself");
  if (!S_ISSOCK(st.st_mode)) throw std::runtime_error("is not a socket");
  *owner = st.st_uid;
  return node;
}

}  // namespace

std::optional<ucred> peer_credentials(int unix_fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(unix_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  return cred;
}

asio::awaitable<Fd> connect_to(asio::io_context& io, const Endpoint& ep,
                               std::chrono::milliseconds timeout, UnixTargetRule rule,
                               uint32_t mark) {
  try {
    if (ep.is_unix()) {
      uid_t owner = 0;
      Fd node = open_unix_target(ep.path, &owner);
      if (rule.refuse_root && owner == 0)
        throw std::runtime_error(
            "the socket belongs to root, and only an unprivileged process (QEMU) listens in a "
            "folder socket_group can write: someone of that group may have linked a root "
            "service there; refused before connecting");
      UnixProtocol::socket sock(io);
      Deadline deadline(io, timeout, [&] { sock.close(); });
      co_await sock.async_connect(
          UnixProtocol::endpoint("/proc/self/fd/" + std::to_string(node.get())),
          asio::use_awaitable);
      Fd connected(sock.release());
      auto listener = peer_credentials(connected.get());
      if (!listener || listener->uid != owner)
        throw std::runtime_error("the socket file belongs to uid " + std::to_string(owner) +
                                 ", but the process " + "listening on it runs as uid " +
                                 (listener ? std::to_string(listener->uid) : std::string("?")) +
                                 ": a link to another user's socket, refused");
      co_return connected;
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

asio::awaitable<void> AcceptBackoff::after_error(const boost::system::error_code& ec) {
  spdlog::error("accept on {}: {}; next accept in {} ms", where_, ec.message(), delay_.count());
  asio::steady_timer pause(co_await asio::this_coro::executor, delay_);
  boost::system::error_code ignored;
  co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  delay_ = std::min(delay_ * 2, kLongest);
}

gid_t lookup_group(const std::string& name, const std::string& key) {
  if (name.empty()) return static_cast<gid_t>(-1);
  struct group* g = ::getgrnam(name.c_str());
  if (!g)
    throw std::runtime_error(key + " \"" + name +
                             "\" does not exist; fix: name an "
                             "existing group or remove the key");
  return g->gr_gid;
}

}  // namespace xmig::tunnel
