#!/bin/bash
# Setup: a throwaway build directory ($2) for the small project
# tests/borders/probe/, given each tool's include directories and compile
# definitions exactly as xmig's own build compiles that tool (the transitive
# usage requirements of the libraries it links).
# Action: compiles a file that includes one header, once per header named.
# Pass: each header a tool may use (a public header of a library it links)
# compiles, and each header it must not use (another folder's internals, or
# the public header of a library it does not link) fails to compile with
# "No such file" naming that header. The cases that compile show that the
# probe itself is sound, so a failure is the border and nothing else.
#
# Usage: probe.sh CMAKE BUILD_DIR CXX GENERATOR
#                 { TOOL INCLUDES DEFINITIONS "USABLE..." "NOT_USABLE..." }...
# INCLUDES and DEFINITIONS are CMake lists (;-separated).
set -u
cmake=$1 dir=$2 cxx=$3 generator=$4
shift 4

failures=0
fail() {
  echo "FAIL: $1"
  failures=$((failures + 1))
}

tools=() defines=()
declare -A usable=() not_usable=()
while (($# >= 5)); do
  tool=$1
  tools+=("$tool")
  usable[$tool]=$4 not_usable[$tool]=$5
  headers="$4 $5"
  defines+=("-DXMIG_PROBE_${tool}_INCLUDES=$2" "-DXMIG_PROBE_${tool}_DEFINITIONS=$3"
    "-DXMIG_PROBE_${tool}_HEADERS=${headers// /;}")
  shift 5
done
if (($# > 0)); then
  echo "usage: each tool takes five arguments; $# left over"
  exit 2
fi

rm -rf "$dir"
mkdir -p "$dir"
list="${tools[*]}"
if ! "$cmake" -S "$(dirname "$0")/probe" -B "$dir" -G "$generator" -DCMAKE_CXX_COMPILER="$cxx" \
  -DXMIG_PROBE_TOOLS="${list// /;}" "${defines[@]}" >"$dir/configure.log" 2>&1; then
  cat "$dir/configure.log"
  echo "the probe project did not configure"
  exit 1
fi

for tool in "${tools[@]}"; do
  for header in ${usable[$tool]} ${not_usable[$tool]}; do
    probe=${tool}__$(tr -c 'a-zA-Z0-9\n' _ <<<"$header")
    output=$("$cmake" --build "$dir" --target "$probe" 2>&1)
    compiled=$?
    if [[ " ${usable[$tool]} " == *" $header "* ]]; then
      if ((compiled == 0)); then
        echo "ok: $tool compiles with $header"
      else
        echo "$output"
        fail "$tool: $header is a public header of a library it links, and did not compile"
      fi
    elif ((compiled == 0)); then
      fail "$tool: $header compiled, but it is not exported to $tool"
    elif grep -qE "$header(: No such file|' file not found)" <<<"$output"; then
      echo "ok: $tool cannot include $header (No such file)"
    else
      echo "$output"
      fail "$tool: $header failed to compile, but not for want of the file"
    fi
  done
done

if ((failures > 0)); then
  echo "$failures probe(s) failed"
  exit 1
fi
echo "the compiler holds the borders"
