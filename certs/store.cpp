// Files: reading with errors that name the file, atomic writes with fixed modes
// (temporary file, fsync, rename, fsync of the directory), and the libvirt node
// layout written as one set.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "certs/detail.hpp"

namespace xmig::certs {
namespace detail {

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

[[noreturn]] void fail_write(const fs::path& path, int err) {
  throw Error("cannot write " + path.string() + ": " + errno_text(err) +
              " (check that the directory exists and is writable by this user)");
}

bool write_all(int fd, const std::string& content) {
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

Staged::Staged(fs::path final_path, const std::string& content, unsigned mode)
    : final_(std::move(final_path)) {
  fs::path dir = final_.parent_path().empty() ? fs::path(".") : final_.parent_path();
  std::string name =
      ".";  // appended, not "." + string&&: GCC 12 -O3 misreads that as overlapping (-Wrestrict)
  name += final_.filename().string();
  name += ".tmp-XXXXXX";
  std::string tmpl = (dir / name).string();
  // mkostemp creates the file 0600, so key bytes are never readable by others.
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) fail_write(final_, errno);
  tmp_ = tmpl;
  struct stat old {};
  bool replacing = ::stat(final_.c_str(), &old) == 0;
  int err = 0;
  if (::fchmod(fd, mode) != 0 || !write_all(fd, content) || ::fsync(fd) != 0) err = errno;
  // Keep the owner of the file being replaced (e.g. root:qemu); best effort.
  if (!err && replacing && (old.st_uid != ::geteuid() || old.st_gid != ::getegid()) &&
      ::fchown(fd, old.st_uid, old.st_gid) != 0) {
    // Not permitted (not root): the file keeps this user's ownership.
  }
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    ::unlink(tmp_.c_str());
    tmp_.clear();
    fail_write(final_, err ? err : EIO);
  }
}

Staged::~Staged() {
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void Staged::commit() {
  if (::rename(tmp_.c_str(), final_.c_str()) != 0) fail_write(final_, errno);
  tmp_.clear();
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // the renames are done; durability is best effort here
  ::fsync(fd);
  ::close(fd);
}

void ensure_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw Error("cannot create directory " + dir.string() + ": " + ec.message() +
                " (check the path and permissions)");
  if (!fs::is_directory(dir)) throw Error(dir.string() + ": exists and is not a directory");
}

}  // namespace detail

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    std::string fix = err == ENOENT   ? " (check the path; create it with xmig-certs)"
                      : err == EACCES ? " (run as a user that may read it, e.g. root)"
                                      : "";
    throw Error("cannot read " + path.string() + ": " + std::strerror(err) + fix);
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

Pem load_pem_files(const fs::path& cert_file, const fs::path& key_file) {
  Pem pem{read_file(cert_file), read_file(key_file)};
  detail::parse_cert(pem.cert, cert_file.string());
  detail::parse_key(pem.key, key_file.string());
  if (!key_matches(pem.cert, pem.key))
    throw Error(key_file.string() + ": does not belong to the certificate in " +
                cert_file.string() + " (restore the matching pair, or issue a new one)");
  return pem;
}

void write_file_atomic(const fs::path& path, const std::string& content, unsigned mode) {
  detail::Staged staged(path, content, mode);
  staged.commit();
  detail::fsync_dir(path.parent_path());
}

void write_node_dir(const fs::path& dir, const std::string& ca_bundle, const Pem& node) {
  write_node_dir(dir, ca_bundle, node, NodeWriteOptions{});
}

void write_node_dir(const fs::path& dir, const std::string& ca_bundle, const Pem& node,
                    const NodeWriteOptions& opts) {
  count_certs(ca_bundle, "CA bundle");  // throws when there is no certificate
  if (!key_matches(node.cert, node.key))
    throw Error("node key does not belong to the node certificate (nothing written to " +
                dir.string() + ")");
  detail::ensure_dir(dir);

  struct Entry {
    const char* name;
    const std::string& content;
    unsigned mode;
  };
  // Rename order: CA first (so the new cert is trusted as soon as it appears),
  // each key before its certificate.
  const Entry entries[] = {{kCaCertFile, ca_bundle, 0644},
                           {kServerKeyFile, node.key, 0600},
                           {kServerCertFile, node.cert, 0644},
                           {kClientKeyFile, node.key, 0600},
                           {kClientCertFile, node.cert, 0644}};

  // Stage everything first: a failure here leaves the directory untouched.
  std::vector<std::unique_ptr<detail::Staged>> prev, next;
  for (const auto& e : entries) {
    fs::path target = dir / e.name;
    if (opts.keep_previous && fs::exists(target))
      prev.push_back(
          std::make_unique<detail::Staged>(target.string() + ".prev", read_file(target), e.mode));
    next.push_back(std::make_unique<detail::Staged>(target, e.content, e.mode));
  }
  for (auto& s : prev) s->commit();
  for (auto& s : next) s->commit();
  detail::fsync_dir(dir);
}

}  // namespace xmig::certs
