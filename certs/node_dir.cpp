// Node directory operations behind the xmig-certs commands: issue, rotate, and
// the CSR flow (csr on the node, install of the signed certificate).
#include "certs/detail.hpp"

namespace xmig::certs {

Pem issue_node_dir(const fs::path& ca_dir, const fs::path& out_dir, const IssueOptions& opts,
                   bool force) {
  CaDir ca = load_ca_dir(ca_dir);
  fs::path existing = out_dir / kServerCertFile;
  if (fs::exists(existing) && !force)
    throw Error(existing.string() +
                ": a node certificate already exists here; use 'xmig-certs rotate' to replace it "
                "keeping the previous files as *.prev, or 'issue --force' to overwrite it");
  Pem node = issue(ca.ca, opts);
  write_node_dir(out_dir, ca.bundle, node);
  return node;
}

Pem rotate_node_dir(const fs::path& ca_dir, const fs::path& node_dir, IssueOptions opts) {
  fs::path existing = node_dir / kServerCertFile;
  if (!fs::exists(existing))
    throw Error(existing.string() +
                ": nothing to rotate (no node certificate here); make one with 'xmig-certs "
                "issue --ca CA_DIR --name HOST --out " +
                node_dir.string() + "'");
  CaDir ca = load_ca_dir(ca_dir);
  if (opts.ips.empty()) opts.ips = describe(read_file(existing), existing.string()).ips;
  Pem node = issue(ca.ca, opts);
  write_node_dir(node_dir, ca.bundle, node, NodeWriteOptions{.keep_previous = true});
  return node;
}

Csr csr_node_dir(const fs::path& dir, const IssueOptions& opts, bool force) {
  detail::ensure_dir(dir);
  fs::path key_file = dir / kPendingKeyFile;
  if (fs::exists(key_file) && !force)
    throw Error(key_file.string() +
                ": a request is already pending here (its key would be lost); install its "
                "certificate with 'xmig-certs install', or use 'csr --force' to start over");
  Csr csr = make_csr(opts);
  detail::Staged key(key_file, csr.key, 0600);
  detail::Staged req(dir / kPendingCsrFile, csr.csr, 0644);
  key.commit();
  req.commit();
  detail::fsync_dir(dir);
  return csr;
}

void install_node_dir(const fs::path& dir, const fs::path& cert_file,
                      const fs::path& ca_cert_file) {
  fs::path key_file = dir / kPendingKeyFile;
  if (!fs::exists(key_file))
    throw Error(key_file.string() + ": no pending key; run 'xmig-certs csr --name HOST --out " +
                dir.string() +
                "' first on this host and have the CA sign node.csr (the key never leaves this "
                "host)");
  Pem node{read_file(cert_file), read_file(key_file)};
  X509Ptr cert = detail::parse_cert(node.cert, cert_file.string());
  detail::parse_key(node.key, key_file.string());
  std::string bundle = read_file(ca_cert_file);
  count_certs(bundle, ca_cert_file.string());

  if (!key_matches(node.cert, node.key))
    throw Error(cert_file.string() + ": was not signed for the key in " + key_file.string() +
                " (it answers another request; sign this directory's node.csr)");
  if (detail::is_ca(cert.get()))
    throw Error(cert_file.string() + ": is a CA certificate, not a node certificate");
  for (Purpose purpose : {Purpose::TlsServer, Purpose::TlsClient}) {
    if (auto reason = verify_chain(node.cert, bundle, purpose))
      throw Error(cert_file.string() + ": does not verify against " + ca_cert_file.string() +
                  " as a TLS " + (purpose == Purpose::TlsServer ? "server" : "client") + ": " +
                  *reason +
                  " (use the CA certificate that signed it; sign with 'xmig-certs sign')");
  }
  write_node_dir(dir, bundle, node, NodeWriteOptions{.keep_previous = true});
  fs::remove(key_file);
  fs::remove(dir / kPendingCsrFile);
  detail::fsync_dir(dir);
}

}  // namespace xmig::certs
