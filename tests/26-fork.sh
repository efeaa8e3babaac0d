#!/usr/bin/env bash
# fork() in a threaded process (SPEC §6: safe across fork, pthread_atfork),
# tests/c/fork.c: while 3 threads allocate, main and one of the allocating
# threads fork again and again; every child frees an inherited block,
# allocates (also from a new thread and in a grandchild) and must exit 0 -- a
# child stuck on a lock held at fork time dies of its own alarm and is
# reported. Then system() and popen() (read and write) while the threads
# allocate. Every policy, then once with ALLOCATOR_CHECK=1. Then fork after
# a thread freed past its exit destructor (tests/c/fork_exited.c).
. "$(dirname "$0")/lib.sh"

build fork "$ROOT/tests/c/fork.c" >/dev/null
bin=$BUILD/bin/fork
status=0
run() { # run LABEL ROUNDS ENV...
  local label=$1 rounds=$2 rc=0; shift 2
  local log=$BUILD/tmp/fork-${label//[^A-Za-z0-9_=]/}.log
  timeout 120 env "$@" LD_PRELOAD="$SO" "$bin" "$rounds" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || [ "$(tail -n 1 "$log")" != "fork: all ok" ]; then
    echo "FAIL: fork under $label (exit status $rc$([ $rc = 124 ] && echo ': timed out, deadlock in the parent?')):"
    sed 's/^/    /' "$log"
    status=1
  else
    echo "ok   fork under $label"
    grep '^ok' "$log" | sed 's/^/    /'
  fi
}
for p in "${POLICIES[@]}"; do
  run "$p" 60 ALLOCATOR_ALGORITHM="$p"
done
run "next_fit + ALLOCATOR_CHECK=1" 20 ALLOCATOR_ALGORITHM=next_fit ALLOCATOR_CHECK=1

# fork after a thread whose last free came after fitalloc's exit destructor
# (tests/c/fork_exited.c): the child's threads must not share an arena.
build fork_exited "$ROOT/tests/c/fork_exited.c" >/dev/null
for env in "ALLOCATOR_ALGORITHM=first_fit" "ALLOCATOR_ALGORITHM=best_fit ALLOCATOR_CHECK=1"; do
  expect_ok fork_exited "fork after a free past the exit destructor" "$env" || status=1
done
[ $status -eq 0 ] || fail "fork/system/popen in a threaded program failed (see above)"
