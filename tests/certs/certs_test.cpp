// Library tests for certs/: what make_ca/issue/CSR signing produce, judged by
// OpenSSL directly (X509_verify_cert, X509_check_host, extension flags), plus
// the file layout and CA directory operations.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "tests/certs/helpers.hpp"

namespace xmig::certs::test {
namespace {

using namespace std::chrono_literals;

const Pem& shared_ca() {
  static const Pem ca = make_ca(CaOptions{});
  return ca;
}

IssueOptions node_opts(const std::string& name = "hv-a.example.net") {
  IssueOptions o;
  o.name = name;
  o.ips = {"192.0.2.10", "2001:db8::a"};
  return o;
}

// Pass: make_ca yields a self-signed certificate that OpenSSL sees as a CA
// (basicConstraints CA:TRUE), with keyCertSign usage and the requested CN.
TEST(Certs, CaIsSelfSignedCaWithCertSignUsage) {
  Pem ca = make_ca(CaOptions{.name = "test CA", .days = 10});
  Cert cert = load_cert(ca.cert);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 1);
  EXPECT_EQ(X509_check_issued(cert.get(), cert.get()), X509_V_OK);
  EXPECT_TRUE(X509_get_key_usage(cert.get()) & KU_KEY_CERT_SIGN);
  EXPECT_EQ(verify(ca.cert, ca.cert), X509_V_OK);
  EXPECT_EQ(describe(ca.cert).subject_cn, "test CA");
  EXPECT_TRUE(key_matches(ca.cert, ca.key));
}

// Pass: an issued node certificate passes X509_verify_cert against its CA
// both for the TLS server and the TLS client purpose.
TEST(Certs, IssuedCertificateVerifiesAgainstCa) {
  Pem node = issue(shared_ca(), node_opts());
  EXPECT_EQ(verify(node.cert, shared_ca().cert, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  EXPECT_EQ(verify(node.cert, shared_ca().cert, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_EQ(verify_chain(node.cert, shared_ca().cert, Purpose::TlsServer), std::nullopt);
}

// Pass: a certificate from another CA fails X509_verify_cert (unable to get
// issuer), and verify_chain reports it.
TEST(Certs, CertificateFromOtherCaFailsVerification) {
  Pem other = make_ca(CaOptions{.name = "other CA"});
  Pem node = issue(other, node_opts());
  EXPECT_EQ(verify(node.cert, shared_ca().cert), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_NE(verify_chain(node.cert, shared_ca().cert), std::nullopt);
}

// Pass: the SAN holds DNS:name and every IP (v4 and v6); OpenSSL's own host and
// IP matching accepts them and refuses another name.
TEST(Certs, IssuedCertificateHasHostAndIpSans) {
  Pem node = issue(shared_ca(), node_opts());
  Cert cert = load_cert(node.cert);
  EXPECT_EQ(X509_check_host(cert.get(), "hv-a.example.net", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "hv-b.example.net", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "192.0.2.10", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "2001:db8::a", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "192.0.2.11", 0), 0);
  CertInfo info = describe(node.cert);
  EXPECT_EQ(info.subject_cn, "hv-a.example.net");
  EXPECT_EQ(info.dns_names, std::vector<std::string>{"hv-a.example.net"});
  EXPECT_EQ(info.ips, (std::vector<std::string>{"192.0.2.10", "2001:db8::a"}));
}

// Pass: EKU has serverAuth and clientAuth, KU digitalSignature (no
// keyEncipherment for ECDSA), CA:FALSE, SKI and AKI present, serial >= 120 bits.
TEST(Certs, IssuedCertificateIsServerAndClientAndNoCa) {
  Pem node = issue(shared_ca(), node_opts());
  Cert cert = load_cert(node.cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  uint32_t xku = X509_get_extended_key_usage(cert.get());
  EXPECT_NE(xku, UINT32_MAX) << "EKU extension missing";
  EXPECT_TRUE(xku & XKU_SSL_SERVER);
  EXPECT_TRUE(xku & XKU_SSL_CLIENT);
  uint32_t ku = X509_get_key_usage(cert.get());
  EXPECT_TRUE(ku & KU_DIGITAL_SIGNATURE);
  EXPECT_FALSE(ku & KU_KEY_ENCIPHERMENT);
  EXPECT_FALSE(ku & KU_KEY_CERT_SIGN);
  EXPECT_NE(X509_get0_subject_key_id(cert.get()), nullptr);
  EXPECT_NE(X509_get0_authority_key_id(cert.get()), nullptr);
  int crit = -1;
  std::unique_ptr<BASIC_CONSTRAINTS, FreeWith<BASIC_CONSTRAINTS_free>> bc(
      static_cast<BASIC_CONSTRAINTS*>(
          X509_get_ext_d2i(cert.get(), NID_basic_constraints, &crit, nullptr)));
  ASSERT_NE(bc, nullptr) << "basicConstraints missing";
  EXPECT_FALSE(bc->ca);
  EXPECT_EQ(crit, 1);
  EXPECT_GE(describe(node.cert).serial_hex.size(), 30u);
}

// Pass: 20 issued certificates have 20 different serials.
TEST(Certs, SerialsAreRandomAndDistinct) {
  std::set<std::string> serials;
  for (int i = 0; i < 20; ++i)
    serials.insert(describe(issue(shared_ca(), node_opts()).cert).serial_hex);
  EXPECT_EQ(serials.size(), 20u);
}

// Pass: an RSA node certificate verifies and adds keyEncipherment.
TEST(Certs, RsaCertificateHasKeyEncipherment) {
  IssueOptions o = node_opts();
  o.key = KeyType::Rsa3072;
  Pem node = issue(shared_ca(), o);
  Cert cert = load_cert(node.cert);
  EXPECT_TRUE(X509_get_key_usage(cert.get()) & KU_KEY_ENCIPHERMENT);
  EXPECT_EQ(EVP_PKEY_get_bits(X509_get0_pubkey(cert.get())), 3072);
  EXPECT_EQ(verify(node.cert, shared_ca().cert, X509_PURPOSE_SSL_SERVER), X509_V_OK);
}

// Pass: start_offset -2 days with days=1 makes a certificate that expired a day
// ago; X509_verify_cert says "certificate has expired".
TEST(Certs, BackdatedCertificateIsExpired) {
  IssueOptions o = node_opts();
  o.start_offset_seconds = -2 * 86400;
  o.days = 1;
  Pem node = issue(shared_ca(), o);
  EXPECT_EQ(verify(node.cert, shared_ca().cert), X509_V_ERR_CERT_HAS_EXPIRED);
  EXPECT_LT(describe(node.cert).not_after, std::chrono::system_clock::now() - 23h);
}

// Pass: a node certificate asking for more days than its CA has left ends
// when the CA ends.
TEST(Certs, NodeCertificateNeverOutlivesCa) {
  Pem ca = make_ca(CaOptions{.name = "short CA", .days = 5});
  IssueOptions o = node_opts();
  o.days = 365;
  Pem node = issue(ca, o);
  EXPECT_LE(describe(node.cert).not_after, describe(ca.cert).not_after);
  EXPECT_EQ(verify(node.cert, ca.cert), X509_V_OK);
}

// Pass: the key is unencrypted PKCS#8 PEM, matches its certificate, and does
// not match another certificate.
TEST(Certs, KeyIsPkcs8AndMatchesOnlyItsCertificate) {
  Pem a = issue(shared_ca(), node_opts());
  Pem b = issue(shared_ca(), node_opts());
  EXPECT_EQ(a.key.rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
  EXPECT_TRUE(key_matches(a.cert, a.key));
  EXPECT_FALSE(key_matches(a.cert, b.key));
}

// Pass: bad host names, bad IPs, out-of-range days and a non-CA "CA" are
// refused with an Error naming the field.
TEST(Certs, IssueRejectsBadInput) {
  auto expect_error = [](const Pem& ca, IssueOptions o, const std::string& word) {
    try {
      issue(ca, o);
      ADD_FAILURE() << "no error for " << word;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  IssueOptions o = node_opts();
  o.name = "bad name";
  expect_error(shared_ca(), o, "name");
  o = node_opts();
  o.name = "";
  expect_error(shared_ca(), o, "name");
  o = node_opts();
  o.ips = {"300.1.1.1"};
  expect_error(shared_ca(), o, "ip");
  o = node_opts();
  o.days = 0;
  expect_error(shared_ca(), o, "days");
  Pem node = issue(shared_ca(), node_opts());
  expect_error(node, node_opts(), "not a CA");
}

// Pass: make_csr + sign_csr gives a certificate for the CSR's key, with the
// requested SANs and the same server+client profile, verifying against the CA.
TEST(Certs, SignedCsrMatchesIssueProfile) {
  Csr csr = make_csr(node_opts("hv-b"));
  std::string cert = sign_csr(shared_ca(), csr.csr, SignOptions{});
  EXPECT_TRUE(key_matches(cert, csr.key));
  EXPECT_EQ(verify(cert, shared_ca().cert, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  EXPECT_EQ(verify(cert, shared_ca().cert, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  CertInfo info = describe(cert);
  EXPECT_EQ(info.dns_names, std::vector<std::string>{"hv-b"});
  EXPECT_EQ(info.ips, (std::vector<std::string>{"192.0.2.10", "2001:db8::a"}));
  EXPECT_FALSE(info.is_ca);
}

// Pass: sign_csr refuses a CSR whose bytes were altered (signature check), and
// one for another host than expect_name.
TEST(Certs, SignRefusesTamperedOrUnexpectedCsr) {
  Csr csr = make_csr(node_opts("hv-b"));
  SignOptions expect_a;
  expect_a.expect_name = "hv-a";
  EXPECT_THROW(sign_csr(shared_ca(), csr.csr, expect_a), Error);

  // Flip one character in the base64 body, well inside the signed part.
  std::string tampered = csr.csr;
  std::size_t pos = tampered.find('\n') + 40;
  tampered[pos] = tampered[pos] == 'A' ? 'B' : 'A';
  EXPECT_THROW(sign_csr(shared_ca(), tampered, SignOptions{}), Error);
}

// Pass: a CSR made by the openssl CLI that asks for CA:TRUE gets a CA:FALSE
// certificate; one asking for an e-mail SAN is refused.
TEST(Certs, SignCopiesNothingButCheckedNames) {
  TempDir tmp;
  auto make = [&](const std::string& file, const std::string& ext) {
    std::string csr = (tmp / file).string();
    int rc = xmig::harness::run(
        {"/usr/bin/openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", (tmp / (file + ".key")).string(), "-out", csr, "-subj", "/CN=hv-c",
         "-addext", ext, "-addext", "subjectAltName=DNS:hv-c"},
        (tmp / "openssl.log").string());
    EXPECT_EQ(rc, 0) << xmig::harness::read_file(tmp / "openssl.log");
    return xmig::harness::read_file(csr);
  };
  std::string cert =
      sign_csr(shared_ca(), make("ca.csr", "basicConstraints=critical,CA:TRUE"), SignOptions{});
  EXPECT_FALSE(describe(cert).is_ca);
  EXPECT_EQ(X509_check_ca(load_cert(cert).get()), 0);

  TempDir tmp2;
  std::string csr = (tmp2 / "mail.csr").string();
  ASSERT_EQ(xmig::harness::run({"/usr/bin/openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                                "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                                (tmp2 / "k").string(), "-out", csr, "-subj", "/CN=hv-c", "-addext",
                                "subjectAltName=DNS:hv-c,email:root@hv-c"}),
            0);
  EXPECT_THROW(sign_csr(shared_ca(), xmig::harness::read_file(csr), SignOptions{}), Error);
}

// Pass: write_node_dir writes the five libvirt files, keys 0600 and certs 0644,
// with the given content, and leaves no temporary file behind.
TEST(Certs, WriteNodeDirWritesLibvirtLayoutWithModes) {
  TempDir tmp;
  fs::path dir = tmp / "pki";
  Pem node = issue(shared_ca(), node_opts());
  write_node_dir(dir, shared_ca().cert, node);
  EXPECT_EQ(xmig::harness::read_file(dir / "ca-cert.pem"), shared_ca().cert);
  EXPECT_EQ(xmig::harness::read_file(dir / "server-cert.pem"), node.cert);
  EXPECT_EQ(xmig::harness::read_file(dir / "client-cert.pem"), node.cert);
  EXPECT_EQ(xmig::harness::read_file(dir / "server-key.pem"), node.key);
  EXPECT_EQ(xmig::harness::read_file(dir / "client-key.pem"), node.key);
  EXPECT_EQ(file_mode(dir / "server-key.pem"), 0600u);
  EXPECT_EQ(file_mode(dir / "client-key.pem"), 0600u);
  EXPECT_EQ(file_mode(dir / "server-cert.pem"), 0644u);
  EXPECT_EQ(file_mode(dir / "ca-cert.pem"), 0644u);
  std::size_t files = std::distance(fs::directory_iterator(dir), fs::directory_iterator());
  EXPECT_EQ(files, 5u);
}

// Pass: with keep_previous the replaced files survive as *.prev with their old
// content; a mismatched key/cert pair is refused before anything is written.
TEST(Certs, WriteNodeDirKeepsPreviousAndRefusesMismatch) {
  TempDir tmp;
  Pem first = issue(shared_ca(), node_opts());
  Pem second = issue(shared_ca(), node_opts());
  write_node_dir(tmp.path(), shared_ca().cert, first);
  write_node_dir(tmp.path(), shared_ca().cert, second, NodeWriteOptions{.keep_previous = true});
  EXPECT_EQ(xmig::harness::read_file(tmp / "server-cert.pem.prev"), first.cert);
  EXPECT_EQ(xmig::harness::read_file(tmp / "server-key.pem.prev"), first.key);
  EXPECT_EQ(file_mode(tmp / "server-key.pem.prev"), 0600u);
  EXPECT_EQ(xmig::harness::read_file(tmp / "server-cert.pem"), second.cert);

  EXPECT_THROW(write_node_dir(tmp.path(), shared_ca().cert, Pem{first.cert, second.key}), Error);
  EXPECT_EQ(xmig::harness::read_file(tmp / "server-cert.pem"), second.cert);
}

// Pass: load errors name the file: missing file, a certificate where a key
// belongs, an encrypted key (refused, no prompt), a key of another certificate;
// no message contains key material.
TEST(Certs, LoadErrorsNameTheFileAndNeverTheKey) {
  TempDir tmp;
  Pem a = issue(shared_ca(), node_opts());
  Pem b = issue(shared_ca(), node_opts());
  xmig::harness::write_file(tmp / "a.pem", a.cert);
  xmig::harness::write_file(tmp / "a.key", a.key);
  xmig::harness::write_file(tmp / "b.key", b.key);
  ASSERT_EQ(
      xmig::harness::run({"/usr/bin/openssl", "pkey", "-in", (tmp / "a.key").string(), "-aes256",
                          "-passout", "pass:secret", "-out", (tmp / "enc.key").string()}),
      0);
  EXPECT_NO_THROW(load_pem_files(tmp / "a.pem", tmp / "a.key"));

  auto message = [&](const fs::path& cert, const fs::path& key) -> std::string {
    try {
      load_pem_files(cert, key);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  std::string missing = message(tmp / "nope.pem", tmp / "a.key");
  EXPECT_NE(missing.find((tmp / "nope.pem").string()), std::string::npos) << missing;
  std::string wrong_kind = message(tmp / "a.pem", tmp / "a.pem");
  EXPECT_NE(wrong_kind.find("a.pem: holds no PEM private key"), std::string::npos) << wrong_kind;
  std::string encrypted = message(tmp / "a.pem", tmp / "enc.key");
  EXPECT_NE(encrypted.find("encrypted"), std::string::npos) << encrypted;
  std::string mismatch = message(tmp / "a.pem", tmp / "b.key");
  EXPECT_NE(mismatch.find("b.key: does not belong"), std::string::npos) << mismatch;
  // The base64 body of either key must not appear in any message.
  std::string a_body = a.key.substr(a.key.find('\n') + 1, 40);
  std::string b_body = b.key.substr(b.key.find('\n') + 1, 40);
  for (const auto& m : {missing, wrong_kind, encrypted, mismatch}) {
    EXPECT_EQ(m.find(a_body), std::string::npos) << m;
    EXPECT_EQ(m.find(b_body), std::string::npos) << m;
  }
}

// Pass: ca_init refuses an existing CA (files unchanged); rollover makes a
// bundle (new + old) that both old and new node certificates verify against;
// retire leaves only the new CA, against which the old node cert fails.
TEST(Certs, CaRolloverTrustsBothUntilRetired) {
  TempDir tmp;
  Pem old_ca = ca_init(tmp.path(), CaOptions{});
  EXPECT_THROW(ca_init(tmp.path(), CaOptions{}), Error);
  EXPECT_EQ(xmig::harness::read_file(tmp / "ca-cert.pem"), old_ca.cert);
  Pem old_node = issue(load_ca_dir(tmp.path()).ca, node_opts());

  Pem new_ca = ca_rollover(tmp.path(), CaOptions{.name = ""});
  EXPECT_THROW(ca_rollover(tmp.path(), CaOptions{}), Error);  // retire first
  CaDir dir = load_ca_dir(tmp.path());
  EXPECT_EQ(dir.ca.cert, new_ca.cert);
  EXPECT_EQ(count_certs(dir.bundle), 2u);
  EXPECT_EQ(xmig::harness::read_file(tmp / "ca-cert.pem.old"), old_ca.cert);
  EXPECT_EQ(file_mode(tmp / "ca-key.pem.old"), 0600u);
  EXPECT_NE(describe(new_ca.cert).subject_cn, describe(old_ca.cert).subject_cn);
  Pem new_node = issue(dir.ca, node_opts());
  EXPECT_EQ(verify(old_node.cert, dir.bundle), X509_V_OK);
  EXPECT_EQ(verify(new_node.cert, dir.bundle), X509_V_OK);

  ca_retire(tmp.path());
  CaDir retired = load_ca_dir(tmp.path());
  EXPECT_EQ(count_certs(retired.bundle), 1u);
  EXPECT_EQ(verify(new_node.cert, retired.bundle), X509_V_OK);
  EXPECT_NE(verify(old_node.cert, retired.bundle), X509_V_OK);
  EXPECT_TRUE(fs::exists(tmp / "ca-key.pem.retired"));
  EXPECT_FALSE(fs::exists(tmp / "ca-key.pem.old"));
}

// Pass: check_node_dir on a freshly written node directory has no warning or
// failure (exit code 0) and includes ok findings for chain, key, san, expiry.
TEST(Certs, CheckPassesOnFreshNodeDir) {
  TempDir tmp;
  write_node_dir(tmp.path(), shared_ca().cert, issue(shared_ca(), node_opts()));
  auto findings = check_node_dir(tmp.path(), CheckOptions{.name = "hv-a.example.net"});
  EXPECT_EQ(exit_code(findings), 0) << findings_json(tmp.path(), findings);
  std::set<std::string> checks;
  for (const auto& f : findings) checks.insert(f.check);
  for (const char* c : {"chain", "key", "san", "usage", "expiry", "mode"})
    EXPECT_TRUE(checks.count(c)) << c;
}

// Pass: the one key-mode rule (judge_key_mode, which the tunnel loads keys by
// and check_node_dir reports by): 0600 and 0400 ok; readable by the group
// (0640, 0440: libvirt's root:qemu keys) a warning naming the group;
// accessible to all users (0604, 0644, 0602) or writable by the group (0660,
// 0620) a failure saying the tunnel refuses it; check_node_dir reports the
// key file's real mode by it, and a group-writable certificate fails.
TEST(Certs, KeyModeRuleIsOneForTheTunnelAndTheCheck) {
  const fs::path file = "/etc/pki/qemu/server-key.pem";
  for (unsigned mode : {0600u, 0400u})
    EXPECT_EQ(judge_key_mode(file, mode, "qemu").severity, Severity::Ok) << mode;
  for (unsigned mode : {0640u, 0440u}) {
    KeyModeVerdict v = judge_key_mode(file, mode, "qemu");
    EXPECT_EQ(v.severity, Severity::Warning) << mode;
    EXPECT_NE(v.what.find("readable by group qemu"), std::string::npos) << v.what;
  }
  for (unsigned mode : {0604u, 0644u, 0602u, 0660u, 0620u}) {
    KeyModeVerdict v = judge_key_mode(file, mode, "qemu");
    EXPECT_EQ(v.severity, Severity::Failure) << mode;
    EXPECT_NE(v.what.find("xmig-tunnel refuses such a key"), std::string::npos) << v.what;
    EXPECT_NE(v.fix.find(file.string()), std::string::npos) << v.fix;
  }

  TempDir tmp;
  write_node_dir(tmp.path(), shared_ca().cert, issue(shared_ca(), node_opts()));
  const fs::path key = tmp.path() / "server-key.pem";
  fs::permissions(key, fs::perms(0660));
  Severity worst = Severity::Ok;
  for (const auto& f : check_node_dir(tmp.path(), CheckOptions{.name = "hv-a.example.net"}))
    if (f.check == "mode" && f.file == key.string() && f.severity > worst) worst = f.severity;
  EXPECT_EQ(worst, Severity::Failure);
  fs::permissions(key, fs::perms(0600));
  fs::permissions(tmp.path() / "server-cert.pem", fs::perms(0664));
  auto findings = check_node_dir(tmp.path(), CheckOptions{.name = "hv-a.example.net"});
  EXPECT_EQ(exit_code(findings), 2) << findings_json(tmp.path(), findings);
}

// Pass: one key reader for the tunnel and the check. For a key cut short, an
// encrypted key and a certificate where the key belongs, load_key_file (how
// the tunnel loads keys) throws "<file>: <cause>; fix: ..." and
// check_node_dir reports the same cause for the same file: "private key is cut
// short or damaged", "holds an encrypted private key", "holds no PEM private
// key". A key accessible to all users is refused in judge_key_mode's words; a
// good 0600 key loads.
TEST(Certs, OneKeyReaderForTheTunnelAndTheCheck) {
  TempDir tmp;
  const Pem node = issue(shared_ca(), node_opts());
  write_node_dir(tmp.path(), shared_ca().cert, node);
  const fs::path key = tmp.path() / kServerKeyFile;
  EXPECT_TRUE(load_key_file(key));

  const fs::path plain = tmp / "plain.key", encrypted = tmp / "encrypted.key";
  xmig::harness::write_file(plain, node.key);
  ASSERT_EQ(xmig::harness::run({"/usr/bin/openssl", "pkey", "-in", plain.string(), "-aes256",
                                "-passout", "pass:secret", "-out", encrypted.string()}),
            0);
  const std::pair<std::string, std::string> cases[] = {
      {node.key.substr(0, node.key.size() / 2), "private key is cut short or damaged"},
      {xmig::harness::read_file(encrypted), "holds an encrypted private key"},
      {node.cert, "holds no PEM private key"},
  };
  for (const auto& [text, cause] : cases) {
    write_file_atomic(key, text, 0600);
    std::string tunnel_says;
    try {
      load_key_file(key);
    } catch (const Error& e) {
      tunnel_says = e.what();
    }
    EXPECT_EQ(tunnel_says.find(key.string() + ": " + cause), 0u) << tunnel_says;
    EXPECT_NE(tunnel_says.find("; fix: "), std::string::npos) << tunnel_says;
    std::string check_says;
    for (const auto& f : check_node_dir(tmp.path(), CheckOptions{.name = "hv-a.example.net"}))
      if (f.file == key.string() && f.severity == Severity::Failure) check_says += f.message;
    EXPECT_NE(check_says.find(cause), std::string::npos) << cause << ": " << check_says;
  }

  write_file_atomic(key, node.key, 0644);
  try {
    load_key_file(key);
    ADD_FAILURE() << "a key readable by all users was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(judge_key_mode(key, 0644, "").what), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace xmig::certs::test
