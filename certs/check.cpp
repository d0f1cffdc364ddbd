// Checks of a node directory in libvirt layout. Each finding says what was found
// and what to do; the worst finding decides the exit code (0 ok, 1 warn, 2 fail).
#include <grp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "base/json.hpp"
#include "certs/detail.hpp"

namespace xmig::certs {

namespace {

using Clock = std::chrono::system_clock;

struct Report {
  std::vector<Finding> findings;
  void add(Severity s, std::string check, const fs::path& file, std::string message,
           std::string fix = {}) {
    findings.push_back({s, std::move(check), file.string(), std::move(message), std::move(fix)});
  }
};

std::string date_text(Clock::time_point t) {
  std::time_t tt = Clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string octal_mode(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

// Name of group gid, or its number when it has no name.
std::string group_name(gid_t gid) {
  struct group grp {};
  struct group* found = nullptr;
  std::vector<char> buf(4096);
  if (::getgrgid_r(gid, &grp, buf.data(), buf.size(), &found) == 0 && found) return found->gr_name;
  return std::to_string(gid);
}

}  // namespace

KeyModeVerdict judge_key_mode(const fs::path& file, unsigned mode, const std::string& group) {
  const std::string octal = octal_mode(mode);
  if (mode & 006)
    return {.severity = Severity::Failure,
            .what = "the private key is accessible to all users (mode " + octal +
                    "); xmig-tunnel refuses such a key",
            .fix = "chmod 600 " + file.string() + " (and consider the key exposed: rotate it)"};
  if (mode & 020)
    return {.severity = Severity::Failure,
            .what = "private key is writable by group/others (mode " + octal +
                    "); xmig-tunnel refuses such a key",
            .fix = "chmod go-w " + file.string()};
  if (mode & 040)
    return {.severity = Severity::Warning,
            .what = "private key is readable by group " + group + " (mode " + octal +
                    "); xmig-tunnel accepts this (libvirt keys are often root:qemu 0640), but "
                    "every member of that group can read the key",
            .fix = "if only root (or the tunnel's user) needs it: chmod 600 " + file.string() +
                   "; otherwise make sure group " + group + " holds only the tunnel and QEMU"};
  return {.severity = Severity::Ok, .what = "private key mode " + octal};
}

namespace {

// File modes: a key by judge_key_mode; any other file writable by group or
// others is a failure (someone could swap in their own CA or certificate).
void check_mode(Report& r, const fs::path& file, bool is_key) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return;
  unsigned mode = st.st_mode & 07777;
  if (is_key) {
    KeyModeVerdict v = judge_key_mode(file, mode, group_name(st.st_gid));
    r.add(v.severity, "mode", file, v.what, v.fix);
  } else if (mode & 022) {
    r.add(Severity::Failure, "mode", file,
          "file is writable by group/others (mode " + octal_mode(mode) + ")",
          "chmod go-w " + file.string());
  }
}

// Validity period of one certificate.
void check_validity(Report& r, const fs::path& file, const CertInfo& info, int warn_days,
                    const std::string& renew) {
  Clock::time_point now = Clock::now();
  if (now < info.not_before) {
    r.add(Severity::Failure, "expiry", file, "not valid before " + date_text(info.not_before),
          "check this host's clock (NTP); or wait until then");
    return;
  }
  if (now >= info.not_after) {
    r.add(Severity::Failure, "expiry", file, "expired on " + date_text(info.not_after), renew);
    return;
  }
  auto days_left =
      std::chrono::duration_cast<std::chrono::hours>(info.not_after - now).count() / 24;
  std::string msg =
      std::to_string(days_left) + " days left (expires " + date_text(info.not_after) + ")";
  if (days_left < warn_days)
    r.add(Severity::Warning, "expiry", file, msg + ", fewer than " + std::to_string(warn_days),
          renew);
  else
    r.add(Severity::Ok, "expiry", file, msg);
}

void check_pair(Report& r, const fs::path& dir, const char* cert_name, const char* key_name,
                Purpose purpose, const std::string& bundle, const CheckOptions& opts) {
  fs::path cert_file = dir / cert_name;
  fs::path key_file = dir / key_name;
  const std::string role = purpose == Purpose::TlsServer ? "server" : "client";
  const std::string reissue = "make a new node certificate: 'xmig-certs rotate --ca CA_DIR --dir " +
                              dir.string() + " --name HOST'";

  std::string cert_pem, key_pem;
  bool have_cert = false, have_key = false;
  try {
    cert_pem = read_file(cert_file);
    detail::parse_cert(cert_pem, cert_file.string());
    have_cert = true;
  } catch (const Error& e) {
    r.add(Severity::Failure, "file", cert_file, e.what(),
          "issue one: 'xmig-certs issue --ca CA_DIR --name HOST --out " + dir.string() + "'");
  }
  try {
    key_pem = read_file(key_file);
    detail::parse_key(key_pem, key_file.string());
    have_key = true;
    check_mode(r, key_file, true);
  } catch (const Error& e) {
    r.add(Severity::Failure, "file", key_file, e.what(), "restore the key, or " + reissue);
  }
  if (!have_cert) return;
  check_mode(r, cert_file, false);

  if (have_key) {
    if (key_matches(cert_pem, key_pem))
      r.add(Severity::Ok, "key", key_file, "matches " + cert_file.filename().string());
    else
      r.add(Severity::Failure, "key", key_file,
            "does not belong to " + cert_file.string() + " (TLS handshakes will fail)",
            "restore the matching pair (see *.prev), or " + reissue);
  }

  if (!bundle.empty()) {
    if (auto reason = verify_chain(cert_pem, bundle, Purpose::Any, /*check_time=*/false))
      r.add(Severity::Failure, "chain", cert_file,
            "does not verify against " + (dir / kCaCertFile).string() + ": " + *reason,
            "issue the certificate from the cluster CA, or put the CA that signed it into "
            "ca-cert.pem (during a CA rollover: the CA's ca-bundle.pem)");
    else
      r.add(Severity::Ok, "chain", cert_file, "verifies against " + std::string(kCaCertFile));
  }

  // Usage and names: the rule the tunnel applies to the same files (certs/role.cpp).
  RoleVerdict verdict = check_role(cert_pem, purpose, opts.name,
                                   {.cert = cert_file, .key = key_file, .ca = dir / kCaCertFile});
  if (verdict.message("usage").empty())
    r.add(Severity::Ok, "usage", cert_file, "usable as TLS " + role);
  else
    r.add(Severity::Failure, "usage", cert_file, verdict.message("usage"), verdict.fix);
  CertInfo info = describe(cert_pem, cert_file.string());
  if (verdict.message("san").empty()) {
    std::string names;
    for (const auto& d : info.dns_names) names += (names.empty() ? "" : ", ") + ("DNS:" + d);
    for (const auto& ip : info.ips) names += (names.empty() ? "" : ", ") + ("IP:" + ip);
    r.add(Severity::Ok, "san", cert_file, "names " + (opts.name ? *opts.name : names));
  } else {
    r.add(Severity::Failure, "san", cert_file, verdict.message("san"), verdict.fix);
  }

  check_validity(r, cert_file, info, opts.warn_days, reissue + " before it expires");
}

}  // namespace

const char* to_string(Severity s) {
  switch (s) {
    case Severity::Ok:
      return "ok";
    case Severity::Warning:
      return "warning";
    case Severity::Failure:
      return "failure";
  }
  return "failure";
}

std::vector<Finding> check_node_dir(const fs::path& dir, const CheckOptions& opts) {
  Report r;
  if (!fs::is_directory(dir)) {
    r.add(Severity::Failure, "file", dir, "not a directory",
          "give the node directory, e.g. --dir /etc/pki/qemu");
    return r.findings;
  }

  fs::path ca_file = dir / kCaCertFile;
  std::string bundle;
  try {
    bundle = read_file(ca_file);
    auto cas = parse_certs(bundle, ca_file.string());
    check_mode(r, ca_file, false);
    for (std::size_t i = 0; i < cas.size(); ++i) {
      std::string label = "CA " + std::to_string(i + 1) + " of " + std::to_string(cas.size()) +
                          " ('" + detail::common_name(cas[i].get()) + "')";
      if (!detail::is_ca(cas[i].get())) {
        r.add(Severity::Failure, "usage", ca_file, label + " is not a CA certificate",
              "put the cluster CA's ca-cert.pem (or ca-bundle.pem) here");
        continue;
      }
      CertInfo info = describe(cert_to_pem(cas[i].get()), ca_file.string());
      Report tmp;
      check_validity(tmp, ca_file, info, opts.warn_days,
                     "roll the CA over: 'xmig-certs ca rollover --dir CA_DIR', then reissue");
      for (auto& f : tmp.findings) {
        f.message = label + ": " + f.message;
        r.findings.push_back(std::move(f));
      }
    }
  } catch (const Error& e) {
    bundle.clear();
    r.add(Severity::Failure, "file", ca_file, e.what(),
          "copy the cluster CA's ca-cert.pem here (xmig-certs issue writes it)");
  }

  check_pair(r, dir, kServerCertFile, kServerKeyFile, Purpose::TlsServer, bundle, opts);
  check_pair(r, dir, kClientCertFile, kClientKeyFile, Purpose::TlsClient, bundle, opts);
  return r.findings;
}

int exit_code(const std::vector<Finding>& findings) {
  int code = 0;
  for (const auto& f : findings) {
    if (f.severity == Severity::Failure) return 2;
    if (f.severity == Severity::Warning) code = 1;
  }
  return code;
}

std::string findings_json(const fs::path& dir, const std::vector<Finding>& findings) {
  static const char* status[] = {"ok", "warning", "failure"};
  std::string out = "{\"dir\": " + json_quote(dir.string()) +
                    ", \"status\": " + json_quote(status[exit_code(findings)]) +
                    ", \"exit_code\": " + std::to_string(exit_code(findings)) + ", \"findings\": [";
  for (std::size_t i = 0; i < findings.size(); ++i) {
    const Finding& f = findings[i];
    out += std::string(i ? ",\n  " : "\n  ") +
           "{\"severity\": " + json_quote(to_string(f.severity)) +
           ", \"check\": " + json_quote(f.check) + ", \"file\": " + json_quote(f.file) +
           ", \"message\": " + json_quote(f.message) + ", \"fix\": " + json_quote(f.fix) + "}";
  }
  out += findings.empty() ? "]}\n" : "\n]}\n";
  return out;
}

}  // namespace xmig::certs
