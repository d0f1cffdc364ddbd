#!/usr/bin/env bash
# Libvirt.VerifyTestMigrationPassesAndNamesEachCause
#
# Setup: hosts hv-a and hv-b as `hosts.sh --own-network` makes them: each its own
#   mount and network namespace, joined by a veth pair (hv-a 10.231.8.1, hv-b
#   10.231.8.2), with the README Quick start's tunnels (UNIX sockets, socket_group
#   libvirt-qemu, a verify route) and libvirtd. One host setup for every case below.
# Action, each on hv-a:
#   xmig-verify --config /etc/xmig/tunnel.toml --peer hv-b --test-migration
#   1. between the two good hosts;
#   1s. the same with --storage (a 4 MiB raw disk in a storage pool of the test's own on
#      each host, copied with --copy-storage-all through the tunnels' nbd channels);
#   1d. with --storage, where hv-b cannot make the destination's disk (its
#      /var/lib/libvirt/images read-only: a read-only bind mount in hv-b's namespace);
#   1t. with hv-a's side of the link slowed to 1 Mbit/s (tc tbf: the 32 MiB of RAM would
#      take minutes) and --migration-timeout 15;
#   2. with hv-b's tunnel restarted from a config without socket_group;
#   3. with hv-b's tunnel serving a certificate that has expired (issued with openssl ca
#      from the cluster CA, valid for 20 s, renamed into place: hv-b reloads it while
#      it is valid, and keeps serving it after it expires);
#   4. with hv-b's tunnel serving a certificate that names hv-c (hv-b restarted as
#      name = "hv-c" with hv-c's certificate from the cluster CA: another host's files);
#   5. with hv-b's tunnel stopped, the report as --json;
#   6. between the good hosts again, interrupted by SIGTERM (handled as Ctrl-C's
#      SIGINT) once xmig-migrate has reserved its socket set.
#   After each failing case hv-b gets its Quick start tunnel and certificate back.
# Pass: 1 exits 0 with PASS lines for there, back, the RAM after the round trip (sha256
#   as before it left), the capture, only TLS to the tunnels, no RAM pattern on the
#   wire, clean-up, and this host's tunnel's connections of the migration (a qemu
#   channel out under the migration id, a qemu channel in from hv-b, each with TLS
#   version, cipher, mode and bytes). 1s exits 0 with the same PASS lines, the disk
#   after the round trip (sha256 as before it left, emptied while away) and an nbd
#   channel out under the migration id and one in from hv-b with bytes; the clean-up
#   names its storage pool. 1d exits 1 with "there: not attempted: libvirt on hv-b
#   (through the tunnel's driver channel) did not make the destination's disk" and the
#   read-only error, and its clean-up passes. 1t exits 1 with "timeout: the migration to hv-b did not
#   finish within 15 s" and --migration-timeout as the fix. 2-5 exit 1 with the cause and fix named: 2 "the
#   destination's sockets are not usable by QEMU on hv-b" and socket_group; 3 "hv-b's
#   certificate has expired (on hv-b)"; 4 "does not name hv-b"; 5 "tunnel is
#   unreachable" in a JSON report whose "status" is "fail"; 6 exits 1 saying the way
#   there was interrupted, and its clean-up passes. After every case: no
#   domain or storage pool named xmig-verify-* on either host, /run/xmig, /run/libvirt and
#   /var/lib/libvirt on both hosts hold exactly the files and sockets they held before
#   the case, and no /tmp/xmig-verify-domain-* file is left.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
lv_begin --needs-migrate --own-network "$@"

# Every file, folder and socket of the places a test migration could leave one, on
# both hosts (domain logs in /var/log/libvirt/qemu are libvirt's own, as for any
# domain), the domains named xmig-verify-*, and xmig-verify's domain XML files in /tmp
# (only its own: other tests on this machine make /tmp/xmig-verify-* files too).
leftovers() {
  local h d
  for h in "${LV_HOSTS[@]}"; do
    for d in /run/xmig /run/libvirt /var/lib/libvirt; do
      (cd "$(lv_in "$h" "$d")" && find . -printf "$h:$d/%P %y\n" | grep -v -E '\.(pid|lock)$' | sort)
    done
    vsh "$h" list --all --name | grep '^xmig-verify-' | sed "s/^/$h: domain /" || true
    vsh "$h" pool-list --all --name | grep '^xmig-verify-' | sed "s/^/$h: pool /" || true
  done
  find /tmp -maxdepth 1 -name 'xmig-verify-domain-*' -printf '/tmp/%P\n' | sort
}
before=$(leftovers)
check_nothing_left() {
  local now
  now=$(leftovers)
  [ "$now" = "$before" ] ||
    lv_fail "$1: left behind (diff before -> after): $(diff <(echo "$before") <(echo "$now") | grep '^[<>]')"
  lv_say "$1: nothing left behind (no xmig-verify domain or storage pool; /run/xmig, /run/libvirt, /var/lib/libvirt on both hosts and /tmp as before)"
}

# Runs the test migration on hv-a: LABEL EXPECTED_EXIT [extra options]; its output in
# $LV_W/LABEL.out, shown.
test_migration() {
  local label=$1 want=$2 rc=0
  shift 2
  lv_say "$label: xmig-verify --test-migration $* (on hv-a)"
  on hv-a "$LV_VERIFY" --config /etc/xmig/tunnel.toml --peer hv-b --test-migration \
    --xmig-migrate "$LV_MIGRATE" "$@" >"$LV_W/$label.out" 2>&1 || rc=$?
  sed 's/^/    /' "$LV_W/$label.out"
  [ "$rc" = "$want" ] || lv_fail "$label: xmig-verify exited $rc, expected $want"
}
expect() { grep -qE -- "$2" "$LV_W/$1.out" || lv_fail "$1: the report lacks /$2/"; }

# hv-b's tunnel: stopped (SIGTERM, waited for), and started again with hosts.sh's
# lv_host_tunnel (its --check first, then `ready:`).
stop_tunnel() {
  local pid
  pid=$(cat "$LV_W/$1/tunnel.pid")
  kill "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  lv_fail "$1: xmig-tunnel did not stop"
}
restart_tunnel() {
  stop_tunnel "$1"
  lv_host_tunnel "$1"
}
B_CONF=$(lv_path hv-b /etc/xmig/tunnel.toml)
B_PKI=$(lv_path hv-b /etc/pki/qemu)
cp -a "$B_CONF" "$LV_W/hv-b.tunnel.toml"
cp -a "$B_PKI" "$LV_W/hv-b.pki"
# Puts hv-b's Quick start config and certificates back, and its tunnel with them.
restore_hv_b() {
  stop_tunnel hv-b
  cp -a "$LV_W/hv-b.tunnel.toml" "$B_CONF"
  rm -rf "$B_PKI"/hv-c
  # What the tunnel made while it ran as hv-c (its incoming folder): the test's own.
  rm -rf "$(lv_path hv-b /run/xmig/hv-c)"
  cp -a "$LV_W/hv-b.pki/." "$B_PKI/"
  lv_host_tunnel hv-b
}

# 1. Two good hosts.
test_migration good 0
for line in 'PASS  test domain: xmig-verify-[0-9a-f]+: transient' 'PASS  there: hv-a -> hv-b' \
  'PASS  back: hv-b -> hv-a' 'PASS  RAM after the round trip: sha256' 'PASS  capture: .* on lvmig0' \
  'PASS  only TLS to the tunnels' 'PASS  no RAM pattern on the wire' 'PASS  clean-up' \
  'PASS  tunnel connection: dir=out peer=hv-b channel=qemu migration=xmig-verify-[0-9a-f]+ tls=TLSv1.3 cipher=[A-Z0-9_]+ mode=[a-z-]+ to_peer=[1-9]' \
  'PASS  tunnel connection: dir=in peer=hv-b channel=qemu tls=TLSv1.3 cipher=[A-Z0-9_]+ mode=[a-z-]+ to_peer=[0-9]+ from_peer=[1-9]' \
  '^result: PASS'; do
  expect good "$line"
done
check_nothing_left good

# 1s. The same with a disk, migrated with its storage.
test_migration storage 0 --storage
for line in 'PASS  test domain: xmig-verify-[0-9a-f]+: .* a 4 MiB raw disk at /var/lib/libvirt/images/xmig-verify-[0-9a-f]+/disk.raw' \
  'PASS  there: hv-a -> hv-b' 'PASS  back: hv-b -> hv-a' 'PASS  RAM after the round trip: sha256' \
  'PASS  disk after the round trip: sha256 [0-9a-f]+\.\.\. of /var/lib/libvirt/images/xmig-verify-[0-9a-f]+/disk.raw as before it left' \
  'PASS  only TLS to the tunnels' 'PASS  no RAM pattern on the wire: .*its disk' \
  'PASS  clean-up: the throwaway domain xmig-verify-[0-9a-f]+ is on neither host, nor its storage pool and disk' \
  'PASS  tunnel connection: dir=out peer=hv-b channel=nbd migration=xmig-verify-[0-9a-f]+ tls=TLSv1.3 .* to_peer=[1-9]' \
  'PASS  tunnel connection: dir=in peer=hv-b channel=nbd tls=TLSv1.3 .* from_peer=[1-9]' \
  '^result: PASS'; do
  expect storage "$line"
done
check_nothing_left storage

# 1d. The destination's disk cannot be made: hv-b's images folder read-only.
IMAGES=/var/lib/libvirt/images
on hv-b mount --bind "$IMAGES" "$IMAGES"
on hv-b mount -o remount,ro,bind "$IMAGES"
test_migration no-disk 1 --storage
on hv-b umount "$IMAGES"
expect no-disk "FAIL  there: not attempted: libvirt on hv-b \(through the tunnel's driver channel\) did not make the destination's disk $IMAGES/xmig-verify-[0-9a-f]+/disk.raw in a storage pool xmig-verify-[0-9a-f]+: virsh pool-build: .*[Rr]ead-only file system"
expect no-disk 'PASS  clean-up: the throwaway domain xmig-verify-[0-9a-f]+ is on neither host \(it never reached hv-b\), nor its storage pool and disk'
check_nothing_left no-disk

# 1t. Timeout: hv-a's side of the link at 1 Mbit/s (a token bucket: tc tbf), so the way
# there cannot finish within --migration-timeout 15.
on hv-a tc qdisc add dev "$LV_LINK" root tbf rate 1mbit burst 32kbit latency 400ms
test_migration timeout 1 --migration-timeout 15
on hv-a tc qdisc del dev "$LV_LINK" root
expect timeout 'FAIL  there: timeout: the migration to hv-b did not finish within 15 s \(cancelled\)'
expect timeout 'fix: .*--migration-timeout SECONDS'
expect timeout 'PASS  clean-up: the throwaway domain xmig-verify-[0-9a-f]+ is on neither host'
check_nothing_left timeout

# 2. The destination's tunnel without socket_group: QEMU cannot create its socket there.
sed -i '/^socket_group/d' "$B_CONF"
restart_tunnel hv-b
test_migration no-socket-group 1 --migration-timeout 90
expect no-socket-group "FAIL  there: the destination's sockets are not usable by QEMU on hv-b"
expect no-socket-group 'fix: on hv-b: set socket_group = "libvirt-qemu"'
restore_hv_b
check_nothing_left no-socket-group

# 3. The peer's certificate has expired: issued by the cluster CA with openssl ca, valid
# for 20 s, renamed into place while valid (hv-b's tunnel reloads it), then it expires.
mkdir -p "$LV_W/expired"
(
  cd "$LV_W/expired"
  : >index.txt
  echo 1000 >serial
  cat >ca.cnf <<EOF
[ca]
default_ca = ca
[ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
[req]
distinguished_name = dn
req_extensions = ext
prompt = no
[dn]
CN = hv-b
[ext]
subjectAltName = DNS:hv-b, IP:$(lv_address hv-b)
extendedKeyUsage = serverAuth, clientAuth
keyUsage = critical, digitalSignature
basicConstraints = critical, CA:FALSE
EOF
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem 2>/dev/null
  openssl req -new -config ca.cnf -key key.pem -out req.csr
  openssl ca -batch -config ca.cnf -cert "$LV_W/xmig-ca/ca-cert.pem" -keyfile "$LV_W/xmig-ca/ca-key.pem" \
    -startdate "$(date -u -d '-1 hour' +%Y%m%d%H%M%SZ)" -enddate "$(date -u -d '+20 seconds' +%Y%m%d%H%M%SZ)" \
    -in req.csr -out cert.pem >ca.log 2>&1 || lv_fail "openssl ca: $(cat ca.log)"
) || exit 1
expires=$(openssl x509 -in "$LV_W/expired/cert.pem" -noout -enddate | cut -d= -f2)
reloads=$(grep -c 'reload (files changed): certificate' "$LV_W/hv-b/tunnel.log" || true)
install -m 0600 "$LV_W/expired/key.pem" "$B_PKI/server-key.pem.new"
install -m 0644 "$LV_W/expired/cert.pem" "$B_PKI/server-cert.pem.new"
mv -f "$B_PKI/server-key.pem.new" "$B_PKI/server-key.pem"
mv -f "$B_PKI/server-cert.pem.new" "$B_PKI/server-cert.pem"
for _ in $(seq 100); do
  [ "$(grep -c 'reload (files changed): certificate' "$LV_W/hv-b/tunnel.log" || true)" -gt "$reloads" ] && break
  sleep 0.1
done
[ "$(grep -c 'reload (files changed): certificate' "$LV_W/hv-b/tunnel.log" || true)" -gt "$reloads" ] ||
  lv_fail "expired: hv-b's tunnel did not reload the short-lived certificate: $(tail -n 5 "$LV_W/hv-b/tunnel.log")"
lv_say "expired: hv-b serves a certificate valid until $expires; waiting until it has expired"
while [ "$(date -u +%s)" -le "$(date -u -d "$expires" +%s)" ]; do sleep 1; done
test_migration expired 1
expect expired "FAIL  migration: not attempted: certificate: hv-b's certificate has expired \(on hv-b\)"
expect expired 'fix: on hv-b: issue a current certificate'
restore_hv_b
check_nothing_left expired

# 4. The peer presents another host's certificate: hv-b's tunnel runs as hv-c with
# hv-c's files (issued by the cluster CA).
on hv-b "$LV_CERTS" issue --ca "$LV_W/xmig-ca" --name hv-c --ip "$(lv_address hv-b)" \
  --out /etc/pki/qemu/hv-c >"$LV_W/hv-c-certs.log" 2>&1 || lv_fail "xmig-certs issue hv-c: $(cat "$LV_W/hv-c-certs.log")"
sed -i -e 's/^name = "hv-b"/name = "hv-c"/' -e 's#/etc/pki/qemu/\([a-z-]*\.pem\)#/etc/pki/qemu/hv-c/\1#' "$B_CONF"
restart_tunnel hv-b
test_migration other-host 1
expect other-host "FAIL  migration: not attempted: certificate: the certificate hv-b's tunnel presents does not name hv-b"
expect other-host 'fix: on hv-b: install a certificate issued for hv-b'
restore_hv_b
check_nothing_left other-host

# 5. The peer's tunnel stopped; the report as JSON.
stop_tunnel hv-b
test_migration stopped 1 --json
expect stopped '"status":"fail"'
expect stopped "not attempted: the peer's tunnel is unreachable at $(lv_address hv-b):"
expect stopped '"fix":"start xmig-tunnel on hv-b'
lv_host_tunnel hv-b
check_nothing_left stopped

# 6. Interrupted: SIGTERM (what Ctrl-C's SIGINT does too; bash starts background jobs
# with SIGINT ignored) to xmig-verify once its migration has reserved its socket set on
# hv-a, while the way there runs. The subshell execs nsenter, which execs xmig-verify:
# $! is xmig-verify's pid. It reserves the set once the throwaway domain is made, which
# may take up to xmig-verify's set-up bound (120 s: a slow `virsh create` was seen in CI).
lv_say "interrupted: xmig-verify --test-migration (on hv-a), SIGTERM while the way there runs"
# shellcheck disable=SC2046  # lv_enter's words are nsenter options
(exec nsenter $(lv_enter hv-a) -- "$LV_VERIFY" --config /etc/xmig/tunnel.toml --peer hv-b \
  --test-migration --xmig-migrate "$LV_MIGRATE" >"$LV_W/interrupted.out" 2>&1) &
verify_pid=$!
for _ in $(seq 2400); do
  compgen -G "$(lv_path hv-a /run/xmig/hv-b)/xmig-verify-*" >/dev/null && break
  sleep 0.05
done
compgen -G "$(lv_path hv-a /run/xmig/hv-b)/xmig-verify-*" >/dev/null ||
  lv_fail "interrupted: xmig-verify never reserved its socket set: $(cat "$LV_W/interrupted.out")"
kill -TERM "$verify_pid"
rc=0
wait "$verify_pid" || rc=$?
sed 's/^/    /' "$LV_W/interrupted.out"
[ "$rc" = 1 ] || lv_fail "interrupted: xmig-verify exited $rc after SIGTERM, expected 1"
expect interrupted 'FAIL  there: interrupted \(Ctrl-C or SIGTERM\)'
expect interrupted 'FAIL  interrupted: Ctrl-C or SIGTERM'
expect interrupted 'PASS  clean-up: the throwaway domain xmig-verify-[0-9a-f]+ is on neither host'
check_nothing_left interrupted
lv_say "PASS"
