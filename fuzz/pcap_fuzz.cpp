// Fuzz target: the offline check on a capture file (verify::analyze_pcap):
// libpcap reads the file, every frame goes through flows and classification,
// and the report is rendered as text and JSON (names and reasons carry bytes
// from the capture, such as SNI and ALPN).
// Pass: a file is either refused with CaptureError naming it or reported;
// rendering never fails; no sanitizer report.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/fd.hpp"
#include "fuzz/check.hpp"
#include "verify/verify.hpp"

using namespace xmig::verify;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The file lives in memory: libpcap opens it by path like any capture.
  xmig::Fd file(::memfd_create("capture", MFD_CLOEXEC));
  XMIG_FUZZ_CHECK(file.get() >= 0);
  XMIG_FUZZ_CHECK(::write(file.get(), data, size) == static_cast<ssize_t>(size));
  std::string path = "/proc/self/fd/" + std::to_string(file.get());
  try {
    Report report = analyze_pcap(path);
    XMIG_FUZZ_CHECK(!render_text(report).empty());
    XMIG_FUZZ_CHECK(!render_json(report).empty());
  } catch (const CaptureError& e) {
    XMIG_FUZZ_CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
  return 0;
}
