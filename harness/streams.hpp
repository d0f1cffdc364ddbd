// harness/streams: byte streams for tests: blocking sockets, deterministic data,
// hashes.
//
// A sender produces `bytes` of fill_random(seed) data and returns the SHA-256
// of what it sent; a receiver hashes everything up to EOF. Equal hashes at
// both ends prove nothing was lost, duplicated, reordered or corrupted.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.hpp"

namespace xmig::harness {

struct Hashed {
  uint64_t bytes = 0;
  std::string sha256;
  std::string error;  // empty when the stream ended with a clean EOF / full send
};

Fd connect_unix(const std::string& path);
// To 127.0.0.1:port, from `source` (an IPv4 address of this machine, any of
// 127/8) when given, so that a test can be a source other than the peers.
Fd connect_tcp(uint16_t port, const std::string& source = "");
// `count` connections to 127.0.0.1:port from `source` that each send the
// header of a TLS handshake record announcing a 16 KiB ClientHello and one
// byte of it: the server must buffer the record (OpenSSL holds a read buffer
// for each), as for a slow ClientHello. Held until the Fds are closed.
std::vector<Fd> partial_client_hellos(uint16_t port, const std::string& source, unsigned count);

class Listener {
 public:
  static Listener unix_socket(const std::string& path);
  static Listener tcp(uint16_t port = 0);  // 127.0.0.1; 0 picks a free port
  // Waits up to `timeout` for a connection; an invalid Fd when none came.
  Fd accept(std::chrono::milliseconds timeout);
  uint16_t port() const { return port_; }
  std::string endpoint() const;  // config spelling: "127.0.0.1:P" or "unix:PATH"

 private:
  Fd fd_;
  uint16_t port_ = 0;
  std::string path_;
};

Hashed send_stream(int fd, uint64_t bytes, uint64_t seed);
Hashed recv_stream(int fd);

struct Sha256;  // incremental SHA-256 of a stream (streams.cpp)

// recv_stream in steps: a test can stop reading part way (the stream then
// stands still, its buffers full), look at something, and go on; the hash
// covers every byte received, as recv_stream's does.
class StreamReceiver {
 public:
  explicit StreamReceiver(int fd);
  ~StreamReceiver();
  StreamReceiver(const StreamReceiver&) = delete;
  StreamReceiver& operator=(const StreamReceiver&) = delete;

  // Receives until `total` bytes have arrived since the start, or EOF or an
  // error; returns the bytes received so far.
  uint64_t receive_until(uint64_t total);
  // Receives up to EOF and returns the whole stream's hash.
  Hashed finish();

 private:
  int fd_;
  std::unique_ptr<Sha256> sha_;
  Hashed h_;
  bool ended_ = false;
};
// The hash send_stream(…, bytes, seed) will report, without a socket.
std::string expected_sha256(uint64_t bytes, uint64_t seed);

void shutdown_write(int fd);
// close() with a zero linger: the peer sees a reset.
void reset(Fd& fd);
// Blocks up to `timeout` for the socket to become readable (data, EOF or error).
bool wait_readable(int fd, std::chrono::milliseconds timeout);

}  // namespace xmig::harness
