#!/bin/bash
# Setup: the source tree given as $1. Action: reads every #include "folder/..." of
# the libraries and tools, and the CMakeLists outside tests/. Pass: no library
# includes from a folder it does not build on (below), and from another folder
# only that folder's public headers; no header private to its folder is
# included from outside it, tests included; and nothing outside tests/ compiles
# a source that lives under tests/. Each violation is printed as FILE:LINE: rule.
set -u
root=${1:?usage: check_borders.sh SOURCE_DIR}
cd "$root" || exit 2

# What each folder may include from (besides system and third-party headers).
declare -A may=(
  [base]="base"
  [certs]="base certs"
  [tls]="base certs tls"  # certificates are judged by certs/ (one rule: check_role)
  [io]="base tls io"
  [tunnel]="base tls io tunnel"
  [verify]="base certs tls tunnel verify"
  [harness]="base certs tunnel verify harness"
  [bench]="base certs tunnel harness bench"
  [tools]="base certs tunnel verify harness bench"
  [fuzz]="base tls tunnel verify fuzz"
)
# Where a folder may use only part of another: xmig-verify reads the tunnel's
# config and speaks its wire protocol, and links neither its data path nor
# its workers (it links xmig_config, not xmig_tunnel). It compares the host's
# table inet xmig with the tunnel's own ruleset generator (xmig_nftables), so
# there is one copy of the rules.
declare -A only=(
  [verify:tunnel]="tunnel/config.hpp tunnel/endpoint.hpp tunnel/protocol.hpp tunnel/nftables.hpp"
)
# Each library's public headers: the only ones another folder of the product may
# include (every CMake target exports the source root, so this list, not the
# include path, is what says what is public). Tests and fuzz targets may
# include more, to drive a part on its own, but never a header in $private.
declare -A public=(
  [base]="asio.hpp fd.hpp json.hpp openssl.hpp openssl_errors.hpp prometheus.hpp socket.hpp"
  [certs]="certs.hpp host_name.hpp"
  [tls]="channel.hpp context.hpp handshake.hpp ktls.hpp"
  [io]="pump.hpp"
  [tunnel]="config.hpp endpoint.hpp log_format.hpp nftables.hpp protocol.hpp tunnel.hpp"
  [verify]="verify.hpp status_client.hpp probe.hpp tls_records.hpp"
  [harness]="busy_guest.hpp certtool.hpp files.hpp netns.hpp process.hpp qemu_vm.hpp streams.hpp tls_probe.hpp tunnel_pair.hpp"
  [bench]="channels.hpp load.hpp measure.hpp record.hpp relay.hpp"
)
# Headers private to their folder, tests included: internals whose users are
# the folder's own sources only.
private="io/worker.hpp io/ring.hpp certs/detail.hpp verify/live_detail.hpp"

failures=0
fail() {
  echo "$1"
  failures=$((failures + 1))
}

for folder in "${!may[@]}"; do
  while IFS=: read -r file line text; do
    used=
    [[ $text =~ \"([a-z_]+)/ ]] && used=${BASH_REMATCH[1]}
    [[ " ${may[$folder]} " == *" $used "* ]] ||
      fail "$file:$line: $folder/ must not include from $used/ ($text)"
  done < <(grep -rnE '^[[:space:]]*#include "[a-z_]+/' "$folder" --include='*.cpp' --include='*.hpp')
done

for pair in "${!only[@]}"; do
  folder=${pair%%:*} used=${pair#*:}
  while IFS=: read -r file line text; do
    [[ $text =~ \"($used/[a-z_]+\.hpp)\" ]] || continue
    [[ " ${only[$pair]} " == *" ${BASH_REMATCH[1]} "* ]] ||
      fail "$file:$line: $folder/ may use only ${only[$pair]} of $used/ ($text)"
  done < <(grep -rnE "^[[:space:]]*#include \"$used/" "$folder" --include='*.cpp' --include='*.hpp')
done

for folder in "${!may[@]}"; do
  [[ $folder == fuzz ]] && continue # fuzz targets, like tests, drive one part on its own
  while IFS=: read -r file line text; do
    [[ $text =~ \"([a-z_]+)/([a-z_]+\.hpp)\" ]] || continue
    owner=${BASH_REMATCH[1]} header=${BASH_REMATCH[2]}
    [[ $owner == "$folder" ]] && continue
    [[ " ${public[$owner]:-} " == *" $header "* ]] ||
      fail "$file:$line: $owner/$header is not a public header of $owner/ ($text)"
  done < <(grep -rnE '^[[:space:]]*#include "[a-z_]+/' "$folder" --include='*.cpp' --include='*.hpp')
done

for header in $private; do
  owner=${header%%/*}
  while IFS=: read -r file line _; do
    [[ $file == "$owner"/* ]] || fail "$file:$line: $header is private to $owner/"
  done < <(grep -rnF "#include \"$header\"" "${!may[@]}" tests --include='*.cpp' --include='*.hpp')
done

while IFS=: read -r file line text; do
  fail "$file:$line: a target outside tests/ compiles a source from tests/ ($text)"
done < <(grep -rnE '(SOURCE_DIR\}|\.\.)/tests/[^ )]*\.cpp' --include=CMakeLists.txt --include='*.cmake' \
  base certs tls io tunnel verify harness bench tools fuzz CMakeLists.txt)

if ((failures > 0)); then
  echo "$failures border violation(s)"
  exit 1
fi
echo "borders hold"
