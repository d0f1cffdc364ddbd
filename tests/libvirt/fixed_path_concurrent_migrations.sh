#!/usr/bin/env bash
# Libvirt.FixedPathConcurrentMigrationsNeverDeliverOneIntoAnother
#
# Setup: hosts hv-a and hv-b (hosts.sh); on hv-a guests fp1 and fp2, each with random RAM
#   and a qcow2 disk holding 95 MiB of random data (hv-b has empty images of the same
#   size), suspended and hashed; their migrations slowed to 16 MiB/s (virsh
#   migrate-setspeed), so that each lasts about 15 s, of which about 6 s copying the
#   disk: fp1 is still copying its disk when fp2 starts.
# Action: on hv-a, the README step-4 command with its fixed paths
#   (/run/xmig/hv-b/{driver,qemu,nbd}.sock) and --copy-storage-all for fp1, and 4 s
#   later the same for fp2, to the same destination hv-b. (With fixed paths the second
#   destination QEMU replaces the first one's sockets: one guest's RAM or disk can land
#   in the other's QEMU.)
# Pass, all of:
#   - no guest on hv-b holds RAM or disk other than its own source's: a guest whose
#     migration completed is paused on hv-b with the RAM hashed on hv-a and a disk equal
#     to hv-a's image;
#   - at least one of the two migrations fails, and hv-a's or hv-b's tunnel logged a
#     `refused:` line containing "another migration";
#   - every guest ends running on exactly one host with its own content: one that
#     arrived runs on hv-b after virsh resume; one whose migration failed is still on
#     hv-a as the test left it (domstate reason "paused (user)"; any other state is a
#     source left behind by the failed migration), with the RAM it had, and runs after
#     virsh resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
source "$here/guests.sh"
lv_begin "$@"

guests=(fp1 fp2)
for g in "${guests[@]}"; do
  lv_guest_create "$g" disk 95
  lv_suspend_and_hash hv-a "$g"
  lv_slow_down "$g" 16
done
[ "${LV_RAM[fp1]}" != "${LV_RAM[fp2]}" ] || lv_fail "fp1 and fp2 have the same RAM"

lv_say "fp1: README step 4 with --copy-storage-all; fp2 the same 4 s later"
lv_start_migration fp1 lv_step4_migrate hv-a hv-b --copy-storage-all fp1
sleep 4
lv_start_migration fp2 lv_step4_migrate hv-a hv-b --copy-storage-all fp2
lv_wait_migrations

failed=0
for g in "${guests[@]}"; do
  [ "$(lv_job_rc "$g")" = 0 ] || failed=$((failed + 1))
  lv_check_outcome "$g" hv-a hv-b "${guests[@]}"
done
lv_check_overlap fp1 fp2 || lv_problem "the migrations did not overlap: nothing concurrent was tested"

[ "$failed" -ge 1 ] ||
  lv_problem "both migrations completed: two migrations shared one fixed socket set and neither was refused"
refusals=$(grep -h 'refused:' "$LV_W"/hv-*/tunnel.log | grep -F 'another migration' || true)
[ -n "$refusals" ] ||
  lv_problem "no tunnel logged a refused: line containing \"another migration\""
[ -z "$refusals" ] || lv_say "refusals: $refusals"

lv_fail_on_problems
lv_say "PASS"
