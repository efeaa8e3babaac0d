#!/usr/bin/env bash
# clippy with warnings as errors, and rustfmt.
set -euo pipefail
cd "$ROOT"
cargo clippy --workspace --all-targets -- -D warnings
cargo fmt --all --check
# The crate's documentation builds without warnings (and its doctests run in 01).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p fitalloc
