#!/usr/bin/env bash
# The fragmentation study (README, "Fragmentation study"): records traces of
# real programs on fitalloc, replays each under the four policies, and writes
#   study/results/table.md          the per-policy table
#   study/results/<prog>.json       fitalloc replay --json output
#   study/results/gcc-compare.svg/.png   the four policies at gcc's peak use
#   study/results/<prog>-timeline.svg/.png   replay --plot for gcc, python
#                                   and ghostscript: in use and mapped over time
#   study/results/python-view.png   a screenshot of `fitalloc view` at python's
#                                   peak (needs chromium; skipped without it)
#   study/results/view-bench.md     python's view page: size and redraw times
#                                   (study/view-bench.py; needs chromium)
# Traces (large) and the view page go to study/traces/ and are not committed.
# Ghostscript (gs) is traced when installed, skipped with a message if not.
# STUDY_NOTE="..." adds a remark (say, other load on the machine) to view-bench.md.
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
# ghostscript: gslp.ps (shipped with gs) typesets tests/c/contract.c and gs's
# pdfwrite makes a PDF of it (not traced); then gs renders that PDF
# to 24-bit PNG pages at 150 dpi (traced).
if command -v gs >/dev/null; then
  gs -q -dSAFER --permit-file-read="$ROOT/tests/c/" -dBATCH -dNOPAUSE -sDEVICE=pdfwrite \
    -sOutputFile="$W/contract.pdf" -- gslp.ps "$ROOT/tests/c/contract.c" >/dev/null
  trace ghostscript gs -q -dSAFER -dBATCH -dNOPAUSE -sDEVICE=png16m -r150 \
    -sOutputFile="$W/contract-%03d.png" "$W/contract.pdf"
else
  echo "ghostscript: skipped (no gs; Debian: apt-get install ghostscript)" >&2
fi

{
  echo "| program | operations | policy | peak in use | peak mapped | frag. at peak | regions mapped | ns/op |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|"
  for f in "$T"/*.main.trace; do
    name=$(basename "$f" .main.trace)
    rm -f "$R/$name-timeline.svg" "$R/$name-timeline.png"
    case $name in
      gcc | python | ghostscript)
        plot=(--plot "$R/$name-timeline.svg" --png "$R/$name-timeline.png") ;;
      *) plot=() ;;
    esac
    "$FIT" replay "$f" --policy all --json --no-progress "${plot[@]}" > "$R/$name.json"
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

# The view page of python's trace (about 1.3 million operations): a
# screenshot where it opens (the operation at which bytes in use peaked under
# first fit), then its size and redraw times in a real browser.
"$FIT" view "$T/python.main.trace" -o "$T/python-view.html" --no-progress
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -n "$CHROME" ]; then
  timeout 300 "$CHROME" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$W/profile" --hide-scrollbars --window-size=1800,1250 \
    --virtual-time-budget=60000 --screenshot="$R/python-view.png" \
    "file://$T/python-view.html" 2>/dev/null
  LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
  bench=$(python3 "$ROOT/study/view-bench.py" "$T/python-view.html" 30)
  python3 - "$bench" "$R/python.json" "$("$CHROME" --version 2>/dev/null | head -1)" \
    "$(nproc)" "$LOAD" "${STUDY_NOTE:-}" > "$R/view-bench.md" <<'PY'
import datetime, json, sys
b, rep = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
browser, cores, load, note = sys.argv[3:7]
ops = rep["policies"][0]["operations"]
print("# fitalloc view: page size and redraw time\n")
print(f"Written by `bash study/run.sh` on {datetime.date.today()}, which ran:\n")
print("```\nfitalloc view study/traces/python.main.trace -o study/traces/python-view.html")
print("python3 study/view-bench.py study/traces/python-view.html 30\n```\n")
print(f"Trace: python's ({ops} operations). Browser: {browser}, headless, "
      f"window 1800x1200. Machine: {cores} cores, load average {load} "
      "(1, 5, 15 min) when the measurement started." + (f" {note}" if note else ""))
print()
print("| what | value |\n|---|---:|")
print(f"| page size | {b['page_bytes']} bytes ({b['page_mib']} MiB) |")
print(f"| from opening the page to its first drawing, in the page | {b['load_ms'] / 1000:.1f} s |")
print(f"| from navigation to ready, seen from outside | {b['opened_to_ready_s']} s |")
print(f"| redraw after a slider move ({b['moves']} moves to scattered operations): median | {b['median_ms']} ms |")
print(f"| the same: mean | {b['mean_ms']} ms |")
print(f"| the same: slowest | {b['max_ms']} ms |")
print(f"| JS heap after the moves | {b['js_heap_mib']} MiB |")
print("\nA move calls what the slider's input event calls (go(n)) and is timed to the end")
print("of the layout it causes. Of that, on average: seeking the four heaps to the operation "
      f"{b['seek_ms']} ms (of which restoring snapshots {b['restore_ms']} ms), placing the rectangles "
      f"{b['geometry_ms']} ms, writing the SVG {b['draw_ms']} ms (of which innerHTML {b['html_ms']} ms); "
      f"the rest is the browser's layout. Snapshots per policy: {b['snapshots']}.\n")
print("view-bench.py's output:\n\n```\n" + sys.argv[1] + "\n```")
PY
  cat "$R/view-bench.md"
else
  echo "no chromium: python-view.png and view-bench.md not written" >&2
fi
rm -rf "$W"
