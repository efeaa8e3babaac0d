#!/usr/bin/env bash
# The Rust tests: unit tests, the smoke test and the model-based differential
# test (every policy), in release mode for speed (debug assertions stay on).
set -euo pipefail
cd "$ROOT"
cargo test --profile test-release -p fitalloc
