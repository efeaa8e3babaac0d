#!/usr/bin/env bash
# Traces you can find: a program started through a wrapper leaves several
# traces, and the first (FILE) is the wrapper's.
# - `fitalloc run --trace T -- env A=1 cli_layout ...`: env execs the
#   program, so T is env's (no operations) and T.PID the program's. run
#   lists both on stderr, most operations first, each with its program and
#   its operation count (= replay's);
# - through a bash script that runs the program as a child (as pyenv's
#   shims do): three traces (bash's, its fork child's, empty as it execs at
#   once, and the program's), listed most operations first; the program's
#   header names the script's process as its parent;
# - `replay T` names T.PID and its operations; `map T` and `view T` fail
#   with the same note (nothing to draw);
# - every header names its program (the executable's path) and its parent;
# - `map FILE` tells a trace from a print_memory dump by itself: the same
#   picture as `map --trace FILE` and `map --dump FILE`.
. "$(dirname "$0")/lib.sh"
FA=$ROOT/fitalloc
[ -x "$FA" ] || fail "$FA missing: run make first"
command -v python3 >/dev/null || fail "python3 is needed to read the JSON"
prog=$(build cli_layout "$ROOT/tests/c/cli_layout.c")
tmp=$BUILD/tmp/cli-discovery
rm -rf "$tmp"
mkdir -p "$tmp"
status=0
checks=0
ok() { checks=$((checks + 1)); echo "ok   $*"; }
bad() { checks=$((checks + 1)); echo "FAIL $*"; status=1; }

# info TRACE: "OPS EXE PARENT FORK_CHILD" from replay --json
info() {
  "$FA" replay "$1" --policy first_fit --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["operations_in_trace"], d["exe"] or "-", d["parent"], int(d["fork_child"]))'
}

# 1. env execs the program: T is env's, T.PID the program's.
t=$tmp/env.trace
"$FA" run --trace "$t" -- env A=1 "$prog" 5 3000 >/dev/null 2>"$tmp/env.err" ||
  fail "the run failed: $(tail -n 3 "$tmp/env.err")"
# (the program's own stderr, its heap dumps, comes first)
listed=$(grep "^  $tmp/" "$tmp/env.err" || true)
files=("$tmp"/env.trace*)
[ ${#files[@]} -eq 2 ] || bad "env + program should write 2 traces: ${files[*]}"
main=$(ls "$tmp"/env.trace.* | sed -n 1p)
read -r mops mexe mparent mfork <<<"$(info "$main")"
read -r eops eexe eparent efork <<<"$(info "$t")"
first=$(sed -n 1p <<<"$listed")
second=$(sed -n 2p <<<"$listed")
if [[ "$first" == "  $main "* && "$first" == *" $mops operations  $prog, pid "* &&
      "$second" == "  $t "* && "$second" == *" 0 operations  "*"/env, pid "* ]]; then
  ok "run lists $(basename "$main") ($mops operations, $(basename "$prog")) before $(basename "$t") (0, env)"
else
  bad "run's list:"; grep -A 20 'traces\? written' "$tmp/env.err" | sed 's/^/    /'
fi
if [ "$eops" -eq 0 ] && [[ "$eexe" == */env ]] && [ "$mexe" = "$prog" ] && [ "$mfork" -eq 0 ] &&
   [ "$eparent" -eq "$mparent" ] && [ "$mparent" -gt 0 ]; then
  ok "headers: env ($eexe) and the program ($mexe) are one process (exec), parent $mparent"
else
  bad "headers: env: $eops $eexe $eparent $efork; program: $mops $mexe $mparent $mfork"
fi

# 2. replay, map and view of the empty trace name the one with operations.
"$FA" replay "$t" >/dev/null 2>"$tmp/replay.err" || bad "replay of the empty trace failed"
if grep -q "$(basename "$t") holds no operations" "$tmp/replay.err" &&
   grep -q "^  $main  $mops operations  $prog, pid" "$tmp/replay.err"; then
  ok "replay $(basename "$t"): names $(basename "$main") and its $mops operations"
else
  bad "replay's note:"; sed 's/^/    /' "$tmp/replay.err"
fi
for cmd in "map" "map --trace" "view -o $tmp/x.html"; do
  rc=0
  # shellcheck disable=SC2086
  "$FA" $cmd "$t" >/dev/null 2>"$tmp/cmd.err" || rc=$?
  if [ "$rc" -eq 1 ] && grep -q "^  $main  $mops operations" "$tmp/cmd.err" &&
     grep -q "no operations: nothing to" "$tmp/cmd.err"; then
    ok "$cmd $(basename "$t"): exit status 1, names $(basename "$main")"
  else
    bad "$cmd $(basename "$t"): exit status $rc:"; sed 's/^/    /' "$tmp/cmd.err"
  fi
done

# 3. A wrapper script that runs the program as its child, as pyenv's shims.
printf '#!/bin/bash\n"$@"\necho done >/dev/null\n' >"$tmp/shim"
chmod +x "$tmp/shim"
"$FA" run --trace "$tmp/shim.trace" -- "$tmp/shim" "$prog" 6 2000 >/dev/null 2>"$tmp/shim.err" ||
  fail "the shimmed run failed: $(tail -n 3 "$tmp/shim.err")"
n=$(ls "$tmp"/shim.trace* | wc -l)
ops=$(grep "^  $tmp/" "$tmp/shim.err" | awk '{print $2}')
if [ "$(grep -c "^  $tmp/" "$tmp/shim.err")" -eq "$n" ] && [ "$n" -ge 3 ] &&
   [ "$ops" = "$(sort -rn <<<"$ops")" ] && grep -q "^  $tmp/shim.trace.* operations  $prog, pid" "$tmp/shim.err"; then
  ok "shim: $n traces listed, most operations first ($(tr '\n' ' ' <<<"$ops"))"
else
  bad "shim: $n traces, list:"; grep -A 20 'traces\? written' "$tmp/shim.err" | sed 's/^/    /'
fi
shimmed=$(grep "operations  $prog, pid" "$tmp/shim.err" | awk '{print $1}')
read -r sops _ sparent sfork <<<"$(info "$shimmed")"
shell_pid=$("$FA" replay "$tmp/shim.trace" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
if [ "$sparent" = "$shell_pid" ] && [ "$sfork" -eq 0 ]; then
  ok "the program's header names the shell script's process ($shell_pid) as its parent"
else
  bad "the program's parent is $sparent (fork child $sfork), the shell's pid is $shell_pid"
fi

# 4. map FILE: trace or dump, by itself.
"$FA" run --trace "$tmp/dump.trace" -- "$prog" 7 2000 >/dev/null 2>"$tmp/dump.txt" || fail "cli_layout failed"
for kind in trace dump; do
  f=$tmp/dump.$([ $kind = trace ] && echo trace || echo txt)
  "$FA" map "$f" -o "$tmp/auto.svg" 2>/dev/null
  "$FA" map --$kind "$f" -o "$tmp/explicit.svg" 2>/dev/null
  if cmp -s "$tmp/auto.svg" "$tmp/explicit.svg" && [ -s "$tmp/auto.svg" ]; then
    ok "map $(basename "$f") draws what map --$kind draws"
  else
    bad "map $(basename "$f") differs from map --$kind"
  fi
done

echo "cli-trace-discovery: $checks checks"
[ "$status" -eq 0 ] || fail "trace discovery checks failed (see above)"
