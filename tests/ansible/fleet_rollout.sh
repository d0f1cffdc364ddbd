#!/usr/bin/env bash
# Ansible.RollsOutTheFleetKeysStayOnTheirHostsEveryPeerVerifies
#
# Setup: three hosts booted with systemd-nspawn on this machine (hosts.sh): ca (the
#   CA host, group xmig_ca) and hypervisors hv-a and hv-b (group compute), each with
#   its own /etc, /run, systemd, sshd and address; the xmig .deb (tests/package/dist.sh)
#   (or $XMIG_DEB, an already built one); an inventory as deploy/ansible's example.
# Action: ansible-playbook deploy/ansible/site.yml over SSH, twice; then, from this
#   machine, `xmig-verify --config /etc/xmig/tunnel.toml --all-peers` on each
#   hypervisor.
# Pass: the first run exits 0 with its xmig-verify task passing on both hypervisors;
#   the second run's recap says changed=0 failed=0 for every host; on each hypervisor
#   the package is installed, xmig-tunnel.service enabled and active, tunnel.toml names
#   the other hypervisor as its one [[peer]], and --all-peers ends `result: PASS` with
#   a PASS row for that peer; each hypervisor's private keys exist in that host's own
#   files only (not on the other hypervisor, not on the CA host, not in anything the
#   control side kept), the CA key only on the CA host; the package was never
#   installed on this machine; after teardown no mount, network namespace or link of
#   the run and no work dir remains.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=hosts.sh
source "$here/hosts.sh"

installed_here() { dpkg-query -W -f='${Status}' xmig 2>/dev/null | grep -q 'install ok installed'; }
for tool in ansible-playbook systemd-nspawn /usr/sbin/sshd; do
  command -v "$tool" >/dev/null || ah_fail "$tool missing: run tools/setup (packages ansible, systemd-container, openssh-server)"
done
! installed_here || ah_fail "the xmig package is installed on this machine; this test installs it only inside its hosts and checks that it never lands here: remove it first (apt-get purge xmig)"

ah_begin
w=$AH_W
declare -A addr=([ca]=$AH_SUBNET.10 [hv-a]=$AH_SUBNET.11 [hv-b]=$AH_SUBNET.12)
hosts=(ca hv-a hv-b)
hypervisors=(hv-a hv-b)

if [ -n "${XMIG_DEB:-}" ]; then
  deb=$(realpath "$XMIG_DEB")
  ah_say "package: $deb (XMIG_DEB)"
else
  source "$src/tests/package/dist.sh"
  package_dist "$w/dist" "$w/package.log" || ah_fail "no package"
  deb=$(ls "$w"/dist/xmig_*.deb)
fi

ah_say "booting ${hosts[*]}"
for h in "${hosts[@]}"; do ah_host_up "$h" "${addr[$h]##*.}"; done
for h in "${hosts[@]}"; do ah_wait_ssh "$h" "${addr[$h]}"; done
ah_say "hosts up: $(for h in "${hosts[@]}"; do printf '%s=%s ' "$h" "${addr[$h]}"; done)"

# The control side: Ansible's own files in the work dir (nothing in ~/.ansible),
# ssh masters there too (closed by the teardown).
mkdir -p "$w/cp" "$w/ansible-home" "$w/ansible-tmp"
cat >"$w/ansible.cfg" <<CFG
[defaults]
roles_path = $src/deploy/ansible/roles
interpreter_python = /usr/bin/python3
local_tmp = $w/ansible-tmp
forks = 5
# Each task's time in the log (ansible.posix, in Debian's ansible package).
callbacks_enabled = ansible.posix.profile_tasks
[ssh_connection]
pipelining = True
control_path_dir = $w/cp
ssh_args = -o ControlMaster=auto -o ControlPersist=120s
CFG
cat >"$w/inventory.ini" <<INV
[compute]
hv-a ansible_host=${addr[hv-a]}
hv-b ansible_host=${addr[hv-b]}

[xmig_ca]
ca ansible_host=${addr[ca]}

[all:vars]
# Root over SSH; site.yml's become (for an operator's own user) is not needed,
# and these hosts, like this machine, may have no sudo.
ansible_user=root
ansible_become=false
ansible_ssh_private_key_file=$w/ssh/id_ed25519
ansible_ssh_common_args=-o UserKnownHostsFile=$w/ssh/known_hosts -o StrictHostKeyChecking=yes
xmig_package_deb=$deb
INV
export ANSIBLE_CONFIG=$w/ansible.cfg ANSIBLE_HOME=$w/ansible-home ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0

play() {  # log
  local log=$1 started=$SECONDS rc=0
  ansible-playbook -i "$w/inventory.ini" "$src/deploy/ansible/site.yml" >"$log" 2>&1 || rc=$?
  ah_say "ansible-playbook: exit $rc in $((SECONDS - started)) s; recap:"
  sed -n '/^PLAY RECAP/,$p' "$log" | sed 's/^/  /'
  return $rc
}

ah_say "first run"
play "$w/run1.log" || { cat "$w/run1.log"; ah_fail "the first ansible-playbook run failed (its log above)"; }
grep -q 'TASK \[xmig : Run xmig-verify --all-peers\]' "$w/run1.log" || ah_fail "the play did not run xmig-verify"

ah_say "second run (idempotent: nothing may change)"
play "$w/run2.log" || { cat "$w/run2.log"; ah_fail "the second ansible-playbook run failed (its log above)"; }
for h in "${hypervisors[@]}"; do
  grep -qE "^$h +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0" "$w/run2.log" ||
    { grep -B2 -A12 -E '^changed: ' "$w/run2.log" | head -60; ah_fail "second run: $h is not changed=0 failed=0 (the changed tasks above)"; }
done
! grep -E '^(changed|failed|fatal): ' "$w/run2.log" ||
  ah_fail "second run: the tasks above changed or failed (a delegated task counts for the host it ran for)"

ah_say "what the hypervisors run"
for h in "${hypervisors[@]}"; do
  other=$([ "$h" = hv-a ] && echo hv-b || echo hv-a)
  a=${addr[$h]}
  ah_ssh "$a" "dpkg-query -W -f='\${Status}' xmig" | grep -q 'install ok installed' || ah_fail "$h: xmig not installed"
  [ "$(ah_ssh "$a" systemctl is-enabled xmig-tunnel)" = enabled ] || ah_fail "$h: xmig-tunnel.service not enabled"
  [ "$(ah_ssh "$a" systemctl is-active xmig-tunnel)" = active ] || ah_fail "$h: xmig-tunnel.service not active"
  peers=$(ah_ssh "$a" "grep -A1 '^\[\[peer\]\]' /etc/xmig/tunnel.toml | grep '^name'")
  [ "$peers" = "name = \"$other\"" ] || ah_fail "$h: tunnel.toml's peers are [$peers], expected only $other"
  ah_say "$h: xmig-verify --config /etc/xmig/tunnel.toml --all-peers"
  rc=0
  ah_ssh "$a" xmig-verify --config /etc/xmig/tunnel.toml --all-peers >"$w/verify-$h.out" 2>&1 || rc=$?
  sed 's/^/  /' "$w/verify-$h.out"
  [ $rc = 0 ] || ah_fail "$h: xmig-verify --all-peers exited $rc"
  grep -qE "^result: PASS" "$w/verify-$h.out" || ah_fail "$h: --all-peers did not end with result: PASS"
  grep -qE "^$other +PASS +PASS +PASS .* PASS$" "$w/verify-$h.out" || ah_fail "$h: no all-PASS row for peer $other"
done

ah_say "keys stayed on their hosts"
# A PEM key's first line of base64 is unique to it: look for it in every other
# host's own files and in what the control side kept.
key_line() { sed -n 2p "$1"; }
elsewhere() {  # owner-host key-file: prints where else the key appears
  local owner=$1 line h
  line=$(key_line "$2")
  [ -n "$line" ] || ah_fail "$2 is empty"
  for h in "${hosts[@]}"; do
    [ "$h" = "$owner" ] && continue
    grep -rlF -e "$line" "$(ah_upper "$h")" || true
  done
  grep -rlF -e "$line" "$w/ansible-home" "$w/ansible-tmp" "$w"/run*.log "$w/inventory.ini" || true
}
for h in "${hypervisors[@]}"; do
  for k in server-key.pem client-key.pem; do
    f=$(ah_upper "$h")/etc/pki/qemu/$k
    [ -s "$f" ] || ah_fail "$h: /etc/pki/qemu/$k was not made on $h"
    found=$(elsewhere "$h" "$f")
    [ -z "$found" ] || ah_fail "$h's $k appears outside $h: $found"
  done
  [ ! -e "$(ah_upper ca)/etc/pki/qemu" ] || ah_fail "the CA host has /etc/pki/qemu: $(ls "$(ah_upper ca)/etc/pki/qemu")"
  echo "  $h: server and client key only on $h"
done
ca_key=$(ah_upper ca)/root/xmig-ca/ca-key.pem
[ -s "$ca_key" ] || ah_fail "no CA key on the CA host ($ca_key)"
found=$(elsewhere ca "$ca_key")
[ -z "$found" ] || ah_fail "the CA key appears outside the CA host: $found"
echo "  ca: CA key only on ca; requests and certificates: $(ls "$(ah_upper ca)/root/xmig-ca/requests" "$(ah_upper ca)/root/xmig-ca/issued" | tr '\n' ' ')"
! installed_here || ah_fail "the xmig package got installed on this machine"

ah_say "teardown"
tag=$AH_TAG
ah_hosts_down
trap - EXIT
left=()
[ ! -e "$w" ] || left+=("$w")
findmnt -rn -o SOURCE,TARGET | grep -q "xmig-ansible-$tag" && left+=("mounts")
ip netns list | grep -q "xmig-ans-$tag-" && left+=("netns")
ip -o link | grep -qE ": xab?${tag}" && left+=("links: $(ip -o link | grep -oE ": xab?${tag}[^:]*" | tr -d ':' | xargs)")
[ ${#left[@]} -eq 0 ] || ah_fail "left behind: ${left[*]}"
echo "nothing of the run remains (mounts, network namespaces, links, $w)"
echo PASS
