#!/usr/bin/env bash
# Libvirt.QuickStartAsPrinted
#
# Setup: two libvirt hosts, hv-a and hv-b (hosts.sh), whose certificates and tunnels
#   follow the README Quick start steps 1 and 2; on hv-a three guests with random RAM:
#   qs-ram (no disk), qs-disk (a qcow2 disk with random data; hv-b has an empty image of
#   the same size) and qs-par (no disk).
# Action: on hv-a, the README step-4 command exactly as printed (fixed paths
#   /run/xmig/hv-b/{driver,qemu,nbd}.sock): qs-ram as is, qs-disk with
#   --copy-storage-all, qs-par with --parallel --parallel-connections 4; then on hv-b
#   the same command towards hv-a (/run/xmig/hv-a/...) moves qs-disk back with
#   --copy-storage-all. Each guest is suspended before its migration. Last, README step
#   5: xmig-verify on hv-a against hv-b.
# Pass: every virsh migrate exits 0; after each, the guest is gone from the source, its
#   RAM file on the destination hashes (sha256) like the source's before the migration,
#   its disk compares equal (qemu-img compare), and it runs on the destination after
#   virsh resume; both tunnels logged the migration's connections (driver; 1 qemu, or 5
#   with --parallel 4: the main stream and 4 multifd channels; nbd with storage) and
#   every one of their close: lines says result=ok; xmig-verify exits 0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
source "$here/guests.sh"
lv_begin "$@"

lv_guest_create qs-ram
lv_guest_create qs-disk disk
lv_guest_create qs-par

# One migration with the printed command: FROM TO DISK QEMU_CONNECTIONS [options] DOMAIN
migrate_as_printed() {
  local from=$1 to=$2 disk=$3 qemu=$4 t
  shift 4
  local name=${*: -1}
  lv_suspend_and_hash "$from" "$name"
  lv_mark_logs
  lv_say "$name: virsh migrate --live --p2p $* ... ($from -> $to)"
  t=$SECONDS
  lv_step4_migrate "$from" "$to" "$@" >"$LV_W/$name.out" 2>&1 ||
    lv_fail "$name: virsh migrate $from -> $to failed: $(cat "$LV_W/$name.out")"
  lv_say "$name: migrated in $((SECONDS - t)) s"
  lv_check_arrived "$name" "$from" "$to" "$disk"
  lv_check_closes "$name" "$qemu" "$([ "$disk" = disk ] && echo 1 || echo 0)"
}

migrate_as_printed hv-a hv-b - 1 qs-ram
migrate_as_printed hv-a hv-b disk 1 --copy-storage-all qs-disk
migrate_as_printed hv-a hv-b - 5 --parallel --parallel-connections 4 qs-par
migrate_as_printed hv-b hv-a disk 1 --copy-storage-all qs-disk

[ "$(printf '%s\n' "${LV_RAM[@]}" | sort -u | wc -l)" = 3 ] || lv_fail "two guests had the same RAM"

lv_say "README step 5: xmig-verify --config /etc/xmig/tunnel.toml --peer hv-b (on hv-a)"
on hv-a "$LV_VERIFY" --config /etc/xmig/tunnel.toml --peer hv-b >"$LV_W/verify.out" 2>&1 ||
  lv_fail "xmig-verify failed: $(cat "$LV_W/verify.out")"
tail -n 3 "$LV_W/verify.out"
lv_say "PASS"
