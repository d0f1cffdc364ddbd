// `xmig-tunnel --check`: exit 0 with a summary for a usable config, exit 1
// with errors naming the file and the fix for each kind of broken TLS material.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include "base/openssl.hpp"
#include "harness/tunnel_pair.hpp"

namespace xmig::test {

using namespace harness;

namespace {

struct CheckRun {
  int exit_code;
  std::string output;
};

CheckRun run_check(const TunnelPair& pair, const fs::path& config) {
  fs::path log = pair.temp / "check.log";
  fs::remove(log);
  int code = run({tool("xmig-tunnel"), "--config", config.string(), "--check"}, log.string());
  return {code, read_file(log)};
}

// Replaces `from` by `to` in hv-a's config and returns the new config's path.
fs::path edited_config(const TunnelPair& pair, const std::string& from, const std::string& to) {
  std::string text = read_file(pair.a.config);
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos);
  text.replace(at, from.size(), to);
  fs::path out = pair.temp / "edited.toml";
  write_file(out, text);
  return out;
}

TunnelPairOptions unstarted() {
  TunnelPairOptions o;
  o.start = false;
  return o;
}

// Pass: a good config checks OK (exit 0) and the summary names the certificate.
TEST(TunnelCheck, AcceptsGoodConfig) {
  TunnelPair pair(unstarted());
  auto r = run_check(pair, pair.a.config);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(": OK"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("expires in"), std::string::npos) << r.output;
}

// Pass: without socket_group, --check still exits 0 but warns that QEMU (not
// root) could not use the sockets, naming the fix; with socket_group =
// "libvirt-qemu" (the group of libvirt's QEMU user, installed by tools/setup)
// and the default mode there is no warning; socket_mode 0600 warns again.
TEST(TunnelCheck, WarnsWhenQemuCouldNotUseTheSockets) {
  TunnelPair pair(unstarted());
  auto bare = run_check(pair, pair.a.config);
  EXPECT_EQ(bare.exit_code, 0) << bare.output;
  EXPECT_NE(bare.output.find("warning: socket_group is not set"), std::string::npos) << bare.output;
  EXPECT_NE(bare.output.find("fix: socket_group = \"libvirt-qemu\""), std::string::npos)
      << bare.output;

  ASSERT_EQ(run({"/usr/bin/getent", "passwd", "libvirt-qemu"}), 0)
      << "libvirt's QEMU user is missing: run tools/setup";
  auto grouped =
      run_check(pair, edited_config(pair, "\n[tls]", "\nsocket_group = \"libvirt-qemu\"\n[tls]"));
  EXPECT_EQ(grouped.exit_code, 0) << grouped.output;
  EXPECT_EQ(grouped.output.find("warning:"), std::string::npos) << grouped.output;

  auto narrow = run_check(
      pair, edited_config(pair, "\n[tls]",
                          "\nsocket_group = \"libvirt-qemu\"\nsocket_mode = \"0600\"\n[tls]"));
  EXPECT_NE(narrow.output.find("warning: socket_mode 0600"), std::string::npos) << narrow.output;
}

// Pass: a missing certificate file is named with a fix; exit 1.
TEST(TunnelCheck, NamesMissingCertificateFile) {
  TunnelPair pair(unstarted());
  fs::remove(pair.a.pki / "server-cert.pem");
  auto r = run_check(pair, pair.a.config);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find((pair.a.pki / "server-cert.pem").string()), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("fix:"), std::string::npos) << r.output;
}

// Pass: a private key readable by all users is refused, saying chmod 600.
TEST(TunnelCheck, RefusesWorldReadableKey) {
  TunnelPair pair(unstarted());
  ::chmod((pair.a.pki / "server-key.pem").c_str(), 0644);
  auto r = run_check(pair, pair.a.config);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("fix: chmod 600"), std::string::npos) << r.output;
}

// The key file encrypted with a passphrase, in PEM.
std::string encrypted_pem(const std::string& key_pem) {
  BioPtr in(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr));
  BioPtr out(BIO_new(BIO_s_mem()));
  std::string pass = "secret";
  PEM_write_bio_PrivateKey(out.get(), key.get(), EVP_aes_256_cbc(),
                           reinterpret_cast<unsigned char*>(pass.data()),
                           static_cast<int>(pass.size()), nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// Pass: an unreadable key is refused with the cause it has, each with its own
// fix: cut short ("cut short or damaged"), encrypted ("encrypted private
// key"), or no key at all ("holds no PEM private key"); exit 1 each time.
TEST(TunnelCheck, SaysWhyAKeyCannotBeRead) {
  TunnelPair pair(unstarted());
  fs::path key = pair.a.pki / "server-key.pem";
  const std::string good = read_file(key);
  const std::pair<std::string, std::string> cases[] = {
      {good.substr(0, good.size() / 2), "server-key.pem: private key is cut short or damaged"},
      {encrypted_pem(good), "server-key.pem: holds an encrypted private key"},
      {"not a key\n", "server-key.pem: holds no PEM private key"},
  };
  for (const auto& [text, expected] : cases) {
    write_file(key, text);
    ::chmod(key.c_str(), 0600);
    auto r = run_check(pair, pair.a.config);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("fix:"), std::string::npos) << r.output;
  }
}

// Pass: a key that belongs to another certificate is refused.
TEST(TunnelCheck, RefusesKeyOfAnotherCertificate) {
  TunnelPair pair(unstarted());
  auto path = edited_config(pair, (pair.a.pki / "server-key.pem").string(),
                            (pair.b.pki / "server-key.pem").string());
  auto r = run_check(pair, path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("does not match the certificate"), std::string::npos) << r.output;
}

// Pass: a certificate that does not name this host is refused, naming both.
TEST(TunnelCheck, RefusesCertificateForAnotherHost) {
  TunnelPair pair(unstarted());
  auto path = edited_config(pair, "name = \"hv-a\"", "name = \"hv-z\"");
  auto r = run_check(pair, path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("does not name this host \"hv-z\""), std::string::npos) << r.output;
}

// Pass: an expired certificate is refused with "expired" and the fix.
TEST(TunnelCheck, RefusesExpiredCertificate) {
  TunnelPair pair(unstarted());
  make_node_pki(pair.a.pki, pair.ca, "hv-a", 1, -3 * 86400);
  auto r = run_check(pair, pair.a.config);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("certificate has expired"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("xmig-certs rotate"), std::string::npos) << r.output;
}

// Pass: a certificate from a CA that is not in the bundle is refused.
TEST(TunnelCheck, RefusesCertificateFromAnotherCa) {
  TunnelPair pair(unstarted());
  make_node_pki(pair.a.pki, certs::make_ca({}), "hv-a");
  std::string foreign_ca = read_file(pair.a.pki / "ca-cert.pem");
  write_file(pair.a.pki / "ca-cert.pem", pair.ca.cert);  // trust stays with the cluster CA
  auto r = run_check(pair, pair.a.config);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("does not verify against"), std::string::npos) << r.output;
  EXPECT_FALSE(foreign_ca.empty());
}

// Pass: config errors also come out of --check with exit 1.
TEST(TunnelCheck, ReportsConfigErrors) {
  TunnelPair pair(unstarted());
  auto path = edited_config(pair, "[[peer]]", "[[peer]]\nbogus = 1");
  auto r = run_check(pair, path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("bogus"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("unknown key"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace xmig::test
