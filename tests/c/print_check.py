#!/usr/bin/env python3
"""Validates print_memory / write_memory output (SPEC §5).

usage: print_check.py FILE [--dumps N]

FILE holds one or more dumps, each starting with the title line
"-- Current Memory State --", followed only by region and block lines:

    [REGION 0x<start>-0x<end>] <size>
      [BLOCK 0x<start>-0x<end>] <size> [USED|FREE] '<name>'

Lines outside dumps must start with '#'. A '#' line ends the current dump;
'#expect ...' lines are checked against the most recent dump:

    #expect USED|FREE <addr> <size|-> <name>   a block starts at addr with that
                                               state, size and exact name
    #expect-block <addr> <size|->              a USED block starts at addr
    #expect-free-covers <addr>                 a FREE block covers addr
    #expect-no-block <addr>                    no region covers addr
    #expect-regions <n>                        the dump has exactly n regions

Every dump is checked for: the exact line formats; size == end - start for
regions and blocks; regions page aligned, a whole number of pages, not
overlapping; blocks tile each region (the first starts at the region start,
each starts where the previous ended, the last ends at the region end, so
the sizes sum to the region size); block sizes multiples of 16 and >= 32;
no two adjacent free blocks; no region that is a single free block. (A free
block may carry a name: a freed block keeps its name, SPEC §5.) Prints one line per problem; exit status 1 if any.
"""
import os
import re
import sys

TITLE = "-- Current Memory State --"
REGION = re.compile(r"^\[REGION 0x([0-9a-f]+)-0x([0-9a-f]+)\] ([0-9]+)$")
BLOCK = re.compile(r"^  \[BLOCK 0x([0-9a-f]+)-0x([0-9a-f]+)\] ([0-9]+) \[(USED|FREE)\] '(.*)'$")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Dump:
    def __init__(self, line_no):
        self.line_no = line_no
        self.regions = []  # (start, end, [(start, end, size, state, name)])


def main():
    args = sys.argv[1:]
    want_dumps = None
    if "--dumps" in args:
        i = args.index("--dumps")
        want_dumps = int(args[i + 1])
        del args[i : i + 2]
    path = args[0]
    with open(path, "rb") as f:
        data = f.read()
    problems = []

    def bad(n, msg):
        problems.append(f"{path}:{n}: {msg}")

    if data and not data.endswith(b"\n"):
        bad(0, "output does not end with a newline")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        bad(0, f"non-ASCII byte in output: {e}")
        text = data.decode("ascii", "replace")

    dumps = []
    cur = None  # the dump being read (None once a '#' line closed it)
    last = None  # the most recent dump
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        if line == TITLE:
            cur = Dump(n)
            dumps.append(cur)
            last = cur
            continue
        if line.startswith("#"):
            cur = None
            if line.startswith("#expect"):
                check_expect(line, last, n, bad)
            continue
        if cur is None:
            bad(n, f"line outside a dump: {line!r}")
            continue
        m = REGION.match(line)
        if m:
            start, end, size = int(m[1], 16), int(m[2], 16), int(m[3])
            if end - start != size:
                bad(n, f"region size {size} != end - start {end - start}")
            if start % PAGE or size % PAGE or size <= 0:
                bad(n, f"region not page aligned / not whole pages: {line!r}")
            cur.regions.append((start, end, [], n))
            continue
        m = BLOCK.match(line)
        if m:
            if not cur.regions:
                bad(n, "block line before any region line")
                continue
            start, end, size = int(m[1], 16), int(m[2], 16), int(m[3])
            state, name = m[4], m[5]
            if end - start != size:
                bad(n, f"block size {size} != end - start {end - start}")
            if size % 16 or size < 32:
                bad(n, f"block size {size} not a multiple of 16 >= 32")
            cur.regions[-1][2].append((start, end, size, state, name, n))
            continue
        bad(n, f"malformed line: {line!r}")

    for d in dumps:
        check_dump(d, bad)
    if want_dumps is not None and len(dumps) != want_dumps:
        bad(0, f"{len(dumps)} dumps, expected {want_dumps}")
    for p in problems:
        print(p)
    total_regions = sum(len(d.regions) for d in dumps)
    total_blocks = sum(len(r[2]) for d in dumps for r in d.regions)
    print(f"print_check: {len(dumps)} dumps, {total_regions} region lines, "
          f"{total_blocks} block lines, {len(problems)} problems")
    return 1 if problems else 0


def check_dump(d, bad):
    spans = []
    for (rs, re_, blocks, n) in d.regions:
        spans.append((rs, re_, n))
        if not blocks:
            bad(n, "region without blocks")
            continue
        cursor = rs
        total = 0
        prev_free = False
        for (bs, be, size, state, name, bn) in blocks:
            if bs != cursor:
                bad(bn, f"block starts at {bs:#x}, expected {cursor:#x} (blocks must tile the region)")
            cursor = be
            total += size
            if state == "FREE" and prev_free:
                bad(bn, "two adjacent free blocks")
            prev_free = state == "FREE"
        if cursor != re_:
            bad(n, f"blocks end at {cursor:#x}, region ends at {re_:#x}")
        if total != re_ - rs:
            bad(n, f"block sizes sum to {total}, region size is {re_ - rs}")
        if len(blocks) == 1 and blocks[0][3] == "FREE":
            bad(n, "region is one single free block (should have been unmapped)")
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            bad(b[2], f"region overlaps the region at line {a[2]}")


def blocks_of(d):
    for (rs, re_, blocks, n) in d.regions:
        for b in blocks:
            yield b


def check_expect(line, d, n, bad):
    if d is None:
        bad(n, f"expectation before any dump: {line}")
        return
    parts = line.split(" ", 4)
    kind = parts[0]
    try:
        if kind == "#expect":
            state, addr, size = parts[1], int(parts[2], 16), parts[3]
            name = parts[4] if len(parts) > 4 else ""
            hit = [b for b in blocks_of(d) if b[0] == addr]
            if not hit:
                bad(n, f"no block starts at {addr:#x} in the dump at line {d.line_no} ({line})")
                return
            b = hit[0]
            if b[3] != state or (size != "-" and b[2] != int(size)) or b[4] != name:
                bad(n, f"block at {addr:#x} is {b[2]} [{b[3]}] '{b[4]}', expected "
                       f"{size} [{state}] '{name}' (dump at line {d.line_no})")
        elif kind == "#expect-block":
            addr, size = int(parts[1], 16), parts[2]
            hit = [b for b in blocks_of(d) if b[0] == addr]
            if not hit or hit[0][3] != "USED" or (size != "-" and hit[0][2] != int(size)):
                bad(n, f"no USED block of size {size} at {addr:#x}: {hit} (dump at line {d.line_no})")
        elif kind == "#expect-free-covers":
            addr = int(parts[1], 16)
            if not any(b[0] <= addr < b[1] and b[3] == "FREE" for b in blocks_of(d)):
                bad(n, f"no FREE block covers {addr:#x} (dump at line {d.line_no})")
        elif kind == "#expect-no-block":
            addr = int(parts[1], 16)
            if any(r[0] <= addr < r[1] for r in d.regions):
                bad(n, f"a region still covers {addr:#x} (dump at line {d.line_no})")
        elif kind == "#expect-regions":
            if len(d.regions) != int(parts[1]):
                bad(n, f"{len(d.regions)} regions, expected {parts[1]} (dump at line {d.line_no})")
        else:
            bad(n, f"unknown expectation {line!r}")
    except (IndexError, ValueError) as e:
        bad(n, f"bad expectation {line!r}: {e}")


if __name__ == "__main__":
    sys.exit(main())
