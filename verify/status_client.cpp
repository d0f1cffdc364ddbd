// Status endpoint client and kTLS counters (see status_client.hpp).
#include "verify/status_client.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "base/fd.hpp"

namespace xmig::verify {

namespace {

// The raw value after "key": in a flat JSON object (string unescaped for the
// simple escapes the tunnel writes, or the number's text); "" when absent.
std::string field(const std::string& obj, const std::string& key) {
  std::string needle = "\"" + key + "\":";
  size_t at = obj.find(needle);
  if (at == std::string::npos) return "";
  size_t i = at + needle.size();
  if (i >= obj.size()) return "";
  std::string out;
  if (obj[i] == '"') {
    for (++i; i < obj.size() && obj[i] != '"'; ++i) {
      if (obj[i] == '\\' && i + 1 < obj.size()) ++i;
      out += obj[i];
    }
    return out;
  }
  while (i < obj.size() && obj[i] != ',' && obj[i] != '}') out += obj[i++];
  return out;
}

uint64_t number(const std::string& s) {
  return s.empty() ? 0 : std::strtoull(s.c_str(), nullptr, 10);
}

Fd connect_endpoint(const tunnel::Endpoint& ep, std::string* why) {
  if (ep.is_unix()) {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (ep.path.size() >= sizeof addr.sun_path) {
      *why = "path too long";
      return Fd();
    }
    std::memcpy(addr.sun_path, ep.path.c_str(), ep.path.size() + 1);
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      *why = strerror(errno);
      return Fd();
    }
    return fd;
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &res) != 0 || !res) {
    *why = "cannot resolve " + ep.host;
    return Fd();
  }
  Fd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  bool ok = fd && ::connect(fd.get(), res->ai_addr, res->ai_addrlen) == 0;
  if (!ok) *why = strerror(errno);
  ::freeaddrinfo(res);
  return ok ? std::move(fd) : Fd();
}

// Calls `each` with every flat object of the top-level array "key":[...].
template <class Each>
void for_each_object(const std::string& json, const std::string& key, Each each) {
  const std::string needle = "\"" + key + "\":[";
  size_t at = json.find(needle);
  if (at == std::string::npos) return;
  // Split the array into its flat objects, minding braces inside strings.
  bool in_string = false;
  size_t start = std::string::npos;
  for (size_t i = at + needle.size(); i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{') {
      start = i;
    } else if (c == '}' && start != std::string::npos) {
      each(json.substr(start, i - start + 1));
      start = std::string::npos;
    } else if (c == ']') {
      break;
    }
  }
}

}  // namespace

TunnelStatus parse_status(const std::string& json) {
  TunnelStatus st;
  st.name = field(json, "name");
  for_each_object(json, "active", [&](const std::string& obj) {
    st.active.push_back({
        .direction = field(obj, "direction"),
        .peer = field(obj, "peer"),
        .channel = field(obj, "channel"),
        .migration = field(obj, "migration"),
        .client = field(obj, "client"),
        .local = field(obj, "local"),
        .id = number(field(obj, "id")),
        .to_peer = number(field(obj, "to_peer")),
        .from_peer = number(field(obj, "from_peer")),
        .rate = number(field(obj, "rate")),
        .age_seconds = std::strtod(field(obj, "age_seconds").c_str(), nullptr),
    });
  });
  for_each_object(json, "recent", [&](const std::string& obj) {
    st.recent.push_back({
        .direction = field(obj, "direction"),
        .peer = field(obj, "peer"),
        .channel = field(obj, "channel"),
        .tls = field(obj, "tls"),
        .cipher = field(obj, "cipher"),
        .mode = field(obj, "mode"),
        .error = field(obj, "error"),
        .result = field(obj, "result"),
        .client = field(obj, "client"),
        .migration = field(obj, "migration"),
        .id = number(field(obj, "id")),
        .to_peer = number(field(obj, "to_peer")),
        .from_peer = number(field(obj, "from_peer")),
        .closed_unix = static_cast<int64_t>(number(field(obj, "closed_unix"))),
    });
  });
  return st;
}

TunnelStatus fetch_status(const tunnel::Endpoint& ep, std::chrono::milliseconds timeout) {
  std::string why;
  Fd fd = connect_endpoint(ep, &why);
  if (!fd) throw std::runtime_error("status endpoint " + ep.str() + ": " + why);
  const std::string request = "GET /status HTTP/1.0\r\n\r\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    throw std::runtime_error("status endpoint " + ep.str() + ": " + strerror(errno));
  std::string reply;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[8192];
  while (reply.size() < (4u << 20)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) throw std::runtime_error("status endpoint " + ep.str() + ": timed out");
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  size_t body = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.0 200", 0) != 0 || body == std::string::npos)
    throw std::runtime_error("status endpoint " + ep.str() + ": unexpected reply \"" +
                             reply.substr(0, reply.find('\r')) + "\"");
  return parse_status(reply.substr(body + 4));
}

std::map<std::string, uint64_t> read_ktls_counters(const std::string& path) {
  std::map<std::string, uint64_t> out;
  std::ifstream in(path);
  std::string name;
  uint64_t value = 0;
  while (in >> name >> value) out[name] = value;
  return out;
}

}  // namespace xmig::verify
