#!/usr/bin/env bash
# Memory goes back to the OS (SPEC §2: unmap, bounded span cache),
# tests/c/vmsize.c: malloc/calloc/free of 20 MB blocks 50 times, 50 rounds of
# mixed 1..20 MB blocks, realloc growth to 20 MB, and a touched 20 MB block:
# VmSize (and VmRSS for the touched block) may grow by at most 10 MB from
# after the first round to after the last, and must come back within 10 MB
# of the level before the first allocation. Under every policy. And blocks
# of 16 MB the program never touches (some shrunk by realloc, with small
# allocations after them) make only their headers' pages resident, not a
# 2 MiB transparent huge page each.
# Also the library's own footprint: its writable initialised data (`.data`)
# stays small. The kernel maps a file's pages 64 KiB around each page read
# ("fault-around"), so every byte of `.data` near one that is used is
# resident in every process; big zero-initialised state belongs in `.bss`
# (anonymous, resident only where touched). 120 KB of `.data` (64 arena
# slots, the trace buffer and the span cache inline) cost 80-120 KB of RSS
# in a program that allocates almost nothing.
. "$(dirname "$0")/lib.sh"

hex=$(readelf -SW "$SO" | sed -n 's/.* \.data  *PROGBITS  *[0-9a-f]*  *[0-9a-f]*  *\([0-9a-f]*\) .*/\1/p')
data=${hex:+$((16#$hex))}
if [ -z "$data" ] || [ "$data" -gt 16384 ]; then
  fail "allocator.so's .data is ${data:-missing} bytes (at most 16384: keep big state zero-initialised)"
fi
echo "ok   allocator.so .data: $data bytes"

build vmsize "$ROOT/tests/c/vmsize.c" -fno-builtin >/dev/null
bin=$BUILD/bin/vmsize
status=0
for p in "${POLICIES[@]}"; do
  rc=0
  out=$(ALLOCATOR_ALGORITHM=$p LD_PRELOAD=$SO timeout 120 "$bin" 2>&1) || rc=$?
  if [ $rc -ne 0 ] || [ "$(tail -n 1 <<<"$out")" != "vmsize: all ok" ]; then
    echo "FAIL: vmsize under $p (exit status $rc):"
    sed 's/^/    /' <<<"$out"
    status=1
  else
    echo "ok   vmsize under $p"
    grep '^ok' <<<"$out" | sed 's/^/    /'
  fi
done
[ $status -eq 0 ] || fail "memory not returned to the OS (see above)"
