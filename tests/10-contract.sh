#!/usr/bin/env bash
# SPEC §6, line by line (tests/c/contract.c): malloc(0), alignment, huge sizes
# and overflow -> NULL + ENOMEM, calloc zero (also over reused dirty memory),
# free(NULL) and errno, realloc (NULL, 0, shrink, grow in place, move,
# failure), posix_memalign errors, the memalign family, valloc/pvalloc,
# malloc_usable_size, the __libc_* aliases and the mallopt/mallinfo stubs.
# Runs under every policy, then under every policy with ALLOCATOR_CHECK=1.
. "$(dirname "$0")/lib.sh"

bin=$(build contract "$ROOT/tests/c/contract.c" -fno-builtin)
status=0

run() { # run LABEL ENV...: one run of the program, judged by its summary line
  local label=$1; shift
  local rc=0 log=$BUILD/tmp/contract-${label//[^A-Za-z0-9_=+]/}.log
  timeout 60 env "$@" LD_PRELOAD="$SO" "$bin" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q '^contract: [0-9]* checks, 0 failed$' "$log"; then
    echo "FAIL: contract under $label (exit status $rc):"
    grep -v '^ok ' "$log" | sed 's/^/    /' || true
    status=1
  else
    echo "ok   contract under $label: $(tail -n 1 "$log")"
  fi
  # stderr may hold malloc_stats' two lines, nothing else from fitalloc
  grep '^fitalloc:' "$log" | grep -v -e '^fitalloc: mapped bytes' -e '^fitalloc: in use bytes' >"$log.unexpected" || true
  if [ -s "$log.unexpected" ]; then
    echo "FAIL: unexpected fitalloc message under $label:"
    sed 's/^/    /' "$log.unexpected"
    status=1
  fi
}

for p in "${POLICIES[@]}"; do
  run "$p" ALLOCATOR_ALGORITHM="$p"
done
for p in "${POLICIES[@]}"; do
  run "$p + ALLOCATOR_CHECK=1" ALLOCATOR_ALGORITHM="$p" ALLOCATOR_CHECK=1
done
[ "$status" -eq 0 ] || fail "SPEC §6 contract checks failed (see above)"
