# shellcheck shell=bash disable=SC2034  # sets variables for the tests that source it
# Two libvirt hypervisors, hv-a and hv-b, on this one machine, for the tests in this
# folder. Sourced by each test script (bash); see README.md here for how to run one.
#
# Each host is a private mount namespace (unshare -m) held open by one `sleep`, with a
# folder of this run bind-mounted over every path where a hypervisor keeps what matters
# here, so that the README's paths are used literally on both hosts:
#   /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
#   /etc/pki/qemu (certificates)  /etc/xmig (tunnel.toml)  /run/xmig (run_dir)
# The folders are $LV_W/<host>/root<path>, under a work dir made for this run (mktemp),
# so that runs never share a file, whatever the checkout's path. The network namespace
# is shared: each tunnel listens on 127.0.0.1, on a port found free for this run.
# On each host run virtlogd, libvirtd (its own host_uuid: libvirt refuses to migrate to
# "the same host") and xmig-tunnel with the README Quick start's configuration.
#
# With `lv_begin --netns` each host is also a network namespace of its own (unshare -n,
# held by the same sleep), the two joined by a veth pair ($LV_LINK, $LV_SUBNET.1 hv-a,
# .2 hv-b: tests/intercept's harness uses 10.231.0-1.x), and the hosts are set up as the
# README's nova guide says: each tunnel in transparent mode ([intercept], firewall on,
# its table inet xmig in its own namespace), libvirtd with no TCP listener, qemu.conf's
# migration_address and migration port range. Everything of a host, its veth end and
# its nftables table included, goes when its last process ends.
#
# Teardown (lv_hosts_down) always runs: on exit (trap), and from a watchdog process
# when the test is killed (ctest's timeout sends SIGKILL, which no trap sees). It stops
# by PID only what belongs to this run: the daemons from their pid files, and every
# process whose mounts show this run's work dir (the hosts' processes, QEMU in the
# mount namespace libvirt gives it, a virsh left running), then removes the mount
# points the suite created once no run uses them any more, and the work dir.

LV_HOSTS=(hv-a hv-b)
declare -A LV_PEER=([hv-a]=hv-b [hv-b]=hv-a)
declare -A LV_PORT=()
# --netns: the hosts' own network (see the top of this file). The TLS listener's port is
# outside the migration range; the range and driver port are nova's and libvirt's
# defaults, so that the hosts look like the README's.
LV_NETNS=
# --own-network: the hosts' own network namespaces and veth as with --netns, but the
# Quick start's tunnels (UNIX sockets, no [intercept]); --netns sets both.
LV_INTERCEPT=
LV_SUBNET=10.231.8
declare -A LV_ADDR=([hv-a]=$LV_SUBNET.1 [hv-b]=$LV_SUBNET.2)
LV_LINK=lvmig0
LV_NETNS_TUNNEL_PORT=7443
LV_MIGRATION_PORTS=49152-49215
LV_DRIVER_PORT=16509
LV_MOUNTS=(/etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
  /etc/pki/qemu /etc/xmig /run/xmig)
# Shared by all runs on this machine: a lock (held shared while a run uses the mount
# points) and the list of mount points the suite created (removed by the last run out).
LV_LOCK=/run/xmig-libvirt-tests.lock
LV_CREATED=/run/xmig-libvirt-tests.created
LV_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

lv_say() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*"; }
# Reports a failed check and ends the test (the EXIT trap tears down). Call it from the
# test's own shell, never inside $(...), where it would only end the subshell.
lv_fail() {
  printf '[%s] FAIL: %s\n' "$(date +%H:%M:%S.%3N)" "$*"
  exit 1
}

# HOST's address on the migration network: its own with --netns, else loopback.
lv_address() {
  if [ -n "$LV_NETNS" ]; then echo "${LV_ADDR[$1]}"; else echo 127.0.0.1; fi
}
# Path, seen from this machine's root, of PATH on HOST: in the folder mounted there.
lv_path() { echo "$LV_W/$1/root$2"; }
# Path, seen from this machine's root, of PATH on HOST through its namespace (for the
# host's own mounts: its guests' RAM is on a tmpfs only the host sees).
lv_in() { echo "/proc/$(cat "$LV_W/$1/ns.pid")/root$2"; }
# nsenter's options that enter a host: its mount namespace, and its network one with
# --netns.
lv_enter() { echo "-t $(cat "$LV_W/$1/ns.pid") -m${LV_NETNS:+ -n}"; }
# Runs a command on HOST (in its namespaces); under `timeout` when LV_ON_TIMEOUT is set
# (seconds).
on() {
  local h=$1
  shift
  # shellcheck disable=SC2046  # lv_enter's words are nsenter options
  nsenter $(lv_enter "$h") -- ${LV_ON_TIMEOUT:+timeout -k 10 "$LV_ON_TIMEOUT"} "$@"
}
# virsh on HOST, against its libvirtd.
vsh() {
  local h=$1
  shift
  on "$h" virsh -q -c qemu:///system "$@"
}

# Every test's start: [--needs-migrate] [--netns] then its arguments (lv_parse_args);
# brings both hosts up. With --needs-migrate, the test uses xmig-migrate and fails
# without it; with --netns, the hosts have their own network (see the top of this file);
# with --own-network, too, but their tunnels are the Quick start's (no [intercept]).
lv_begin() {
  unset LIBVIRT_DEFAULT_URI # virsh here always names the host it talks to
  local needs_migrate=
  while true; do
    case "${1:-}" in
      --needs-migrate) needs_migrate=1 ;;
      --netns) LV_NETNS=1 LV_INTERCEPT=1 ;;
      --own-network) LV_NETNS=1 ;;
      *) break ;;
    esac
    shift
  done
  lv_parse_args "$@"
  [ -z "$needs_migrate" ] || [ -x "$LV_MIGRATE" ] ||
    lv_fail "xmig-migrate is not built: $LV_MIGRATE is missing"
  lv_hosts_up
}

# --tunnel PATH --certs PATH --verify PATH [--migrate PATH]: the xmig binaries under test.
lv_parse_args() {
  LV_TUNNEL='' LV_CERTS='' LV_VERIFY='' LV_MIGRATE=''
  while [ $# -gt 0 ]; do
    case "$1" in
      --tunnel) LV_TUNNEL=$2 ;;
      --certs) LV_CERTS=$2 ;;
      --verify) LV_VERIFY=$2 ;;
      --migrate) LV_MIGRATE=$2 ;;
      *) lv_fail "unknown argument $1 (usage: --tunnel P --certs P --verify P [--migrate P])" ;;
    esac
    shift 2
  done
  [ "$(id -u)" = 0 ] || lv_fail "must run as root (mount namespaces, libvirtd)"
  local b
  for b in "$LV_TUNNEL" "$LV_CERTS" "$LV_VERIFY"; do
    [ -x "$b" ] || lv_fail "xmig binary '$b' is missing: build the project first"
  done
  for b in unshare nsenter flock virsh libvirtd virtlogd qemu-system-x86_64 qemu-img ss sha256sum \
    ${LV_NETNS:+ip nft tcpdump}; do
    command -v "$b" >/dev/null || lv_fail "$b is missing: run tools/setup (libvirt-daemon-system, libvirt-clients, qemu-system-x86, qemu-utils, iproute2, nftables, tcpdump)"
  done
  getent group libvirt-qemu >/dev/null || lv_fail "no group libvirt-qemu: run tools/setup (libvirt-daemon-system)"
}

# A TCP port that no socket on this machine uses now, below the ephemeral range (so
# that no outgoing connection takes it before the tunnel binds it), and none of "$@".
lv_free_port() {
  local low first port
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  first=$((low > 21000 ? 20000 : 10000))
  for _ in $(seq 500); do
    port=$((first + SRANDOM % (low - first)))
    [[ " $* " == *" $port "* ]] && continue
    [ -z "$(ss -Htan "sport = :$port")" ] && echo "$port" && return 0
  done
  return 1
}

# --- mount points on this machine's root ------------------------------------------

# Opens $LV_LOCK on fd LV_LOCK_FD and locks it (flock mode $1: -s or -x, plus -n to
# not wait). A teardown may delete the file while we wait: retry until the locked
# file is the one at the path. Returns 1 when -n and the lock is taken.
lv_lock() {
  while true; do
    exec {LV_LOCK_FD}>>"$LV_LOCK"
    if ! flock "$@" "$LV_LOCK_FD"; then
      exec {LV_LOCK_FD}>&-
      return 1
    fi
    [ "$(stat -L -c %d:%i "/proc/$$/fd/$LV_LOCK_FD")" = "$(stat -c %d:%i "$LV_LOCK" 2>/dev/null)" ] &&
      return 0
    exec {LV_LOCK_FD}>&-
  done
}

# Creates the mount points that are missing (each level, e.g. /etc/pki then
# /etc/pki/qemu) and records them, under a shared lock held until lv_hosts_down.
lv_claim_mountpoints() {
  lv_lock -s
  local m d part
  for m in "${LV_MOUNTS[@]}"; do
    d=
    for part in ${m//\// }; do
      d=$d/$part
      if mkdir "$d" 2>/dev/null; then echo "$d" >>"$LV_CREATED"; fi
    done
    [ -d "$m" ] || lv_fail "cannot create mount point $m"
  done
}

# Drops this run's lock; when no other run holds one, removes the mount points the
# suite created (deepest first, only if empty).
lv_release_mountpoints() {
  [ -n "${LV_LOCK_FD:-}" ] && exec {LV_LOCK_FD}>&-
  LV_LOCK_FD=
  lv_lock -x -n || return 0
  if [ -f "$LV_CREATED" ]; then
    sort -u "$LV_CREATED" | sort -r | while read -r d; do
      rmdir "$d" 2>/dev/null && echo "removed mount point $d"
    done
    rm -f "$LV_CREATED"
  fi
  rm -f "$LV_LOCK"
  exec {LV_LOCK_FD}>&-
  LV_LOCK_FD=
}

# --- the hosts ---------------------------------------------------------------------

# The folders of HOST, owned and with modes as Debian's packages make them (libvirtd
# fixes the owner of its qemu folders itself), and its configuration files.
lv_host_files() {
  local h=$1 root=$LV_W/$1/root m
  for m in "${LV_MOUNTS[@]}"; do install -d -m 0755 "$root$m"; done
  install -d -m 0711 "$root/var/lib/libvirt/images" "$root/var/cache/libvirt/qemu"
  chmod 0711 "$root/var/cache/libvirt"
  install -d -m 0750 -o libvirt-qemu -g libvirt-qemu "$root/var/lib/libvirt/qemu"
  install -d -m 0755 "$root/var/lib/libvirt/qemu/ram"
  install -d -m 0755 "$root/var/log/libvirt/qemu"

  # A host_uuid of its own, as libvirt refuses to migrate a domain to its own host.
  cat >"$root/etc/libvirt/libvirtd.conf" <<EOF
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
log_outputs = "${XMIG_LIBVIRT_LOG:-3}:file:/var/log/libvirt/libvirtd.log"
EOF
  if [ -z "$LV_NETNS" ]; then
    # No systemd, dbus or polkit here: root-only sockets without authentication.
    printf 'auth_unix_ro = "none"\nauth_unix_rw = "none"\n' >>"$root/etc/libvirt/libvirtd.conf"
  else
    # The nova guide: no TCP listener (libvirtd -d without --listen has none either;
    # said here as an operator would); the peers' driver connections arrive through the
    # tunnel on libvirt-sock, with Debian's default auth_unix_rw (polkit), which libvirt
    # skips for root clients (the tunnel, and virsh here) without asking polkit.
    printf 'listen_tcp = 0\nlisten_tls = 0\n' >>"$root/etc/libvirt/libvirtd.conf"
  fi
  # No cgroups: both hosts share this kernel's cgroup tree, where both would name a
  # migrating domain's cgroup alike. Guest RAM in files under memory_backing_dir, so
  # that the tests can fill and hash it.
  cat >"$root/etc/libvirt/qemu.conf" <<EOF
cgroup_controllers = [ ]
memory_backing_dir = "/var/lib/libvirt/qemu/ram"
EOF
  # The nova guide: QEMU and the NBD server listen on the host's migration address, on
  # ports of the range the tunnel intercepts.
  [ -z "$LV_INTERCEPT" ] || cat >>"$root/etc/libvirt/qemu.conf" <<EOF
migration_address = "$(lv_address "$h")"
migration_port_min = ${LV_MIGRATION_PORTS%-*}
migration_port_max = ${LV_MIGRATION_PORTS#*-}
EOF
  echo 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"' >"$root/etc/libvirt/virtlogd.conf"

  # README Quick start step 2, plus socket_group (step 4) and a route for xmig-verify;
  # with --netns on the hosts' own addresses, and the nova guide's [intercept].
  local own peer
  own=$(lv_address "$h")
  peer=$(lv_address "${LV_PEER[$h]}")
  cat >"$root/etc/xmig/tunnel.toml" <<EOF
name = "$h"
run_dir = "/run/xmig"
listen = "$own:${LV_PORT[$h]}"
socket_group = "libvirt-qemu"

[tls]
ca = "/etc/pki/qemu/ca-cert.pem"
cert = "/etc/pki/qemu/server-cert.pem"
key = "/etc/pki/qemu/server-key.pem"
client_cert = "/etc/pki/qemu/client-cert.pem"
client_key = "/etc/pki/qemu/client-key.pem"

[[peer]]
name = "${LV_PEER[$h]}"
address = "$peer:${LV_PORT[${LV_PEER[$h]}]}"

[[route]]
listen = "unix:/run/xmig/verify.sock"
peer = "${LV_PEER[$h]}"
channel = "verify"
EOF
  # QEMU (libvirt-qemu) opens the RAM, multifd and NBD connections, libvirtd (root) the
  # driver one.
  [ -z "$LV_INTERCEPT" ] || cat >>"$root/etc/xmig/tunnel.toml" <<EOF

[intercept]
ports = "$LV_MIGRATION_PORTS"
driver_port = $LV_DRIVER_PORT
address = "$own"
firewall = true
users = ["root", "libvirt-qemu"]
EOF
}

# The mount namespace of HOST (and with --netns its network namespace, with loopback
# up), held open by a sleep whose PID is $LV_W/HOST/ns.pid.
lv_host_namespace() {
  local h=$1 r=$LV_W/$1
  # shellcheck disable=SC2016
  unshare -m ${LV_NETNS:+-n} --propagation private -- bash -c '
    set -e
    root=$1 ready=$2 netns=$3
    shift 3
    if [ -n "$netns" ]; then ip link set lo up; fi
    for m in "$@"; do mount --bind "$root$m" "$m"; done
    # Like on this machine, which has none: keep libvirtd off a system D-Bus, where both
    # hosts would register their guests by the same names with one systemd-machined
    # and share one firewalld and polkit.
    if [ -d /run/dbus ]; then mount -t tmpfs -o mode=0755 xmig-libvirt-nodbus /run/dbus; fi
    # Guest RAM files on tmpfs: an incoming migration filled a shared mapping of an
    # ext4 file at 53 MiB/s, one of a tmpfs file at 135 MiB/s (measured here).
    mount -t tmpfs -o mode=0755 xmig-libvirt-ram /var/lib/libvirt/qemu/ram
    touch "$ready"
    exec sleep infinity' _ "$r/root" "$r/ns.ready" "$LV_NETNS" "${LV_MOUNTS[@]}" \
    </dev/null >"$r/ns.log" 2>&1 &
  echo $! >"$r/ns.pid"
  for _ in $(seq 100); do
    [ -f "$r/ns.ready" ] && return 0
    kill -0 "$(cat "$r/ns.pid")" 2>/dev/null || break
    sleep 0.1
  done
  lv_fail "$h: mount namespace not set up: $(cat "$r/ns.log")"
}

# --netns: the veth pair between the hosts, made inside their namespaces (no name is
# ever taken in this machine's own), each end with its host's address.
lv_hosts_network() {
  local h
  on hv-a ip link add "$LV_LINK" type veth peer name "$LV_LINK" netns "$(cat "$LV_W/hv-b/ns.pid")" ||
    lv_fail "cannot make the veth pair between hv-a and hv-b"
  for h in "${LV_HOSTS[@]}"; do
    on "$h" ip addr add "${LV_ADDR[$h]}/24" dev "$LV_LINK"
    on "$h" ip link set "$LV_LINK" up
  done
  for _ in $(seq 50); do
    on hv-a ip -o link show dev "$LV_LINK" | grep -q 'state UP' &&
      on hv-b ip -o link show dev "$LV_LINK" | grep -q 'state UP' && return 0
    sleep 0.1
  done
  lv_fail "the veth pair $LV_LINK between hv-a and hv-b did not come up: $(on hv-a ip -o link show dev "$LV_LINK")"
}

# Starts virtlogd and libvirtd on HOST (clean environment, their own pid files).
lv_host_libvirt() {
  local env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C)
  on "$1" "${env[@]}" virtlogd -d -p /run/libvirt/virtlogd.pid
  on "$1" "${env[@]}" libvirtd -d -p /run/libvirt/libvirtd.pid
}
# Waits until HOST's libvirtd answers (it probes QEMU's capabilities first: seconds).
lv_host_libvirt_wait() {
  local h=$1 run=$LV_W/$1/root/run/libvirt
  for _ in $(seq 300); do
    [ -S "$run/libvirt-sock" ] && [ -s "$run/libvirtd.pid" ] && vsh "$h" version >/dev/null 2>&1 &&
      return 0
    sleep 0.1
  done
  lv_fail "$h: libvirtd did not come up: $(tail -n 20 "$LV_W/$h/root/var/log/libvirt/libvirtd.log" 2>&1)"
}

# README step 1 on both hosts: the cluster CA, one certificate per host into its
# /etc/pki/qemu, checked.
lv_certificates() {
  "$LV_CERTS" ca init --dir "$LV_W/xmig-ca" >"$LV_W/certs.log" 2>&1 ||
    lv_fail "xmig-certs ca init: $(cat "$LV_W/certs.log")"
  local h
  for h in "${LV_HOSTS[@]}"; do
    on "$h" "$LV_CERTS" issue --ca "$LV_W/xmig-ca" --name "$h" --ip "$(lv_address "$h")" --out /etc/pki/qemu \
      >>"$LV_W/certs.log" 2>&1 || lv_fail "$h: xmig-certs issue: $(cat "$LV_W/certs.log")"
    on "$h" "$LV_CERTS" check --dir /etc/pki/qemu --name "$h" >>"$LV_W/certs.log" 2>&1 ||
      lv_fail "$h: xmig-certs check: $(cat "$LV_W/certs.log")"
  done
}

# Starts xmig-tunnel on HOST after its --check (README step 2); waits for `ready:`.
lv_host_tunnel() {
  local h=$1 r=$LV_W/$1
  on "$h" "$LV_TUNNEL" --config /etc/xmig/tunnel.toml --check >"$r/tunnel-check.log" 2>&1 ||
    lv_fail "$h: xmig-tunnel --check: $(cat "$r/tunnel-check.log")"
  : >>"$r/tunnel.log" # there before the wait below reads it
  # shellcheck disable=SC2046  # lv_enter's words are nsenter options
  nsenter $(lv_enter "$h") -- "$LV_TUNNEL" --config /etc/xmig/tunnel.toml \
    </dev/null >>"$r/tunnel.log" 2>&1 &
  echo $! >"$r/tunnel.pid"
  for _ in $(seq 100); do
    grep -q ' ready: ' "$r/tunnel.log" && return 0
    kill -0 "$(cat "$r/tunnel.pid")" 2>/dev/null || break
    sleep 0.1
  done
  lv_fail "$h: xmig-tunnel not ready: $(cat "$r/tunnel.log")"
}

# Sets up both hosts (work dir, watchdog, mount points, namespaces, certificates,
# libvirt, tunnels). Installs the teardown trap first.
lv_hosts_up() {
  local started=$SECONDS
  LV_W=$(mktemp -d "${TMPDIR:-/tmp}/xmig-libvirt.XXXXXX")
  trap 'lv_hosts_down' EXIT
  trap 'exit 130' INT TERM HUP
  # No silent end under set -e: name the command that failed.
  set -E
  trap 'lv_say "FAIL: status $? at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
  setsid bash "$LV_HERE/hosts.sh" --watchdog "$$" "$LV_W" </dev/null >/dev/null 2>&1 &
  lv_say "work dir $LV_W"
  lv_claim_mountpoints
  if [ -n "$LV_NETNS" ]; then
    LV_PORT[hv-a]=$LV_NETNS_TUNNEL_PORT LV_PORT[hv-b]=$LV_NETNS_TUNNEL_PORT
  else
    LV_PORT[hv-a]=$(lv_free_port) || lv_fail "no free port"
    LV_PORT[hv-b]=$(lv_free_port "${LV_PORT[hv-a]}") || lv_fail "no free port"
  fi
  local h
  for h in "${LV_HOSTS[@]}"; do
    lv_host_files "$h"
    lv_host_namespace "$h"
  done
  [ -z "$LV_NETNS" ] || lv_hosts_network
  lv_certificates
  # libvirtd spends seconds of CPU probing QEMU at its first start: hv-b takes hv-a's
  # probe from its cache (same QEMU, same libvirt, same kernel: libvirt checks these).
  lv_host_libvirt hv-a
  lv_host_libvirt_wait hv-a
  cp -a "$(lv_path hv-a /var/cache/libvirt/qemu)/capabilities" "$(lv_path hv-b /var/cache/libvirt/qemu)/"
  lv_host_libvirt hv-b
  lv_host_libvirt_wait hv-b
  for h in "${LV_HOSTS[@]}"; do lv_host_tunnel "$h"; done
  lv_say "hosts up in $((SECONDS - started)) s: hv-a tunnel $(lv_address hv-a):${LV_PORT[hv-a]}, hv-b tunnel $(lv_address hv-b):${LV_PORT[hv-b]}${LV_NETNS:+ (own network namespaces${LV_INTERCEPT:+, transparent mode})}"
}

# --- teardown ------------------------------------------------------------------------

# Ends the processes given as PID=WHAT (WHAT without spaces): TERM to all at once,
# then KILL to those still there after 10 s. Says what it stopped.
lv_stop() {
  local item left
  [ $# -gt 0 ] || return 0
  for item in "$@"; do kill "${item%%=*}" 2>/dev/null || true; done
  for _ in $(seq 100); do
    left=()
    for item in "$@"; do
      if kill -0 "${item%%=*}" 2>/dev/null; then left+=("$item"); fi
    done
    [ ${#left[@]} -gt 0 ] || break
    sleep 0.1
  done
  for item in "${left[@]}"; do
    kill -9 "${item%%=*}" 2>/dev/null && lv_say "killed ${item#*=} (pid ${item%%=*}): it ignored SIGTERM for 10 s"
  done
  lv_say "stopped $(printf '%s ' "$@")"
}

# PIDs of the processes whose mount table shows this run's work dir (its name is
# unique: mktemp): the hosts' processes and what they started, including QEMU in the
# mount namespace libvirt makes for it.
lv_run_pids() {
  local f p mark
  mark="/${LV_W##*/}/hv-"
  for f in /proc/[0-9]*/mountinfo; do
    p=${f#/proc/}
    p=${p%/mountinfo}
    [ "$p" = "$$" ] && continue
    grep -qF "$mark" "$f" 2>/dev/null && echo "$p"
  done
  return 0
}

# What a failed test needs to be understood: the end of every log of the run.
lv_dump_logs() {
  local f
  for f in "$LV_W"/hv-*/tunnel.log "$LV_W"/hv-*/root/var/log/libvirt/libvirtd.log \
    "$LV_W"/hv-*/root/var/log/libvirt/qemu/*.log "$LV_W"/*.out; do
    [ -s "$f" ] || continue
    echo "----- ${f#"$LV_W"/} (last 30 lines)"
    tail -n 30 "$f"
  done
}

# Stops everything of this run (see the top of this file); keeps the exit status.
lv_hosts_down() {
  local rc=$?
  trap - EXIT ERR
  set +e
  [ -n "${LV_W:-}" ] && [ -d "$LV_W" ] && [ ! -e "$LV_W/torn-down" ] || return "$rc"
  [ "$rc" = 0 ] || lv_dump_logs
  lv_say "teardown (exit status $rc)"
  local h r f p items=()
  # The guests' QEMUs (from libvirt's pid files; driver.pid there is libvirtd's own),
  # the tunnels and the daemons, all at once: libvirtd is going away, so no virsh
  # destroy.
  for h in "${LV_HOSTS[@]}"; do
    r=$LV_W/$h/root/run/libvirt
    for f in "$r"/qemu/*.pid; do
      [ -f "$f" ] && [ "${f##*/}" != driver.pid ] && items+=("$(cat "$f")=$h/qemu/${f##*/}")
    done
    for f in "$LV_W/$h/tunnel.pid" "$r/libvirtd.pid" "$r/virtlogd.pid"; do
      [ -s "$f" ] && items+=("$(cat "$f")=$h/$(basename "$f" .pid)")
    done
  done
  lv_stop "${items[@]}"
  # Whatever is left of the run (a virsh still running, the namespace holders).
  items=()
  for p in $(lv_run_pids); do
    items+=("$p=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -d' ' -f1 | xargs basename 2>/dev/null)")
  done
  lv_stop "${items[@]}"
  p=$(lv_run_pids)
  [ -z "$p" ] || lv_say "teardown: processes still hold $LV_W: $p"
  lv_release_mountpoints
  touch "$LV_W/torn-down"
  if [ -n "${XMIG_LIBVIRT_KEEP:-}" ]; then
    echo "kept $LV_W (XMIG_LIBVIRT_KEEP)"
  elif [ -z "$p" ]; then
    rm -rf "$LV_W"
  fi
  return "$rc"
}

# hosts.sh --watchdog PID WORK_DIR: waits until the test PID has gone, then tears its
# hosts down if the test could not (killed by ctest's timeout, or by anyone).
if [ "${1:-}" = "--watchdog" ] && [ "${BASH_SOURCE[0]}" = "$0" ]; then
  LV_W=$3
  while kill -0 "$2" 2>/dev/null; do sleep 1; done
  if [ -d "$LV_W" ] && [ ! -e "$LV_W/torn-down" ]; then
    (exit 137)
    lv_hosts_down >>"$LV_W.watchdog.log" 2>&1
  fi
  exit 0
fi
