#!/usr/bin/env bash
# Libvirt.ConcurrentStorageMigrationsNeverCross
#
# Setup: hosts hv-a and hv-b (hosts.sh); on hv-a guests cc1 ... cc5, each with random
#   RAM and a qcow2 disk holding 95 MiB of random data (hv-b has empty images of the
#   same size), suspended and hashed; their migrations slowed to 16 MiB/s (virsh
#   migrate-setspeed), so that each lasts about 15 s, of which about 6 s copying the
#   disk: the ones started later begin while the earlier ones still copy.
# Action: on hv-a, `xmig-migrate NAME hv-b --copy-storage-all` for cc1, and 3 s later
#   for cc2; when both have ended, the same for cc3, cc4 and cc5, started 2 s apart. All
#   go to the same destination, hv-b.
# Pass: the migrations of each round overlapped in time (else nothing concurrent was
#   tested); every xmig-migrate exits 0, printed "xmig-migrate:" progress lines on
#   stderr, had its own socket set /run/xmig/hv-b/NAME/ on hv-a while it ran, and that
#   folder is gone on both hosts afterwards; every guest is gone from hv-a, and on hv-b
#   its RAM hashes like its own source's and no other guest's, its disk equals its own
#   source image and no other's (qemu-img compare), and it runs after virsh resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
source "$here/guests.sh"
lv_begin --needs-migrate "$@"

all=(cc1 cc2 cc3 cc4 cc5)
for g in "${all[@]}"; do
  lv_guest_create "$g" disk 95
  lv_suspend_and_hash hv-a "$g"
  lv_slow_down "$g" 16
done
[ "$(printf '%s\n' "${LV_RAM[@]}" | sort -u | wc -l)" = ${#all[@]} ] || lv_fail "two guests have the same RAM"

# One round: GAP_SECONDS NAME...: the migrations started GAP apart, then checked.
round() {
  local gap=$1 g first=1
  shift
  lv_say "round: $* to hv-b with xmig-migrate --copy-storage-all, started $gap s apart"
  for g in "$@"; do
    [ -n "$first" ] || sleep "$gap"
    first=
    lv_start_xmig_migrate "$g" hv-a hv-b "$g" "$g" hv-b --copy-storage-all
  done
  lv_wait_migrations
  lv_check_overlap "$@" || lv_problem "the migrations of $* did not overlap: nothing concurrent was tested"
  for g in "$@"; do
    lv_check_xmig_migrate "$g" hv-a hv-b "$g"
    lv_check_outcome "$g" hv-a hv-b "${all[@]}"
    [ "${LV_WHERE[$g]}" = hv-b ] || lv_problem "$g did not arrive on hv-b (it ends: ${LV_WHERE[$g]})"
  done
  lv_fail_on_problems
}

round 3 cc1 cc2
round 2 cc3 cc4 cc5
lv_say "PASS"
