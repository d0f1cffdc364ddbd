# Guests for the tests in this folder, and the checks that a migration carried one
# whole. Sourced after hosts.sh.
#
# A guest is TCG (type='qemu'), 128 MiB, with no OS (it sits in SeaBIOS), its RAM in a
# file under the host's memory_backing_dir (libvirt 9.0 names it
# <memory_backing_dir>/libvirt/qemu/<id>-<name>/pc.ram: a memory-backend-file, share=on), and optionally a 64 MiB qcow2 disk
# /var/lib/libvirt/images/<name>.qcow2 holding 31 MiB of random data after a zero first
# MiB (so that SeaBIOS never finds a boot sector and runs random code). The guest is
# created paused, its RAM file is filled with random bytes (QEMU maps the file shared:
# what is written there is the guest's RAM), then it runs: every guest's RAM and disk
# are its own.
# Before a migration the test suspends the guest, so that its RAM stays still, and
# hashes its RAM file; a live migration of a paused guest leaves it paused on the
# destination, whose RAM file must then hash alike, and whose disk must compare equal
# to the source's (qemu-img compare). Then the guest is resumed there.

LV_RAM_MIB=128
LV_DISK_MIB=64
declare -A LV_RAM=()   # guest -> sha256 of its RAM when it was last suspended
declare -A LV_MARK=()  # host -> lines in its tunnel log when lv_mark_logs ran

# The guest's RAM file on HOST (the domain must be there), or nothing and status 1.
lv_ram_file() {
  local id
  id=$(vsh "$1" domid "$2" 2>/dev/null) || return 1
  lv_in "$1" "/var/lib/libvirt/qemu/ram/libvirt/qemu/$id-$2/pc.ram"
}
# sha256 of the guest's RAM file on HOST, or nothing and status 1 (no domain, or a
# file that is not the guest's whole RAM).
lv_ram_hash() {
  local f
  f=$(lv_ram_file "$1" "$2") || return 1
  [ "$(stat -c %s "$f" 2>/dev/null)" = $((LV_RAM_MIB << 20)) ] || return 1
  sha256sum <"$f" | cut -c1-64
}
lv_disk_file() { lv_path "$1" "/var/lib/libvirt/images/$2.qcow2"; }
# running, paused, shut off ... or absent.
lv_state() {
  local s
  s=$(vsh "$1" domstate "$2" 2>/dev/null) || s=absent
  echo "${s%%$'\n'*}"
}

# Creates guest NAME on hv-a (with a disk when $2 is "disk", and hv-b's destination
# image of the same virtual size, as libvirt requires), random RAM, running.
lv_guest_create() {
  local name=$1 disk=${2:-} xml=$LV_W/$1.xml seed=$LV_W/$1.ram disk_xml= ram differ
  if [ "$disk" = disk ]; then
    { head -c 1M /dev/zero && head -c 31M /dev/urandom; } >"$LV_W/$name.raw"
    qemu-img convert -q -f raw -O qcow2 "$LV_W/$name.raw" "$(lv_disk_file hv-a "$name")"
    qemu-img resize -q "$(lv_disk_file hv-a "$name")" "${LV_DISK_MIB}M"
    rm -f "$LV_W/$name.raw"
    qemu-img create -q -f qcow2 "$(lv_disk_file hv-b "$name")" "${LV_DISK_MIB}M" >/dev/null
    disk_xml="<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/$name.qcow2'/><target dev='vda' bus='virtio'/></disk>"
  fi
  cat >"$xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>$LV_RAM_MIB</memory>
  <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    $disk_xml
    <memballoon model='none'/>
  </devices>
</domain>
EOF
  vsh hv-a create --paused "$xml" >/dev/null || lv_fail "$name: virsh create failed"
  ram=$(lv_ram_file hv-a "$name") || lv_fail "$name: no RAM file under memory_backing_dir"
  [ "$(stat -c %s "$ram")" = $((LV_RAM_MIB << 20)) ] ||
    lv_fail "$name: RAM file $ram is $(stat -c %s "$ram") bytes, not $LV_RAM_MIB MiB"
  head -c "${LV_RAM_MIB}M" /dev/urandom >"$seed"
  dd if="$seed" of="$ram" bs=1M conv=notrunc status=none
  vsh hv-a resume "$name" >/dev/null || lv_fail "$name: virsh resume failed"
  sleep 1
  [ "$(lv_state hv-a "$name")" = running ] || lv_fail "$name: not running on hv-a: $(lv_state hv-a "$name")"
  # The RAM file must be the guest's RAM: the firmware rewrites under 1 MiB of it while
  # it runs (seen: 0.9 MB); the rest, at least 15/16, must still be our random bytes.
  differ=$({ cmp -l "$seed" "$ram" || true; } | wc -l)
  rm -f "$seed"
  [ "$differ" -lt $((LV_RAM_MIB << 16)) ] ||
    lv_fail "$name: $differ bytes of the RAM file changed by running: it is not the guest's RAM"
  lv_say "$name: created on hv-a${disk:+ with a ${LV_DISK_MIB} MiB disk}, random RAM (firmware changed $differ bytes of it), running"
}

# Suspends NAME on HOST and records the sha256 of its RAM in LV_RAM[NAME].
lv_suspend_and_hash() {
  vsh "$1" suspend "$2" >/dev/null || lv_fail "$2: virsh suspend on $1 failed"
  [ "$(lv_state "$1" "$2")" = paused ] || lv_fail "$2: not paused on $1 after suspend"
  LV_RAM[$2]=$(lv_ram_hash "$1" "$2") || lv_fail "$2: cannot hash its RAM on $1"
}

# The migration command of README Quick start step 4 as printed, run on FROM towards
# TO: lv_step4_migrate FROM TO [--copy-storage-all] [--parallel ...] DOMAIN
lv_step4_migrate() {
  local from=$1 to=$2
  shift 2
  on "$from" virsh migrate --live --p2p "$@" \
    --desturi "qemu+unix:///system?socket=/run/xmig/$to/driver.sock" \
    --migrateuri "unix:///run/xmig/$to/qemu.sock" \
    --disks-uri "unix:///run/xmig/$to/nbd.sock"
}

# Remembers where each tunnel log ends, so that lv_check_closes reads only what a
# migration started after this logged.
lv_mark_logs() {
  local h
  for h in "${LV_HOSTS[@]}"; do LV_MARK[$h]=$(wc -l <"$LV_W/$h/tunnel.log"); done
}
# The close: lines HOST's tunnel logged since lv_mark_logs.
lv_new_closes() {
  tail -n +$((LV_MARK[$1] + 1)) "$LV_W/$1/tunnel.log" | grep ' close: ' || true
}
lv_count() { grep -c -- "$1" <<<"$2" || true; }

# Pass criterion on the tunnels for one migration: both logged its connections (at
# least one driver, exactly QEMU qemu connections, at least NBD nbd ones, none when
# NBD is 0) and every close: line says result=ok. Waits up to 20 s for the lines (a
# connection is logged when both of its ends have closed).
lv_check_closes() {
  local label=$1 qemu=$2 nbd=$3 h lines i ok
  for i in $(seq 200); do
    ok=1
    for h in "${LV_HOSTS[@]}"; do
      lines=$(lv_new_closes "$h")
      [ "$(lv_count 'channel=driver ' "$lines")" -ge 1 ] &&
        [ "$(lv_count 'channel=qemu ' "$lines")" -ge "$qemu" ] &&
        [ "$(lv_count 'channel=nbd ' "$lines")" -ge "$nbd" ] || ok=
    done
    [ -n "$ok" ] && break
    sleep 0.1
  done
  local nd nq nn nbd_ok want_nbd
  for h in "${LV_HOSTS[@]}"; do
    lines=$(lv_new_closes "$h")
    nd=$(lv_count 'channel=driver ' "$lines")
    nq=$(lv_count 'channel=qemu ' "$lines")
    nn=$(lv_count 'channel=nbd ' "$lines")
    nbd_ok=
    if [ "$nbd" = 0 ]; then
      want_nbd=0
      [ "$nn" = 0 ] && nbd_ok=1
    else
      want_nbd=">= $nbd"
      [ "$nn" -ge "$nbd" ] && nbd_ok=1
    fi
    [ "$nd" -ge 1 ] && [ "$nq" = "$qemu" ] && [ -n "$nbd_ok" ] ||
      lv_fail "$label: $h's tunnel logged $nd driver, $nq qemu, $nn nbd connections; expected >= 1, $qemu, $want_nbd:
$lines"
    if grep -v 'result=ok$' <<<"$lines" | grep -q .; then
      lv_fail "$label: $h's tunnel logged a connection that did not end ok:
$(grep -v 'result=ok$' <<<"$lines")"
    fi
    lv_say "$label: $h's tunnel: $nd driver, $nq qemu, $nn nbd connections, all result=ok"
  done
}

# Pass criterion on the hosts for one completed migration of NAME from FROM to TO:
# gone from FROM, paused on TO with the RAM hashed on FROM before, the disk (when $4
# is "disk") equal to FROM's image; then it runs on TO.
lv_check_arrived() {
  local name=$1 from=$2 to=$3 disk=${4:-} s h
  s=$(lv_state "$from" "$name")
  [ "$s" = absent ] || lv_fail "$name: still on $from ($s) after its migration to $to"
  s=$(lv_state "$to" "$name")
  [ "$s" = paused ] || lv_fail "$name: on $to it is '$s'; expected paused, as it left $from"
  h=$(lv_ram_hash "$to" "$name") || lv_fail "$name: cannot hash its RAM on $to"
  [ "$h" = "${LV_RAM[$name]}" ] ||
    lv_fail "$name: RAM on $to (sha256 $h) differs from $from's before the migration (${LV_RAM[$name]})"
  if [ "$disk" = disk ]; then
    qemu-img compare -U -q "$(lv_disk_file "$from" "$name")" "$(lv_disk_file "$to" "$name")" ||
      lv_fail "$name: disk on $to differs from $from's (qemu-img compare)"
  fi
  vsh "$to" resume "$name" >/dev/null || lv_fail "$name: virsh resume on $to failed"
  s=$(lv_state "$to" "$name")
  [ "$s" = running ] || lv_fail "$name: on $to it is '$s' after resume, not running"
  lv_say "$name: on $to RAM sha256 ${h:0:16}... as on $from$([ "$disk" = disk ] && echo ", disk identical"), running"
}
