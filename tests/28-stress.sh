#!/usr/bin/env bash
# Stress (issue 9 §4), tests/c/stress.c: 8 threads of random malloc/calloc/
# realloc/reallocarray/posix_memalign/aligned_alloc/memalign/free of 1 B to
# 1 MiB, about half of the frees done by another thread than the allocating
# one (blocks handed over through locked mailboxes), every block's whole usable
# size filled with a pattern of its id and checked before every free and
# realloc (and the kept prefix after realloc, calloc memory zero,
# malloc_usable_size >= the request), while another thread forks (60 times
# per run; each child frees inherited blocks, allocates and must exit 0).
# Every policy, then a shorter run with ALLOCATOR_CHECK=1 (whole-heap check
# after every operation). STRESS_SEED=N changes the seeds (default 1); a
# failure prints the seed to rerun with:
#   LD_PRELOAD=$PWD/allocator.so tests/build/bin/stress seed=N threads=8 ops=60000
# `make soak SOAK_SECONDS=3600` runs the same program for longer.
. "$(dirname "$0")/lib.sh"

build stress "$ROOT/tests/c/stress.c" >/dev/null
bin=$BUILD/bin/stress
seed=${STRESS_SEED:-1}
status=0
run() { # run LABEL ARGS -- ENV...
  local label=$1 rc=0 args=()
  shift
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  shift
  local log=$BUILD/tmp/stress-${label//[^A-Za-z0-9_=]/}.log
  local start=$SECONDS
  timeout 120 env "$@" LD_PRELOAD="$SO" "$bin" "${args[@]}" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || [ "$(tail -n 1 "$log")" != "stress: all ok" ]; then
    echo "FAIL: stress ${args[*]} under $label (exit status $rc$([ $rc = 124 ] && echo ': timed out, deadlock?')):"
    sed 's/^/    /' "$log"
    status=1
  else
    echo "ok   stress under $label ($((SECONDS - start)) s)"
    grep '^ok' "$log" | sed 's/^/    /'
  fi
}
i=0
for p in "${POLICIES[@]}"; do
  run "$p" seed=$((seed + i)) threads=8 ops=60000 forks=60 -- ALLOCATOR_ALGORITHM="$p"
  i=$((i + 1))
done
run "best_fit + ALLOCATOR_CHECK=1" seed=$((seed + i)) threads=4 ops=20000 forks=30 -- \
  ALLOCATOR_ALGORITHM=best_fit ALLOCATOR_CHECK=1
[ $status -eq 0 ] || fail "stress failed (see above)"
