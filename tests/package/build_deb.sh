#!/usr/bin/env bash
# Package.BuildsTheDebianWayLintianClean (the fixture of the package and Ansible tests)
#
# Setup: this checkout; $XMIG_DIST, the folder the other tests take the .deb from.
# Action: tools/package builds the .deb (dpkg-buildpackage, lintian) into $XMIG_DIST.
# Pass: tools/package exits 0, which it does only without a lintian error, and
#   $XMIG_DIST holds exactly one xmig_*.deb; the lintian tags left are printed (each
#   kept on purpose is explained in debian/xmig.lintian-overrides).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
: "${XMIG_DIST:?set XMIG_DIST to the folder for the package}"
rm -rf "$XMIG_DIST"
log=$(mktemp /tmp/xmig-package-build-XXXXXX.log)
trap 'rm -f "$log"' EXIT
echo "== tools/package $XMIG_DIST"
bash "$src/tools/package" "$XMIG_DIST" >"$log" 2>&1 || { tail -n 40 "$log"; echo "FAIL: tools/package failed" >&2; exit 1; }
debs=("$XMIG_DIST"/xmig_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || { echo "FAIL: expected one xmig_*.deb in $XMIG_DIST, found: ${debs[*]}" >&2; exit 1; }
grep -E '^[EWIP]: ' "$XMIG_DIST/lintian.txt" || echo "(lintian: no tags)"
echo "== ${debs[0]}"
