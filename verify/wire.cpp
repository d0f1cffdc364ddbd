// On the wire: a canary stream goes through the local tunnel to the peer's
// echo channel and back, while libpcap captures the traffic to the peer's
// port. Then the capture is searched for the canary, parsed as TLS records,
// and its application data measured for entropy.
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "base/socket.hpp"
#include "tunnel/protocol.hpp"
#include "verify/canary.hpp"
#include "verify/capture.hpp"
#include "verify/classify.hpp"
#include "verify/live_detail.hpp"
#include "verify/pcap_flows.hpp"
#include "verify/status_client.hpp"

namespace xmig::verify::detail {

namespace {

const char* kGroup = "wire";

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// A byte stream the canary can travel over: the local tunnel's route, or a
// direct TLS session.
struct Stream {
  std::function<bool(std::string_view)> write;  // all bytes, false on failure
  std::function<size_t(char*, size_t)> read;    // 0 at EOF or failure
  std::function<void()> finish;                 // end of our data (half-close)
  std::string* error;                           // why a write/read failed
};

// Sends the canary in chunks, reading each chunk's echo before the next (so
// neither side can block on a full buffer), then half-closes and reads to EOF.
std::string exchange(const std::string& canary, Stream& s) {
  std::string back;
  back.reserve(canary.size());
  std::vector<char> buf(64 * 1024);
  size_t sent = 0;
  while (sent < canary.size()) {
    size_t n = std::min<size_t>(32 * 1024, canary.size() - sent);
    if (!s.write(std::string_view(canary).substr(sent, n))) return back;
    sent += n;
    while (back.size() < sent) {
      size_t got = s.read(buf.data(), buf.size());
      if (got == 0) {
        if (s.error->empty())
          *s.error = "the echo ended after " + std::to_string(back.size()) + " bytes";
        return back;
      }
      back.append(buf.data(), got);
    }
  }
  s.finish();
  while (back.size() <= canary.size() + buf.size()) {
    size_t got = s.read(buf.data(), buf.size());
    if (got == 0) break;
    back.append(buf.data(), got);
  }
  return back;
}

Fd connect_entry(const tunnel::Endpoint& ep, std::chrono::milliseconds timeout, std::string* why) {
  Fd fd;
  if (ep.is_unix()) {
    fd = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (!fd || ep.path.size() >= sizeof addr.sun_path) {
      *why = "bad UNIX socket path";
      return Fd();
    }
    std::memcpy(addr.sun_path, ep.path.c_str(), ep.path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      *why = "connect " + ep.str() + ": " + strerror(errno);
      return Fd();
    }
  } else {
    try {
      fd = connect_with_timeout(resolve(ep.host, ep.port), timeout, why);
    } catch (const std::exception& e) {
      *why = e.what();
    }
    if (!fd) return fd;
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

// How the tunnel names our end of a connection to its entry in /status
// (tunnel::describe_client): our address on TCP, our pid on a UNIX socket.
std::string own_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  if (ss.ss_family == AF_UNIX) return "pid " + std::to_string(::getpid());
  return address_text(ss);
}

// Sends the canary through the route (or directly) and judges the echo.
void send_canary(LiveContext& c, const std::string& canary, CanaryRun& run) {
  std::string error, back;
  if (run.via_route) {
    const tunnel::RouteConfig* route = nullptr;
    for (const auto& r : c.config.routes)
      if (r.peer == c.opts.peer && r.channel == tunnel::kVerifyChannel) route = &r;
    Fd fd = connect_entry(route->listen, c.opts.timeout, &error);
    if (fd) {
      int raw = fd.get();
      run.client = own_name(raw);
      Stream s{[&](std::string_view b) {
                 while (!b.empty()) {
                   ssize_t n = ::send(raw, b.data(), b.size(), MSG_NOSIGNAL);
                   if (n < 0 && errno == EINTR) continue;
                   if (n <= 0) {
                     error = std::string("send: ") + strerror(errno);
                     return false;
                   }
                   b.remove_prefix(static_cast<size_t>(n));
                 }
                 return true;
               },
               [&](char* buf, size_t n) -> size_t {
                 for (;;) {
                   ssize_t got = ::recv(raw, buf, n, 0);
                   if (got < 0 && errno == EINTR) continue;
                   if (got < 0) error = std::string("recv: ") + strerror(errno);
                   return got > 0 ? static_cast<size_t>(got) : 0;
                 }
               },
               [&] { ::shutdown(raw, SHUT_WR); }, &error};
      back = exchange(canary, s);
    }
  } else {
    TlsSession session = open_session(
        c.address, c.tls->new_client(c.opts.peer, tunnel::kVerifyChannel), c.opts.timeout);
    if (!session.verdict || *session.verdict != 'A') {
      error = session.error.empty() ? "the peer did not accept channel verify" : session.error;
    } else {
      Stream s{[&](std::string_view b) { return session.write_all(b); },
               [&](char* buf, size_t n) { return session.read_some(buf, n); },
               [&] { SSL_shutdown(session.ssl.get()); }, &session.error};
      back = exchange(canary, s);
      error = session.error;
    }
  }
  run.intact = back == canary;
  std::string how = run.via_route ? "through the local tunnel (route " + run.entry +
                                        ", channel verify) to " + c.opts.peer + " and back"
                                  : "directly to " + c.opts.peer +
                                        " with this host's certificate (no [[route]] with channel "
                                        "\"verify\": the local tunnel's data path was not used)";
  if (run.intact) {
    c.report.add(kGroup, "canary round trip", run.via_route ? Status::Pass : Status::Warn,
                 human_bytes(canary.size()) + " sent " + how + ", echoed back intact",
                 run.via_route
                     ? ""
                     : "add to the config: [[route]] listen = \"unix:" + c.config.run_dir +
                           "/verify.sock\" peer = \"" + c.opts.peer + "\" channel = \"verify\"");
  } else {
    size_t same = 0;
    while (same < back.size() && same < canary.size() && back[same] == canary[same]) ++same;
    c.report.add(kGroup, "canary round trip", Status::Fail,
                 "sent " + human_bytes(canary.size()) + " " + how + "; got " +
                     std::to_string(back.size()) + " bytes back, equal for the first " +
                     std::to_string(same) + (error.empty() ? "" : " (" + error + ")"),
                 run.via_route ? "check that the local xmig-tunnel runs with this config, and "
                                 "see both tunnels' logs for the verify connection"
                               : "see the peer's log for the verify connection");
  }
}

// Judges the captured frames: canary absent, TLS framing, entropy.
void judge_capture(LiveContext& c, const LiveCapture& cap, const std::string& iface,
                   const std::string& canary) {
  FlowTable table(FlowOptions{.keep_streams = true, .keep_limit = 32u << 20});
  read_capture(cap, table);

  std::string where = iface + " (port " + std::to_string(c.address.port) + ")";
  uint64_t most[2] = {0, 0};  // stream bytes of the best-covered flow, per direction
  size_t flows = 0;
  std::string not_tls, low_entropy;
  double min_entropy = 8;
  uint64_t entropy_bytes = 0;
  std::string versions;
  for (const auto& f : table.flows()) {
    FlowVerdict v = classify_flow(*f);
    if (!v.has_payload) continue;
    ++flows;
    uint64_t odd = f->dir[0].tls.summary().bad_versions + f->dir[1].tls.summary().bad_versions;
    if (!v.tls || v.status == Status::Fail)
      not_tls += (not_tls.empty() ? "" : "; ") + v.name + ": " + v.reason;
    else if (odd)
      not_tls += (not_tls.empty() ? "" : "; ") + v.name + ": " + std::to_string(odd) +
                 " records with a version other than TLS 1.0-1.2 in the record header";
    else if (versions.find(v.reason.substr(0, v.reason.find(','))) == std::string::npos)
      versions += (versions.empty() ? "" : "; ") + v.reason.substr(0, v.reason.find(','));
    for (int i = 0; i < 2; ++i) {
      const ByteEntropy& e = f->dir[i].tls.app_data();
      if (e.bytes() >= 4096) {
        entropy_bytes += e.bytes();
        min_entropy = std::min(min_entropy, e.bits_per_byte());
        if (e.bits_per_byte() <= kCiphertextEntropy)
          low_entropy += (low_entropy.empty() ? "" : "; ") + f->side(i).str() + " -> " +
                         f->side(1 - i).str() + ": " + fixed(e.bits_per_byte(), 3) + " bits/byte";
      }
    }
    if (std::min(f->dir[0].delivered, f->dir[1].delivered) > std::min(most[0], most[1])) {
      most[0] = f->dir[0].delivered;
      most[1] = f->dir[1].delivered;
    }
  }

  // The capture must have seen the canary cross, both ways, or it proves nothing.
  uint64_t need = canary.size();
  std::string seen =
      count(cap.frames().size(), "frame") + ", " + count(flows, "TCP flow") + " with payload";
  if (cap.dropped() || cap.overflowed()) {
    c.report.add(kGroup, "capture", Status::Fail,
                 seen + " on " + where + ", but " + std::to_string(cap.dropped()) +
                     " frames were dropped" + (cap.overflowed() ? " and the memory cap hit" : ""),
                 "run again on a quieter moment or with a smaller --canary-bytes");
    return;
  }
  if (std::min(most[0], most[1]) < need)
    c.report.add(
        kGroup, "capture", Status::Fail,
        seen + " on " + where + ": no flow carried the " + human_bytes(need) + " canary both ways",
        "capture on the interface that reaches the peer (--interface NAME), and see "
        "the canary round trip");
  else
    c.report.add(kGroup, "capture", Status::Pass,
                 seen + " on " + where + ", the canary's flow among them");

  if (flows == 0) return;  // nothing to judge: the capture finding says why

  // No 16-byte window of the canary anywhere: reassembled streams and raw frames.
  std::string leak = find_canary(CanaryMatcher(canary), table, cap);
  if (leak.empty())
    c.report.add(kGroup, "no canary bytes on the wire", Status::Pass,
                 "no 16-byte window of the canary in " + std::to_string(cap.frames().size()) +
                     " captured frames or the reassembled streams");
  else
    c.report.add(kGroup, "no canary bytes on the wire", Status::Fail,
                 "canary plaintext found " + leak,
                 "the path to " + c.opts.peer +
                     " is not encrypted: check the peer address and "
                     "that xmig-tunnel (not a plaintext relay) listens there");

  if (not_tls.empty())
    c.report.add(kGroup, "TLS records", Status::Pass,
                 "every flow parses as TLS records (" + versions + ")");
  else
    c.report.add(kGroup, "TLS records", Status::Fail, not_tls,
                 "only TLS may travel to the peer's port");

  if (entropy_bytes == 0)
    c.report.add(kGroup, "entropy", Status::Fail, "no TLS application data was captured",
                 "see the TLS records finding");
  else if (low_entropy.empty())
    c.report.add(kGroup, "entropy", Status::Pass,
                 "application data: at least " + fixed(min_entropy, 4) + " bits/byte over " +
                     human_bytes(entropy_bytes) + " (ciphertext > " + fixed(kCiphertextEntropy, 1) +
                     ")");
  else
    c.report.add(kGroup, "entropy", Status::Fail, "low entropy: " + low_entropy,
                 "application data must be ciphertext");
}

}  // namespace

CaptureStart start_capture(const LiveContext& c, const std::vector<PeerAddress>& towards,
                           const std::string& filter) {
  CaptureStart out;
  out.interface = c.opts.interface;
  for (const auto& to : towards) {
    if (!c.opts.interface.empty()) break;
    std::string why, iface = interface_for(to, &why);
    if (iface.empty()) {
      out.error = "cannot tell which interface reaches " + to.ip + ": " + why;
      return out;
    }
    // Addresses behind different interfaces: libpcap's "any" sees them all.
    out.interface = out.interface.empty() || out.interface == iface ? iface : "any";
  }
  try {
    out.capture = std::make_unique<LiveCapture>(out.interface, filter);
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  return out;
}

std::string capture_fix(const std::string& error) {
  return error.find("fix:") == std::string::npos
             ? "run as root or with cap_net_raw,cap_net_admin; or give --interface"
             : "";
}

void read_capture(const LiveCapture& cap, FlowTable& table) {
  for (const auto& f : cap.frames())
    table.add_frame(cap.linktype(), reinterpret_cast<const uint8_t*>(f.data()), f.size());
  table.finish();
}

std::string find_canary(const CanaryMatcher& matcher, const FlowTable& table,
                        const LiveCapture& cap) {
  for (const auto& f : table.flows())
    for (int i = 0; i < 2; ++i)
      if (size_t at = matcher.find_in(f->dir[i].kept); at != std::string_view::npos)
        return "in flow " + f->side(i).str() + " -> " + f->side(1 - i).str() + " at stream byte " +
               std::to_string(at);
  for (size_t i = 0; i < cap.frames().size(); ++i)
    if (size_t at = matcher.find_in(cap.frames()[i]); at != std::string_view::npos)
      return "in captured frame " + std::to_string(i + 1) + " at byte " + std::to_string(at);
  return "";
}

CanaryRun check_wire(LiveContext& c) {
  CanaryRun run;
  for (const auto& r : c.config.routes)
    if (r.peer == c.opts.peer && r.channel == tunnel::kVerifyChannel) {
      run.via_route = true;
      run.entry = r.listen.str();
    }
  std::string canary = make_canary(c.opts.canary_bytes);

  // Capture first, so the canary connection is seen from its SYN. Only flows
  // whose peer side is the peer's tunnel port: across a fleet every tunnel
  // listens on the same port, and the peer's own xmig-verify, run at the same
  // moment, sends plaintext probes from its address to this host's port; those
  // are not traffic towards the peer and must not fail this host's check.
  const std::string ip = c.address.ip, port = std::to_string(c.address.port);
  CaptureStart started = start_capture(c, {c.address},
                                       "tcp and ((dst host " + ip + " and dst port " + port +
                                           ") or (src host " + ip + " and src port " + port + "))");
  std::unique_ptr<LiveCapture>& cap = started.capture;
  const std::string& iface = started.interface;

  run.ktls_before = read_ktls_counters();
  run.started_unix = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  send_canary(c, canary, run);
  if (!cap) {
    c.report.add(kGroup, "capture", Status::Fail,
                 "no capture, so nothing proves the canary was encrypted: " + started.error,
                 capture_fix(started.error));
    return run;
  }
  // Let the last frames (FIN, ACK) reach the capture before stopping it.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  cap->stop();
  judge_capture(c, *cap, iface, canary);
  return run;
}

}  // namespace xmig::verify::detail
