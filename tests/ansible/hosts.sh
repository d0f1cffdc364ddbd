# shellcheck shell=bash
# Machines for the Ansible test, on this one machine: each "host" is this machine's
# own Debian booted with `systemd-nspawn -b` (a real systemd, so the package's unit
# runs as on a hypervisor) over an overlay of this machine's root, with its own /etc,
# /run, /root and network. Sourced by fleet_rollout.sh; see README.md here.
#
# Per host H, under the run's work dir $AH_W (mktemp):
#   $AH_W/H/layer   a tmpfs holding the overlay's upper and work folders: everything
#                   the host writes lives there and nowhere else (the test reads it
#                   to tell which host holds which key)
#   $AH_W/H/root    the overlay (lower: this machine's /, read only to the host)
#   netns xmig-ans-<tag>-H, with eth0 (a veth whose other end is on the bridge
#                   $AH_BRIDGE, where this machine has $AH_SUBNET.1) at $AH_SUBNET.N
#   sshd from this machine's openssh-server, with a host key made for this run and
#   root's authorized_keys holding the run's key ($AH_W/ssh/id_ed25519); every
#   other unit this machine enables (libvirtd, timers such as apt-daily that would
#   take dpkg's lock, ...) is masked in the host, so hosts boot fast and alike.
#
# Teardown (ah_hosts_down) always runs: on exit (trap), and from a watchdog process
# when the test is killed (ctest's timeout sends SIGKILL, which no trap sees). It
# stops by PID only what belongs to this run (the nspawn processes from $AH_W/pids,
# which power their hosts off; after a minute, each one's init and itself), closes the run's ssh masters, and
# removes mounts, network namespaces, links and the work dir. It never removes the
# work dir while something is still mounted under it.

AH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ah_say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
# Reports a failed check and ends the test (the EXIT trap tears down). Call it from
# the test's own shell, never inside $(...).
ah_fail() {
  printf '[%s] FAIL: %s\n' "$(date +%H:%M:%S)" "$*"
  exit 1
}

# The run's names, from its tag (also kept in $AH_W/tag for the watchdog).
ah_names() {  # tag
  AH_TAG=$1
  AH_BRIDGE=xab$AH_TAG
  AH_NETNS_PREFIX=xmig-ans-$AH_TAG
}

# A /24 of 10.233.x.0 no interface of this machine uses (tests/intercept and
# tests/libvirt use 10.231.x).
ah_pick_subnet() {
  local x
  for _ in $(seq 50); do
    x=$((RANDOM % 250 + 1))
    ip -4 -o addr show | grep -q " 10\.233\.$x\." || { echo "10.233.$x"; return 0; }
  done
  return 1
}

# Makes the work dir, the watchdog, the SSH key and the bridge. Installs the trap.
ah_begin() {
  AH_W=$(mktemp -d "${TMPDIR:-/tmp}/xmig-ansible-XXXXXX")
  ah_names "$(printf '%04x' $((RANDOM)))"
  echo "$AH_TAG" >"$AH_W/tag"
  : >"$AH_W/pids"
  trap 'ah_hosts_down' EXIT
  trap 'exit 130' INT TERM HUP
  set -E
  trap 'ah_say "FAIL: status $? at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
  setsid bash "$AH_HERE/hosts.sh" --watchdog "$$" "$AH_W" </dev/null >/dev/null 2>&1 &
  AH_SUBNET=$(ah_pick_subnet) || ah_fail "no free 10.233.x.0/24 for the hosts' network"
  mkdir -m 0700 "$AH_W/ssh"
  ssh-keygen -q -t ed25519 -N '' -C "xmig-ansible-test" -f "$AH_W/ssh/id_ed25519"
  : >"$AH_W/ssh/known_hosts"
  ip link add "$AH_BRIDGE" type bridge
  ip addr add "$AH_SUBNET.1/24" dev "$AH_BRIDGE"
  ip link set "$AH_BRIDGE" up
  ah_say "work dir $AH_W, network $AH_SUBNET.0/24 on bridge $AH_BRIDGE"
}

# The folder where host H's own files are (the overlay's upper layer).
ah_upper() { echo "$AH_W/$1/layer/upper"; }

# Makes host H at $AH_SUBNET.N and boots it (ah_wait_ssh waits for it).
ah_host_up() {  # name N
  local h=$1 n=$2 d="$AH_W/$1" ns="$AH_NETNS_PREFIX-$1"
  mkdir -p "$d/layer" "$d/root"
  mount -t tmpfs -o mode=0755 "xmig-ansible-$AH_TAG" "$d/layer"
  mkdir "$d/layer/upper" "$d/layer/work"
  # The lower layer is this machine's root file system alone (not the mounts on
  # it); the upper is on a tmpfs, so the layers never overlap.
  mount -t overlay "xmig-ansible-$AH_TAG" \
    -o "lowerdir=/,upperdir=$d/layer/upper,workdir=$d/layer/work" "$d/root"
  local r=$d/root
  echo "$h" >"$r/etc/hostname"
  systemd-id128 new >"$r/etc/machine-id"
  # Only sshd and what the boot itself needs: mask the units this machine enables.
  local link unit
  for link in "$r"/etc/systemd/system/*.wants/*; do
    unit=${link##*/}
    case $unit in ssh.service | sshd.service) continue ;; esac
    [ -e "$r/etc/systemd/system/$unit" ] && [ ! -L "$r/etc/systemd/system/$unit" ] && continue
    ln -sfn /dev/null "$r/etc/systemd/system/$unit"
  done
  mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
  ln -sfn /lib/systemd/system/ssh.service "$r/etc/systemd/system/multi-user.target.wants/ssh.service"
  for unit in ssh.service sshd.service; do  # unmasked, should this machine mask it
    [ "$(readlink "$r/etc/systemd/system/$unit")" = /dev/null ] && rm -f "$r/etc/systemd/system/$unit"
  done
  # sshd: a host key of this run's, root logs in with the run's key only.
  ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$r/etc/ssh/xmig-test-host-key"
  mkdir -p "$r/etc/ssh/sshd_config.d"
  printf 'HostKey /etc/ssh/xmig-test-host-key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n' \
    >"$r/etc/ssh/sshd_config.d/xmig-test.conf"
  echo "$AH_SUBNET.$n $(cut -d' ' -f1-2 "$r/etc/ssh/xmig-test-host-key.pub")" >>"$AH_W/ssh/known_hosts"
  mkdir -p "$r/root/.ssh" && chmod 0700 "$r/root/.ssh"
  cp "$AH_W/ssh/id_ed25519.pub" "$r/root/.ssh/authorized_keys"
  chmod 0600 "$r/root/.ssh/authorized_keys"
  # Its network: eth0 on the bridge.
  ip netns add "$ns"
  ip link add "xa$AH_TAG$n" type veth peer name eth0 netns "$ns"
  ip link set "xa$AH_TAG$n" master "$AH_BRIDGE" up
  ip -n "$ns" addr add "$AH_SUBNET.$n/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  # No systemd on this machine to register with: --register=no --keep-unit.
  systemd-nspawn -q -b -D "$r" -M "xmig-$AH_TAG-$h" --register=no --keep-unit \
    --network-namespace-path="/run/netns/$ns" --console=read-only \
    </dev/null >"$d/console.log" 2>&1 &
  echo "$!" >>"$AH_W/pids"
}

# The ssh options of this run (ansible gets the same through its inventory).
ah_ssh_opts() {
  echo "-i $AH_W/ssh/id_ed25519 -o UserKnownHostsFile=$AH_W/ssh/known_hosts" \
    "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5"
}

# Runs a command on host address ADDR as root.
ah_ssh() {  # addr command...
  local addr=$1
  shift
  # shellcheck disable=SC2046
  ssh $(ah_ssh_opts) "root@$addr" "$@"
}

# Waits until sshd answers on ADDR and the host's boot is done.
ah_wait_ssh() {  # name addr
  local h=$1 addr=$2
  for _ in $(seq 120); do
    if ah_ssh "$addr" 'systemctl is-system-running --wait' >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  tail -n 30 "$AH_W/$h/console.log"
  ah_fail "host $h ($addr) did not come up with sshd within 120 s (its console above)"
}

# --- teardown ------------------------------------------------------------------------

ah_hosts_down() {
  [ -n "${AH_W:-}" ] && [ -d "$AH_W" ] || return 0
  trap - ERR
  set +e
  ah_names "$(cat "$AH_W/tag" 2>/dev/null)"
  # ssh masters of ansible (ControlPersist) and of the test.
  local sock pid
  for sock in "$AH_W"/cp/*; do
    [ -S "$sock" ] && ssh -o ControlPath="$sock" -O exit dummy >/dev/null 2>&1
  done
  # nspawn powers the host off on SIGTERM.
  while read -r pid; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  done <"$AH_W/pids"
  local alive
  for _ in $(seq 60); do
    alive=0
    while read -r pid; do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1
    done <"$AH_W/pids"
    [ $alive = 0 ] && break
    sleep 1
  done
  # A host still up after a minute: its init (nspawn's child; killing it ends
  # every process of the host's PID namespace), then nspawn.
  if [ $alive = 1 ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
      echo "teardown: nspawn $pid did not stop within 60 s; killing its host" >&2
      pkill -KILL -P "$pid" 2>/dev/null
      kill -KILL "$pid" 2>/dev/null
    done <"$AH_W/pids"
    sleep 1
  fi
  local d
  for d in "$AH_W"/*/root "$AH_W"/*/layer; do
    mountpoint -q "$d" && { umount "$d" || umount -l "$d"; }
  done
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case $ns in "$AH_NETNS_PREFIX"-*) ip netns del "$ns" ;; esac
  done
  # The veths' ends on this machine (deleting one end deletes the pair; the
  # kernel would do it only once the namespace is freed, asynchronously).
  local link
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    case $link in "xa$AH_TAG"[0-9]*) ip link del "$link" 2>/dev/null ;; esac
  done
  ip link del "$AH_BRIDGE" 2>/dev/null
  if findmnt -rn -o TARGET | grep -q "^$AH_W/"; then
    echo "teardown: mounts remain under $AH_W; not removing it" >&2
  else
    rm -rf --one-file-system "$AH_W"
  fi
}

# Watchdog: `hosts.sh --watchdog PID WORKDIR` waits for the test to end, however
# it ends, then tears down what is left of its hosts.
if [ "${1:-}" = --watchdog ]; then
  while kill -0 "$2" 2>/dev/null; do sleep 2; done
  AH_W=$3
  ah_hosts_down
fi
