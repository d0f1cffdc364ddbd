// harness/files: files for tests and benchmarks: a temporary directory that
// cleans itself up, whole-file reads, hashes of files and buffers,
// deterministic incompressible data, and where the built tools are.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

namespace xmig::harness {

namespace fs = std::filesystem;

class TempDir {
 public:
  // Creates a fresh directory under $TMPDIR (or /tmp), named prefix-XXXXXX;
  // removed at the end unless keep() was called or XMIG_KEEP_TEST_DIRS is set.
  explicit TempDir(const std::string& prefix = "xmig-test");
  // A directory the caller chose instead (created when missing): never removed.
  static TempDir at(const fs::path& dir);
  ~TempDir();
  // Leaves the directory in place at the end (e.g. its logs, for a look).
  void keep() { remove_ = false; }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  TempDir(fs::path dir, bool remove) : path_(std::move(dir)), remove_(remove) {}
  fs::path path_;
  bool remove_ = true;
};

std::string read_file(const fs::path& path);
void write_file(const fs::path& path, const std::string& content);

// Lower-case hex SHA-256 of a file's bytes, or of a buffer.
std::string sha256_file(const fs::path& path);
std::string sha256_hex(std::span<const uint8_t> bytes);

// Deterministic pseudo-random bytes (fast, incompressible) from a seed: the
// same seed and offset give the same bytes, so a sink can verify a stream
// without the source keeping it.
void fill_random(std::span<uint8_t> out, uint64_t seed);

// Path of a built tool, e.g. tool("xmig-tunnel").
std::string tool(const std::string& name);

}  // namespace xmig::harness
