// Flow classification (see classify.hpp).
#include "verify/classify.hpp"

#include <cstdio>

namespace xmig::verify {

namespace {

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string fix_for(const std::string& protocol) {
  if (protocol == "NBD")
    return "carry the disk stream through xmig: virsh migrate --copy-storage-all "
           "--disks-uri unix:///run/xmig/<peer>/nbd.sock (never a TCP NBD port between hosts), "
           "or [intercept] in the tunnel config for nova's TCP migrations";
  if (protocol == "libvirt RPC")
    return "reach the peer's libvirt through xmig: --desturi "
           "'qemu+unix:///system?socket=/run/xmig/<peer>/driver.sock' (not qemu+tcp://), or "
           "[intercept] in the tunnel config for nova's qemu+tcp://";
  return "carry the migration through xmig: virsh migrate --migrateuri "
         "unix:///run/xmig/<peer>/qemu.sock (or migrate to the tunnel's entry socket), never "
         "tcp:HOST:PORT between hosts; for nova's tcp:HOST:PORT, [intercept] in the tunnel "
         "config (README: Transparent mode)";
}

}  // namespace

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? std::to_string(b) + " B" : fixed(v, 1) + " " + units[u];
}

std::string count(uint64_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

FlowVerdict classify_flow(const Flow& f) {
  FlowVerdict v;
  int c = f.client, s = 1 - f.client;
  v.name = f.side(c).str() + " -> " + f.side(s).str();
  const StreamDirection* dirs[2] = {&f.dir[c], &f.dir[s]};
  const char* arrow[2] = {"client->server", "server->client"};
  v.has_payload = dirs[0]->offset + dirs[1]->offset > 0;
  if (!v.has_payload) {
    v.reason = "no payload";
    return v;
  }

  // A migration protocol in the clear is the finding that matters most.
  std::string found;
  for (int i = 0; i < 2; ++i)
    for (const auto& h : dirs[i]->signatures.hits()) {
      if (!found.empty()) found += "; ";
      found += h.protocol + " in plaintext (" + arrow[i] + " at stream byte " +
               std::to_string(h.offset) + ", " + std::to_string(h.count) + " match" +
               (h.count == 1 ? "" : "es") + ")";
      if (v.fix.empty()) v.fix = fix_for(h.protocol);
    }
  if (!found.empty()) {
    v.status = Status::Fail;
    v.reason = found;
    return v;
  }

  // TLS framing in every direction that carried bytes?
  std::string notes;
  bool framed = true, broken = false;
  for (int i = 0; i < 2; ++i) {
    const StreamDirection& d = *dirs[i];
    if (d.offset == 0) continue;
    const auto& t = d.tls.summary();
    if (!t.framed) {
      framed = false;
      notes += std::string(notes.empty() ? "" : "; ") + arrow[i] + ": " + human_bytes(d.delivered) +
               " not TLS records";
    } else if (t.desync) {
      broken = true;
      notes += std::string(notes.empty() ? "" : "; ") + arrow[i] +
               ": TLS framing broke at stream byte " + std::to_string(t.desync_at) +
               (d.gap_bytes ? " (after capture gaps)" : "");
    }
  }
  if (!framed) {
    v.status = Status::Warn;
    v.reason = "plaintext TCP, no known migration protocol (" + notes + ")";
    v.fix = "if this is migration traffic, carry it through xmig; otherwise ignore";
    return v;
  }

  // It is TLS: what the hellos said and how the records look.
  v.tls = true;
  uint16_t version = 0, suite = 0;
  std::string alpn, sni;
  uint64_t recs[2] = {dirs[0]->tls.summary().total_records(),
                      dirs[1]->tls.summary().total_records()};
  uint64_t app = 0, bad_versions = 0, gaps = 0, retrans = 0;
  // Entropy is judged on the direction that carried more application data.
  double entropy = 0;
  uint64_t entropy_bytes = 0;
  for (int i = 0; i < 2; ++i) {
    const auto& t = dirs[i]->tls.summary();
    if (t.server_hello) {
      version = t.hello_version;
      suite = t.cipher_suite;
    }
    if (t.client_hello) {
      alpn = t.alpn;
      sni = t.sni;
    }
    app += dirs[i]->tls.app_data().bytes();
    bad_versions += t.bad_versions;
    gaps += dirs[i]->gap_bytes;
    retrans += dirs[i]->retransmitted;
    if (dirs[i]->tls.app_data().bytes() > entropy_bytes) {
      entropy_bytes = dirs[i]->tls.app_data().bytes();
      entropy = dirs[i]->tls.app_data().bits_per_byte();
    }
  }
  bool client_hello = dirs[0]->tls.summary().client_hello || dirs[1]->tls.summary().client_hello;
  std::string r = version ? tls_version_name(version)
                  : client_hello
                      ? std::string("TLS (no ServerHello: the handshake did not complete)")
                      : std::string("TLS (hello not captured)");
  if (suite) r += " " + cipher_suite_name(suite);
  if (!alpn.empty()) r += ", ALPN " + alpn;
  if (!sni.empty()) r += ", SNI " + sni;
  r += ", records " + std::to_string(recs[0]) + "/" + std::to_string(recs[1]) +
       " (client/server), application data " + human_bytes(app);
  if (entropy_bytes) r += ", entropy " + fixed(entropy, 3) + " bits/byte";
  if (retrans) r += ", " + human_bytes(retrans) + " retransmitted";
  if (gaps) r += ", " + human_bytes(gaps) + " not captured";
  v.status = Status::Pass;
  auto worsen = [&](Status st, const std::string& why, const std::string& fix) {
    if (static_cast<int>(st) > static_cast<int>(v.status)) {
      v.status = st;
      v.fix = fix;
    }
    r += "; " + why;
  };
  if (broken)
    worsen(gaps ? Status::Warn : Status::Fail, notes,
           gaps ? "capture again with a larger buffer (tcpdump -B 65536) or snap length"
                : "bytes outside TLS records: find what writes to this connection in the clear");
  if (version && version < 0x0303)
    worsen(Status::Fail, tls_version_name(version) + " is obsolete",
           "allow TLS 1.3 only ([tls] min_version = \"1.3\")");
  else if (version == 0x0303)
    worsen(Status::Warn, "TLS 1.2 negotiated", "prefer TLS 1.3 ([tls] min_version = \"1.3\")");
  if (suite && version != 0x0304 && !cipher_suite_is_aead(suite))
    worsen(Status::Fail, cipher_suite_name(suite) + " is not an AEAD suite",
           "allow AEAD suites only (AES-GCM, ChaCha20-Poly1305)");
  if (gaps && !broken)
    worsen(Status::Warn, "bytes the capture missed were not judged",
           "capture with a larger buffer (tcpdump -B 65536) and -s 0");
  if (bad_versions)
    worsen(Status::Warn, std::to_string(bad_versions) + " records with an odd version",
           "check what terminates TLS on this flow");
  if (entropy_bytes >= 4096 && entropy < kCiphertextEntropy)
    worsen(Status::Warn, "application data entropy below " + fixed(kCiphertextEntropy, 1),
           "check the suite: ciphertext is indistinguishable from random");
  v.reason = r;
  return v;
}

}  // namespace xmig::verify
