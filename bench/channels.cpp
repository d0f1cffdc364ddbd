#include "bench/channels.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "base/fd.hpp"

namespace xmig::bench {

namespace {

using Clock = std::chrono::steady_clock;

// What each channel sends first: a magic word and its index.
constexpr uint64_t kMagic = 0x786d69672d636831;  // "xmig-ch1"
constexpr size_t kHeader = 2 * sizeof(uint64_t);

// Reads exactly kHeader bytes before `deadline`; false on EOF, error or timeout.
bool read_header(int fd, uint64_t header[2], Clock::time_point deadline) {
  auto* out = reinterpret_cast<char*>(header);
  size_t got = 0;
  while (got < kHeader) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    ssize_t n = ::recv(fd, out + got, kHeader - got, 0);
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

ChannelSetupResult run_channel_setup(const ChannelSetupOptions& opts, Listener& sink) {
  ChannelSetupResult result;
  const auto deadline = Clock::now() + opts.timeout;
  std::vector<Fd> accepted;
  std::string sink_error;
  Clock::time_point last_header;
  // The sink: accepts the channels one by one and reads each one's header.
  std::thread sink_thread([&] {
    for (unsigned i = 0; i < opts.channels; ++i) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      int fd = left.count() > 0 ? sink.accept(left) : -1;
      if (fd < 0) {
        sink_error = "channel " + std::to_string(i) + " of " + std::to_string(opts.channels) +
                     " never reached the sink";
        return;
      }
      accepted.emplace_back(fd);
      uint64_t header[2] = {0, 0};
      if (!read_header(fd, header, deadline) || header[0] != kMagic) {
        sink_error = "channel " + std::to_string(i) + " reached the sink without its header";
        return;
      }
      if (header[1] != i) {
        sink_error = "the sink's channel " + std::to_string(i) + " is the one opened as " +
                     std::to_string(header[1]) + ": out of order";
        return;
      }
    }
    last_header = Clock::now();
  });

  std::vector<Fd> opened;
  const auto start = Clock::now();
  try {
    for (unsigned i = 0; i < opts.channels; ++i) {
      opened.emplace_back(connect_to(opts.connect));
      const uint64_t header[2] = {kMagic, i};
      if (::send(opened.back().get(), header, kHeader, MSG_NOSIGNAL) !=
          static_cast<ssize_t>(kHeader))
        throw std::runtime_error("channel " + std::to_string(i) +
                                 ": send: " + std::strerror(errno));
    }
  } catch (const std::exception& e) {
    result.error = e.what();
  }
  sink_thread.join();
  if (result.error.empty()) result.error = sink_error;
  if (result.error.empty())
    result.seconds = std::chrono::duration<double>(last_header - start).count();
  return result;
}

}  // namespace xmig::bench
