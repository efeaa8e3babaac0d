#!/usr/bin/env bash
# Threads (SPEC §6 "thread safe ... no memory of an exited thread is lost"),
# tests/c/threads.c: 4 threads of random malloc/calloc/realloc/posix_memalign/
# free with patterns checked before every free and realloc; a producer/
# consumer queue (every block freed or realloc'ed by another thread than the
# one that allocated it); threads that exit while main frees their blocks
# (resident and virtual size must not grow over the cycles); many short-lived
# threads. Under every policy, then a shorter run with ALLOCATOR_CHECK=1
# (whole-heap check after every operation) under first_fit and best_fit (the
# two orders of the free tree). Then 1100 live threads, more than arenas
# (tests/c/many_threads.c), allocation in key destructors that run after
# fitalloc's (tests/c/late_destructor.c), and allocator.so loaded with
# dlopen (tests/c/dlopen_alloc.c); malloc_usable_size and realloc of another
# thread's block in check mode (tests/c/foreign_check.c).
. "$(dirname "$0")/lib.sh"

build threads "$ROOT/tests/c/threads.c" >/dev/null
bin=$BUILD/bin/threads
status=0
run() { # run LABEL SCALE ENV...
  local label=$1 scale=$2 rc=0; shift 2
  local log=$BUILD/tmp/threads-${label//[^A-Za-z0-9_=]/}.log
  timeout 240 env "$@" LD_PRELOAD="$SO" "$bin" "$scale" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || [ "$(tail -n 1 "$log")" != "threads: all ok" ]; then
    echo "FAIL: threads under $label (exit status $rc$([ $rc = 124 ] && echo ': timed out, deadlock?')):"
    sed 's/^/    /' "$log"
    status=1
  else
    echo "ok   threads under $label"
    grep '^ok' "$log" | sed 's/^/    /'
  fi
}
for p in "${POLICIES[@]}"; do
  run "$p" 10 ALLOCATOR_ALGORITHM="$p"
done
for p in first_fit best_fit; do
  run "$p + ALLOCATOR_CHECK=1" 1 ALLOCATOR_ALGORITHM="$p" ALLOCATOR_CHECK=1
done

# More live threads than arenas (tests/c/many_threads.c): 1100 at once,
# blocks freed into other (shared) arenas, two generations.
build many_threads "$ROOT/tests/c/many_threads.c" >/dev/null
for env in "ALLOCATOR_ALGORITHM=first_fit" "ALLOCATOR_ALGORITHM=best_fit ALLOCATOR_CHECK=1"; do
  expect_ok many_threads "1100 live threads (more than arenas)" "$env" || status=1
done

# malloc_usable_size and realloc of another thread's block under check mode
# (tests/c/foreign_check.c): no canary byte is left where the program may now
# write.
build foreign_check "$ROOT/tests/c/foreign_check.c" >/dev/null
for env in "ALLOCATOR_CHECK=1" "ALLOCATOR_ALGORITHM=best_fit ALLOCATOR_CHECK=1" "ALLOCATOR_ALGORITHM=next_fit"; do
  expect_ok foreign_check "usable size and realloc of another thread's block" "$env" || status=1
done

# Allocation after fitalloc's thread-exit destructor (tests/c/late_destructor.c):
# a program's key destructor mallocs and frees once fitalloc gave the slot
# back; 3000 threads, 8 alive at a time, must leave few arenas (a slot kept
# or given back twice would show as many arenas, or as an abort).
build late_destructor "$ROOT/tests/c/late_destructor.c" >/dev/null
for env in "ALLOCATOR_ALGORITHM=first_fit" "ALLOCATOR_ALGORITHM=best_fit ALLOCATOR_CHECK=1"; do
  rc=0
  log=$BUILD/tmp/late_destructor.log
  # shellcheck disable=SC2086
  timeout 120 env $env ALLOCATOR_STATS=1 LD_PRELOAD="$SO" "$BUILD/bin/late_destructor" >"$log" 2>&1 || rc=$?
  arenas=$(sed -n 's/^fitalloc: stats (policy [a-z_]*, \([0-9]*\) arena(s))$/\1/p' "$log")
  if [ $rc -ne 0 ] || ! grep -qx "late_destructor: ok" "$log" || [ -z "$arenas" ] || [ "$arenas" -gt 64 ]; then
    echo "FAIL: allocation in a key destructor after fitalloc's, under $env (exit status $rc, arenas ${arenas:-?}):"
    sed 's/^/    /' "$log"
    status=1
  else
    echo "ok   allocation in key destructors after fitalloc's: 3000 threads, $arenas arenas, under $env"
  fi
done
# allocator.so loaded with dlopen (its thread slots are initial-exec TLS,
# taken from glibc's spare static TLS space), used from 5 threads.
build dlopen_alloc "$ROOT/tests/c/dlopen_alloc.c" -ldl >/dev/null
rc=0
out=$(timeout 60 env -u LD_PRELOAD "$BUILD/bin/dlopen_alloc" "$SO" 2>&1) || rc=$?
if [ $rc -ne 0 ] || [ "$(tail -n 1 <<<"$out")" != "dlopen_alloc: ok" ]; then
  echo "FAIL: allocator.so loaded with dlopen (exit status $rc):"
  sed 's/^/    /' <<<"$out"
  status=1
else
  echo "ok   allocator.so loaded with dlopen, malloc and free from 5 threads"
fi
# Blocks freed into another thread's arena are not held back
# (tests/c/remote_held.c): while their owner waits without a call (folded
# by the freeing thread once they add up to a few MiB), after it exited
# without a call (folded at its exit: its span serves main's next region),
# blocks whose canary bytes (check mode) or name lie where the link would go
# (freed under the owner's lock: no false overflow, the name kept).
build remote_held "$ROOT/tests/c/remote_held.c" >/dev/null
held() { # held MODE ENV RC PATTERN WHAT: remote_held MODE exits RC with PATTERN in its output
  local mode=$1 env=$2 want=$3 pattern=$4 what=$5 rc=0 log=$BUILD/tmp/remote_held.log
  # shellcheck disable=SC2086
  (timeout 60 env $env LD_PRELOAD="$SO" "$BUILD/bin/remote_held" "$mode" >"$log" 2>&1; exit $?) 2>/dev/null || rc=$?
  if [ $rc -ne "$want" ] || ! grep -q -- "$pattern" "$log"; then
    echo "FAIL: $what under $env (exit status $rc, expected $want):"
    sed 's/^/    /' "$log"
    return 1
  fi
  echo "ok   $what ($env): $(grep -m 1 -- "$pattern" "$log")"
}
for env in "ALLOCATOR_ALGORITHM=first_fit" "ALLOCATOR_ALGORITHM=best_fit ALLOCATOR_CHECK=1"; do
  held idle "$env" 0 '^ok idle' "blocks freed into a waiting thread's arena are released" || status=1
  held exited "$env" 0 '^ok exited' "a block freed into an exited thread's arena is freed at its exit" || status=1
  held small "$env" 0 '^ok small' "blocks of 0..7 bytes freed by another thread (check mode: canary in the link word)" || status=1
  held name "$env" 0 "48 \[FREE\] 'zero-size name'" \
    "a zero-size named block freed by another thread keeps its name" || status=1
done
[ $status -eq 0 ] || fail "threaded allocation failed (see above)"
