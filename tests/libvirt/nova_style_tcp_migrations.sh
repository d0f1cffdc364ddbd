#!/usr/bin/env bash
# Libvirt.NovaStyleTcpMigrationsThroughTransparentMode
#
# Setup: hosts hv-a and hv-b as `hosts.sh --netns` makes them: each also a network
#   namespace, joined by a veth pair (hv-a 10.231.8.1, hv-b 10.231.8.2), set up as the
#   README's nova guide says: xmig-tunnel in transparent mode ([intercept] ports
#   49152-49215, driver_port 16509, firewall = true, users root and libvirt-qemu; its
#   table inet xmig in the host's own namespace), libvirtd with no TCP listener
#   (listen_tcp = 0) and Debian's default auth on its UNIX socket (no SASL anywhere),
#   qemu.conf migration_address = the host's address and migration_port_min..max =
#   49152..49215. Nothing tells libvirt or QEMU about xmig.
#   On hv-a three guests with random RAM: nv-ram (no disk), nv-disk (a qcow2 disk of
#   random data; hv-b has an empty image of the same size) and nv-par (no disk).
# Action: on hv-a, the command nova makes libvirt run (nova/virt/libvirt/driver.py:
#   `qemu+<live_migration_scheme>://<dest>/system` and `tcp://<inbound addr>`),
#     virsh migrate --live --p2p [OPTIONS] DOMAIN qemu+tcp://10.231.8.2/system \
#       --migrateuri tcp://10.231.8.2
#   for nv-ram as is, nv-disk with --copy-storage-all, nv-par with --parallel
#   --parallel-connections 4 (nova's live_migration_parallel_connections = 4); then
#   on hv-b, nova's own block-migration flags (VIR_MIGRATE_LIVE | PEER2PEER |
#   UNDEFINE_SOURCE | PERSIST_DEST | NON_SHARED_INC, with migrate_disks) move nv-disk
#   back to hv-a: --persistent --undefinesource --copy-storage-inc --migrate-disks vda,
#   to qemu+tcp://10.231.8.1/system, --migrateuri tcp://10.231.8.1; then on hv-b two at
#   once towards hv-a (nova's live_migration_bandwidth = 32: --bandwidth 32): nv-ram,
#   and a second later nv-par with --parallel --parallel-connections 4. Each guest is
#   suspended before its migration; tcpdump captures the source's end of the veth while
#   each single migration runs.
# Pass: nothing listens on TCP 16509 on either host, and each has its table inet xmig;
#   every virsh migrate exits 0; after each, the guest is gone from the source, its RAM
#   file on the destination hashes (sha256) like the source's before the migration, its
#   disk compares equal (qemu-img compare), it runs after virsh resume; the capture,
#   judged by `xmig-verify --pcap`, passes (exit 0) with every flow TLS, among them
#   ALPN xmig/driver and xmig/port-<N>; both tunnels logged the migration's
#   connections, each close: line with result=ok: a driver connection, and port-<N>
#   channels with N in 49152-49215 (one port and one connection for RAM alone; one
#   port and 5 connections, the main stream and 4 multifd channels, for --parallel 4;
#   two ports, RAM's and the NBD server's, with storage); the source's taken at
#   local=intercept:<destination address>:<16509 or N>, the destination's delivered
#   to local=unix:/run/libvirt/libvirt-sock (driver) and <its own address>:<N>. The two
#   at once overlap in time, both arrive with their own RAM, and both tunnels logged
#   2 ports with 6 connections (1 + 5) between them.
# Then fail closed: hv-a's tunnel is stopped (SIGTERM) and its table stays; the same
#   command for nv-disk (with --copy-storage-all) fails at libvirt's connection to
#   hv-b:16509, nv-disk stays on hv-a paused (user) with its RAM as before, and a
#   capture on the veth meanwhile holds no TCP segment at all.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/hosts.sh"
source "$here/guests.sh"
lv_begin --netns "$@"

# Pass criteria on the hosts as set up: the nova guide's libvirtd has no TCP listener
# (peers' driver connections can only come through the tunnel), and each tunnel applied
# its table in its host's namespace.
for h in "${LV_HOSTS[@]}"; do
  listening=$(on "$h" ss -Hltn "sport = :$LV_DRIVER_PORT")
  [ -z "$listening" ] || lv_fail "$h: something listens on TCP $LV_DRIVER_PORT: $listening"
  on "$h" nft list table inet xmig >"$LV_W/$h.nft" 2>&1 ||
    lv_fail "$h: no table inet xmig in its namespace: $(cat "$LV_W/$h.nft")"
done
lv_say "no TCP listener on $LV_DRIVER_PORT on either host; hv-a's table (nft list table inet xmig):"
sed 's/^/    /' "$LV_W/hv-a.nft"

lv_guest_create nv-ram
lv_guest_create nv-disk disk
lv_guest_create nv-par

# A capture of every TCP segment on HOST's end of the veth, into $LV_W/NAME.pcap
# (stopped by capture_stop).
capture_start() {
  local h=$1 name=$2
  rm -f "$LV_W/$name".{pcap,tcpdump.log}
  nsenter -t "$(cat "$LV_W/$h/ns.pid")" -n -- tcpdump -i "$LV_LINK" -s 0 -B 131072 -U \
    -w "$LV_W/$name.pcap" tcp </dev/null >"$LV_W/$name.tcpdump.log" 2>&1 &
  echo $! >"$LV_W/$name.tcpdump.pid"
  for _ in $(seq 100); do
    grep -q 'listening on' "$LV_W/$name.tcpdump.log" && return 0
    kill -0 "$(cat "$LV_W/$name.tcpdump.pid")" 2>/dev/null || break
    sleep 0.1
  done
  lv_fail "$name: tcpdump did not start: $(cat "$LV_W/$name.tcpdump.log")"
}
# Stops the capture (SIGINT: tcpdump writes out what it holds) and waits for it.
capture_stop() {
  local pid
  pid=$(cat "$LV_W/$1.tcpdump.pid")
  kill -INT "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  lv_fail "$1: tcpdump did not stop: $(cat "$LV_W/$1.tcpdump.log")"
}

# Pass criterion on the wire for migration NAME: xmig-verify --pcap passes the capture,
# every flow with payload in it is TLS, among them the driver and a port-<N> channel.
# The capture is deleted afterwards (130 MiB and more each) unless XMIG_LIBVIRT_KEEP.
check_capture() {
  local name=$1 verdict rc=0 flows
  verdict=$("$LV_VERIFY" --pcap "$LV_W/$name.pcap" 2>&1) || rc=$?
  lv_say "$name: xmig-verify --pcap (capture on the source's $LV_LINK; tcpdump: $(grep -E 'captured|dropped by kernel' "$LV_W/$name.tcpdump.log" | tr -s '\n' ' ')):"
  sed 's/^/    /' <<<"$verdict"
  [ "$rc" = 0 ] || lv_fail "$name: xmig-verify --pcap exited $rc: the capture is not only TLS"
  flows=$(grep -oE '[0-9]+ with payload, [0-9]+ TLS' <<<"$verdict") ||
    lv_fail "$name: xmig-verify --pcap gave no flow count"
  local with_payload=${flows%% with*} tls=${flows##*, }
  tls=${tls%% TLS}
  [ "$with_payload" -gt 0 ] && [ "$with_payload" = "$tls" ] ||
    lv_fail "$name: the capture has $with_payload flows with payload, $tls of them TLS"
  grep -q 'ALPN xmig/driver' <<<"$verdict" || lv_fail "$name: no TLS flow of the driver channel in the capture"
  grep -qE 'ALPN xmig/port-[0-9]+' <<<"$verdict" || lv_fail "$name: no TLS flow of a port channel in the capture"
  [ -n "${XMIG_LIBVIRT_KEEP:-}" ] || rm -f "$LV_W/$name.pcap"
}

# expect_local LABEL HOST LINES CHANNEL LOCAL: pass criterion on the close: LINES of
# HOST's tunnel for migration LABEL: each of CHANNEL says local=LOCAL (where the
# tunnel took the connection, or delivered it).
expect_local() {
  local bad
  bad=$(grep "channel=$4 " <<<"$3" | grep -vF " local=$5 " || true)
  [ -z "$bad" ] || lv_fail "$1: $2's $4 connections were not local=$5:
$bad"
}

# Pass criterion on the tunnels for migration LABEL from FROM to TO: both logged, since
# lv_mark_logs, at least one driver connection and exactly PORTS distinct port-<N>
# channels with N in the range, CONNECTIONS port connections in all (RAM and, with
# storage, NBD: at least CONNECTIONS), FROM's taken at local=intercept:<TO's
# address>:<port>, TO's delivered to libvirt's socket and to <TO's address>:<N>;
# every close: line says result=ok. Waits up to 20 s for the lines (a connection is
# logged when both of its ends have closed).
check_port_closes() {
  local label=$1 from=$2 to=$3 ports=$4 connections=$5 at_least=${6:-} h lines n
  local low=${LV_MIGRATION_PORTS%-*} high=${LV_MIGRATION_PORTS#*-}
  for _ in $(seq 200); do
    n=0
    for h in "$from" "$to"; do
      lines=$(lv_new_closes "$h")
      [ "$(lv_count driver "$lines")" -ge 1 ] &&
        [ "$(grep -c 'channel=port-' <<<"$lines" || true)" -ge "$connections" ] && n=$((n + 1))
    done
    [ "$n" = 2 ] && break
    sleep 0.1
  done
  local nd nport distinct port
  for h in "$from" "$to"; do
    lines=$(lv_new_closes "$h")
    nd=$(lv_count driver "$lines")
    nport=$(grep -c 'channel=port-' <<<"$lines" || true)
    distinct=$(grep -oE 'channel=port-[0-9]+ ' <<<"$lines" | sort -u | grep -oE '[0-9]+' | xargs || true)
    if [ "$nd" -lt 1 ] || [ "$(wc -w <<<"$distinct")" != "$ports" ] ||
      { [ -z "$at_least" ] && [ "$nport" != "$connections" ]; } || [ "$nport" -lt "$connections" ]; then
      lv_fail "$label: $h's tunnel logged $nd driver connections and $nport port connections on port(s) '$distinct'; expected >= 1, and $([ -n "$at_least" ] && echo "at least ")$connections on $ports port(s):
$lines"
    fi
    # Where each connection was taken from (the source: intercepted on its way to the
    # destination's address) and delivered to (the destination: libvirt's UNIX socket,
    # and the port on its own migration address).
    if [ "$h" = "$from" ]; then
      expect_local "$label" "$h" "$lines" driver "intercept:$(lv_address "$to"):$LV_DRIVER_PORT"
    else
      expect_local "$label" "$h" "$lines" driver "unix:/run/libvirt/libvirt-sock"
    fi
    for port in $distinct; do
      [ "$port" -ge "$low" ] && [ "$port" -le "$high" ] ||
        lv_fail "$label: $h's tunnel carried port-$port, outside $LV_MIGRATION_PORTS"
      if [ "$h" = "$from" ]; then
        expect_local "$label" "$h" "$lines" "port-$port" "intercept:$(lv_address "$to"):$port"
      else
        expect_local "$label" "$h" "$lines" "port-$port" "$(lv_address "$to"):$port"
      fi
    done
    lv_check_ended_ok "$label" "$h" "$lines"
    lv_say "$label: $h's tunnel: $nd driver, $nport port connections (port-${distinct// /, port-}), all result=ok"
  done
}

# nova's command on FROM towards TO: nova_virsh FROM TO [options] DOMAIN
nova_virsh() {
  local from=$1 to=$2
  shift 2
  on "$from" virsh migrate --live --p2p "$@" "qemu+tcp://$(lv_address "$to")/system" \
    --migrateuri "tcp://$(lv_address "$to")"
}

# One migration the way nova makes it: FROM TO DISK PORTS CONNECTIONS [options] DOMAIN
# (DISK: "disk" or -; PORTS, CONNECTIONS: as check_port_closes expects, CONNECTIONS at
# least that many when the migration copies storage).
migrate_like_nova() {
  local from=$1 to=$2 disk=$3 ports=$4 connections=$5 t to_addr
  shift 5
  local name=${*: -1}
  to_addr=$(lv_address "$to")
  lv_suspend_and_hash "$from" "$name"
  lv_mark_logs
  capture_start "$from" "$name"
  lv_say "$name: virsh migrate --live --p2p $* qemu+tcp://$to_addr/system --migrateuri tcp://$to_addr ($from -> $to)"
  t=$SECONDS
  nova_virsh "$from" "$to" "$@" >"$LV_W/$name.out" 2>&1 ||
    lv_fail "$name: virsh migrate $from -> $to failed: $(cat "$LV_W/$name.out")"
  lv_say "$name: migrated in $((SECONDS - t)) s"
  lv_check_arrived "$name" "$from" "$to" "$disk"
  check_port_closes "$name" "$from" "$to" "$ports" "$connections" "$([ "$disk" = disk ] && echo at-least)"
  capture_stop "$name"
  check_capture "$name"
}

migrate_like_nova hv-a hv-b - 1 1 nv-ram
lv_say "nv-ram: close lines of hv-a's tunnel:"
lv_new_closes hv-a | sed 's/^/    /'
lv_say "nv-ram: close lines of hv-b's tunnel:"
lv_new_closes hv-b | sed 's/^/    /'
migrate_like_nova hv-a hv-b disk 2 2 --copy-storage-all nv-disk
migrate_like_nova hv-a hv-b - 1 5 --parallel --parallel-connections 4 nv-par
migrate_like_nova hv-b hv-a disk 2 2 --persistent --undefinesource --copy-storage-inc \
  --migrate-disks vda nv-disk

# Two at once, back to hv-a: nv-ram, and a second later nv-par with --parallel 4, both
# at nova's live_migration_bandwidth of 32 MiB/s so that they overlap. Each has its own
# port (and its own driver connection); each guest must arrive with its own RAM.
lv_suspend_and_hash hv-b nv-ram
lv_suspend_and_hash hv-b nv-par
lv_mark_logs
lv_say "nv-ram and nv-par: at once, hv-b -> hv-a, --bandwidth 32 (nv-par with --parallel --parallel-connections 4)"
lv_start_migration nv-ram nova_virsh hv-b hv-a --bandwidth 32 nv-ram
sleep 1
lv_start_migration nv-par nova_virsh hv-b hv-a --bandwidth 32 --parallel --parallel-connections 4 nv-par
lv_wait_migrations
for g in nv-ram nv-par; do
  [ "$(lv_job_rc "$g")" = 0 ] || lv_fail "$g: virsh migrate hv-b -> hv-a exited $(lv_job_rc "$g"): $(lv_job_said "$g")"
done
lv_check_overlap nv-ram nv-par || lv_fail "the two migrations did not run at the same time"
lv_check_arrived nv-ram hv-b hv-a
lv_check_arrived nv-par hv-b hv-a
check_port_closes "nv-ram and nv-par" hv-b hv-a 2 6

# Fail closed: hv-a's tunnel stops, its table stays; nova's next migration fails (its
# driver connection is redirected to a listener that is gone), the guest stays on hv-a
# as it was, and not one TCP segment crosses the veth.
lv_stop "$(cat "$LV_W/hv-a/tunnel.pid")=hv-a/tunnel"
rm -f "$LV_W/hv-a/tunnel.pid"
on hv-a nft list table inet xmig >/dev/null 2>&1 || lv_fail "hv-a's table inet xmig went with its tunnel"
lv_suspend_and_hash hv-a nv-disk
capture_start hv-a closed
if nova_virsh hv-a hv-b --copy-storage-all nv-disk >"$LV_W/closed.out" 2>&1; then
  lv_fail "nv-disk: migrated with hv-a's tunnel stopped"
fi
capture_stop closed
lv_say "nv-disk: with hv-a's tunnel stopped, virsh migrate failed: $(tr -s '\n' ' ' <"$LV_W/closed.out")"
# Failed where it must: at libvirt's connection to hv-b (libvirt says "unable to
# connect to server at 'HOST:PORT'"), not for a reason of its own before it.
grep -qF "unable to connect to server at '$(lv_address hv-b):$LV_DRIVER_PORT'" "$LV_W/closed.out" ||
  lv_fail "nv-disk: the migration did not fail at its driver connection to hv-b"
crossed=$(tcpdump -nr "$LV_W/closed.pcap" 2>/dev/null | wc -l)
[ "$crossed" = 0 ] || lv_fail "nv-disk: $crossed TCP segments crossed the veth with hv-a's tunnel stopped:
$(tcpdump -nr "$LV_W/closed.pcap" 2>/dev/null | head -n 20)"
[ "$(lv_state hv-b nv-disk)" = absent ] || lv_fail "nv-disk: on hv-b after the failed migration"
[ "$(vsh hv-a domstate --reason nv-disk | head -n 1)" = "paused (user)" ] ||
  lv_fail "nv-disk: on hv-a '$(vsh hv-a domstate --reason nv-disk | head -n 1)' after the failed migration; the test left it 'paused (user)'"
[ "$(lv_ram_hash hv-a nv-disk)" = "${LV_RAM[nv-disk]}" ] || lv_fail "nv-disk: RAM on hv-a changed by the failed migration"
lv_say "nv-disk: still on hv-a, paused (user), its RAM as before; no TCP segment crossed the veth"
lv_say "PASS"
