#!/usr/bin/env bash
# Out of memory for real (SPEC §6: failure is NULL + ENOMEM; a failed realloc
# leaves the block untouched; posix_memalign returns ENOMEM and touches
# neither *memptr nor errno), tests/c/oom.c under `ulimit -v` (in a
# subshell): allocate 1 MiB .. 16 B blocks until malloc fails, check that
# malloc, calloc, aligned_alloc, memalign, realloc, reallocarray and
# posix_memalign all refuse properly and leave the old blocks intact, free
# every other block and show that allocation works again and the survivors
# are intact; twice. Every policy with a 256 MiB limit, then first_fit and
# best_fit (the two orders of the free tree) with ALLOCATOR_CHECK=1 (the heap
# checked after every operation, failed ones included) and a 64 MiB limit.
. "$(dirname "$0")/lib.sh"

build oom "$ROOT/tests/c/oom.c" >/dev/null
bin=$BUILD/bin/oom
status=0
run() { # run LABEL LIMIT_KB ENV...
  local label=$1 limit=$2 rc=0
  shift 2
  local log=$BUILD/tmp/oom-${label//[^A-Za-z0-9_=]/}.log
  (ulimit -v "$limit" && exec timeout 120 env "$@" LD_PRELOAD="$SO" "$bin") >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || [ "$(tail -n 1 "$log")" != "oom: all ok" ]; then
    echo "FAIL: oom under $label, ulimit -v $limit (exit status $rc):"
    sed 's/^/    /' "$log"
    status=1
  else
    echo "ok   oom under $label, ulimit -v $limit"
    grep '^ok' "$log" | sed 's/^/    /'
  fi
}
for p in "${POLICIES[@]}"; do
  run "$p" $((256 * 1024)) ALLOCATOR_ALGORITHM="$p"
done
for p in first_fit best_fit; do
  run "$p + ALLOCATOR_CHECK=1" $((64 * 1024)) ALLOCATOR_ALGORITHM="$p" ALLOCATOR_CHECK=1
done
[ $status -eq 0 ] || fail "out-of-memory behaviour wrong (see above)"
