#!/usr/bin/env bash
# Traces of a multi-threaded and of a forking program replay without error
# under every policy:
# - tests/c/cli_threads.c: 4 threads, blocks freed by other threads than the
#   ones that allocated them; the trace holds at least the calls the threads
#   made, and the replay skips nothing and fails nothing.
# - tests/c/cli_fork.c: parent, child and grandchild each write a trace (T,
#   T.CHILD, T.GRANDCHILD); the descendants' headers say they are fork
#   children and name their parent, every header names the program, and
#   their operations on inherited blocks (50 each, which the program counts)
#   are skipped as pointers the trace never returned; nothing else is skipped.
# - the threads trace and tests/c/trace_order.c's: records in heap order (see
#   in_order below); trace_order's records survive an abort in the exit
#   handler.
# `fitalloc map --compare` draws the child's trace.
. "$(dirname "$0")/lib.sh"
FA=$ROOT/fitalloc
[ -x "$FA" ] || fail "$FA missing: run make first"
command -v python3 >/dev/null || fail "python3 is needed to read the JSON"
threads=$(build cli_threads "$ROOT/tests/c/cli_threads.c")
forker=$(build cli_fork "$ROOT/tests/c/cli_fork.c")
order=$(build trace_order "$ROOT/tests/c/trace_order.c")
tmp=$BUILD/tmp/cli-threads-fork
rm -rf "$tmp"
mkdir -p "$tmp"
status=0
checks=0

# expect TRACE MIN_OPS PARENT SKIPPED: replay --policy all --json and check it
# (PARENT: the fork parent's pid, or 0 for a trace that is not a fork child's)
expect() {
  local t=$1 min=$2 parent=$3 skipped=$4 res
  checks=$((checks + 1))
  if ! "$FA" replay "$t" --policy all --json >"$t.json" 2>"$t.err"; then
    echo "FAIL replay $t: $(cat "$t.err")"; status=1; return
  fi
  if res=$(python3 - "$t.json" "$min" "$parent" "$skipped" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
lo, parent, skipped = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
assert d['operations_in_trace'] >= lo, f"{d['operations_in_trace']} operations < {lo}"
assert d['version'] == 2, d['version']
assert d['fork_child'] == (parent != 0), f"fork_child {d['fork_child']}, expected {parent != 0}"
if parent:
    assert d['parent'] == parent, f"header parent {d['parent']} != {parent}"
else:
    assert d['parent'] > 0, "the parent pid is recorded for every process"
assert d['exe'].startswith('/') and d['exe'].endswith('/cli_' + ('threads' if sys.argv[1].rsplit('/', 1)[1].startswith('threads') else 'fork')), d['exe']
assert d['argv0'].endswith(d['exe'].rsplit('/', 1)[1]), (d['argv0'], d['exe'])
assert [p['policy'] for p in d['policies']] == ['first_fit', 'next_fit', 'best_fit', 'worst_fit']
for p in d['policies']:
    assert p['operations'] == d['operations_in_trace'], p
    assert p['skipped_unknown_pointer'] == skipped, f"{p['policy']}: {p['skipped_unknown_pointer']} skipped, not {skipped}"
    assert p['skipped_failed'] == 0 and p['replay_failed'] == 0, p
    assert p['peak_in_use'] > 0 and p['peak_mapped'] >= p['peak_in_use'], p
print(f"{d['operations_in_trace']} operations, {skipped} skipped")
PY
  ); then
    echo "ok   $(basename "$t"): $res, under the four policies"
  else
    echo "FAIL $(basename "$t"): $res"; status=1
  fi
}

"$FA" run --trace "$tmp/threads.trace" -- "$threads" 5000 >"$tmp/threads.out" 2>"$tmp/threads.err" ||
  fail "cli_threads failed: $(tail -n 3 "$tmp/threads.err")"
ops=$(sed -n 's/^OPS //p' "$tmp/threads.out")
[ "${ops:-0}" -gt 20000 ] || fail "cli_threads made only ${ops:-0} calls"
expect "$tmp/threads.trace" "$ops" 0 0

# in_order TRACE REALLOCS [FREED]: the records are in an order the heap
# could have seen: no allocation returns a pointer the trace holds live,
# every free and realloc names one it does (a free traced after its region
# went to another thread's arena, or a free the trace lost, breaks this;
# the replay notices only the second kind), at least REALLOCS reallocs are
# there, and the pointer FREED (0x...) is not live at the end.
in_order() {
  local t=$1 reallocs=$2 freed=${3:-0} res
  checks=$((checks + 1))
  if res=$(python3 - "$t" "$reallocs" "$freed" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read()
off = 32 + 32 * struct.unpack_from('<H', b, 30)[0]
live, n, reallocs, bad = set(), 0, 0, []
while off + 32 <= len(b):
    kind = b[off]
    a, out = struct.unpack_from('<Q', b, off + 8)[0], struct.unpack_from('<Q', b, off + 24)[0]
    if kind in (3, 4):
        reallocs += kind == 3
        if a in live:
            live.discard(a)
        else:
            bad.append(f"record {n}: {'realloc' if kind == 3 else 'free'} of {a:#x}, not live")
    if kind == 3 and not out:
        live.add(a)  # a failed realloc keeps its block
    elif kind in (1, 2, 3, 5, 6) and out:
        if out in live:
            bad.append(f"record {n}: returned {out:#x}, still live")
        live.add(out)
    off += 64 if kind == 6 else 32
    n += 1
if reallocs < int(sys.argv[2]):
    bad.append(f"{reallocs} realloc records, fewer than the {sys.argv[2]} made")
if int(sys.argv[3], 0) in live:
    bad.append(f"{sys.argv[3]} (freed by the program) is live at the end")
if bad:
    print(f"{len(bad)} wrong, first: " + "; ".join(bad[:3]))
    sys.exit(1)
print(f"{n} records, {reallocs} reallocs, {len(live)} live at the end")
PY
  ); then
    echo "ok   $(basename "$t") is in heap order: $res"
  else
    echo "FAIL $(basename "$t") out of heap order: $res"; status=1
  fi
}
in_order "$tmp/threads.trace" 0

# tests/c/trace_order.c: frees that empty a region while other threads
# allocate, small blocks freed by another thread under the owner's lock,
# reallocs in place by another thread, and a remote free folded only by
# the exit handler.
"$FA" run --trace "$tmp/order.trace" -- "$order" >"$tmp/order.out" 2>"$tmp/order.err" ||
  fail "trace_order failed: $(tail -n 3 "$tmp/order.err")"
in_order "$tmp/order.trace" "$(sed -n 's/^REALLOCS //p' "$tmp/order.out")" \
  "$(sed -n 's/^LAST //p' "$tmp/order.out")"

# A write after free into a block waiting on a remote list makes the exit
# handler's fold abort: the records buffered before it are still written.
checks=$((checks + 1))
"$FA" run --trace "$tmp/uaf.trace" -- "$order" uaf >"$tmp/uaf.out" 2>"$tmp/uaf.err" && rc=0 || rc=$?
n=$( ([ -s "$tmp/uaf.trace" ] && "$FA" replay "$tmp/uaf.trace" --policy first_fit --json 2>/dev/null) |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["operations_in_trace"])' 2>/dev/null || echo 0)
if [ "$rc" = 134 ] && grep -q 'fitalloc: corrupted free block' "$tmp/uaf.err" && [ "$n" -ge 200 ]; then
  echo "ok   the exit-time fold aborted on the write after free; the trace holds $n operations"
else
  echo "FAIL exit-time abort: status $rc, $n operations in the trace (200 or more expected): $(tail -n 2 "$tmp/uaf.err")"
  status=1
fi

"$FA" run --trace "$tmp/fork.trace" -- "$forker" >"$tmp/fork.out" 2>"$tmp/fork.err" ||
  fail "cli_fork failed: $(tail -n 3 "$tmp/fork.err")"
read -r _ child child_foreign < <(grep '^CHILD ' "$tmp/fork.out")
read -r _ grand grand_foreign < <(grep '^GRANDCHILD ' "$tmp/fork.out")
parent=$(python3 -c 'import struct,sys; print(struct.unpack_from("<I", open(sys.argv[1],"rb").read(), 20)[0])' "$tmp/fork.trace")
checks=$((checks + 1))
if [ -s "$tmp/fork.trace.$child" ] && [ -s "$tmp/fork.trace.$grand" ]; then
  echo "ok   the child ($child) and the grandchild ($grand) wrote their own traces"
else
  echo "FAIL missing fork traces: $(ls "$tmp")"; status=1
fi
expect "$tmp/fork.trace" 200 0 0
expect "$tmp/fork.trace.$child" 100 "$parent" "$child_foreign"
expect "$tmp/fork.trace.$grand" 100 "$child" "$grand_foreign"

checks=$((checks + 1))
if "$FA" map --trace "$tmp/fork.trace.$child" --compare -o "$tmp/child.svg" 2>"$tmp/map.err" &&
   python3 -c 'import sys, xml.etree.ElementTree as ET; ET.parse(sys.argv[1])' "$tmp/child.svg"; then
  echo "ok   map --compare of the child's trace"
else
  echo "FAIL map --compare of the child's trace: $(cat "$tmp/map.err")"; status=1
fi

echo "cli-threads-fork: $checks checks"
[ "$status" -eq 0 ] || fail "thread / fork trace checks failed (see above)"
