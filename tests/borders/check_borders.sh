#!/bin/bash
# Setup: the source tree given as $1. Action: reads every #include "folder/..." of
# the libraries and tools, and the CMakeLists outside tests/. Pass: no library
# includes from a folder it does not build on (below), and from another folder
# only that folder's public headers; no header private to its folder is
# included from outside it, tests included; only tests/ and fuzz/ put the
# source root on an include path; and nothing outside tests/ compiles a source
# that lives under tests/. Each violation is printed as FILE:LINE: rule.
#
# Public headers: the compiler holds that border (each library exports only the
# headers of its xmig_public_headers call, cmake/XmigLibrary.cmake; test
# Borders.NonPublicHeadersDoNotCompile). This check reads the same calls from the
# CMakeLists (one list) and checks it here too, kept because it runs in a second
# without a build, names the rule broken, and covers a header that no compiled
# file includes; what a folder builds on (below) and the private headers in
# tests/ are this check's alone.
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
  [bench]="base certs tls tunnel harness bench"  # xmig_micro times tls::Records itself
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
# Each folder's public headers, the only ones another folder of the product may
# include: those its libraries export, read from their xmig_public_headers calls
# (comments dropped, lines joined). Tests and fuzz targets may include more, to
# drive a part on its own, but never a header in $private.
declare -A public=()
for folder in "${!may[@]}"; do
  [[ -f $folder/CMakeLists.txt ]] || continue
  while read -r _target headers; do
    public[$folder]+=" $headers"
  done < <(sed 's/#.*//' "$folder/CMakeLists.txt" | tr '\n' ' ' |
    grep -oE 'xmig_public_headers\([^)]*\)' | sed -E 's/^xmig_public_headers\( *//; s/ *\)$//')
done
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
  [[ " ${public[$owner]:-} " == *" ${header#*/} "* ]] &&
    fail "$owner/CMakeLists.txt: $header is private to $owner/ and must not be in its xmig_public_headers"
  while IFS=: read -r file line _; do
    [[ $file == "$owner"/* ]] || fail "$file:$line: $header is private to $owner/"
  done < <(grep -rnF "#include \"$header\"" "${!may[@]}" tests --include='*.cpp' --include='*.hpp')
done

while IFS=: read -r file line text; do
  fail "$file:$line: a target outside tests/ compiles a source from tests/ ($text)"
done < <(grep -rnE '(SOURCE_DIR\}|\.\.)/tests/[^ )]*\.cpp' --include=CMakeLists.txt --include='*.cmake' \
  base certs tls io tunnel verify harness bench tools fuzz CMakeLists.txt)

while IFS=: read -r file line text; do
  fail "$file:$line: only tests/ and fuzz/ see the source root; a library exports its public headers with xmig_public_headers ($text)"
done < <(grep -rnE 'include_directories\(.*SOURCE_DIR|^[[:space:]]*xmig_test_includes\(' \
  --include=CMakeLists.txt --include='*.cmake' base certs tls io tunnel verify harness bench tools CMakeLists.txt)

if ((failures > 0)); then
  echo "$failures border violation(s)"
  exit 1
fi
echo "borders hold"
