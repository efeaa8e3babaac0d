#!/usr/bin/env bash
# ALLOCATOR_SCRIBBLE (SPEC §4), tests/c/scribble.c: with =1 every new
# allocation's usable bytes are 0xAA (malloc on fresh and reused memory,
# malloc_name, memalign/posix_memalign/aligned_alloc/valloc/pvalloc, realloc's
# new bytes but not its kept prefix), calloc stays zero; without it (or =0,
# or empty) fresh memory reads zero; setenv/putenv/unsetenv inside main turn
# it on and off for the next allocation.
. "$(dirname "$0")/lib.sh"

bin=$(build scribble "$ROOT/tests/c/scribble.c" -fno-builtin)
tmp=$BUILD/tmp
status=0

run() { # run MODE LABEL ENV...
  local mode=$1 label=$2; shift 2
  local rc=0 log=$tmp/scribble-$mode-${label//[^A-Za-z0-9_=+]/}.log
  timeout 60 env -u ALLOCATOR_SCRIBBLE "$@" LD_PRELOAD="$SO" "$bin" "$mode" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q "^scribble $mode: [0-9]* checks, 0 failed$" "$log"; then
    echo "FAIL: scribble $mode [$label] (exit status $rc):"
    grep -v '^ok ' "$log" | head -n 30 | sed 's/^/    /' || true
    status=1
  else
    echo "ok   scribble $mode [$label]: $(tail -n 1 "$log")"
  fi
}

for p in "${POLICIES[@]}"; do
  run on "ALLOCATOR_SCRIBBLE=1 $p" ALLOCATOR_SCRIBBLE=1 ALLOCATOR_ALGORITHM="$p"
done
run on "ALLOCATOR_SCRIBBLE=1 ALLOCATOR_CHECK=1" ALLOCATOR_SCRIBBLE=1 ALLOCATOR_CHECK=1
run off "unset"
run off "ALLOCATOR_SCRIBBLE=0" ALLOCATOR_SCRIBBLE=0
run off "ALLOCATOR_SCRIBBLE=(empty)" ALLOCATOR_SCRIBBLE=
for p in first_fit best_fit; do
  run setenv "setenv inside main, $p" ALLOCATOR_ALGORITHM="$p"
done
run unset "ALLOCATOR_SCRIBBLE=1, unsetenv inside main" ALLOCATOR_SCRIBBLE=1
run calloc-usable "ALLOCATOR_CHECK=1" ALLOCATOR_CHECK=1
run refill "no option set, unsetenv then setenv inside main" -u ALLOCATOR_ALGORITHM -u ALLOCATOR_CHECK
[ "$status" -eq 0 ] || fail "ALLOCATOR_SCRIBBLE checks failed (see above)"
