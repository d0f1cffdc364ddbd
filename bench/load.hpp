// bench/: load generation for xmig-bench — a source that pushes incompressible
// data through whatever relays it is pointed at, and a sink that checks every
// byte that arrives.
//
// What a stream carries: 64 KiB chunks. Chunk i of stream s is a 16-byte
// header (magic, s, i) followed by a window of a fixed random pool whose
// offset is a hash of (s, i). The source sends straight from the pool
// (sendmsg with iovecs: no copy, no generation cost on the hot path); the
// sink compares every byte against what that position must hold, so a lost,
// duplicated, reordered or corrupted byte fails the run.
//
// What it must never do: report a throughput for a run whose bytes were not
// all verified; time anything but the transfer itself.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tunnel/endpoint.hpp"

namespace xmig::bench {

// ---- Endpoints and sockets ---------------------------------------------------

// Where the benchmark listens or connects: the tunnel config's spelling
// ("HOST:PORT", "[v6]:PORT", "unix:PATH"), parsed by the tunnel's own parser.
using Endpoint = tunnel::Endpoint;
// Also requires a numeric host (a benchmark never resolves names), and accepts
// port 0 for a listener on a free port. Throws
// std::invalid_argument naming the text and what is wrong.
Endpoint parse_endpoint(const std::string& text);

// A listening socket (TCP or UNIX). Port 0 picks a free port; endpoint() then
// says which. A UNIX socket file is removed when the listener goes.
class Listener {
 public:
  explicit Listener(const Endpoint& where, int backlog = 1024);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  int fd() const { return fd_; }
  const Endpoint& endpoint() const { return where_; }
  // Waits up to timeout for a connection; -1 when none came.
  int accept(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
  Endpoint where_;
};

// Blocking connect; throws std::runtime_error naming the endpoint.
int connect_to(const Endpoint& where);

// ---- The data pattern --------------------------------------------------------

class Pattern {
 public:
  static constexpr size_t kChunk = 64 * 1024;
  static constexpr size_t kHeader = 16;

  // Fills the pool with splitmix64 output from seed (the same at both ends).
  explicit Pattern(uint64_t seed = 0x786d6967, size_t pool_bytes = 8u << 20);

  // Describes bytes [pos, pos+len) of stream `stream` as iovecs into the pool
  // and into headers (storage the caller keeps alive until the send returns;
  // one header per chunk touched). Returns the number of iovecs used; covers
  // less than len when max_iov runs out.
  struct Header {
    uint8_t bytes[kHeader];
  };
  size_t describe(uint32_t stream, uint64_t pos, uint64_t len, iovec* iov, size_t max_iov,
                  Header* headers) const;

  // True when data holds exactly bytes [pos, pos+len) of stream `stream`.
  bool check(uint32_t stream, uint64_t pos, const uint8_t* data, size_t len) const;

  // The stream id a stream's first kHeader bytes name, if they are a header.
  static std::optional<uint32_t> stream_of(const uint8_t* first_header);

 private:
  Header header(uint32_t stream, uint64_t chunk) const;
  size_t window(uint32_t stream, uint64_t chunk) const;
  std::vector<uint8_t> pool_;
};

// ---- Throughput --------------------------------------------------------------

struct StreamOptions {
  // Both ends here (one host), or one of them, for a path between two hosts:
  // the sink runs where the path's exit is, the source where its entry is.
  enum class Role { Both, SourceOnly, SinkOnly };
  Role role = Role::Both;
  Endpoint connect;  // the entry of the path under test
  unsigned streams = 1;
  uint64_t bytes = 1ull << 30;  // total over all streams
  std::chrono::seconds timeout{600};
  // Called about 5 times a second with bytes verified at the sink so far.
  std::function<void(uint64_t)> progress;
};

struct StreamResult {
  uint64_t bytes = 0;          // verified at the sink
  double seconds = 0;          // first connect to last byte verified
  double connect_seconds = 0;  // slowest stream's connect()
  std::string error;           // empty when every stream arrived complete and intact
  double gbps() const { return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0; }
};

// Sends opts.bytes over opts.streams connections to opts.connect while `sink`
// accepts them and verifies every byte; returns when all streams have ended.
// SourceOnly: no sink here (nullptr); the time runs until the far end has
// closed every stream, i.e. after the remote sink read the last byte.
// SinkOnly: accepts and verifies opts.streams streams of opts.bytes in all;
// the time runs from the first connection accepted to the last byte.
StreamResult run_streams(const StreamOptions& opts, Listener* sink, const Pattern& pattern);

// ---- Handshakes --------------------------------------------------------------

struct HandshakeOptions {
  Endpoint connect;
  unsigned connections = 200;
  unsigned concurrency = 4;  // clients connecting at once
  std::chrono::seconds timeout{300};
};

struct HandshakeResult {
  unsigned completed = 0;
  double seconds = 0;
  // Connect latency: connect() until the sink's reply EOF came back, i.e. a
  // full round trip through both ends, TLS handshakes included.
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
  std::string error;
  double per_second() const { return seconds > 0 ? completed / seconds : 0; }
};

// Each connection carries a 16-byte message to the sink, half-closes, and
// waits for the sink to close after checking it.
HandshakeResult run_handshakes(const HandshakeOptions& opts, Listener& sink);

}  // namespace xmig::bench
