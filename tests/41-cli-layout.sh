#!/usr/bin/env bash
# Replaying a trace under the policy it was recorded with reproduces the live
# heap: tests/c/cli_layout.c does thousands of random malloc / free / realloc
# / calloc / memalign-family / malloc_name calls under
# `fitalloc run --trace T --policy P`, then write_memory(stderr) twice. Each
# dump, normalised to (region index, offset), must equal
# `fitalloc replay T --policy P --at-mark N --layout` line for line, for the
# four policies and two seeds. `fitalloc map` of the same moment (from the
# trace and from the dump) must be well-formed XML with exactly one <rect>
# per block; one PNG is rendered.
. "$(dirname "$0")/lib.sh"
FA=$ROOT/fitalloc
[ -x "$FA" ] || fail "$FA missing: run make first"
command -v python3 >/dev/null || fail "python3 is needed to normalise dumps and parse SVG"
prog=$(build cli_layout "$ROOT/tests/c/cli_layout.c")
tmp=$BUILD/tmp/cli-layout
rm -rf "$tmp"
mkdir -p "$tmp"

# normalise DUMPFILE K: the K-th dump as REGION/BLOCK lines (region index, offset)
normalise() {
  python3 - "$1" "$2" <<'PY'
import re, sys
dumps = []
for line in open(sys.argv[1]).read().split('\n'):
    if line.startswith('fitalloc: '):
        break  # fitalloc run's own list of the traces written, after the program
    if line == '-- Current Memory State --':
        dumps.append([])
        continue
    m = re.match(r"^\[REGION 0x([0-9a-f]+)-0x([0-9a-f]+)\] (\d+)$", line)
    if m:
        assert int(m[2], 16) - int(m[1], 16) == int(m[3]), line
        dumps[-1].append(('R', int(m[1], 16), int(m[3])))
        continue
    m = re.match(r"^  \[BLOCK 0x([0-9a-f]+)-0x([0-9a-f]+)\] (\d+) \[(USED|FREE)\] '(.*)'$", line)
    if m:
        assert int(m[2], 16) - int(m[1], 16) == int(m[3]), line
        dumps[-1].append(('B', int(m[1], 16), int(m[3]), m[4], m[5]))
        continue
    assert line == '', 'unexpected line: ' + line
r, start = -1, 0
for e in dumps[int(sys.argv[2]) - 1]:
    if e[0] == 'R':
        r, start = r + 1, e[1]
        print(f"REGION {r} {e[2]}")
    else:
        print(f"BLOCK {r} {e[1] - start} {e[2]} {e[3]} '{e[4]}'")
PY
}

# rects SVG: number of <rect> elements (fails if the file is not XML)
rects() {
  python3 -c '
import sys, xml.etree.ElementTree as ET
print(sum(1 for e in ET.parse(sys.argv[1]).iter() if e.tag.split("}")[-1] == "rect"))' "$1"
}

status=0
checks=0
for seed in 7 1234; do
  for p in "${POLICIES[@]}"; do
    t=$tmp/$p-$seed.trace
    "$FA" run --policy "$p" --trace "$t" -- "$prog" "$seed" >"$tmp/$p-$seed.out" 2>"$tmp/$p-$seed.dump" ||
      fail "cli_layout $seed under $p failed: $(tail -n 3 "$tmp/$p-$seed.dump")"
    for mark in 1 2; do
      checks=$((checks + 1))
      live=$tmp/$p-$seed-$mark.live
      replayed=$tmp/$p-$seed-$mark.replayed
      normalise "$tmp/$p-$seed.dump" "$mark" >"$live"
      "$FA" replay "$t" --policy "$p" --at-mark "$mark" --layout | grep -E '^(REGION|BLOCK) ' >"$replayed" ||
        fail "replay of $t failed"
      n=$(grep -c '^BLOCK ' "$live")
      [ "$n" -gt 100 ] || fail "the dump has only $n blocks: the program did not run as expected"
      if cmp -s "$live" "$replayed"; then
        echo "ok   $p seed $seed mark $mark: replayed layout = live layout ($n blocks, $(grep -c '^REGION ' "$live") regions)"
      else
        echo "FAIL $p seed $seed mark $mark: the replayed layout differs from the live one:"
        diff "$live" "$replayed" | head -n 10 | sed 's/^/    /' || true
        status=1
      fi
    done
    # The picture of the same moment: one <rect> per block.
    checks=$((checks + 1))
    n=$(grep -c '^BLOCK ' "$tmp/$p-$seed-1.live")
    "$FA" map --trace "$t" --policy "$p" --at-mark 1 --max-rects 100000 -o "$tmp/$p-$seed.svg" 2>/dev/null
    r=$(rects "$tmp/$p-$seed.svg")
    if [ "$r" -eq "$n" ]; then
      echo "ok   $p seed $seed: map --trace --at-mark 1 draws $r rects for $n blocks"
    else
      echo "FAIL $p seed $seed: map --trace draws $r rects for $n blocks"
      status=1
    fi
  done
done

# From the dump itself (second dump of one run), and a PNG.
checks=$((checks + 1))
n=$(grep -c '^BLOCK ' "$tmp/best_fit-7-2.live")
"$FA" map --dump "$tmp/best_fit-7.dump" --dump-index 2 -o "$tmp/dump.svg" --png "$tmp/dump.png" 2>/dev/null
r=$(rects "$tmp/dump.svg")
if [ "$r" -eq "$n" ] && [ "$(head -c 8 "$tmp/dump.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ]; then
  echo "ok   map --dump: $r rects for $n blocks, and a PNG"
else
  echo "FAIL map --dump: $r rects for $n blocks (or no PNG)"
  status=1
fi

echo "cli-layout: $checks checks"
[ "$status" -eq 0 ] || fail "layout checks failed (see above)"
