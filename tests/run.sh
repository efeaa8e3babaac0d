#!/usr/bin/env bash
# Runs the numbered test cases tests/NN-name.sh.
#   tests/run.sh            every case
#   tests/run.sh 4 8 12     cases 04, 08 and 12 only
# One line per case (OK/FAIL), then "N passed, M failed". A failing case's
# output is kept in tests/build/logs/NN-name.log and its tail is shown.
set -u
cd "$(dirname "$0")/.."
export ROOT=$PWD
export SO=$ROOT/allocator.so
export BUILD=$ROOT/tests/build
mkdir -p "$BUILD/logs"

want=" "
for n in "$@"; do
  for w in $n; do want+="$((10#$w)) "; done
done

passed=0 failed=0 failures=()
for t in tests/[0-9][0-9]-*.sh; do
  name=$(basename "$t" .sh)
  num=$((10#${name%%-*}))
  if [ "$want" != " " ] && [[ "$want" != *" $num "* ]]; then continue; fi
  log=$BUILD/logs/$name.log
  start=$(date +%s)
  if bash "$t" >"$log" 2>&1; then
    printf 'OK    %-40s %4ss\n' "$name" "$(( $(date +%s) - start ))"
    passed=$((passed + 1))
  else
    printf 'FAIL  %-40s %4ss\n' "$name" "$(( $(date +%s) - start ))"
    tail -n 25 "$log" | sed 's/^/      | /'
    failed=$((failed + 1)); failures+=("$name")
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
