// The CA directory: creation, loading, and the rollover that lets a cluster
// trust the old and the new CA at the same time (ca-bundle.pem) until retire.
#include <openssl/x509.h>

#include <cctype>
#include <ctime>

#include "certs/detail.hpp"

namespace xmig::certs {

namespace {

fs::path old_path(const fs::path& dir, const char* name) {
  return dir / (std::string(name) + ".old");
}

// True when text ends with pattern, where '0' in pattern stands for any digit.
bool ends_with_pattern(const std::string& text, const std::string& pattern) {
  if (text.size() < pattern.size()) return false;
  std::string tail = text.substr(text.size() - pattern.size());
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    bool ok = pattern[i] == '0' ? std::isdigit(static_cast<unsigned char>(tail[i])) != 0
                                : tail[i] == pattern[i];
    if (!ok) return false;
  }
  return true;
}

// "<old CN without a trailing date> YYYY-MM-DD" (UTC), with the time of day
// added when that would repeat the old name (two CAs with one subject confuse
// people and some TLS stacks).
std::string rollover_name(const std::string& old_cn) {
  std::string base = old_cn;
  for (const std::string pattern : {" 0000-00-00 00:00:00", " 0000-00-00"}) {
    if (ends_with_pattern(base, pattern)) {
      base.resize(base.size() - pattern.size());
      break;
    }
  }
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", &tm);
  std::string name = base + " " + date;
  if (name == old_cn) {
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    name = base + " " + date;
  }
  return name.size() > 64 ? name.substr(name.size() - 64) : name;
}

}  // namespace

Pem ca_init(const fs::path& dir, const CaOptions& opts, bool force) {
  detail::ensure_dir(dir);
  for (const char* name : {kCaCertFile, kCaKeyFile}) {
    if (fs::exists(dir / name) && !force)
      throw Error((dir / name).string() +
                  ": a CA already exists here; refusing to overwrite it (every node certificate "
                  "depends on it). To replace it without breaking the cluster use 'xmig-certs ca "
                  "rollover --dir " +
                  dir.string() + "'; to discard it on purpose use 'xmig-certs ca init --force'");
  }
  Pem ca = make_ca(opts);
  detail::Staged key(dir / kCaKeyFile, ca.key, 0600);
  detail::Staged cert(dir / kCaCertFile, ca.cert, 0644);
  if (force) fs::remove(dir / kCaBundleFile);  // a bundle of the discarded CA is stale
  key.commit();
  cert.commit();
  detail::fsync_dir(dir);
  return ca;
}

CaDir load_ca_dir(const fs::path& dir) {
  fs::path cert_file = dir / kCaCertFile;
  if (!fs::exists(cert_file))
    throw Error(cert_file.string() + ": no CA here (create one with 'xmig-certs ca init --dir " +
                dir.string() + "', or point --ca at the directory that holds ca-cert.pem)");
  if (!fs::exists(dir / kCaKeyFile))
    throw Error((dir / kCaKeyFile).string() +
                ": the CA key is missing; signing needs the CA directory made by 'xmig-certs ca "
                "init' (a node's ca-cert.pem alone cannot sign)");
  CaDir out;
  out.ca = load_pem_files(cert_file, dir / kCaKeyFile);
  X509Ptr current = detail::parse_cert(out.ca.cert, cert_file.string());
  if (!detail::is_ca(current.get()))
    throw Error(cert_file.string() +
                ": is not a CA certificate (basicConstraints CA:TRUE "
                "missing); point --ca at the directory made by 'ca init'");

  fs::path bundle_file = dir / kCaBundleFile;
  if (!fs::exists(bundle_file)) {
    out.bundle = out.ca.cert;
    return out;
  }
  out.bundle = read_file(bundle_file);
  bool found = false;
  for (auto& c : parse_certs(out.bundle, bundle_file.string()))
    found = found || X509_cmp(c.get(), current.get()) == 0;
  if (!found)
    throw Error(bundle_file.string() +
                ": does not contain the current CA (ca-cert.pem); nodes would not trust new "
                "certificates. Restore it, or remove it if no rollover is in progress");
  return out;
}

Pem ca_rollover(const fs::path& dir, const CaOptions& opts) {
  CaDir current = load_ca_dir(dir);
  if (fs::exists(old_path(dir, kCaCertFile)))
    throw Error(old_path(dir, kCaCertFile).string() +
                ": an earlier rollover is still in progress; once every node has a certificate "
                "from the current CA, finish it with 'xmig-certs ca retire --dir " +
                dir.string() + "', then roll over again");
  CaOptions next_opts = opts;
  if (next_opts.name.empty()) next_opts.name = rollover_name(describe(current.ca.cert).subject_cn);
  Pem next = make_ca(next_opts);

  detail::Staged old_cert(old_path(dir, kCaCertFile), current.ca.cert, 0644);
  detail::Staged old_key(old_path(dir, kCaKeyFile), current.ca.key, 0600);
  detail::Staged bundle(dir / kCaBundleFile, next.cert + current.ca.cert, 0644);
  detail::Staged key(dir / kCaKeyFile, next.key, 0600);
  detail::Staged cert(dir / kCaCertFile, next.cert, 0644);
  old_cert.commit();
  old_key.commit();
  bundle.commit();
  key.commit();
  cert.commit();
  detail::fsync_dir(dir);
  return next;
}

void ca_retire(const fs::path& dir) {
  if (!fs::exists(old_path(dir, kCaCertFile)))
    throw Error(old_path(dir, kCaCertFile).string() +
                ": no rollover in progress, nothing to retire (start one with 'xmig-certs ca "
                "rollover --dir " +
                dir.string() + "')");
  CaDir current = load_ca_dir(dir);
  detail::Staged bundle(dir / kCaBundleFile, current.ca.cert, 0644);
  bundle.commit();
  for (const char* name : {kCaCertFile, kCaKeyFile}) {
    fs::path from = old_path(dir, name);
    if (!fs::exists(from)) continue;
    std::error_code ec;
    fs::rename(from, dir / (std::string(name) + ".retired"), ec);
    if (ec)
      throw Error("cannot rename " + from.string() + ": " + ec.message() +
                  " (check permissions of " + dir.string() + ")");
  }
  detail::fsync_dir(dir);
}

}  // namespace xmig::certs
