#!/usr/bin/env bash
# `fitalloc view` in a real browser: headless Chromium opens the page at two
# moments through the URL fragment (#t=N), and what it drew must match the
# command line for the same moment, under each of the four policies:
# - each panel's caption (bytes in use, bytes mapped, regions, blocks)
#   equals the sums of `fitalloc replay T --at N --policy P --layout`;
# - the rectangles drawn (one subpath each in the panel's paths) number what
#   the panel says, and over the four panels they and the merged runs equal
#   what `fitalloc map --trace T --compare --at N` draws with the page's
#   --width and --max-rects (the same drawing rules, in Rust and in the
#   page's script);
# - the page fetches nothing (no src=, href= or url( outside the page).
# The trace is tests/c/cli_layout.c's (named blocks, the memalign family,
# realloc); a second page with --max-rects 300 makes the drawing merge runs
# of small blocks. Chromium is installed if missing (as .ci/run does); if
# that is not possible the case prints SKIP and passes.
. "$(dirname "$0")/lib.sh"
FA=$ROOT/fitalloc
[ -x "$FA" ] || fail "$FA missing: run make first"
command -v python3 >/dev/null || fail "python3 is needed to read the page"

chrome=""
find_chrome() {
  for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then chrome=$c; return 0; fi
  done
  return 1
}
if ! find_chrome; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
    echo "chromium is missing: installing Debian's chromium"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive timeout 600 $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || true
  fi
  if ! find_chrome; then
    echo "SKIP: no chromium, chromium-browser or google-chrome, and Debian's chromium cannot be installed here (no apt-get, or not root and no passwordless sudo): the page is not tested in a browser"
    exit 0
  fi
fi
echo "browser: $($chrome --version 2>/dev/null | head -n 1)"

prog=$(build cli_layout "$ROOT/tests/c/cli_layout.c")
tmp=$BUILD/tmp/cli-view
rm -rf "$tmp"
mkdir -p "$tmp"
t=$tmp/layout.trace
"$FA" run --trace "$t" -- "$prog" 11 12000 >/dev/null 2>"$tmp/run.err" ||
  fail "cli_layout failed: $(tail -n 3 "$tmp/run.err")"

# dom URL OUT: the page's DOM once its script has drawn it.
dom() {
  timeout 120 "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d "$tmp/profile.XXXX")" --virtual-time-budget=30000 \
    --dump-dom "$1" >"$2" 2>"$2.err"
}

status=0
checks=0
# check PAGE N WIDTH MAX_RECTS: the page at operation N against replay and map.
check() {
  local page=$1 n=$2 width=$3 max=$4 p
  checks=$((checks + 1))
  local out=$tmp/$(basename "$page" .html)-$n
  if ! dom "file://$page#t=$n" "$out.dom"; then
    echo "FAIL chromium could not open $page#t=$n: $(tail -n 3 "$out.dom.err")"; status=1; return
  fi
  for p in "${POLICIES[@]}"; do
    "$FA" replay "$t" --policy "$p" --at "$n" --layout | grep -E '^(REGION|BLOCK) ' >"$out.$p.layout"
  done
  "$FA" map --trace "$t" --compare --at "$n" --width "$width" --max-rects "$max" -o "$out.svg" 2>"$out.map"
  local res
  if res=$(python3 - "$out" "$n" 2>&1 <<'PY'
import re, sys
from html.parser import HTMLParser
out, n = sys.argv[1], int(sys.argv[2])
policies = ["first_fit", "next_fit", "best_fit", "worst_fit"]

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.panels, self.body, self.fetches = [], {}, []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        for k in ("src", "href"):
            if k in a:
                self.fetches.append(f"<{tag} {k}={a[k]!r}>")
        if tag == "div" and a.get("class") == "panel":
            self.panels.append({"attrs": a, "subpaths": 0, "cap": None, "text": ""})
        elif tag == "path" and a.get("class") == "blocks" and self.panels:
            self.panels[-1]["subpaths"] += a["d"].count("M")
        elif a.get("class") == "cap" and self.panels:
            self.panels[-1]["cap"] = ""
    def handle_data(self, data):
        if self.panels and self.panels[-1]["cap"] == "":
            self.panels[-1]["cap"] = data.strip()

text = open(out + ".dom").read()
page = Page()
page.feed(text)
errors = []
if page.body.get("data-ready") != "1":
    sys.exit(f"the page did not finish drawing (body: {page.body}; error: {page.body.get('data-error')})")
if int(page.body.get("data-op", -1)) != n:
    errors.append(f"the page shows operation {page.body.get('data-op')}, not {n}")
if page.fetches or "url(" in text:
    errors.append(f"the page fetches something: {page.fetches[:3]}")
if [p["attrs"].get("data-policy") for p in page.panels] != policies:
    errors.append(f"panels: {[p['attrs'].get('data-policy') for p in page.panels]}")
rects = runs = 0
for p, pol in zip(page.panels, policies):
    a = p["attrs"]
    lay = [l.split() for l in open(f"{out}.{pol}.layout")]
    blocks = [l for l in lay if l[0] == "BLOCK"]
    want = {
        "regions": sum(1 for l in lay if l[0] == "REGION"),
        "blocks": len(blocks),
        "in-use": sum(int(l[3]) for l in blocks if l[4] == "USED"),
        "mapped": sum(int(l[2]) for l in lay if l[0] == "REGION"),
    }
    got = {k: int(a["data-" + k]) for k in want}
    if got != want:
        errors.append(f"{pol}: the page says {got}, replay --layout says {want}")
    m = re.match(r"in use (\d+) B .*, mapped (\d+) B .*; (\d+) regions, (\d+) blocks$", p["cap"] or "")
    if not m or [int(x) for x in m.groups()] != [want["in-use"], want["mapped"], want["regions"], want["blocks"]]:
        errors.append(f"{pol}: caption {p['cap']!r} does not give {want}")
    if p["subpaths"] != int(a["data-rects"]):
        errors.append(f"{pol}: {p['subpaths']} rectangles drawn, the panel says {a['data-rects']}")
    rects += p["subpaths"]
    runs += int(a["data-runs"])
m = re.search(r"(\d+) rectangles(?: \((\d+) merged runs)?", open(out + ".map").read())
mr, mruns = int(m[1]), int(m[2] or 0)
if (rects, runs) != (mr, mruns):
    errors.append(f"the page draws {rects} rectangles ({runs} merged runs), map --compare {mr} ({mruns})")
if errors:
    sys.exit("\n    ".join(errors))
print(f"{sum(int(p['attrs']['data-blocks']) for p in page.panels)} blocks in 4 heaps, {rects} rectangles ({runs} merged runs)")
PY
  ); then
    echo "ok   $(basename "$page")#t=$n: $res, as replay --layout and map --compare"
  else
    echo "FAIL $(basename "$page")#t=$n:"
    echo "    $res"
    status=1
  fi
}

ops=$("$FA" replay "$t" --policy first_fit --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["operations_in_trace"], d["policies"][0]["peak_operation"])')
read -r total peak <<<"$ops"
[ "$total" -gt 10000 ] || fail "the trace has only $total operations"

"$FA" view "$t" -o "$tmp/page.html" 2>"$tmp/view.err" || fail "view failed: $(cat "$tmp/view.err")"
"$FA" view "$t" -o "$tmp/merged.html" --max-rects 300 --width 200 2>>"$tmp/view.err" || fail "view failed: $(cat "$tmp/view.err")"
check "$tmp/page.html" $((total / 3)) 300 20000
check "$tmp/page.html" "$peak" 300 20000
check "$tmp/merged.html" "$peak" 200 300
grep -q 'merged runs' "$tmp/merged-$peak.map" ||
  { echo "FAIL the --max-rects 300 page merged nothing: the merging is not tested"; status=1; }

# A real program with more than 40 regions (the flow layout): python3
# building and parsing JSON, every object through malloc. A python3 that is
# a wrapper (pyenv) writes several traces: the biggest is the interpreter's.
# (sed, not head: head exits after one line, and an ls writing more than a
# pipe buffer's worth of names then dies of SIGPIPE, which pipefail makes fatal)
"$FA" run --trace "$tmp/py.trace" -- env PYTHONMALLOC=malloc python3 -c '
import json
d = [{"k": i, "v": str(i) * (i % 40)} for i in range(3000)]
s = json.dumps(d)
del d[::3]
print(len(json.loads(s)), len(d))' >/dev/null 2>"$tmp/py.err" || fail "python3 failed: $(tail -n 3 "$tmp/py.err")"
t=$(ls -S "$tmp"/py.trace* | sed -n 1p)
peak=$("$FA" replay "$t" --policy first_fit --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["policies"][0]["peak_operation"])')
"$FA" view "$t" -o "$tmp/py.html" 2>>"$tmp/view.err" || fail "view failed: $(cat "$tmp/view.err")"
check "$tmp/py.html" "$peak" 300 20000
grep -q 'REGION 40 ' "$tmp/py-$peak.first_fit.layout" ||
  { echo "FAIL python's heap at its peak has at most 40 regions: the flow layout is not tested"; status=1; }

echo "cli-view-browser: $checks checks"
[ "$status" -eq 0 ] || fail "the page does not show what the command line does (see above)"
