#!/usr/bin/env bash
# Regenerates pgo/fitalloc.profdata, the profile `make` builds allocator.so
# with (profile-guided optimisation: LLVM lays out and allocates registers
# for the paths the profile says are hot). Run it (`make pgo`) after changing
# the allocator's code: a function whose control flow changed since the
# profile was taken loses its profile data (the build warns: "function
# control flow change detected (hash mismatch)"), so a stale profile only
# loses part of the gain.
#
# Training: an instrumented build of the library runs make test's real
# programs (tests/2[0-3]-programs-*.sh: ls, find, sort, python, perl, git,
# gcc, tar, df, ps, each under its policy, outputs compared with glibc's) and
# test 28's stress program (threads, cross-thread frees, fork) under every
# policy. None of it is a bench workload: the benchmarks measure what the
# profile does to programs it did not see. Check mode and tracing are left
# out on purpose: their code is then laid out as cold (check mode's churn
# runs 5-20% slower than without a profile), and even a short check-mode run
# in the training costs the default mode 1% (churn 964 -> 974 instructions
# per malloc+free under callgrind).
#
# Needs llvm-profdata from LLVM 19 or newer (rustc 1.95's raw profiles;
# Debian 12: apt-get install llvm-19), or LLVM_PROFDATA=path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

profdata=${LLVM_PROFDATA:-}
if [ -z "$profdata" ]; then
  for v in 25 24 23 22 21 20 19; do
    if command -v "llvm-profdata-$v" >/dev/null 2>&1; then
      profdata=llvm-profdata-$v
      break
    fi
  done
fi
[ -n "$profdata" ] || {
  echo "pgo: no llvm-profdata of LLVM 19 or newer (apt-get install llvm-19, or set LLVM_PROFDATA)" >&2
  exit 1
}

raw=$(mktemp -d)
train=$ROOT/target/pgo-train
trap 'rm -rf "$raw"' EXIT
rm -rf "$train"
mkdir -p "$train"

RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" \
  ${CARGO:-cargo} build --release -p fitalloc-preload --target-dir target/pgo-gen
so=$ROOT/target/pgo-gen/release/libfitalloc_preload.so

for t in tests/2[0-3]-programs-*.sh; do
  SO=$so BUILD=$train bash "$t" | tail -n 1
done
# The tests' helpers: their policy list and their compiler flags.
SO=$so BUILD=$train
. tests/lib.sh
stress=$(build stress tests/c/stress.c)
for p in "${POLICIES[@]}"; do
  ALLOCATOR_ALGORITHM=$p LD_PRELOAD=$so "$stress" seed=1 threads=4 ops=60000 forks=10 | tail -n 1
done

"$profdata" merge -o pgo/fitalloc.profdata "$raw"/*.profraw
echo "pgo: wrote pgo/fitalloc.profdata ($(wc -c <pgo/fitalloc.profdata) bytes, $("$profdata" --version | sed -n 's/.*LLVM version //p'))"
