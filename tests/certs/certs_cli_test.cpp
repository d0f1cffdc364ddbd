// End-to-end tests of the real xmig-certs binary: every command's success path,
// its refusals, and each failure class of `check` (exit 0 ok, 1 warning,
// 2 failure). Certificates are judged by OpenSSL (library and `openssl verify`).
#include <gtest/gtest.h>

#include "tests/certs/helpers.hpp"

namespace xmig::certs::test {
namespace {

using xmig::harness::read_file;
using xmig::harness::run;
using xmig::harness::sha256_file;

// A CA directory and a node directory issued from it, made with the CLI.
class CertsCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cli({"ca", "init", "--dir", ca_dir.string()}).code, 0);
    ASSERT_EQ(cli({"issue", "--ca", ca_dir.string(), "--name", "hv-a", "--ip", "192.0.2.10",
                   "--out", node_dir.string()})
                  .code,
              0);
  }
  CliResult cli(std::vector<std::string> args) { return xmig_certs(tmp, std::move(args)); }
  CliResult check(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"check", "--dir", node_dir.string(), "--name", "hv-a"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  }
  // Runs a python3 assertion on check --json output (the JSON must parse).
  bool json_has(const std::string& out, const std::string& check, const std::string& severity) {
    xmig::harness::write_file(tmp / "check.json", out);
    return run({"/usr/bin/python3", "-c",
                "import json,sys; d=json.load(open(sys.argv[1]));"
                "sys.exit(0 if any(f['check']==sys.argv[2] and f['severity']==sys.argv[3] "
                "and (f['severity']=='ok' or f['fix']) for f in d['findings']) else 1)",
                (tmp / "check.json").string(), check, severity}) == 0;
  }
  // Writes a node directory made by the library (for cases the CLI refuses to make).
  void write_node(const Pem& ca, const IssueOptions& o) {
    write_node_dir(node_dir, ca.cert, issue(ca, o));
  }
  Pem ca() { return load_ca_dir(ca_dir).ca; }

  TempDir tmp;
  fs::path ca_dir = tmp / "ca";
  fs::path node_dir = tmp / "node";
};

// Pass: ca init made ca-cert.pem (a CA per OpenSSL, 0644) and ca-key.pem 0600.
TEST_F(CertsCli, CaInitCreatesCaWithKeyMode0600) {
  EXPECT_EQ(file_mode(ca_dir / "ca-key.pem"), 0600u);
  EXPECT_EQ(file_mode(ca_dir / "ca-cert.pem"), 0644u);
  EXPECT_EQ(X509_check_ca(load_cert(read_file(ca_dir / "ca-cert.pem")).get()), 1);
}

// Pass: a second ca init fails (exit 2), says how to roll over or force, and
// leaves both CA files byte-for-byte unchanged.
TEST_F(CertsCli, CaInitRefusesToOverwriteExistingCa) {
  std::string cert = sha256_file(ca_dir / "ca-cert.pem");
  std::string key = sha256_file(ca_dir / "ca-key.pem");
  CliResult r = cli({"ca", "init", "--dir", ca_dir.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("rollover"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  EXPECT_EQ(sha256_file(ca_dir / "ca-cert.pem"), cert);
  EXPECT_EQ(sha256_file(ca_dir / "ca-key.pem"), key);
}

// Pass: issue wrote the libvirt layout with the right modes, and the installed
// `openssl verify -CAfile` accepts the node certificate for sslserver and
// sslclient; nothing printed contains key material.
TEST_F(CertsCli, IssueWritesLayoutThatOpensslVerifyAccepts) {
  for (const char* f : kNodeFiles) EXPECT_TRUE(fs::exists(node_dir / f)) << f;
  EXPECT_EQ(file_mode(node_dir / "server-key.pem"), 0600u);
  EXPECT_EQ(file_mode(node_dir / "client-key.pem"), 0600u);
  for (const char* purpose : {"sslserver", "sslclient"}) {
    for (const char* cert : {"server-cert.pem", "client-cert.pem"}) {
      fs::path log = tmp / "verify.log";
      EXPECT_EQ(run({"/usr/bin/openssl", "verify", "-purpose", purpose, "-CAfile",
                     (node_dir / "ca-cert.pem").string(), (node_dir / cert).string()},
                    log.string()),
                0)
          << read_file(log);
    }
  }
  Cert cert = load_cert(read_file(node_dir / "server-cert.pem"));
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "192.0.2.10", 0), 1);
  CliResult again =
      cli({"issue", "--ca", ca_dir.string(), "--name", "hv-b", "--out", (tmp / "node-b").string()});
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_EQ(again.out.find("PRIVATE KEY"), std::string::npos);
}

// Pass: issue into a directory that already has a node certificate fails with
// exit 2, points at rotate, and changes nothing.
TEST_F(CertsCli, IssueRefusesToReplaceExistingNodeCertificate) {
  std::string before = sha256_file(node_dir / "server-key.pem");
  CliResult r =
      cli({"issue", "--ca", ca_dir.string(), "--name", "hv-a", "--out", node_dir.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("rotate"), std::string::npos) << r.out;
  EXPECT_EQ(sha256_file(node_dir / "server-key.pem"), before);
}

// Pass: errors name the file and the fix: issue with a CA directory that does
// not exist says which ca-cert.pem is missing and mentions 'ca init'.
TEST_F(CertsCli, ErrorsNameTheFileAndTheFix) {
  CliResult r = cli({"issue", "--ca", (tmp / "nowhere").string(), "--name", "hv-a", "--out",
                     (tmp / "x").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find((tmp / "nowhere" / "ca-cert.pem").string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ca init"), std::string::npos) << r.out;
  CliResult bad_ip = cli({"issue", "--ca", ca_dir.string(), "--name", "hv-a", "--ip", "1.2.3",
                          "--out", (tmp / "x").string()});
  EXPECT_EQ(bad_ip.code, 2);
  EXPECT_NE(bad_ip.out.find("1.2.3"), std::string::npos) << bad_ip.out;
}

// Pass: csr writes node-key.pem (0600) and node.csr; sign produces a certificate
// for that key; install writes the layout with that very key, removes the
// pending files, and check then passes (exit 0).
TEST_F(CertsCli, CsrSignInstallMakesWorkingNodeDir) {
  fs::path site = tmp / "site";
  ASSERT_EQ(cli({"csr", "--name", "hv-c", "--ip", "2001:db8::c", "--out", site.string()}).code, 0);
  EXPECT_EQ(file_mode(site / "node-key.pem"), 0600u);
  std::string key_hash = sha256_file(site / "node-key.pem");
  fs::path cert = tmp / "hv-c-cert.pem";
  CliResult s = cli({"sign", "--ca", ca_dir.string(), "--csr", (site / "node.csr").string(),
                     "--out", cert.string(), "--name", "hv-c"});
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_EQ(verify(read_file(cert), read_file(ca_dir / "ca-cert.pem"), X509_PURPOSE_SSL_SERVER),
            X509_V_OK);
  CliResult i = cli({"install", "--dir", site.string(), "--cert", cert.string(), "--ca-cert",
                     (ca_dir / "ca-cert.pem").string()});
  ASSERT_EQ(i.code, 0) << i.out;
  EXPECT_EQ(sha256_file(site / "server-key.pem"), key_hash);
  EXPECT_EQ(sha256_file(site / "client-key.pem"), key_hash);
  EXPECT_FALSE(fs::exists(site / "node-key.pem"));
  EXPECT_FALSE(fs::exists(site / "node.csr"));
  CliResult c = cli({"check", "--dir", site.string(), "--name", "hv-c"});
  EXPECT_EQ(c.code, 0) << c.out;
}

// Pass: sign with --name refuses a request for another host (exit 2, no
// certificate written).
TEST_F(CertsCli, SignRefusesRequestForAnotherHost) {
  fs::path site = tmp / "site";
  ASSERT_EQ(cli({"csr", "--name", "hv-c", "--out", site.string()}).code, 0);
  CliResult s = cli({"sign", "--ca", ca_dir.string(), "--csr", (site / "node.csr").string(),
                     "--out", (tmp / "c.pem").string(), "--name", "hv-d"});
  EXPECT_EQ(s.code, 2);
  EXPECT_NE(s.out.find("hv-c"), std::string::npos) << s.out;
  EXPECT_FALSE(fs::exists(tmp / "c.pem"));
}

// Pass: install refuses a certificate issued for another key (exit 2) and one
// that does not chain to the given CA; the pending key stays.
TEST_F(CertsCli, InstallRefusesForeignCertificateOrCa) {
  fs::path site = tmp / "site";
  ASSERT_EQ(cli({"csr", "--name", "hv-a", "--out", site.string()}).code, 0);
  CliResult wrong_key =
      cli({"install", "--dir", site.string(), "--cert", (node_dir / "server-cert.pem").string(),
           "--ca-cert", (ca_dir / "ca-cert.pem").string()});
  EXPECT_EQ(wrong_key.code, 2);
  EXPECT_NE(wrong_key.out.find("node-key.pem"), std::string::npos) << wrong_key.out;

  fs::path cert = tmp / "c.pem";
  ASSERT_EQ(cli({"sign", "--ca", ca_dir.string(), "--csr", (site / "node.csr").string(), "--out",
                 cert.string()})
                .code,
            0);
  ASSERT_EQ(cli({"ca", "init", "--dir", (tmp / "other-ca").string()}).code, 0);
  CliResult wrong_ca = cli({"install", "--dir", site.string(), "--cert", cert.string(), "--ca-cert",
                            (tmp / "other-ca" / "ca-cert.pem").string()});
  EXPECT_EQ(wrong_ca.code, 2);
  EXPECT_NE(wrong_ca.out.find("does not verify"), std::string::npos) << wrong_ca.out;
  EXPECT_TRUE(fs::exists(site / "node-key.pem"));
  EXPECT_FALSE(fs::exists(site / "server-cert.pem"));
}

// Pass: rotate puts a new key and certificate in place, keeps the previous
// files byte-for-byte as *.prev, carries the IP SAN over, and check passes.
TEST_F(CertsCli, RotateReplacesKeyAndKeepsPrevious) {
  std::string old_key = sha256_file(node_dir / "server-key.pem");
  std::string old_cert = sha256_file(node_dir / "server-cert.pem");
  CliResult r =
      cli({"rotate", "--ca", ca_dir.string(), "--dir", node_dir.string(), "--name", "hv-a"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(sha256_file(node_dir / "server-key.pem"), old_key);
  EXPECT_EQ(sha256_file(node_dir / "server-key.pem.prev"), old_key);
  EXPECT_EQ(sha256_file(node_dir / "server-cert.pem.prev"), old_cert);
  EXPECT_EQ(sha256_file(node_dir / "client-key.pem.prev"), old_key);
  EXPECT_EQ(file_mode(node_dir / "server-key.pem.prev"), 0600u);
  Cert cert = load_cert(read_file(node_dir / "server-cert.pem"));
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "192.0.2.10", 0), 1);
  EXPECT_EQ(check().code, 0);
}

// Pass: ca rollover keeps the old CA as *.old and writes ca-bundle.pem (2 CAs);
// issue then writes the bundle as the node's ca-cert.pem, which openssl verify
// accepts for both an old-CA and a new-CA node certificate; ca retire leaves
// one CA in the bundle and a node issued afterwards trusts only the new CA.
TEST_F(CertsCli, CaRolloverBundleTrustsOldAndNewUntilRetire) {
  fs::path old_cert = node_dir / "server-cert.pem";
  CliResult roll = cli({"ca", "rollover", "--dir", ca_dir.string()});
  ASSERT_EQ(roll.code, 0) << roll.out;
  EXPECT_TRUE(fs::exists(ca_dir / "ca-cert.pem.old"));
  EXPECT_EQ(file_mode(ca_dir / "ca-key.pem.old"), 0600u);
  EXPECT_EQ(load_certs(read_file(ca_dir / "ca-bundle.pem")).size(), 2u);

  fs::path node_b = tmp / "node-b";
  ASSERT_EQ(
      cli({"issue", "--ca", ca_dir.string(), "--name", "hv-b", "--out", node_b.string()}).code, 0);
  EXPECT_EQ(read_file(node_b / "ca-cert.pem"), read_file(ca_dir / "ca-bundle.pem"));
  for (const fs::path& cert : {old_cert, node_b / "server-cert.pem"})
    EXPECT_EQ(run({"/usr/bin/openssl", "verify", "-CAfile", (node_b / "ca-cert.pem").string(),
                   cert.string()}),
              0)
        << cert;
  EXPECT_EQ(cli({"check", "--dir", node_b.string(), "--name", "hv-b"}).code, 0);
  EXPECT_EQ(cli({"ca", "rollover", "--dir", ca_dir.string()}).code, 2);  // retire first

  ASSERT_EQ(cli({"ca", "retire", "--dir", ca_dir.string()}).code, 0);
  EXPECT_EQ(load_certs(read_file(ca_dir / "ca-bundle.pem")).size(), 1u);
  fs::path node_c = tmp / "node-c";
  ASSERT_EQ(
      cli({"issue", "--ca", ca_dir.string(), "--name", "hv-c", "--out", node_c.string()}).code, 0);
  EXPECT_NE(run({"/usr/bin/openssl", "verify", "-CAfile", (node_c / "ca-cert.pem").string(),
                 old_cert.string()}),
            0);
  EXPECT_EQ(run({"/usr/bin/openssl", "verify", "-CAfile", (node_c / "ca-cert.pem").string(),
                 (node_b / "server-cert.pem").string()}),
            0);
}

// Pass: check on the issued directory exits 0, and --json parses with ok
// findings for chain, key, san and expiry.
TEST_F(CertsCli, CheckPassesOnIssuedDir) {
  CliResult r = check();
  EXPECT_EQ(r.code, 0) << r.out;
  CliResult j = check({"--json"});
  EXPECT_EQ(j.code, 0);
  for (const char* c : {"chain", "key", "san", "expiry", "usage"})
    EXPECT_TRUE(json_has(j.out, c, "ok")) << c << "\n" << j.out;
}

// Pass: a node directory whose ca-cert.pem is another CA fails the chain check
// (exit 2, JSON finding chain/failure with a fix).
TEST_F(CertsCli, CheckFailsWhenCaIsWrong) {
  Pem other = make_ca(CaOptions{.name = "other CA"});
  xmig::harness::write_file(node_dir / "ca-cert.pem", other.cert);
  CliResult r = check({"--json"});
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(json_has(r.out, "chain", "failure")) << r.out;
}

// Pass: a server key that is not the server certificate's key fails the key
// check (exit 2).
TEST_F(CertsCli, CheckFailsWhenKeyDoesNotMatch) {
  Pem other = issue(ca(), IssueOptions{.name = "hv-a"});
  write_file_atomic(node_dir / "server-key.pem", other.key, 0600);
  CliResult r = check({"--json"});
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(json_has(r.out, "key", "failure")) << r.out;
}

// Pass: checking for a host the SAN does not name fails the san check (exit 2)
// and the text output says which names it has and how to fix it.
TEST_F(CertsCli, CheckFailsWhenSanMissesHost) {
  CliResult r = cli({"check", "--dir", node_dir.string(), "--name", "hv-z"});
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("does not name this host \"hv-z\" as a DNS SAN (DNS SANs: hv-a)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("fix: "), std::string::npos) << r.out;
  EXPECT_TRUE(json_has(cli({"check", "--dir", node_dir.string(), "--name", "hv-z", "--json"}).out,
                       "san", "failure"));
}

// Pass: an expired node certificate (start offset -2 days, 1 day) fails the
// expiry check (exit 2).
TEST_F(CertsCli, CheckFailsWhenCertificateExpired) {
  write_node(ca(), IssueOptions{.name = "hv-a", .days = 1, .start_offset_seconds = -2 * 86400});
  CliResult r = check({"--json"});
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(json_has(r.out, "expiry", "failure")) << r.out;
}

// Pass: a certificate with 10 days left is a warning (exit 1) at the default
// --warn-days 30, and ok (exit 0) with --warn-days 5.
TEST_F(CertsCli, CheckWarnsWhenExpiryIsNear) {
  write_node(ca(), IssueOptions{.name = "hv-a", .days = 10});
  CliResult r = check({"--json"});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(json_has(r.out, "expiry", "warning")) << r.out;
  EXPECT_EQ(check({"--warn-days", "5"}).code, 0);
}

// Pass: a world-readable server key fails the mode check (exit 2), saying the
// tunnel refuses it, with a chmod fix; chmod 600 makes the check pass again.
TEST_F(CertsCli, CheckFailsWhenKeyIsWorldReadable) {
  fs::permissions(node_dir / "server-key.pem", fs::perms(0644));
  CliResult r = check();
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("accessible to all users (mode 0644); xmig-tunnel refuses"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("chmod 600 " + (node_dir / "server-key.pem").string()), std::string::npos)
      << r.out;
  EXPECT_TRUE(json_has(check({"--json"}).out, "mode", "failure"));
  fs::permissions(node_dir / "server-key.pem", fs::perms(0600));
  EXPECT_EQ(check().code, 0);
}

// Pass: a group-readable server key (0640: libvirt's root:qemu layout) is a
// warning (exit 1), not a failure: the text names the mode, says that the
// group can read the key and that the tunnel accepts it, and gives a fix; the
// JSON has a mode warning. chmod 600 makes the check pass again.
TEST_F(CertsCli, CheckWarnsWhenKeyIsGroupReadable) {
  fs::permissions(node_dir / "server-key.pem", fs::perms(0640));
  CliResult r = check();
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("[warning] mode: " + (node_dir / "server-key.pem").string() +
                       ": private key is readable by group "),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("(mode 0640); xmig-tunnel accepts this"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("chmod 600 " + (node_dir / "server-key.pem").string()), std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("[failure]"), std::string::npos) << r.out;
  EXPECT_TRUE(json_has(check({"--json"}).out, "mode", "warning"));
  fs::permissions(node_dir / "server-key.pem", fs::perms(0600));
  EXPECT_EQ(check().code, 0);
}

// Pass: a key writable by its group fails (exit 2) with a chmod go-w fix:
// whoever can write it can swap the host's identity.
TEST_F(CertsCli, CheckFailsWhenKeyIsGroupWritable) {
  fs::permissions(node_dir / "client-key.pem", fs::perms(0660));
  CliResult r = check();
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("private key is writable by group/others (mode 0660)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("chmod go-w " + (node_dir / "client-key.pem").string()), std::string::npos)
      << r.out;
}

// Pass: a missing file is a failure naming the file (exit 2).
TEST_F(CertsCli, CheckFailsWhenFileIsMissing) {
  fs::remove(node_dir / "client-key.pem");
  CliResult r = check();
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find((node_dir / "client-key.pem").string()), std::string::npos) << r.out;
}

// Pass: --help of the program and of every command exits 0; the rollover help
// explains the bundle as the tunnel's `ca` file.
TEST_F(CertsCli, HelpExplainsEveryCommand) {
  for (std::vector<std::string> cmd : std::vector<std::vector<std::string>>{{},
                                                                            {"ca", "init"},
                                                                            {"ca", "rollover"},
                                                                            {"ca", "retire"},
                                                                            {"issue"},
                                                                            {"csr"},
                                                                            {"sign"},
                                                                            {"install"},
                                                                            {"rotate"},
                                                                            {"check"}}) {
    cmd.push_back("--help");
    CliResult r = cli(cmd);
    EXPECT_EQ(r.code, 0) << cmd.front();
    EXPECT_NE(r.out.find("Options"), std::string::npos) << r.out;
  }
  CliResult r = cli({"ca", "rollover", "--help"});
  EXPECT_NE(r.out.find("ca-bundle.pem"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("`ca` setting"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace xmig::certs::test
