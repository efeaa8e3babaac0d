#!/usr/bin/env bash
# The timeline: `fitalloc replay T --plot timeline.svg --png timeline.png`.
# - A real trace (tests/c/cli_layout.c, two write_memory calls): the SVG is
#   well-formed XML with one series per policy and kind (in use, mapped,
#   fragmentation), two marks, and each policy's highest bytes in use is the
#   in use of `replay --at N`, N its peak operation, drawn at that height;
#   the PNG is a PNG.
# - A generated trace of 2 million operations (malloc/free pairs of 64 bytes,
#   one of which is 40 MiB instead): it plots within 30 s (a few seconds on
#   an idle machine), the SVG stays under 1 MB, and the one-operation spike
#   is still the top of every in-use series after downsampling to 1000
#   points.
. "$(dirname "$0")/lib.sh"
FA=$ROOT/fitalloc
[ -x "$FA" ] || fail "$FA missing: run make first"
command -v python3 >/dev/null || fail "python3 is needed to parse the SVG"
prog=$(build cli_layout "$ROOT/tests/c/cli_layout.c")
tmp=$BUILD/tmp/cli-timeline
rm -rf "$tmp"
mkdir -p "$tmp"
status=0

# check SVG JSON...: the series of SVG against `replay --json` of each policy
check() {
  python3 - "$@" <<'PY'
import json, re, sys
import xml.etree.ElementTree as ET
svg, jsons = sys.argv[1], sys.argv[2:]
root = ET.parse(svg).getroot()
ns = "{http://www.w3.org/2000/svg}"
series = [e for e in root.iter(ns + "path") if e.get("class") == "series"]
panel = {g.get("data-panel"): g for g in root.iter(ns + "g") if g.get("class") == "panel"}
top, bottom, ymax = (float(panel["bytes"].get(k)) for k in ("data-top", "data-bottom", "data-ymax"))
errors = []
policies = ["first_fit", "next_fit", "best_fit", "worst_fit"]
for p in policies:
    for kind in ("in_use", "mapped", "fragmentation"):
        n = sum(1 for e in series if e.get("data-policy") == p and e.get("data-kind") == kind)
        if n != 1:
            errors.append(f"{p} {kind}: {n} series")
if len(series) != 12:
    errors.append(f"{len(series)} series, not 12")
for p, j in zip(policies, jsons):
    want = json.load(open(j))["policies"][0]["in_use"]
    s = next(e for e in series if e.get("data-policy") == p and e.get("data-kind") == "in_use")
    got = int(s.get("data-max"))
    ys = [float(m[1]) for m in re.finditer(r"[ML][\d.]+ ([\d.]+)", s.get("d"))]
    y = bottom - want / ymax * (bottom - top)
    if got != want:
        errors.append(f"{p}: the in-use series peaks at {got}, replay --at its peak says {want}")
    elif abs(min(ys) - y) > 0.11:
        errors.append(f"{p}: the in-use band tops out at y={min(ys)}, the peak is at y={y:.1f}")
    if int(s.get("data-points")) > 1000:
        errors.append(f"{p}: {s.get('data-points')} points")
marks = next(e for e in root.iter(ns + "path") if e.get("class") == "marks")
print(f"12 series, peaks {[int(e.get('data-max')) for e in series if e.get('data-kind') == 'in_use']}, "
      f"{marks.get('data-count')} marks")
if errors:
    sys.exit("\n    ".join(errors))
PY
}

# 1. A real program.
t=$tmp/layout.trace
"$FA" run --trace "$t" -- "$prog" 3 6000 >/dev/null 2>"$tmp/run.err" || fail "cli_layout failed"
"$FA" replay "$t" --plot "$tmp/layout.svg" --png "$tmp/layout.png" >/dev/null || fail "replay --plot failed"
jsons=()
for p in "${POLICIES[@]}"; do
  peak=$("$FA" replay "$t" --policy "$p" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["policies"][0]["peak_operation"])')
  "$FA" replay "$t" --policy "$p" --at "$peak" --json >"$tmp/$p.json"
  jsons+=("$tmp/$p.json")
done
if res=$(check "$tmp/layout.svg" "${jsons[@]}" 2>&1) && [[ "$res" == *", 2 marks" ]] &&
   [ "$(head -c 8 "$tmp/layout.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ]; then
  echo "ok   cli_layout: $res; a PNG"
else
  echo "FAIL cli_layout: $res"; status=1
fi

# 2. Two million operations and one spike.
python3 - "$tmp/big.trace" <<'PY'
import os, struct, sys
page = os.sysconf("SC_PAGE_SIZE")
head = b"FITTRACE" + struct.pack("<IIIIIHH", 2, 32, page, 1, 0, 0, 0)
rec = lambda kind, a, out: struct.pack("<B3xIQQQ", kind, 0, a, 0, out)
pair = rec(1, 64, 0x10000) + rec(4, 0x10000, 0)
spike = rec(1, 40 << 20, 0x10000) + rec(4, 0x10000, 0)
with open(sys.argv[1], "wb") as f:
    f.write(head + pair * 654_321 + spike + pair * 345_678)
PY
start=$(date +%s%N)
"$FA" replay "$tmp/big.trace" --plot "$tmp/big.svg" --no-progress >"$tmp/big.out" || fail "replay --plot of 2M operations failed"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
size=$(stat -c %s "$tmp/big.svg")
for p in "${POLICIES[@]}"; do
  # In use at the spike: the 40 MiB block and its 16-byte header.
  echo "{\"policies\": [{\"in_use\": $(( (40 << 20) + 16 ))}]}" >"$tmp/big-$p.json"
done
if res=$(check "$tmp/big.svg" "$tmp"/big-{first,next,best,worst}_fit.json 2>&1) && [ "$size" -lt 1000000 ] && [ "$ms" -lt 30000 ]; then
  echo "ok   2000000 operations plotted in $ms ms, SVG of $size bytes: $res"
else
  echo "FAIL 2000000 operations plotted in $ms ms, SVG of $size bytes: $res"; status=1
fi
[ "$status" -eq 0 ] || fail "timeline checks failed (see above)"
