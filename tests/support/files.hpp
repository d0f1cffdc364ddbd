// Files for tests: a temporary directory that cleans itself up, whole-file
// reads, hashes of files and buffers, and deterministic incompressible data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

namespace xmig::test {

namespace fs = std::filesystem;

class TempDir {
 public:
  // Creates a fresh directory under $TMPDIR (or /tmp), named after the test.
  explicit TempDir(const std::string& prefix = "xmig-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
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

}  // namespace xmig::test
