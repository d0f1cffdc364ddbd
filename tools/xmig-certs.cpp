// xmig-certs: the cluster CA, node certificates in libvirt's layout, the CSR flow,
// rotation, CA rollover, and checks. A thin main over certs/ (certs/certs.hpp):
// it parses options, calls one library function, prints what was done. It never
// prints key material.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>

#include "certs/certs.hpp"

namespace {

using namespace xmig::certs;

const std::map<std::string, KeyType> kKeyTypes{{"ecdsa", KeyType::EcdsaP256},
                                               {"rsa", KeyType::Rsa3072}};

std::string date_text(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

// One line per certificate: who, names, until when, fingerprint.
void print_cert(const std::string& label, const std::string& cert_pem) {
  CertInfo info = describe(cert_pem);
  std::string names;
  for (const auto& d : info.dns_names) names += (names.empty() ? "" : ", ") + ("DNS:" + d);
  for (const auto& ip : info.ips) names += (names.empty() ? "" : ", ") + ("IP:" + ip);
  std::cout << label << ": CN=" << info.subject_cn;
  if (!names.empty()) std::cout << " [" << names << "]";
  std::cout << ", valid until " << date_text(info.not_after) << "\n  sha256 "
            << info.sha256_fingerprint << "\n";
}

void add_days(CLI::App* cmd, int& days, const std::string& what) {
  cmd->add_option("--days", days, "Validity of " + what + " in days (1 to 36500)")
      ->type_name("N")
      ->check(CLI::Range(1, 36500).description(""))
      ->capture_default_str();
}

void add_key(CLI::App* cmd, KeyType& key) {
  cmd->add_option("--key", key, "Key type: ecdsa (P-256, default) or rsa (3072 bits)")
      ->transform(CLI::CheckedTransformer(kKeyTypes, CLI::ignore_case))
      ->option_text("ecdsa|rsa");
}

const char* kRolloverHelp = R"(
Rolling the CA over without breaking running migrations:
  1. xmig-certs ca rollover --dir CA_DIR
       The new CA becomes ca-cert.pem/ca-key.pem; the old one is kept as
       ca-cert.pem.old/ca-key.pem.old; ca-bundle.pem holds both (new + old).
  2. On every node, make the tunnel trust both CAs: copy CA_DIR/ca-bundle.pem to
     the file named by the tunnel's `ca` setting (libvirt layout:
     /etc/pki/qemu/ca-cert.pem). The tunnel reloads it (file watch or SIGHUP);
     certificates from the old CA keep working.
  3. Only when every node trusts the bundle, give each node a certificate from
     the new CA: xmig-certs rotate --ca CA_DIR --dir NODE_DIR --name HOST
     (issue and rotate write ca-bundle.pem as the node's ca-cert.pem while it
     exists, so step 2 is repeated for free).
  4. When every node has a new certificate: xmig-certs ca retire --dir CA_DIR,
     then copy CA_DIR/ca-bundle.pem (now the new CA only) to every node again.
     Check each node with: xmig-certs check --dir NODE_DIR --name HOST)";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "xmig-certs: certificates for xmig's mutual-TLS migration tunnel.\n"
      "Makes a cluster CA, node certificates usable as TLS server and client in libvirt's\n"
      "layout (ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,\n"
      "client-key.pem), rotates them, rolls the CA over and checks node directories.\n"
      "Files are written atomically; keys are mode 0600.",
      "xmig-certs"};
  app.require_subcommand(1);
  app.footer(
      "Run 'xmig-certs COMMAND --help' for a command's options.\n"
      "Exit status: 0 success, 1 warning (check), 2 failure or error.");

  std::function<int()> action;

  // ca init / rollover / retire
  CLI::App* ca = app.add_subcommand("ca", "Cluster CA: init, rollover, retire");
  ca->require_subcommand(1);

  std::string ca_dir;
  CaOptions ca_opts;
  bool force = false;
  CLI::App* ca_init_cmd = ca->add_subcommand(
      "init", "Create the cluster CA in DIR: ca-cert.pem (0644) and ca-key.pem (0600)");
  ca_init_cmd->footer(
      "Refuses to overwrite an existing CA: every node certificate depends on it. Use\n"
      "'xmig-certs ca rollover' to replace it without breaking the cluster, or --force\n"
      "to discard it. Keep ca-key.pem off the hypervisors if you can.");
  ca_init_cmd->add_option("--dir", ca_dir, "CA directory (created if missing)")
      ->type_name("DIR")
      ->required();
  ca_init_cmd->add_option("--name", ca_opts.name, "CA name (subject CN)")
      ->type_name("NAME")
      ->capture_default_str();
  add_days(ca_init_cmd, ca_opts.days, "the CA");
  add_key(ca_init_cmd, ca_opts.key);
  ca_init_cmd->add_flag("--force", force, "Overwrite an existing CA (breaks trust in its certs)");
  ca_init_cmd->callback([&] {
    action = [&] {
      Pem made = ca_init(ca_dir, ca_opts, force);
      print_cert("created CA " + ca_dir + "/ca-cert.pem", made.cert);
      std::cout << "  key: " << ca_dir << "/ca-key.pem (0600)\n";
      return 0;
    };
  });

  CaOptions roll_opts;
  roll_opts.name.clear();
  CLI::App* rollover_cmd = ca->add_subcommand(
      "rollover", "Make a new CA; keep the old as *.old; ca-bundle.pem = new + old");
  rollover_cmd->footer(kRolloverHelp);
  rollover_cmd->add_option("--dir", ca_dir, "CA directory made by 'ca init'")
      ->type_name("DIR")
      ->required();
  rollover_cmd
      ->add_option("--name", roll_opts.name,
                   "New CA name (default: the old name with today's date)")
      ->type_name("NAME");
  add_days(rollover_cmd, roll_opts.days, "the new CA");
  add_key(rollover_cmd, roll_opts.key);
  rollover_cmd->callback([&] {
    action = [&] {
      Pem made = ca_rollover(ca_dir, roll_opts);
      print_cert("new CA " + ca_dir + "/ca-cert.pem", made.cert);
      std::cout << "  old CA kept as ca-cert.pem.old / ca-key.pem.old\n"
                << "  trust bundle (new + old): " << ca_dir << "/ca-bundle.pem\n"
                << "next: copy ca-bundle.pem to every node's `ca` file, then rotate each node;"
                   " see 'xmig-certs ca rollover --help'\n";
      return 0;
    };
  });

  CLI::App* retire_cmd =
      ca->add_subcommand("retire", "End a rollover: drop the old CA from ca-bundle.pem");
  retire_cmd->footer(
      "Run only when every node has a certificate from the new CA (check them with\n"
      "'xmig-certs check'). ca-bundle.pem then holds the new CA only; copy it to every\n"
      "node's `ca` file. The old files are renamed *.retired (shred ca-key.pem.retired\n"
      "when you no longer need it)." +
      std::string(kRolloverHelp));
  retire_cmd->add_option("--dir", ca_dir, "CA directory")->type_name("DIR")->required();
  retire_cmd->callback([&] {
    action = [&] {
      ca_retire(ca_dir);
      std::cout << "retired the old CA; " << ca_dir
                << "/ca-bundle.pem now holds the current CA only\n"
                << "next: copy it to every node's `ca` file\n";
      return 0;
    };
  });

  // issue
  IssueOptions issue_opts;
  std::string out_dir;
  CLI::App* issue_cmd = app.add_subcommand(
      "issue", "Issue a node certificate (TLS server + client) into libvirt's layout");
  issue_cmd->footer(
      "Writes OUT/ca-cert.pem (the CA's ca-bundle.pem during a rollover, else its\n"
      "ca-cert.pem), server-cert.pem, server-key.pem, client-cert.pem and client-key.pem\n"
      "(same key and certificate for both roles). Keys 0600, certificates 0644; all files\n"
      "are written before any is renamed into place. Refuses to replace an existing node\n"
      "certificate: use 'xmig-certs rotate' (keeps *.prev) or --force.");
  issue_cmd->add_option("--ca", ca_dir, "CA directory (ca-cert.pem, ca-key.pem)")
      ->type_name("DIR")
      ->required();
  issue_cmd->add_option("--name", issue_opts.name, "Host name: CN and SAN DNS name")
      ->type_name("HOST")
      ->required();
  issue_cmd->add_option("--ip", issue_opts.ips, "Extra SAN IP address (v4 or v6), repeatable")
      ->type_name("ADDR");
  add_days(issue_cmd, issue_opts.days, "the certificate");
  add_key(issue_cmd, issue_opts.key);
  issue_cmd->add_option("--out", out_dir, "Node directory, e.g. /etc/pki/qemu")
      ->type_name("DIR")
      ->required();
  issue_cmd->add_flag("--force", force, "Overwrite an existing node certificate and key");
  issue_cmd->callback([&] {
    action = [&] {
      Pem node = issue_node_dir(ca_dir, out_dir, issue_opts, force);
      print_cert("issued " + out_dir + "/server-cert.pem (= client-cert.pem)", node.cert);
      return 0;
    };
  });

  // csr
  CLI::App* csr_cmd = app.add_subcommand(
      "csr", "Make a new key and a certificate request (for a CA kept elsewhere)");
  csr_cmd->footer(
      "Writes OUT/node-key.pem (0600, stays on this host) and OUT/node.csr. Send node.csr\n"
      "to the CA ('xmig-certs sign'), then run 'xmig-certs install' with the certificate.");
  csr_cmd->add_option("--name", issue_opts.name, "Host name: CN and SAN DNS name")
      ->type_name("HOST")
      ->required();
  csr_cmd->add_option("--ip", issue_opts.ips, "Extra SAN IP address (v4 or v6), repeatable")
      ->type_name("ADDR");
  add_key(csr_cmd, issue_opts.key);
  csr_cmd->add_option("--out", out_dir, "Directory for node-key.pem and node.csr")
      ->type_name("DIR")
      ->required();
  csr_cmd->add_flag("--force", force, "Replace a pending key and request");
  csr_cmd->callback([&] {
    action = [&] {
      csr_node_dir(out_dir, issue_opts, force);
      std::cout << "wrote " << out_dir << "/node.csr and " << out_dir
                << "/node-key.pem (0600)\nnext: on the CA host: xmig-certs sign --ca CA_DIR "
                   "--csr node.csr --out "
                << issue_opts.name << "-cert.pem\n      here: xmig-certs install --dir " << out_dir
                << " --cert " << issue_opts.name << "-cert.pem --ca-cert ca-cert.pem\n";
      return 0;
    };
  });

  // sign
  std::string csr_file, out_file;
  SignOptions sign_opts;
  std::string expect_name;
  CLI::App* sign_cmd = app.add_subcommand("sign", "CA side: sign a request made by 'csr'");
  sign_cmd->footer(
      "Verifies the request's signature and re-checks what it asks for: the CN must be a\n"
      "valid host name listed among the SAN DNS names, and the SAN may only hold DNS names\n"
      "and IP addresses. Nothing else is copied from the request: the certificate gets the\n"
      "same profile as 'issue' (server+client, CA:FALSE). Give --name to insist on the host.");
  sign_cmd->add_option("--ca", ca_dir, "CA directory (ca-cert.pem, ca-key.pem)")
      ->type_name("DIR")
      ->required();
  sign_cmd->add_option("--csr", csr_file, "Request file (node.csr)")->type_name("FILE")->required();
  sign_cmd->add_option("--out", out_file, "Where to write the signed certificate")
      ->type_name("FILE")
      ->required();
  add_days(sign_cmd, sign_opts.days, "the certificate");
  sign_cmd->add_option("--name", expect_name, "Refuse unless the request is for this host")
      ->type_name("HOST");
  sign_cmd->callback([&] {
    action = [&] {
      CaDir ca_loaded = load_ca_dir(ca_dir);
      if (!expect_name.empty()) sign_opts.expect_name = expect_name;
      std::string cert = sign_csr(ca_loaded.ca, read_file(csr_file), sign_opts, csr_file);
      write_file_atomic(out_file, cert, 0644);
      print_cert("signed " + out_file, cert);
      std::cout << "send it with the CA certificate (" << ca_dir << "/"
                << (ca_loaded.bundle == ca_loaded.ca.cert ? "ca-cert.pem" : "ca-bundle.pem")
                << ") to the node\n";
      return 0;
    };
  });

  // install
  std::string cert_file, ca_cert_file, dir;
  CLI::App* install_cmd =
      app.add_subcommand("install", "Install a signed certificate next to the key made by 'csr'");
  install_cmd->footer(
      "Checks that the certificate belongs to DIR/node-key.pem, verifies as TLS server and\n"
      "client against --ca-cert, then writes libvirt's layout into DIR (replaced files are\n"
      "kept as *.prev) and removes node-key.pem and node.csr.");
  install_cmd->add_option("--dir", dir, "Directory given to 'csr --out'")
      ->type_name("DIR")
      ->required();
  install_cmd->add_option("--cert", cert_file, "Signed certificate")->type_name("FILE")->required();
  install_cmd->add_option("--ca-cert", ca_cert_file, "CA certificate (or bundle) that signed it")
      ->type_name("FILE")
      ->required();
  install_cmd->callback([&] {
    action = [&] {
      install_node_dir(dir, cert_file, ca_cert_file);
      print_cert("installed " + dir + "/server-cert.pem (= client-cert.pem)", read_file(cert_file));
      return 0;
    };
  });

  // rotate
  CLI::App* rotate_cmd =
      app.add_subcommand("rotate", "Replace a node's key and certificate, keeping *.prev");
  rotate_cmd->footer(
      "Makes a new key and certificate from the CA and swaps them in atomically; the\n"
      "previous files stay as *.prev (e.g. server-cert.pem.prev). The tunnel picks the new\n"
      "files up without a restart; running migrations keep their connections. IP SANs of\n"
      "the current certificate are kept unless --ip is given.");
  rotate_cmd->add_option("--ca", ca_dir, "CA directory (ca-cert.pem, ca-key.pem)")
      ->type_name("DIR")
      ->required();
  rotate_cmd->add_option("--dir", dir, "Node directory, e.g. /etc/pki/qemu")
      ->type_name("DIR")
      ->required();
  rotate_cmd->add_option("--name", issue_opts.name, "Host name: CN and SAN DNS name")
      ->type_name("HOST")
      ->required();
  rotate_cmd->add_option("--ip", issue_opts.ips, "SAN IP addresses (replace the current ones)")
      ->type_name("ADDR");
  add_days(rotate_cmd, issue_opts.days, "the certificate");
  add_key(rotate_cmd, issue_opts.key);
  rotate_cmd->callback([&] {
    action = [&] {
      Pem node = rotate_node_dir(ca_dir, dir, issue_opts);
      print_cert("rotated " + dir + "/server-cert.pem (= client-cert.pem)", node.cert);
      std::cout << "  previous files kept as *.prev\n";
      return 0;
    };
  });

  // check
  CheckOptions check_opts;
  std::string check_name;
  bool json = false;
  CLI::App* check_cmd = app.add_subcommand("check", "Check a node directory");
  check_cmd->footer(
      "Checks: every file present; server and client certificates verify against\n"
      "ca-cert.pem (a certificate file may carry its intermediate CAs after it); each key\n"
      "matches its certificate; each certificate fits its role, by the rule xmig-tunnel\n"
      "--check applies: server-cert.pem allows serverAuth and client-cert.pem clientAuth\n"
      "(when they have an extendedKeyUsage), keyUsage has digitalSignature, no CA, and both\n"
      "name HOST as a DNS SAN (the CN never counts); a failure says how to reissue it with\n"
      "certtool (the template lines to add) or xmig-certs; days until expiry of\n"
      "node and CA certificates; modes (a key accessible by others fails, as the tunnel\n"
      "refuses it; a group-readable key, e.g. libvirt's root:qemu 0640, is a warning; no\n"
      "file may be writable by group/others).\n"
      "Exit status: 0 all ok, 1 warning (e.g. expiry within --warn-days), 2 failure.");
  check_cmd->add_option("--dir", dir, "Node directory, e.g. /etc/pki/qemu")
      ->type_name("DIR")
      ->required();
  check_cmd->add_option("--name", check_name, "Host name the DNS SAN must hold (or IP: an IP SAN)")
      ->type_name("HOST");
  check_cmd->add_option("--warn-days", check_opts.warn_days, "Warn when fewer days are left")
      ->type_name("N")
      ->check(CLI::Range(0, 36500).description(""))
      ->capture_default_str();
  check_cmd->add_flag("--json", json, "Print the findings as JSON");
  check_cmd->callback([&] {
    action = [&] {
      if (!check_name.empty()) check_opts.name = check_name;
      std::vector<Finding> findings = check_node_dir(dir, check_opts);
      int code = exit_code(findings);
      if (json) {
        std::cout << findings_json(dir, findings);
        return code;
      }
      for (const auto& f : findings) {
        std::string tag = std::string("[") + to_string(f.severity) + "]";
        tag.resize(10, ' ');
        std::cout << tag << f.check << ": " << f.file << ": " << f.message << "\n";
        if (!f.fix.empty()) std::cout << "          fix: " << f.fix << "\n";
      }
      std::cout << "status: " << (code == 0 ? "ok" : code == 1 ? "warning" : "failure") << "\n";
      return code;
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    return action ? action() : 2;
  } catch (const Error& e) {
    std::cerr << "xmig-certs: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "xmig-certs: unexpected error: " << e.what() << "\n";
    return 2;
  }
}
