#!/usr/bin/env bash
# The fitalloc command's Rust tests: unit tests (trace decoding and pointer
# resolution, dump parsing, layout text, SVG geometry and capping) and the
# end-to-end tests in crates/cli/tests/cli.rs (assert_cmd): help, replay
# (table, JSON, --at-mark/--at, --layout, skipped operations), map (SVG is
# well-formed XML with one <rect> per block, PNG, dumps, --compare, capping),
# run (environment, exit status and signals, reports, traces, finding
# allocator.so) and every error path (missing file, bad magic, bad record,
# unknown policy, bad arguments). Input that is not a trace (/dev/zero, a
# text file, `yes |`) must fail within seconds (a timeout turns a regression
# into a failure, not a hang); a trace cut short mid-record replays with a
# warning.
# The dev profile: a fresh build of the command's dependencies (clap, resvg,
# ...) costs about half the CPU time of an optimised one, and these tests
# replay only small traces.
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
FITALLOC_SO=$SO cargo test -p fitalloc-cli
