#!/usr/bin/env bash
# Libvirt.VerifyTestMigrationThroughTransparentMode
#
# Setup: hosts hv-a and hv-b as `hosts.sh --netns` makes them (the README's nova guide:
#   network namespaces joined by a veth, hv-a 10.231.8.1, hv-b 10.231.8.2, tunnels in
#   transparent mode with [intercept] and firewall = true, libvirtd without a TCP
#   listener, qemu.conf's migration_address and port range).
# Action: on hv-a, xmig-verify --config /etc/xmig/tunnel.toml --peer hv-b --test-migration.
# Pass: it exits 0; the way there went nova's TCP path (qemu+tcp://, tcp://) and came
#   back, the RAM hashes as before, the capture on lvmig0 saw the RAM cross both ways
#   as TLS to the tunnels' port 7443 only and no window of the RAM pattern; this host's
#   tunnel lists port-<N> channels of the migration both ways; the interception group
#   follows, every line PASS (table inet xmig as the config demands, driver port and
#   migration port carried from this host, dropped from the network); afterwards no
#   xmig-verify domain on either host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
lv_begin --needs-migrate --netns "$@"

rc=0
on hv-a "$LV_VERIFY" --config /etc/xmig/tunnel.toml --peer hv-b --test-migration \
  --xmig-migrate "$LV_MIGRATE" >"$LV_W/transparent.out" 2>&1 || rc=$?
sed 's/^/    /' "$LV_W/transparent.out"
[ "$rc" = 0 ] || lv_fail "xmig-verify --test-migration exited $rc"
expect() { grep -qE -- "$1" "$LV_W/transparent.out" || lv_fail "the report lacks /$1/"; }
expect 'PASS  there: hv-a -> hv-b .*qemu\+tcp://'
expect 'PASS  back: hv-b -> hv-a'
expect 'PASS  RAM after the round trip'
expect 'PASS  capture: .* on lvmig0 .*to hv-b:7443 \(there\), .* to hv-a:7443 \(back\)'
expect 'PASS  only TLS to the tunnels'
expect 'PASS  no RAM pattern on the wire'
expect 'PASS  tunnel connection: dir=out peer=hv-b channel=port-4915[0-9]'
expect 'PASS  tunnel connection: dir=in peer=hv-b channel=port-4915[0-9]'
expect 'PASS  table inet xmig'
expect 'PASS  migration port [0-9]+ from the network: dropped'
expect 'PASS  clean-up'
for h in "${LV_HOSTS[@]}"; do
  domains=$(vsh "$h" list --all --name | grep '^xmig-verify-' || true)
  [ -z "$domains" ] || lv_fail "$h still has $domains"
done
lv_say "PASS"
