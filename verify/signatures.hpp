// Signatures of plaintext migration protocols, searched for anywhere in a
// TCP stream (not only at its start: a capture may join a stream late).
//
//   QEMU migration stream   "QEVM" 0x5145564d + version 3 (QEMU_VM_FILE_MAGIC/VERSION)
//   QEMU multifd channel    0x11223344 + version 1 (MultiFDInit_t / MultiFDPacket_t)
//   NBD                     "NBDMAGIC", "IHAVEOPT", option reply magic
//                           0x0003e889045565a9, request 0x25609513, simple reply
//                           0x67446698, structured reply 0x668e33ef (the 4-byte
//                           magics only with the fields after them in range)
//   libvirt RPC             length (28 bytes .. 32 MiB) + program 0x20008086
//                           (REMOTE), 0x20008087 (QEMU) or 0x6b656570 (keepalive)
//                           + version 1 + type/status in range
//
// Every signature is at least 8 fixed bytes or a 4-byte magic with 4 more
// constrained bytes, so a false match in ciphertext has a probability below
// 2^-50 per position.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xmig::verify {

struct SignatureHit {
  std::string protocol;  // "QEMU migration stream", "NBD", ...
  uint64_t offset = 0;   // where in the stream the first match starts
  uint64_t count = 0;    // matches seen
};

// Scans one direction of a stream; every position is looked at exactly once,
// including matches that straddle two feeds.
class SignatureScanner {
 public:
  void feed(const uint8_t* p, size_t n);
  // Bytes were lost: matches across the gap are impossible.
  void gap(uint64_t missing);
  // End of stream: scans the last few positions.
  void finish();
  const std::vector<SignatureHit>& hits() const { return hits_; }

 private:
  void scan(const uint8_t* b, size_t n, size_t limit, uint64_t base);
  void hit(const char* protocol, uint64_t offset);

  std::string carry_;          // the last bytes whose positions are not scanned yet
  uint64_t carry_offset_ = 0;  // stream offset of carry_[0]
  std::vector<SignatureHit> hits_;
};

}  // namespace xmig::verify
