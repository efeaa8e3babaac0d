#!/usr/bin/env bash
# clippy with warnings as errors, and rustfmt.
set -euo pipefail
cd "$ROOT"
cargo clippy --workspace --all-targets -- -D warnings
cargo fmt --all --check
