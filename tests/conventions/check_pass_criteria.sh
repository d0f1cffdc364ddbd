#!/bin/bash
# Setup: the source tree given as $1 (or, with --self-test, a throwaway tree
# with one test that states its criterion and one that does not).
# Action: reads every gtest TEST/TEST_F/TEST_P under tests/, and every test
# script under tests/ (a script whose second line names its test, "# Suite.Name").
# Pass: each C++ test has, in the comment block right above it, a line starting
# "// Pass" (the one convention: the pass criterion is stated before the code);
# each test script has a "# Pass" line in its header. Each violation is printed
# as FILE:LINE: test name.
set -u

check_tree() {
  local root=$1 failures=0
  while IFS= read -r line; do
    echo "$line"
    failures=$((failures + 1))
  done < <(
    find "$root/tests" -name '*.cpp' -print0 | xargs -0 -r awk '
      FNR == 1 { block_has_pass = 0 }
      /^[[:space:]]*\/\// { if ($0 ~ /^[[:space:]]*\/\/ Pass([^A-Za-z]|$)/) block_has_pass = 1; next }
      /^(TEST|TEST_F|TEST_P)\(/ {
        if (!block_has_pass) print FILENAME ":" FNR ": " $0 " states no // Pass criterion above it"
      }
      { block_has_pass = 0 }'
    find "$root/tests" -name '*.sh' -print0 | while IFS= read -r -d '' script; do
      sed -n 2p "$script" | grep -qE '^# [A-Z][A-Za-z]+\.[A-Z][A-Za-z]+( |$)' || continue
      grep -qE '^# Pass([^A-Za-z]|$)' "$script" || echo "$script:2: $(sed -n 2p "$script") states no # Pass criterion"
    done
  )
  return $((failures > 0))
}

if [[ ${1:-} == --self-test ]]; then
  tree=$(mktemp -d)
  trap 'rm -rf "$tree"' EXIT
  mkdir -p "$tree/tests"
  printf '%s\n' '// Pass: one is one.' 'TEST(Good, OneIsOne) {}' '' \
    '// Setup: nothing.' 'TEST(Bad, SaysNothing) {}' >"$tree/tests/a_test.cpp"
  out=$(check_tree "$tree") && { echo "self-test: a test without a criterion passed"; exit 1; }
  [[ $out == *"TEST(Bad, SaysNothing)"* && $out != *Good* ]] || { echo "self-test: wrong findings: $out"; exit 1; }
  echo "self-test: the check finds exactly the test without a criterion"
  exit 0
fi

root=${1:?usage: check_pass_criteria.sh SOURCE_DIR | --self-test}
check_tree "$root" || { echo "state each test's pass criterion first: a '// Pass: ...' comment above it"; exit 1; }
echo "every test states its pass criterion above it"
