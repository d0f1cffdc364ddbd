#!/usr/bin/env bash
# Libvirt.XmigMigrateSingleStorageParallelAndBack
#
# Setup: as Libvirt.QuickStartAsPrinted: hosts hv-a and hv-b with the README Quick
#   start's tunnels (hosts.sh); on hv-a guests xm-ram (no disk), xm-disk (a qcow2 disk
#   of random data; hv-b has an empty image of the same size) and xm-par (no disk), all
#   with random RAM.
# Action: the same four migrations as QuickStartAsPrinted, through xmig-migrate
#   (build/tools/xmig-migrate, which reserves a per-migration socket set
#   <run_dir>/<PEER>/<ID>/{driver,qemu,nbd}.sock from the local tunnel, runs virsh
#   migrate --live --p2p with its three URIs, then releases the set):
#   on hv-a `xmig-migrate xm-ram hv-b`;
#   `xmig-migrate --config /etc/xmig/tunnel.toml xm-disk hv-b --copy-storage-all`;
#   `xmig-migrate xm-par hv-b --parallel 4`; then on hv-b
#   `xmig-migrate --id back-1 xm-disk hv-a --copy-storage-all`.
#   Each guest is suspended before its migration.
# Pass: each xmig-migrate exits 0 and prints progress lines on stderr starting
#   "xmig-migrate:"; while it runs, /run/xmig/<PEER>/<ID>/ (ID: the domain, or back-1)
#   holds its driver.sock, qemu.sock and nbd.sock on the source host; afterwards that
#   folder is gone on both hosts; as in QuickStartAsPrinted, the guest is gone from the
#   source, its RAM on the destination hashes like the source's before, its disk
#   compares equal, it runs after virsh resume; both tunnels logged its connections
#   (driver; 1 qemu, 5 with --parallel 4; nbd with storage: per-migration channel names
#   count) and every close: line says result=ok.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
source "$here/guests.sh"
lv_begin --needs-migrate "$@"

lv_guest_create xm-ram
lv_guest_create xm-disk disk
lv_guest_create xm-par

# One migration: NAME FROM TO ID DISK QEMU_CONNECTIONS XMIG_MIGRATE_ARGS...
migrate_with_xmig() {
  local name=$1 from=$2 to=$3 id=$4 disk=$5 qemu=$6 t
  shift 6
  lv_suspend_and_hash "$from" "$name"
  lv_mark_logs
  lv_say "$name: xmig-migrate $* (on $from)"
  t=$SECONDS
  lv_start_xmig_migrate "$name" "$from" "$to" "$id" "$@"
  lv_wait_migrations
  lv_check_xmig_migrate "$name" "$from" "$to" "$id"
  lv_fail_on_problems
  lv_say "$name: migrated in $((SECONDS - t)) s"
  lv_check_arrived "$name" "$from" "$to" "$disk"
  lv_check_closes "$name" "$qemu" "$([ "$disk" = disk ] && echo 1 || echo 0)"
}

migrate_with_xmig xm-ram hv-a hv-b xm-ram - 1 xm-ram hv-b
migrate_with_xmig xm-disk hv-a hv-b xm-disk disk 1 \
  --config /etc/xmig/tunnel.toml xm-disk hv-b --copy-storage-all
migrate_with_xmig xm-par hv-a hv-b xm-par - 5 xm-par hv-b --parallel 4
migrate_with_xmig xm-disk hv-b hv-a back-1 disk 1 --id back-1 xm-disk hv-a --copy-storage-all
lv_say "PASS"
