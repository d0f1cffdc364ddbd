#!/bin/busybox sh
# PID 1 of the kTLS test VM: mounts, loads kTLS and the AEADs, runs each line
# of /commands, prints XMIG_KTLS_VM=PASS only if all of them exited 0, powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root TMPDIR=/tmp
set -f  # test filters hold * characters
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# /tmp stays the initramfs' own folder (the root is already in RAM and
# writable): a tmpfs mounted over it would hide the programs of a checkout that
# lives under /tmp, which keep their host paths in the guest.
mkdir -p /root
echo /bin/modprobe > /proc/sys/kernel/modprobe
ip link set lo up
for m in tls gcm aesni-intel ghash-clmulni-intel chacha20poly1305 chacha-x86_64 poly1305-x86_64; do
  modprobe "$m" 2>/dev/null || echo "init: modprobe $m failed"
done
echo "=== guest $(uname -r) up at $(cut -d' ' -f1 /proc/uptime)s; modules: $(lsmod | awk 'NR>1{print $1}' | tr '\n' ' ')"
ulimit -n 65536
failed=0
while read -r cmd; do
  [ -n "$cmd" ] || continue
  echo "=== run: $cmd"
  $cmd
  rc=$?
  echo "=== exit $rc: $cmd"
  [ "$rc" = 0 ] || failed=1
done < /commands
echo "=== /proc/net/tls_stat"; cat /proc/net/tls_stat
if [ "$failed" = 0 ]; then echo "XMIG_KTLS_VM=PASS"; else echo "XMIG_KTLS_VM=FAIL"; fi
echo "=== done at $(cut -d' ' -f1 /proc/uptime)s"
poweroff -f
