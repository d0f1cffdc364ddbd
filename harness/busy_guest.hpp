// harness/busy_guest: a guest that keeps writing its memory while it is
// migrated (issue 16, "busy guests"), and what its serial port says.
//
// The guest is harness/busy_guest/guest.c, a multiboot kernel of a few KiB
// built with the harness (no Linux, no disk image: QEMU boots it with -kernel
// in milliseconds under TCG). It dirties `mib` MiB of its RAM at `rate` MiB/s
// (one 32-bit write per 4 KiB page, so each page is sent whole) and prints
// "xmig-busy n=N pages=P stale=S" once a second on COM1. N counts the
// seconds the guest has run: after a migration the destination's lines must
// carry on from the source's, which shows the guest arrived alive with its
// loop running. There is no RAM comparison (the memory changes all the time);
// instead each page holds the number of the pass that last wrote it, and the
// guest checks it before writing again: S counts pages that held anything
// else, i.e. writes a migration lost.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace xmig::harness {

namespace fs = std::filesystem;

// What the guest does: MiB dirtied over and over, at MiB per second.
struct BusyLoad {
  uint64_t mib = 256;
  uint64_t rate_mib_per_s = 32;
};

// The built guest image ($XMIG_BUSY_GUEST, else the build's); throws naming
// the path when it is missing.
fs::path busy_guest_kernel();
// The kernel command line that sets the load.
std::string busy_guest_args(const BusyLoad& load);
// Guest RAM for the load: the dirtied buffer starts at 16 MiB, after the image.
uint64_t busy_guest_ram_mib(const BusyLoad& load);

// The complete counter lines of a serial log.
struct BusyCounters {
  size_t lines = 0;
  std::optional<uint64_t> first, last;              // N of the first and last line
  std::optional<uint64_t> first_pages, last_pages;  // P of the first and last line
  uint64_t stale = 0;                               // S of the last line: pages that arrived stale
  bool consecutive = true;                          // each N is the one before + 1
  bool started = false;                             // the "xmig-busy start" line is there
};
BusyCounters busy_counters(std::string_view serial);
// Reads serial_log until it holds at least `lines` counter lines or timeout
// passes; returns what it last read.
BusyCounters wait_for_busy_counters(const fs::path& serial_log, size_t lines,
                                    std::chrono::milliseconds timeout);

// Seconds the guest needs to go over its whole buffer once (at least 1).
uint64_t busy_pass_seconds(const BusyLoad& load);

// Whether the destination's counters carry on from the source's: at least
// `min_lines` consecutive lines, the first one after the source's last
// complete line (one more when the source was stopped in the middle of a
// line, whose end then went to the destination's log), more pages written,
// and no stale page found. Empty when so, else why not.
std::string busy_continues(const BusyCounters& source, const BusyCounters& destination,
                           size_t min_lines);

}  // namespace xmig::harness
