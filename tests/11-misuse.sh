#!/usr/bin/env bash
# Misuse is caught (SPEC §6, ARCHITECTURE §4): each misuse in tests/c/misuse.c
# must abort with SIGABRT (exit status 134) after exactly one line on stderr,
#   fitalloc: <what> at 0x<the pointer passed>
# with <what> naming the call that found it: "double free", "free of a
# pointer not from malloc", "realloc of a freed pointer", "realloc of a
# pointer not from malloc", "malloc_usable_size of a pointer not from malloc",
# or "corrupted block header". Every mode runs under every policy and once more
# with ALLOCATOR_CHECK=1. All modes are tried; the failures are listed at the end.
. "$(dirname "$0")/lib.sh"
ulimit -c 0

bin=$(build misuse "$ROOT/tests/c/misuse.c" -fno-builtin)
out=$BUILD/tmp/misuse.out err=$BUILD/tmp/misuse.err

DF="double free"
NM="free of a pointer not from malloc"
CH="corrupted block header"
RF="realloc of a freed pointer"
RN="realloc of a pointer not from malloc"
UN="malloc_usable_size of a pointer not from malloc"

# mode -> the <what> it must report. What a careful C programmer is told:
# a pointer freed twice is a double free, whether or not its region is still
# mapped; a pointer inside a block (p+8, p+16, ...) was never returned by
# malloc; a block start whose header was overwritten is a corrupted header.
declare -A WANT=(
  [double-free]=$DF                 # block stays mapped (another block is live)
  [double-free-merged-prev]=$DF     # the freed block merged into a free previous block
  [double-free-merged-next]=$DF     # the freed block absorbed a free next block
  [double-free-lone-large]=$DF      # 4 MiB block alone: its region is gone after the first free
  [double-free-lone-small]=$DF      # the heap's only block: its region is gone after the first free
  [double-free-region-reused]=$DF   # its region unmapped, then its span and id reused by a new region
  [realloc-after-free]=$RF
  [double-free-under-name-free]=$DF    # x merged as the last part of a named free block: the name covers its header
  [double-free-under-name-realloc]=$RF
  [remote-free]=$DF                 # another thread frees main's block twice
  [remote-realloc]=$RF              # ... frees it, then reallocs it
  [remote-usable]="malloc_usable_size of a freed pointer" # ... or asks its size
  [free-stack]=$NM
  [free-static]=$NM
  [free-mmap]=$NM                   # a page the program mapped itself
  [free-interior-16]=$NM            # p+16 inside a zeroed block
  [free-interior-16-pattern]=$NM    # p+16 inside a block full of data
  [free-interior-8]=$NM
  [free-interior-large]=$NM         # p+4096 inside a 1 MiB block
  [realloc-stack]=$RN
  [realloc-static]=$RN
  [realloc-interior]=$RN            # realloc(p+32)
  [usable-static]=$UN               # malloc_usable_size of a static array
  [usable-stack]=$UN
  [corrupt-header]=$CH              # 16 bytes before p overwritten with 0x41
  [corrupt-header-zero]=$CH         # ... with zeroes
  [corrupt-header-bit]=$CH          # one bit flipped
  [corrupt-header-overflow]=$CH     # previous block written 16 bytes past its usable size
  [corrupt-header-realloc]=$CH      # overwritten header, then realloc
  [corrupt-prev-mark]=$CH           # top bit of the previous-size field set (block before in use)
  [corrupt-prev-size]=$CH           # previous-size field one unit off (block before free)
  [into-free-tail-free]=$NM         # p+2000, in the free rest of p's region
  [into-free-tail-realloc]=$RN
  [into-free-tail-usable]=$UN
)
# Check mode fills free memory with a pattern, stale headers included: a
# pointer into free memory may be a block freed twice, and is reported so.
declare -A WANT_CHECK=(
  [into-free-tail-free]=$DF
  [into-free-tail-realloc]=$RF
  [into-free-tail-usable]="malloc_usable_size of a freed pointer"
)

failures=()
checks=0
one() { # one MODE LABEL ENV...
  local mode=$1 label=$2; shift 2
  local want=${WANT[$mode]} rc=0
  if [[ $label == *ALLOCATOR_CHECK* ]] && [ -n "${WANT_CHECK[$mode]:-}" ]; then
    want=${WANT_CHECK[$mode]}
  fi
  checks=$((checks + 1))
  # (the subshell keeps bash's own "Aborted" notice out of the log)
  (timeout 20 env "$@" LD_PRELOAD="$SO" "$bin" "$mode" >"$out" 2>"$err"; exit $?) 2>/dev/null || rc=$?
  local ptr line nlines problem=""
  ptr=$(sed -n 's/^ptr \(0x[0-9a-f]*\)$/\1/p' "$out")
  nlines=$(wc -l <"$err")
  line=$(head -n 1 "$err" | cut -c 1-300)
  if [ -z "$ptr" ]; then
    problem="the program did not reach the misuse: $(head -c 200 "$out")"
  elif grep -q '^survived$' "$out"; then
    problem="returned normally (no abort); stderr: '$line'"
  elif [ "$rc" -ne 134 ]; then
    problem="exit status $rc, not 134 (SIGABRT); stderr: '$line'"
  elif [ "$nlines" -ne 1 ] || [ "$(wc -c <"$err")" -ne $(( ${#line} + 1 )) ]; then
    problem="stderr must be exactly one line, got $nlines: $(tr '\n' '|' <"$err" | cut -c 1-300)"
  elif [[ ! "$line" =~ ^fitalloc:\ (.+)\ at\ (0x[0-9a-f]+)$ ]]; then
    problem="malformed line: '$line'"
  else
    if [ "${BASH_REMATCH[1]}" != "$want" ]; then
      problem="reported '${BASH_REMATCH[1]}', expected '$want'; "
    fi
    if [ "$((BASH_REMATCH[2]))" -ne "$((ptr))" ]; then
      problem+="reported address ${BASH_REMATCH[2]}, but the pointer passed was $ptr; "
    fi
    [ -z "$problem" ] || problem+="line: '$line'"
  fi
  if [ -n "$problem" ]; then
    echo "FAIL $mode [$label]: $problem"
    failures+=("$mode [$label]")
  else
    echo "ok   $mode [$label]: $line"
  fi
}

for mode in $(printf '%s\n' "${!WANT[@]}" | sort); do
  for p in "${POLICIES[@]}"; do
    one "$mode" "$p" ALLOCATOR_ALGORITHM="$p"
  done
  one "$mode" "first_fit+ALLOCATOR_CHECK=1" ALLOCATOR_CHECK=1
done

echo "misuse: $checks runs, ${#failures[@]} failed"
[ "${#failures[@]}" -eq 0 ] || fail "misuse not reported as specified: ${failures[*]}"
