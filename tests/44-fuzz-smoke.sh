#!/usr/bin/env bash
# Fuzz smoke test: each fuzz target of fuzz/Cargo.toml (trace_replay: bytes
# as a trace replayed under every policy; dump_parse: bytes as print_memory
# output drawn as SVG; any target added later) runs for 60 s from its seeds
# through fuzz/run.sh, and must not crash, hang or run out of memory.
# Without `cargo +nightly` or cargo-fuzz it prints SKIP and passes. The
# first run builds the targets with sanitizers (several minutes).
# Longer runs: make fuzz (FUZZ_SECONDS, FUZZ_TARGETS).
. "$(dirname "$0")/lib.sh"
"$ROOT/fuzz/run.sh" 60
