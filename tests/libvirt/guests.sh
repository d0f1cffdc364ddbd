# shellcheck shell=bash disable=SC2034  # sets variables for the tests that source it
# Guests for the tests in this folder, and the checks that a migration carried one
# whole. Sourced after hosts.sh.
#
# A guest is TCG (type='qemu'), 128 MiB, with no OS (it sits in SeaBIOS), its RAM in a
# file under the host's memory_backing_dir (a memory-backend-file with share=on; libvirt
# 9.0 names it <memory_backing_dir>/libvirt/qemu/<id>-<name>/pc.ram), and optionally a
# qcow2 disk /var/lib/libvirt/images/<name>.qcow2: a zero first MiB (so that SeaBIOS
# never finds a boot sector and runs random code), then random data (31 MiB unless
# told), then 32 MiB never written. The guest is created paused, its RAM file is filled
# with random bytes (QEMU maps the file shared: what is written there is the guest's
# RAM), then it runs: every guest's RAM and disk are its own.
# Before a migration the test suspends the guest, so that its RAM stays still, and
# hashes its RAM file; a live migration of a paused guest leaves it paused on the
# destination, whose RAM file must then hash alike, and whose disk must compare equal
# to the source's (qemu-img compare). Then the guest is resumed there.

LV_RAM_MIB=128
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

# Creates guest NAME on hv-a, with random RAM, running; with a disk when $2 is "disk"
# ($3: MiB of random data on it, 31 by default), and hv-b's destination image of the
# same virtual size, as libvirt requires for --copy-storage-all.
lv_guest_create() {
  local name=$1 disk=${2:-} data_mib=${3:-31} xml=$LV_W/$1.xml seed=$LV_W/$1.ram
  local disk_xml='' ram differ size_mib
  if [ "$disk" = disk ]; then
    size_mib=$((1 + data_mib + 32))
    { head -c 1M /dev/zero && head -c "${data_mib}M" /dev/urandom; } >"$LV_W/$name.raw"
    qemu-img convert -q -f raw -O qcow2 "$LV_W/$name.raw" "$(lv_disk_file hv-a "$name")"
    qemu-img resize -q "$(lv_disk_file hv-a "$name")" "${size_mib}M"
    rm -f "$LV_W/$name.raw"
    qemu-img create -q -f qcow2 "$(lv_disk_file hv-b "$name")" "${size_mib}M" >/dev/null
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
  lv_say "$name: created on hv-a$([ "$disk" = disk ] && echo " with a $size_mib MiB disk ($data_mib MiB of data)"), random RAM (firmware changed $differ bytes of it), running"
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
# Lines of TEXT whose channel= names CHANNEL: exactly, or as part of a longer name
# (a per-migration channel, as xmig-migrate's socket sets may be named).
lv_count() { grep -c -E -- "channel=[^ ]*$1[^ ]* " <<<"$2" || true; }

# Pass criterion on close: LINES that HOST's tunnel logged for migration LABEL: every
# one says result=ok.
lv_check_ended_ok() {
  if grep -v 'result=ok$' <<<"$3" | grep -q .; then
    lv_fail "$1: $2's tunnel logged a connection that did not end ok:
$(grep -v 'result=ok$' <<<"$3")"
  fi
}

# Pass criterion on the tunnels for one migration: both logged its connections (at
# least one driver, exactly QEMU qemu connections, at least NBD nbd ones, none when
# NBD is 0) and every close: line says result=ok. Waits up to 20 s for the lines (a
# connection is logged when both of its ends have closed).
lv_check_closes() {
  local label=$1 qemu=$2 nbd=$3 h lines ok
  for _ in $(seq 200); do
    ok=1
    for h in "${LV_HOSTS[@]}"; do
      lines=$(lv_new_closes "$h")
      [ "$(lv_count driver "$lines")" -ge 1 ] &&
        [ "$(lv_count qemu "$lines")" -ge "$qemu" ] &&
        [ "$(lv_count nbd "$lines")" -ge "$nbd" ] || ok=
    done
    [ -n "$ok" ] && break
    sleep 0.1
  done
  local nd nq nn nbd_ok want_nbd
  for h in "${LV_HOSTS[@]}"; do
    lines=$(lv_new_closes "$h")
    nd=$(lv_count driver "$lines")
    nq=$(lv_count qemu "$lines")
    nn=$(lv_count nbd "$lines")
    nbd_ok=
    if [ "$nbd" = 0 ]; then
      want_nbd=0
      [ "$nn" = 0 ] && nbd_ok=1
    else
      want_nbd=">= $nbd"
      [ "$nn" -ge "$nbd" ] && nbd_ok=1
    fi
    if [ "$nd" -lt 1 ] || [ "$nq" != "$qemu" ] || [ -z "$nbd_ok" ]; then
      lv_fail "$label: $h's tunnel logged $nd driver, $nq qemu, $nn nbd connections; expected >= 1, $qemu, $want_nbd:
$lines"
    fi
    lv_check_ended_ok "$label" "$h" "$lines"
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

# --- migrations in the background, for the concurrency tests -------------------------

LV_JOBS=()
LV_MIGRATION_TIMEOUT=300  # seconds; a stuck migration fails its test with the logs

# Starts a migration command (a shell function or program; `on` runs it with
# LV_ON_TIMEOUT) in the background. Its stdout goes to $LV_W/NAME.out, its stderr to
# $LV_W/NAME.err, and "STATUS START END" (seconds since the epoch) to $LV_W/NAME.job
# when it ends.
lv_start_migration() {
  local name=$1
  shift
  rm -f "$LV_W/$name".{job,out,err,set-seen}
  (
    trap - ERR
    start=$(date +%s.%N) rc=0
    LV_ON_TIMEOUT=$LV_MIGRATION_TIMEOUT "$@" >"$LV_W/$name.out" 2>"$LV_W/$name.err" || rc=$?
    echo "$rc $start $(date +%s.%N)" >"$LV_W/$name.job"
  ) &
  LV_JOBS+=($!)
}
lv_wait_migrations() {
  wait "${LV_JOBS[@]}" || true
  LV_JOBS=()
}
# Exit status, start and end of a finished migration.
lv_job_rc() { cut -d' ' -f1 "$LV_W/$1.job"; }
lv_job_start() { cut -d' ' -f2 "$LV_W/$1.job"; }
lv_job_end() { cut -d' ' -f3 "$LV_W/$1.job"; }
# What virsh (or xmig-migrate) said, on one line.
lv_job_said() { cat "$LV_W/$1.out" "$LV_W/$1.err" 2>/dev/null | tr -s '\n' ' ' | cut -c1-300; }

# Says when the migrations NAME... (in the order they started) ran; status 1 unless
# they overlapped (each started before the one before it ended): else nothing
# concurrent was tested.
lv_check_overlap() {
  local t0 name prev='' overlap=0
  t0=$(lv_job_start "$1")
  lv_say "migrations ran (s from the first start): $(for name in "$@"; do
    awk -v s="$(lv_job_start "$name")" -v e="$(lv_job_end "$name")" -v t0="$t0" -v n="$name" \
      'BEGIN { printf "%s %.1f-%.1f  ", n, s - t0, e - t0 }'
  done)"
  for name in "$@"; do
    if [ -n "$prev" ] &&
      ! awk -v s="$(lv_job_start "$name")" -v e="$(lv_job_end "$prev")" 'BEGIN { exit !(s < e) }'; then
      lv_say "$prev ended before $name started"
      overlap=1
    fi
    prev=$name
  done
  return $overlap
}

# Slows the migrations of guest NAME (on hv-a) to MiB/s (RAM and, libvirt applies it
# there too, the disk mirror), so that migrations started seconds apart overlap.
lv_slow_down() {
  vsh hv-a migrate-setspeed "$1" --bandwidth "$2" >/dev/null || lv_fail "$1: migrate-setspeed failed"
}

# The guests among CANDIDATE... whose RAM, as hashed when they were suspended on
# their source, NAME's RAM on HOST is ("unreadable" when it cannot be hashed).
lv_ram_owner() {
  local host=$1 name=$2 h c
  shift 2
  h=$(lv_ram_hash "$host" "$name") || {
    echo unreadable
    return 0
  }
  for c in "$@"; do [ "$h" != "${LV_RAM[$c]}" ] || echo "$c"; done
  return 0
}
# The guests among CANDIDATE... whose source disk (on hv-a) NAME's disk on HOST
# equals (qemu-img compare).
lv_disk_owner() {
  local host=$1 name=$2 c
  shift 2
  for c in "$@"; do
    ! qemu-img compare -U -q "$(lv_disk_file hv-a "$c")" "$(lv_disk_file "$host" "$name")" 2>/dev/null ||
      echo "$c"
  done
  return 0
}

# --- problems collected, for tests that report every violated criterion at once ------

LV_PROBLEMS=()
lv_problem() {
  lv_say "problem: $*"
  LV_PROBLEMS+=("$*")
}
lv_fail_on_problems() {
  [ ${#LV_PROBLEMS[@]} = 0 ] || lv_fail "$(printf '\n  - %s' "${LV_PROBLEMS[@]}")"
}

# Pass criteria on where guest NAME, migrated from FROM to TO in the background,
# ended (problems collected; CANDIDATE...: every guest of the test, to name whose
# content a wrong one holds). On TO (its migration completed), it holds its own RAM
# and disk only, and runs after virsh resume; still on FROM (its migration failed), it
# is as the test left it ("paused (user)": any other state is a source the failed
# migration left behind), with its own RAM, and runs after virsh resume; never on
# both hosts or on neither. Sets LV_WHERE[NAME] to the host it ends on (or "both",
# "neither").
declare -A LV_WHERE=()
lv_check_outcome() {
  local g=$1 from=$2 to=$3 sa sb owner reason
  shift 3
  sa=$(lv_state "$from" "$g")
  sb=$(lv_state "$to" "$g")
  lv_say "$g: migration exit $(lv_job_rc "$g") after $(awk -v s="$(lv_job_start "$g")" -v e="$(lv_job_end "$g")" 'BEGIN { printf "%.1f", e - s }') s, output: $(lv_job_said "$g")"
  lv_say "$g: now on $from: $sa; on $to: $sb; $to's image of $g holds the disk of: $(lv_disk_owner "$to" "$g" "$@" | xargs)"
  if [ "$sb" != absent ]; then
    LV_WHERE[$g]=$to
    [ "$sa" = absent ] || {
      lv_problem "$g is on both hosts ($from: $sa, $to: $sb)"
      LV_WHERE[$g]=both
    }
    [ "$(lv_job_rc "$g")" = 0 ] || lv_say "$g: on $to although its migration failed"
    owner=$(lv_ram_owner "$to" "$g" "$@" | xargs)
    [ "$owner" = "$g" ] || lv_problem "$g on $to holds the RAM of: ${owner:-no guest of this test}"
    owner=$(lv_disk_owner "$to" "$g" "$@" | xargs)
    [ "$owner" = "$g" ] || lv_problem "$g on $to has the disk of: ${owner:-no guest of this test}"
    [ "$sb" != paused ] || vsh "$to" resume "$g" >/dev/null || true
    sb=$(lv_state "$to" "$g")
    [ "$sb" = running ] || lv_problem "$g on $to is '$sb' after virsh resume, not running"
  elif [ "$sa" != absent ]; then
    LV_WHERE[$g]=$from
    reason=$(vsh "$from" domstate --reason "$g" 2>&1 | head -n 1)
    [ "$reason" = "paused (user)" ] ||
      lv_problem "$g stayed on $from '$reason' after its failed migration; the test left it 'paused (user)'"
    owner=$(lv_ram_owner "$from" "$g" "$@" | xargs)
    [ "$owner" = "$g" ] || lv_problem "$g on $from now holds the RAM of: ${owner:-no guest of this test}"
    vsh "$from" resume "$g" >/dev/null || true
    sa=$(lv_state "$from" "$g")
    [ "$sa" = running ] || lv_problem "$g on $from is '$sa' after virsh resume: its source stays paused"
  else
    LV_WHERE[$g]=neither
    lv_problem "$g is on neither host"
  fi
  lv_say "$g: ends on $from: $(lv_state "$from" "$g"); on $to: $(lv_state "$to" "$g")"
}

# --- xmig-migrate ---------------------------------------------------------------------

# Starts, in the background, `xmig-migrate ARGS...` on FROM, for the guest NAME whose
# socket set is <run_dir>/PEER/ID (ID: the domain unless --id), with a watcher that
# touches $LV_W/NAME.set-seen if driver.sock, qemu.sock and nbd.sock were all sockets
# in that folder on FROM at one moment while the migration ran.
lv_start_xmig_migrate() {
  local name=$1 from=$2 peer=$3 id=$4 dir
  shift 4
  lv_start_migration "$name" on "$from" "$LV_MIGRATE" "$@"
  dir=$(lv_in "$from" "/run/xmig/$peer/$id")
  (
    trap - ERR
    while [ ! -e "$LV_W/$name.job" ]; do
      if [ -S "$dir/driver.sock" ] && [ -S "$dir/qemu.sock" ] && [ -S "$dir/nbd.sock" ]; then
        touch "$LV_W/$name.set-seen"
        break
      fi
      sleep 0.05
    done
  ) &
  LV_JOBS+=($!)
}

# Pass criteria of one finished xmig-migrate run (problems collected): exit status 0,
# progress lines on stderr starting "xmig-migrate:", its socket set seen on FROM while
# it ran, and the folder /run/xmig/PEER/ID gone on both hosts afterwards (within 10 s).
lv_check_xmig_migrate() {
  local name=$1 from=$2 peer=$3 id=$4 h
  [ -x "$LV_MIGRATE" ] || lv_problem "$name: xmig-migrate is not built ($LV_MIGRATE is missing)"
  [ "$(lv_job_rc "$name")" = 0 ] ||
    lv_problem "$name: xmig-migrate exited $(lv_job_rc "$name"): $(lv_job_said "$name")"
  grep -q '^xmig-migrate:' "$LV_W/$name.err" ||
    lv_problem "$name: xmig-migrate printed no progress line starting 'xmig-migrate:' on stderr"
  [ -e "$LV_W/$name.set-seen" ] ||
    lv_problem "$name: the socket set /run/xmig/$peer/$id/{driver,qemu,nbd}.sock was never seen on $from while xmig-migrate ran"
  for h in "${LV_HOSTS[@]}"; do
    for _ in $(seq 100); do
      [ -e "$(lv_in "$h" "/run/xmig/$peer/$id")" ] || break
      sleep 0.1
    done
    [ ! -e "$(lv_in "$h" "/run/xmig/$peer/$id")" ] ||
      lv_problem "$name: /run/xmig/$peer/$id is still there on $h after the migration"
  done
  if [ -s "$LV_W/$name.err" ]; then
    sed 's/^/    /' "$LV_W/$name.err" | head -n 20
  fi
  return 0
}
