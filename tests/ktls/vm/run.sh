#!/usr/bin/env bash
# Boots Debian's stock kernel (which ships tls.ko) under QEMU with an initramfs
# holding the given programs, runs them in the guest, and exits 0 only if every
# one of them exited 0 there (the guest prints XMIG_KTLS_VM=PASS).
#
#   run.sh --work DIR [--bin PATH]... 'PROGRAM [ARGS]'...
#
# Programs and --bin files keep their absolute paths inside the guest (the
# tests find xmig-tunnel where they were built), with debug info stripped and
# their shared libraries copied next to the same paths as on the host.
# The kernel package is downloaded once (apt-get download) into
# $XMIG_KTLS_CACHE (default ~/.cache/xmig-ktls-vm). KVM is used when
# /dev/kvm is writable, else software emulation (TCG), as in CI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work= bins=() runs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --work) work=$2; shift 2 ;;
    --bin) bins+=("$2"); shift 2 ;;
    *) runs+=("$1"); shift ;;
  esac
done
[ -n "$work" ] && [ ${#runs[@]} -gt 0 ] || { echo "usage: $0 --work DIR [--bin PATH]... 'CMD'..." >&2; exit 2; }
for tool in qemu-system-x86_64 busybox cpio depmod dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing; run tools/setup" >&2; exit 2; }
done
cache=${XMIG_KTLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xmig-ktls-vm}
mkdir -p "$work" "$cache"
started=$(date +%s)

# 1. The kernel: whatever linux-image-amd64 depends on now, else the newest cached.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}' || true)
if [ -n "$pkg" ] && ! ls "$cache/${pkg}"_*.deb >/dev/null 2>&1; then
  (cd "$cache" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
fi
deb=$(ls -t "$cache"/linux-image-[0-9]*.deb 2>/dev/null | head -1 || true)
[ -n "$deb" ] || { echo "run.sh: no kernel package (apt-get download linux-image-amd64's dependency failed)" >&2; exit 2; }
kpkg="$cache/$(basename "$deb" .deb)"
if [ ! -d "$kpkg/boot" ]; then
  rm -rf "$kpkg.tmp"; dpkg-deb -x "$deb" "$kpkg.tmp"; mv "$kpkg.tmp" "$kpkg"
fi
kver=$(ls "$kpkg/lib/modules" | head -1)
grep -q '^CONFIG_TLS=[ym]' "$kpkg/boot/config-$kver" || { echo "run.sh: $kver has no CONFIG_TLS" >&2; exit 2; }

# 2. The root filesystem.
root="$work/rootfs"
rm -rf "$root"; mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,etc,lib64,"lib/modules/$kver/kernel"}
cp "$(command -v busybox)" "$root/bin/busybox"
for d in net/tls crypto arch/x86/crypto lib/crypto; do
  [ -d "$kpkg/lib/modules/$kver/kernel/$d" ] || continue
  mkdir -p "$root/lib/modules/$kver/kernel/$d"
  cp -a "$kpkg/lib/modules/$kver/kernel/$d/." "$root/lib/modules/$kver/kernel/$d/"
done
cp "$kpkg/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$root" "$kver"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
[ -d /etc/ssl ] && mkdir -p "$root/etc/ssl" && cp -a /etc/ssl/openssl.cnf "$root/etc/ssl/" 2>/dev/null || true

copy_program() {  # path: the file, stripped, and its shared libraries
  local f=$1
  [ -f "$root$f" ] && return 0
  mkdir -p "$root$(dirname "$f")"
  strip -g -o "$root$f" "$f" 2>/dev/null || cp "$f" "$root$f"
  chmod +x "$root$f"
  for lib in $(ldd "$f" 2>/dev/null | awk '/=> \//{print $3} $1 ~ /^\/.*ld-linux/{print $1}'); do
    [ -f "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
  done
}
for b in "${bins[@]}"; do copy_program "$b"; done
: > "$root/commands"
for r in "${runs[@]}"; do
  copy_program "${r%% *}"
  echo "$r" >> "$root/commands"
done
cp "$here/init.sh" "$root/init"; chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"
echo "run.sh: kernel $kver, initramfs $(du -h "$work/initrd.gz" | cut -f1), built in $(( $(date +%s) - started ))s"

# 3. Boot. The guest powers off when done; the console is the verdict.
tcg="-accel tcg,thread=multi -cpu max"
accel=$tcg
[ -w /dev/kvm ] && accel="-accel kvm -cpu host"
console="$work/console.log"
boot() {
  booted=$(date +%s)
  set +e
  timeout --kill-after=10 "${XMIG_KTLS_VM_TIMEOUT:-780}" qemu-system-x86_64 $accel -m 1536 -smp 2 \
    -nographic -no-reboot -nic none -kernel "$kpkg/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 loglevel=3 panic=-1 rdinit=/init" > "$console" 2>&1
  qemu=$?
  set -e
}
boot
# A host whose KVM refuses QEMU's vCPU set-up (seen: "failed to set MSR 0x10a",
# an abort before the guest runs) still runs the same guest under TCG, slower.
if [ "$qemu" -ne 0 ] && [ "$accel" != "$tcg" ] && grep -q 'failed to set MSR' "$console"; then
  cat "$console"
  echo "run.sh: KVM could not start the vCPU here; booting the same guest under TCG"
  accel=$tcg
  boot
fi
cat "$console"
echo "run.sh: qemu exit $qemu after $(( $(date +%s) - booted ))s in the guest ($accel), $(( $(date +%s) - started ))s in all"
grep -q '^XMIG_KTLS_VM=PASS' "$console" && exit 0
echo "run.sh: FAIL (see $console)" >&2
exit 1
