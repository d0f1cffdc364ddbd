#!/usr/bin/env bash
# Package.BuildsInstallsCarriesAStreamAndPurgesClean
#
# Setup: this checkout; the machine must not have the xmig package installed (the
#   test installs and purges it; it refuses rather than remove an operator's).
# Action: the .deb of this checkout (built once by the fixture
#   Package.BuildsTheDebianWayLintianClean, or by tools/package when run alone); the README's
#   Quick start install command, as printed, installs it; the installed commands make a
#   CA and two host certificates, `xmig-tunnel --check` checks two configurations, two
#   installed tunnels carry 64 MiB of random data from hv-a's qemu entry to hv-b's
#   target; then `apt-get purge`.
# Pass: the four commands, their man pages
#   (each long option of --help in its page), the unit (binaries in /usr/bin, not
#   enabled), the tmpfiles entry, the README, the monitoring kit, the xmig system user
#   and /etc/xmig/tunnel.toml as a conffile equal to the README's step-2 example are
#   installed; both --check runs exit 0; the data's SHA-256 matches at both ends and
#   both close lines say result=ok; after purge no file of the package, /etc/xmig or
#   /run/xmig remains (the xmig user stays, as Debian keeps system users).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }
say() { echo "== $*"; }

if dpkg-query -W -f='${Status}' xmig 2>/dev/null | grep -q 'install ok installed'; then
  fail "the xmig package is installed on this machine; this test installs and purges it: remove it first (apt-get purge xmig)"
fi

w=$(mktemp -d /tmp/xmig-package-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if dpkg-query -W -f='${Status}' xmig 2>/dev/null | grep -q installed; then
    apt-get purge -y -q xmig >/dev/null 2>&1 || true
  fi
  rm -rf "$w"
}
trap cleanup EXIT

source "$src/tests/package/dist.sh"
package_dist "$w/dist" "$w/package.log" || exit 1
grep -E '^[EWIP]: ' "$w/dist/lintian.txt" || echo "(lintian: no tags)"

# README Quick start: the install command exactly as printed, from the folder that
# holds dist/ (the checkout, there).
install_cmd=$(grep -m1 -E '^ +apt install \./dist/xmig_\*\.deb' "$src/README.md" | sed -E 's/^ +//; s/ +#.*//')
[ -n "$install_cmd" ] || fail "README: no 'apt install ./dist/xmig_*.deb' line in the Quick start"
say "README: $install_cmd"
(cd "$w" && DEBIAN_FRONTEND=noninteractive eval "${install_cmd/apt install/apt-get install -y -q}") >"$w/install.log" 2>&1 ||
  { cat "$w/install.log"; fail "installing the package failed"; }

say "what the package installed"
for t in xmig-tunnel xmig-certs xmig-verify xmig-migrate; do
  [ -x /usr/bin/$t ] || fail "/usr/bin/$t missing"
  page=/usr/share/man/man1/$t.1.gz
  [ -f "$page" ] || fail "$page missing"
  # The page is made from --help: every long option there is in the page.
  # (Read once into a variable: `zcat | grep -q` fails under pipefail when
  # grep stops reading early and zcat gets SIGPIPE.)
  text=$(zcat "$page" | sed 's/\\-/-/g')
  for opt in $(/usr/bin/$t --help 2>&1 | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
    grep -qF -- "$opt" <<<"$text" || fail "$page lacks $opt from $t --help"
  done
done
unit=/lib/systemd/system/xmig-tunnel.service
[ -f $unit ] || fail "$unit missing"
grep -q '^ExecStart=/usr/bin/xmig-tunnel --config /etc/xmig/tunnel.toml$' $unit || fail "$unit does not start /usr/bin/xmig-tunnel"
! grep -q /usr/local $unit || fail "$unit still names /usr/local"
[ ! -e /etc/systemd/system/multi-user.target.wants/xmig-tunnel.service ] || fail "the unit was enabled before the host is configured"
grep -q '^d /run/xmig 0750 xmig xmig' /usr/lib/tmpfiles.d/xmig.conf || fail "tmpfiles entry for /run/xmig missing"
[ -f /usr/share/doc/xmig/README.md ] || fail "README missing from /usr/share/doc/xmig"
[ -f /usr/share/doc/xmig/examples/monitoring/xmig-alerts.yml ] || fail "monitoring kit missing from the examples"
[ -f /usr/share/doc/xmig/examples/xmig-tunnel-transparent.conf ] || fail "transparent-mode drop-in missing from the examples"
getent passwd xmig | grep -q ':/usr/sbin/nologin$' || fail "system user xmig missing or has a shell"
dpkg-query -W -f='${Conffiles}\n' xmig | grep -q ' /etc/xmig/tunnel.toml ' || fail "/etc/xmig/tunnel.toml is not a conffile"
# The example is the README's step-2 configuration, line for line.
diff <(sed '1,/^$/d' /etc/xmig/tunnel.toml) \
  <(awk '/^2\. Configuration, `\/etc\/xmig\/tunnel.toml`/{on=1;next} on&&/^   `xmig-tunnel --config/{exit} on&&!/^   [^ ]/' "$src/README.md" |
    sed -e 's/^       //' | sed '/./,$!d' | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}') ||
  fail "/etc/xmig/tunnel.toml differs from the README's step-2 example (above)"

say "the installed commands: certificates, --check, two tunnels, 64 MiB"
xmig-certs ca init --dir "$w/ca" >/dev/null
port_a=$((20000 + RANDOM % 5000)) port_b=$((25000 + RANDOM % 5000))
for side in a b; do
  name=hv-$side other=hv-$([ $side = a ] && echo b || echo a)
  port=$([ $side = a ] && echo $port_a || echo $port_b)
  other_port=$([ $side = a ] && echo $port_b || echo $port_a)
  xmig-certs issue --ca "$w/ca" --name $name --ip 127.0.0.1 --out "$w/$side/pki" >/dev/null
  mkdir -p "$w/$side/run"
  cat >"$w/$side/tunnel.toml" <<TOML
name = "$name"
run_dir = "$w/$side/run"
listen = "127.0.0.1:$port"

[tls]
ca = "$w/$side/pki/ca-cert.pem"
cert = "$w/$side/pki/server-cert.pem"
key = "$w/$side/pki/server-key.pem"

[[peer]]
name = "$other"
address = "127.0.0.1:$other_port"
TOML
  xmig-tunnel --config "$w/$side/tunnel.toml" --check >"$w/$side/check.out" 2>&1 ||
    { cat "$w/$side/check.out"; fail "xmig-tunnel --check of hv-$side failed"; }
  xmig-tunnel --config "$w/$side/tunnel.toml" >"$w/$side/log" 2>&1 &
  pids+=($!)
done
for side in a b; do
  for _ in $(seq 100); do grep -q 'ready:' "$w/$side/log" && break; sleep 0.1; done
  grep -q 'ready:' "$w/$side/log" || { cat "$w/$side/log"; fail "hv-$side never became ready"; }
done
head -c $((64 << 20)) /dev/urandom >"$w/data"
nc -lU "$w/b/run/hv-b/qemu.sock" >"$w/received" &
receiver=$!
for _ in $(seq 50); do [ -S "$w/b/run/hv-b/qemu.sock" ] && break; sleep 0.1; done
nc -NU "$w/a/run/hv-b/qemu.sock" <"$w/data" || fail "sending into hv-a's qemu entry failed"
wait $receiver || true
sent=$(sha256sum <"$w/data" | cut -d' ' -f1)
got=$(sha256sum <"$w/received" | cut -d' ' -f1)
[ "$sent" = "$got" ] || fail "SHA-256 differs: sent $sent, received $got ($(stat -c %s "$w/received") bytes)"
echo "sha256 $got at both ends"
for side in a b; do
  for _ in $(seq 100); do grep -q 'close:' "$w/$side/log" && break; sleep 0.1; done
  grep 'close:' "$w/$side/log" | grep -q 'result=ok' || { cat "$w/$side/log"; fail "hv-$side has no close line with result=ok"; }
  grep 'close:' "$w/$side/log" | sed 's/^/  /'
done
for p in "${pids[@]}"; do kill "$p"; done
wait "${pids[@]}" 2>/dev/null || true
pids=()

say "apt-get purge xmig"
# Every file of the package (directories such as /usr/share/lintian/overrides are
# shared with other packages), and the folders that are the package's alone.
files=$(dpkg-query -L xmig | while read -r f; do [ -d "$f" ] || echo "$f"; done)
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q xmig >"$w/purge.log" 2>&1 || { cat "$w/purge.log"; fail "purge failed"; }
left=()
for f in $files /etc/xmig /run/xmig /usr/share/doc/xmig; do [ -e "$f" ] && left+=("$f"); done
[ ${#left[@]} -eq 0 ] || fail "left behind after purge: ${left[*]}"
echo "nothing of the package remains ($(echo "$files" | wc -l) paths checked); user xmig stays: $(getent passwd xmig)"
echo PASS
