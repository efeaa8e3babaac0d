#!/usr/bin/env bash
# The fragmentation study (README, "Fragmentation study"): records traces of
# real programs on fitalloc, replays each under the four policies, and writes
#   study/results/table.md          the per-policy table
#   study/results/<prog>.json       fitalloc replay --json output
#   study/results/gcc-compare.svg/.png   the four policies at gcc's peak use
# Traces (large) go to study/traces/ and are not committed.
# Run after `make`:   bash study/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FIT=$ROOT/fitalloc
[ -x "$FIT" ] && [ -f "$ROOT/allocator.so" ] || { echo "run make first" >&2; exit 1; }
T=$ROOT/study/traces R=$ROOT/study/results W=$ROOT/study/work
rm -rf "$T" "$W"; mkdir -p "$T" "$R" "$W"
PY=$(python3 -c 'import sys; print(sys.executable)')

# trace NAME CMD...: records CMD (and every process it starts) into
# $T/NAME.trace*, then keeps the process with the most operations.
trace() {
  local name=$1; shift
  (cd "$W" && "$FIT" run --trace "$T/$name.trace" -- "$@" >/dev/null)
  local best
  best=$(ls -S "$T/$name".trace* | head -1)
  [ "$best" = "$T/$name.trace" ] || mv "$best" "$T/$name.main.trace"
  [ -f "$T/$name.main.trace" ] || mv "$T/$name.trace" "$T/$name.main.trace"
  echo "$name: $(basename "$best") ($(stat -c %s "$T/$name.main.trace") bytes)"
}

# python3: pydoc renders stdlib modules to HTML (every object through malloc).
trace python env PYTHONMALLOC=malloc "$PY" -m pydoc -w json re argparse email.message
# gcc: the C compiler proper (cc1) compiling a real C file of this project.
trace gcc gcc -O2 -c "$ROOT/tests/c/contract.c" -I"$ROOT/include" -o "$W/contract.o"
# git: history with patches, then a repack, on a copy of this repository.
git clone -q "$ROOT" "$W/repo"
trace git-log git -C "$W/repo" log -p --stat
trace git-gc git -C "$W/repo" gc -q --aggressive
# perl: pod2text formats perl's own diagnostics manual.
trace perl pod2text "$(perl -MConfig -e 'print $Config{privlib}')/pod/perldiag.pod"

{
  echo "| program | operations | policy | peak in use | peak mapped | frag. at peak | regions mapped | ns/op |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|"
  for f in "$T"/*.main.trace; do
    name=$(basename "$f" .main.trace)
    "$FIT" replay "$f" --policy all --json --no-progress > "$R/$name.json"
    python3 - "$R/$name.json" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["policies"]:
    frag = r["fragmentation_at_peak"]
    frag = "n/a" if frag is None else f"{frag:.3f}"
    print(f"| {sys.argv[2]} | {r['operations']} | {r['policy']} | {r['peak_in_use']} | "
          f"{r['peak_mapped']} | {frag} | {r['regions_mapped']} | {r['ns_per_op']:.0f} |")
PY
  done
} > "$R/table.md"
cat "$R/table.md"
"$FIT" map --trace "$T/gcc.main.trace" --compare -o "$R/gcc-compare.svg" --png "$R/gcc-compare.png"
rm -rf "$W"
