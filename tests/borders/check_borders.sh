#!/bin/bash
# Setup: the source tree given as $1. Action: reads every #include "folder/..." of
# the libraries and tools, and the CMakeLists outside tests/. Pass: no library
# includes from a folder it does not build on (below), no header private to its
# folder is included from outside it, and nothing outside tests/ compiles a
# source that lives under tests/. Each violation is printed as FILE:LINE: rule.
set -u
root=${1:?usage: check_borders.sh SOURCE_DIR}
cd "$root" || exit 2

# What each folder may include from (besides system and third-party headers).
declare -A may=(
  [base]="base"
  [certs]="certs"
  [tls]="base certs tls"  # certificates are judged by certs/ (one rule: check_role)
  [io]="base tls io"
  [tunnel]="base tls io tunnel"
  [verify]="base certs tls tunnel verify"
  [harness]="base certs tunnel harness"
  [bench]="base certs harness bench"
  [tools]="base certs tunnel verify harness bench"
  [fuzz]="base tls tunnel verify fuzz"
)
# Headers private to their folder.
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
