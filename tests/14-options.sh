#!/usr/bin/env bash
# Options (SPEC §3, §4), tests/c/options.c:
# - the policy visibly matters: in one carved region with holes of 256, 512,
#   192, 512 and 160 bytes, malloc(496) then malloc(144) land at hand-computed
#   offsets under each policy (also after switching the policy mid-run);
# - ALLOCATOR_ALGORITHM=bogus: exactly one warning line on stderr, even when
#   the environment is rebuilt many times, and first_fit's behaviour;
# - ALLOCATOR_CHECK=1: real programs (ls /, python3) run unchanged, and a
#   corrupted header is caught at the next malloc (not only at free).
. "$(dirname "$0")/lib.sh"
ulimit -c 0

bin=$(build options "$ROOT/tests/c/options.c" -fno-builtin)
tmp=$BUILD/tmp/options
mkdir -p "$tmp"
status=0
checks=0
pass() { checks=$((checks + 1)); echo "ok   $*"; }
flunk() { checks=$((checks + 1)); echo "FAIL $*"; status=1; }

# --- the policy decides where a block goes --------------------------------
# Free holes (offset:size): 0:256 288:512 832:192 1056:512 1600:160.
# r1 needs 512: every policy takes 288 (first candidate; best/worst tie -> first).
# r2 needs 160: first_fit 0 (first hole); next_fit 832 (first hole at or after
# r1's 288); best_fit 1600 (exact fit); worst_fit 1056 (largest remaining).
declare -A R2=([first_fit]=0 [next_fit]=832 [best_fit]=1600 [worst_fit]=1056)

policy_run() { # policy_run LABEL EXPECTED ARGS -- ENV...
  local label=$1 want=$2 out rc=0; shift 2
  local args=()
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  shift
  out=$(env -u ALLOCATOR_ALGORITHM "$@" LD_PRELOAD="$SO" timeout 10 "$bin" "${args[@]}" 2>"$tmp/policy.err") || rc=$?
  if [ "$rc" -eq 0 ] && [ "$out" = "$want" ]; then
    pass "$label: $out"
  else
    flunk "$label: got '$out' (exit $rc), expected '$want'; stderr: $(head -c 200 "$tmp/policy.err")"
  fi
}

for p in "${POLICIES[@]}"; do
  policy_run "placement under $p" "r1 288 r2 ${R2[$p]}" policy -- ALLOCATOR_ALGORITHM="$p"
done
policy_run "placement with ALLOCATOR_ALGORITHM unset (first_fit)" "r1 288 r2 0" policy --
policy_run "placement with ALLOCATOR_ALGORITHM=bogus (first_fit)" "r1 288 r2 0" policy -- ALLOCATOR_ALGORITHM=bogus
# switching the environment between the two requests switches the policy
policy_run "switch first_fit -> best_fit mid-run" "r1 288 r2 1600" switch best_fit --
policy_run "switch first_fit -> worst_fit mid-run" "r1 288 r2 1056" switch worst_fit --
policy_run "switch best_fit -> first_fit mid-run" "r1 288 r2 0" switch first_fit -- ALLOCATOR_ALGORITHM=best_fit
policy_run "switch worst_fit -> best_fit mid-run" "r1 288 r2 1600" switch best_fit -- ALLOCATOR_ALGORITHM=worst_fit

# --- ALLOCATOR_ALGORITHM=bogus: one warning line --------------------------
one_warning() { # one_warning LABEL STDERR_FILE
  local n
  n=$(wc -l <"$2")
  if [ "$n" -eq 1 ] && grep -q "^fitalloc: .*bogus" "$2"; then
    pass "$1: one warning line: $(cat "$2")"
  else
    flunk "$1: expected exactly one 'fitalloc: ... bogus ...' line on stderr, got $n:"
    sort "$2" | uniq -c | head -n 5 | sed 's/^/    /' || true
  fi
}

rc=0
timeout 30 env ALLOCATOR_ALGORITHM=bogus LD_PRELOAD="$SO" "$bin" churn >"$tmp/churn.out" 2>"$tmp/churn.err" || rc=$?
[ "$rc" -eq 0 ] && [ "$(cat "$tmp/churn.out")" = "churn done" ] &&
  pass "bogus: 40000 allocations with a changing environment run" ||
  flunk "bogus churn: exit $rc, stdout '$(head -c 200 "$tmp/churn.out")'"
one_warning "bogus, 40000 allocations, environ rebuilt 10 times (as a shell does)" "$tmp/churn.err"

# real programs, each one process (python3 may be a wrapper script: use the binary;
# timeout runs outside LD_PRELOAD, or it would warn too)
PY=$(python3 -c 'import sys; print(sys.executable)')
PYPROG='import json, collections
d = collections.Counter(json.dumps(list(range(i)))[-3:] for i in range(1500))
print(len(d), sum(d.values()))'
expected_py=$("$PY" -c "$PYPROG")
rc=0
out=$(timeout 30 env ALLOCATOR_ALGORITHM=bogus LD_PRELOAD="$SO" "$PY" -c "$PYPROG" 2>"$tmp/py.err") || rc=$?
[ "$rc" -eq 0 ] && [ "$out" = "$expected_py" ] && pass "bogus: python3 runs" ||
  flunk "bogus: python3 exit $rc, output '$out', expected '$expected_py'"
one_warning "bogus, python3" "$tmp/py.err"

rc=0
out=$(timeout 30 env ALLOCATOR_ALGORITHM=bogus LD_PRELOAD="$SO" ls / 2>"$tmp/ls.err") || rc=$?
[ "$rc" -eq 0 ] && [ "$out" = "$(ls /)" ] && pass "bogus: ls / runs" || flunk "bogus: ls / exit $rc"
one_warning "bogus, ls /" "$tmp/ls.err"

# a shell exporting variables (only builtins: one process)
rc=0
out=$(timeout 30 env ALLOCATOR_ALGORITHM=bogus LD_PRELOAD="$SO" bash -c 'x=1; export x; y=2; export y; echo "$x$y"' 2>"$tmp/bash.err") || rc=$?
[ "$rc" -eq 0 ] && [ "$out" = "12" ] && pass "bogus: bash runs" || flunk "bogus: bash exit $rc, output '$out'"
one_warning "bogus, bash exporting two variables" "$tmp/bash.err"

# --- ALLOCATOR_CHECK=1 ---------------------------------------------------
for p in first_fit best_fit; do
  rc=0
  out=$(timeout 50 env ALLOCATOR_CHECK=1 ALLOCATOR_ALGORITHM=$p LD_PRELOAD="$SO" "$PY" -c "$PYPROG" 2>"$tmp/check-py.err") || rc=$?
  if [ "$rc" -eq 0 ] && [ "$out" = "$expected_py" ] && [ ! -s "$tmp/check-py.err" ]; then
    pass "ALLOCATOR_CHECK=1 $p: python3 runs unchanged"
  else
    flunk "ALLOCATOR_CHECK=1 $p: python3 exit $rc, output '$out' (expected '$expected_py'), stderr: $(head -c 300 "$tmp/check-py.err")"
  fi
done
rc=0
out=$(timeout 30 env ALLOCATOR_CHECK=1 LD_PRELOAD="$SO" ls -la /usr/bin 2>"$tmp/check-ls.err") || rc=$?
if [ "$rc" -eq 0 ] && [ "$out" = "$(ls -la /usr/bin)" ] && [ ! -s "$tmp/check-ls.err" ]; then
  pass "ALLOCATOR_CHECK=1: ls -la /usr/bin runs unchanged"
else
  flunk "ALLOCATOR_CHECK=1: ls -la /usr/bin (output differs or) exit $rc, stderr: $(head -c 300 "$tmp/check-ls.err")"
fi

# the checker really checks: a header overwritten by an overrun is caught at
# the next malloc (free is never called)
rc=0
(ALLOCATOR_CHECK=1 LD_PRELOAD=$SO timeout 10 "$bin" corrupt >"$tmp/corrupt.out" 2>"$tmp/corrupt.err"; exit $?) 2>/dev/null || rc=$?
if [ "$rc" -eq 134 ] && [ "$(wc -l <"$tmp/corrupt.err")" -eq 1 ] && grep -q '^fitalloc: ' "$tmp/corrupt.err" &&
   ! grep -q survived "$tmp/corrupt.out"; then
  pass "ALLOCATOR_CHECK=1 aborts at the malloc after a header overrun: $(cat "$tmp/corrupt.err")"
else
  flunk "ALLOCATOR_CHECK=1 did not catch the overrun: exit $rc, stdout '$(cat "$tmp/corrupt.out")', stderr '$(head -c 300 "$tmp/corrupt.err")'"
fi
rc=0
(LD_PRELOAD=$SO timeout 10 "$bin" corrupt >"$tmp/corrupt.out" 2>"$tmp/corrupt.err"; exit $?) 2>/dev/null || rc=$?
if [ "$rc" -eq 0 ] && grep -q '^survived$' "$tmp/corrupt.out"; then
  pass "without ALLOCATOR_CHECK the same program is not checked at malloc (control)"
else
  flunk "control run without ALLOCATOR_CHECK: exit $rc, stdout '$(cat "$tmp/corrupt.out")'"
fi

# check mode switched off while blocks carry its marks: they are still
# verified (a write after free at the next take, an overrun at free)
for what in poison guard; do
  rc=0
  (ALLOCATOR_CHECK=1 LD_PRELOAD=$SO timeout 10 "$bin" checkoff $what >"$tmp/checkoff.out" 2>"$tmp/checkoff.err"; exit $?) 2>/dev/null || rc=$?
  case $what in poison) want='write after free' ;; guard) want='buffer overflow' ;; esac
  if [ "$rc" -eq 134 ] && grep -q "^fitalloc: $want" "$tmp/checkoff.err" && ! grep -q survived "$tmp/checkoff.out"; then
    pass "a $what mark made in check mode is verified after it is switched off: $(cat "$tmp/checkoff.err")"
  else
    flunk "checkoff $what: exit $rc, stdout '$(cat "$tmp/checkoff.out")', stderr '$(head -c 300 "$tmp/checkoff.err")'"
  fi
  rc=0
  (LD_PRELOAD=$SO timeout 10 "$bin" checkoff $what >"$tmp/checkoff.out" 2>"$tmp/checkoff.err"; exit $?) 2>/dev/null || rc=$?
  if [ "$rc" -eq 0 ] && grep -q '^survived$' "$tmp/checkoff.out"; then
    pass "checkoff $what without check mode at all survives (control)"
  else
    flunk "checkoff $what control: exit $rc, stdout '$(cat "$tmp/checkoff.out")', stderr '$(head -c 300 "$tmp/checkoff.err")'"
  fi
done

echo "options: $checks checks"
[ "$status" -eq 0 ] || fail "option checks failed (see above)"
