#!/usr/bin/env bash
# print_memory / write_memory (SPEC §5): the exact line formats, blocks tiling
# each region, sizes matching malloc_usable_size, names (truncated to 31
# bytes, '' for free and unnamed blocks), released regions gone; print_memory
# as the program's first stdio output (stdout to a file and to a pipe);
# write_memory to stderr and to an fopen'ed file; a program linked directly
# against allocator.so; print_memory while 4 threads allocate. Programs:
# tests/c/print.c; each output is verified by tests/c/print_check.py.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || fail "python3 is needed to parse the dumps"

pre=$(build print "$ROOT/tests/c/print.c" -fno-builtin)
linked=$(build_linked print-linked "$ROOT/tests/c/print.c" -fno-builtin)
checker=$ROOT/tests/c/print_check.py
tmp=$BUILD/tmp/print
mkdir -p "$tmp"
status=0
checks=0

# verify LABEL FILE DUMPS: the output must pass print_check.py
verify() {
  local label=$1 file=$2 dumps=$3 res
  checks=$((checks + 1))
  if res=$(python3 "$checker" "$file" --dumps "$dumps" 2>&1); then
    echo "ok   $label: ${res##*$'\n'}"
  else
    echo "FAIL $label ($file):"
    echo "$res" | head -n 20 | sed 's/^/    /' || true
    status=1
  fi
}

# runs LABEL RC: the program must have exited with status 0
ran() {
  checks=$((checks + 1))
  if [ "$2" -ne 0 ]; then
    echo "FAIL $1: exit status $2$([ "$2" -eq 124 ] && echo ' (timeout: deadlock?)')"
    status=1
  fi
}

# empty_stderr LABEL FILE: nothing may have been written to stderr
empty_stderr() {
  checks=$((checks + 1))
  if [ -s "$2" ]; then
    echo "FAIL $1: unexpected stderr: $(head -c 300 "$2")"
    status=1
  fi
}

for p in "${POLICIES[@]}"; do
  rc=0
  timeout 10 env ALLOCATOR_ALGORITHM=$p LD_PRELOAD="$SO" "$pre" basic >"$tmp/basic-$p.out" 2>"$tmp/basic-$p.err" || rc=$?
  ran "basic [$p]" $rc
  empty_stderr "basic [$p]" "$tmp/basic-$p.err"
  verify "basic [$p]: named/unnamed/free/large/released blocks, realloc keeps names" "$tmp/basic-$p.out" 3
done

# the 40-byte name is shown as its first 31 bytes, never more
checks=$((checks + 1))
if grep -q "\[USED\] '0123456789abcdefghijklmnopqrstu'$" "$tmp/basic-first_fit.out" &&
   ! grep -q "0123456789abcdefghijklmnopqrstuv" "$tmp/basic-first_fit.out"; then
  echo "ok   a 40-byte name is truncated to 31 bytes"
else
  echo "FAIL a 40-byte name is not shown as its first 31 bytes:"
  grep -n "0123456789" "$tmp/basic-first_fit.out" | head -n 5 | sed 's/^/    /' || true
  status=1
fi

# print_memory as the very first stdio output: stdout to a file, to a pipe
for bin in "$pre" "$linked"; do
  kind=$([ "$bin" = "$pre" ] && echo preload || echo linked)
  run() { if [ "$kind" = preload ]; then timeout 10 env LD_PRELOAD="$SO" "$@"; else timeout 10 env -u LD_PRELOAD "$@"; fi; }
  rc=0
  run "$bin" first >"$tmp/first-$kind-file.out" 2>"$tmp/first.err" || rc=$?
  ran "first output, stdout to a file [$kind]" $rc
  empty_stderr "first output, stdout to a file [$kind]" "$tmp/first.err"
  verify "print_memory as the first stdio output, stdout to a file [$kind]" "$tmp/first-$kind-file.out" 2
  rc=0
  set +o pipefail
  { r=0; run "$bin" first 2>"$tmp/first.err" || r=$?; echo "#rc $r"; } | cat >"$tmp/first-$kind-pipe.out"
  set -o pipefail
  rc=$(sed -n 's/^#rc //p' "$tmp/first-$kind-pipe.out")
  ran "first output, stdout to a pipe [$kind]" "${rc:-1}"
  empty_stderr "first output, stdout to a pipe [$kind]" "$tmp/first.err"
  verify "print_memory as the first stdio output, stdout to a pipe [$kind]" "$tmp/first-$kind-pipe.out" 2
done

# write_memory(stderr), write_memory(fopen'ed file), the empty heap
rc=0
timeout 10 env LD_PRELOAD="$SO" "$pre" stderr >"$tmp/stderr.out" 2>"$tmp/stderr.err" || rc=$?
ran "write_memory(stderr)" $rc
checks=$((checks + 1))
[ -s "$tmp/stderr.out" ] && { echo "FAIL write_memory(stderr) wrote to stdout"; status=1; }
verify "write_memory(stderr)" "$tmp/stderr.err" 2

rc=0
rm -f "$tmp/file.txt"
timeout 10 env LD_PRELOAD="$SO" "$pre" file "$tmp/file.txt" >"$tmp/file.out" 2>"$tmp/file.err" || rc=$?
ran "write_memory(fopen'ed file)" $rc
empty_stderr "write_memory(fopen'ed file)" "$tmp/file.err"
verify "write_memory(fopen'ed file), the FILE itself is a block" "$tmp/file.txt" 2

rc=0
timeout 10 env LD_PRELOAD="$SO" "$pre" empty >"$tmp/empty.out" 2>"$tmp/empty.err" || rc=$?
ran "write_memory of the empty heap" $rc
checks=$((checks + 1))
if [ "$(cat "$tmp/empty.err")" = $'-- Current Memory State --\n#expect-regions 0' ]; then
  echo "ok   write_memory of the empty heap is the title line alone"
else
  echo "FAIL write_memory of the empty heap: $(head -c 300 "$tmp/empty.err" | cat -A)"
  status=1
fi

# linked directly (no LD_PRELOAD): malloc_name, plain malloc and print_memory
checks=$((checks + 1))
# (by its SONAME, if it has one: the library it resolves to must be $SO)
ldd "$linked" >"$tmp/ldd.out" 2>&1 || true
found=""
for lib in $(sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p' "$tmp/ldd.out"); do
  [ "$(readlink -f "$lib")" = "$(readlink -f "$SO")" ] && found=$lib
done
if [ -n "$found" ]; then
  echo "ok   print-linked loads $found (= $SO)"
else
  echo "FAIL print-linked does not load $SO:"; sed 's/^/    /' "$tmp/ldd.out"; status=1
fi
rc=0
timeout 10 env -u LD_PRELOAD "$linked" basic >"$tmp/linked.out" 2>"$tmp/linked.err" || rc=$?
ran "linked basic" $rc
empty_stderr "linked basic" "$tmp/linked.err"
verify "linked directly: malloc_name, malloc and print_memory" "$tmp/linked.out" 3

# print_memory while other threads allocate: no deadlock, every dump well formed
for p in first_fit best_fit; do
  rc=0
  timeout 20 env ALLOCATOR_ALGORITHM=$p LD_PRELOAD="$SO" "$pre" threads >"$tmp/threads-$p.out" 2>"$tmp/threads.err" || rc=$?
  ran "threads [$p]" $rc
  empty_stderr "threads [$p]" "$tmp/threads.err"
  verify "print_memory x41 while 4 threads allocate [$p]" "$tmp/threads-$p.out" 41
  checks=$((checks + 1))
  n=$(grep -c "\[USED\] 'worker'$" "$tmp/threads-$p.out" || true)
  if [ "$n" -ge 40 ]; then
    echo "ok   the dumps show the workers' blocks ($n lines) [$p]"
  else
    echo "FAIL the dumps show only $n 'worker' blocks: the threads did not run during the dumps [$p]"
    status=1
  fi
done
rc=0
timeout 20 env -u LD_PRELOAD "$linked" threads >"$tmp/threads-linked.out" 2>"$tmp/threads.err" || rc=$?
ran "threads [linked]" $rc
verify "print_memory x41 while 4 threads allocate [linked]" "$tmp/threads-linked.out" 41

echo "print-memory: $checks checks"
[ "$status" -eq 0 ] || fail "print_memory / write_memory checks failed (see above)"
