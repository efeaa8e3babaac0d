#!/usr/bin/env bash
# The misuse table of the README ("Misuse"): heap bugs a program may have,
# each either harmless to fitalloc (the program goes on, every later block is
# a real heap block that keeps its contents: "done") or caught (exactly one
# line "fitalloc: <what> at 0x..." and SIGABRT), in the default mode (under
# every policy) and with ALLOCATOR_CHECK=1. Never a crash inside fitalloc,
# never a block at an address the bug planted. Program: tests/c/harden.c.
. "$(dirname "$0")/lib.sh"
ulimit -c 0

bin=$(build harden "$ROOT/tests/c/harden.c" -fno-builtin)
out=$BUILD/tmp/harden.out err=$BUILD/tmp/harden.err

OK=harmless
WAF="write after free"
# met by malloc's search (a free block) or by a neighbour's free (a header),
# depending on the policy
CFB="corrupted (free block|block header)"
BOF="buffer overflow"
CBH="corrupted block header"
# check mode's heap check may meet the header first (after setenv's realloc)
CBH_OR_CHECK="(corrupted block header|heap check failed: block header check fails)"

# mode -> "default outcome;check-mode outcome"
declare -A WANT=(
  [uaf-link]="$OK;$WAF"            # 8 bytes (a pointer) into a freed block
  [uaf-garbage]="$OK;$WAF"         # 16 bytes of 0xff into a freed block
  [uaf-byte]="$OK;$WAF"            # one byte in the middle of a freed block
  [free-header-size]="$CFB;$CFB"   # an overflow makes a free block's size huge
  [free-header-smash]="$CFB;$CFB"  # a free block's header overwritten with 0x41
  [overflow-slack]="$OK;$BOF"      # one byte past the request, inside the block
  [overflow-string]="$OK;$BOF"     # strcpy into malloc(strlen(s))
  [read-after-free]="$OK;$OK"      # cannot be seen by a boundary-tag heap
  [write-after-reuse]="$OK;$OK"    # the memory is another block's by then
  # an overflow sets a used block's size to 0 or 2^24 units, then a walk
  # over the whole heap meets it: print_memory, the leak report at exit, an
  # index rebuilt for another policy
  [walk-zero-print]="$CBH;$CBH"
  [walk-huge-print]="$CBH;$CBH"
  [walk-zero-leak]="$CBH;$CBH"
  [walk-huge-leak]="$CBH;$CBH"
  [walk-zero-switch]="$CBH;$CBH_OR_CHECK"
  [walk-huge-switch]="$CBH;$CBH_OR_CHECK"
)

failures=()
checks=0
one() { # one MODE WANT LABEL ENV...
  local mode=$1 want=$2 label=$3; shift 3
  local rc=0 problem="" line nlines
  checks=$((checks + 1))
  (timeout 20 env "$@" LD_PRELOAD="$SO" "$bin" "$mode" >"$out" 2>"$err"; exit $?) 2>/dev/null || rc=$?
  nlines=$(wc -l <"$err")
  line=$(head -n 1 "$err" | cut -c 1-300)
  if [ "$want" = "$OK" ]; then
    if [ "$rc" -ne 0 ] || ! grep -q '^done$' "$out" || [ "$nlines" -ne 0 ]; then
      problem="expected harmless (exit 0, 'done', no stderr); exit $rc, stdout '$(head -c 200 "$out")', stderr '$line'"
    fi
  elif [ "$rc" -ne 134 ]; then
    problem="expected '$want' and SIGABRT; exit $rc, stdout '$(head -c 200 "$out")', stderr '$line'"
  elif [ "$nlines" -ne 1 ] || [[ ! "$line" =~ ^fitalloc:\ $want\ at\ 0x[0-9a-f]+ ]]; then
    problem="expected one line 'fitalloc: $want at 0x...'; got $nlines: $(tr '\n' '|' <"$err" | cut -c 1-300)"
  fi
  if [ -n "$problem" ]; then
    echo "FAIL $mode [$label]: $problem"
    failures+=("$mode[$label]")
  else
    echo "ok   $mode [$label]: ${line:-harmless}"
  fi
}

for mode in "${!WANT[@]}"; do
  default=${WANT[$mode]%;*} checked=${WANT[$mode]#*;}
  for p in "${POLICIES[@]}"; do
    one "$mode" "$default" "$p" ALLOCATOR_ALGORITHM="$p"
  done
  one "$mode" "$checked" "first_fit+ALLOCATOR_CHECK=1" ALLOCATOR_CHECK=1
  one "$mode" "$checked" "best_fit+ALLOCATOR_CHECK=1" ALLOCATOR_ALGORITHM=best_fit ALLOCATOR_CHECK=1
done
echo "hardening: $checks runs, ${#failures[@]} failed"
[ ${#failures[@]} -eq 0 ] || fail "misuse not handled as the README's table says: ${failures[*]}"
