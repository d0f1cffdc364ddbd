# Sourced by the tests that need the xmig .deb (tests/package, tests/ansible).
# package_dist DIR LOG: fills DIR with the package (xmig_*.deb, lintian.txt).
# Under ctest the fixture Package.BuildsTheDebianWayLintianClean has built it
# once into $XMIG_DIST (one package build per run, not one per test); run by
# hand, without XMIG_DIST, it is built here with tools/package.
package_dist() {
  local dir=$1 log=$2 src
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -n "${XMIG_DIST:-}" ]; then
    compgen -G "$XMIG_DIST/xmig_*.deb" >/dev/null ||
      { echo "FAIL: XMIG_DIST=$XMIG_DIST holds no xmig_*.deb (did Package.BuildsTheDebianWayLintianClean pass?)" >&2; return 1; }
    echo "== the package built by Package.BuildsTheDebianWayLintianClean: $XMIG_DIST"
    mkdir -p "$dir" && cp "$XMIG_DIST"/xmig_*.deb "$XMIG_DIST/lintian.txt" "$dir/"
    return
  fi
  echo "== tools/package $dir"
  bash "$src/tools/package" "$dir" >"$log" 2>&1 || { tail -n 40 "$log"; echo "FAIL: tools/package failed" >&2; return 1; }
}
