#!/usr/bin/env bash
# Placement (SPEC §3, ARCHITECTURE §3), one run per policy: tests/c/placement.c
# makes holes of known sizes in a fresh one-page region and checks, from
# pointer differences, the hole each request lands in (first fit: the first,
# best fit: the smallest, worst fit: the largest, next fit: the first at or
# after the previous choice, wrapping around; ties to the first), then split
# (the rest stays free right after the allocation; no split below 32 bytes)
# and merge (with the next, the previous and both neighbours). The expected
# answers are worked out by hand in the C file.
. "$(dirname "$0")/lib.sh"

build placement "$ROOT/tests/c/placement.c" >/dev/null
bin=$BUILD/bin/placement
status=0
for p in "${POLICIES[@]}"; do
  for check in 0 1; do
    label="$p"; [ $check = 0 ] || label+=" + ALLOCATOR_CHECK=1"
    rc=0
    out=$(ALLOCATOR_ALGORITHM=$p ALLOCATOR_CHECK=$check LD_PRELOAD=$SO timeout 30 "$bin" "$p" 2>&1) || rc=$?
    if [ $rc -ne 0 ] || ! grep -q "^placement $p: [0-9]* checks, 0 failed$" <<<"$out"; then
      echo "FAIL: placement under $label (exit status $rc):"
      grep -v '^ok ' <<<"$out" | sed 's/^/    /'
      status=1
    else
      echo "ok   placement under $label: $(tail -n 1 <<<"$out")"
    fi
  done
done
[ $status -eq 0 ] || fail "placement differs from SPEC §3 (see above)"
