#!/usr/bin/env bash
# Runs fuzz targets (cargo-fuzz, libFuzzer) for a while each.
#   fuzz/run.sh SECONDS [TARGET...]     no TARGET: every target of fuzz/Cargo.toml
# `make fuzz` calls it (FUZZ_SECONDS, FUZZ_TARGETS); tests/44-fuzz-smoke.sh too.
#
# Needs `cargo +nightly` and cargo-fuzz (`cargo install cargo-fuzz`): without
# them it prints a SKIP line and succeeds.
#
# Each target starts from its seeds (fuzz/corpus/TARGET, kept in git) and
# what earlier runs found (fuzz/work/TARGET, not kept; new inputs go there),
# with the libFuzzer flags of fuzz/options/TARGET if it exists (paths in it
# are relative to the repository). A crash, a hang (over 10 s for one
# input) or running out of memory stops the run with an error: the input is
# in fuzz/artifacts/TARGET/ and this script says how to reproduce it. At the
# end, one line per target: executions, coverage (cov: edges, ft: features),
# corpus size, exec/s and peak memory, from libFuzzer.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "SKIP fuzzing: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "SKIP fuzzing: cargo-fuzz is not installed (cargo install cargo-fuzz)"
  exit 0
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets in fuzz/Cargo.toml" >&2; exit 1; }

mkdir -p logs
# libFuzzer runs in rounds of at most FUZZ_ROUND_SECONDS (default 120), each
# a fresh process that starts from the corpus the previous one grew: memory
# a target leaks per input (a dropped fitalloc Heap keeps its index table)
# is given back every round instead of piling up for the whole run.
round=${FUZZ_ROUND_SECONDS:-120}
summary=() status=0
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
  opts=()
  [ -f "options/$t" ] && read -r -a opts <"options/$t"
  log=logs/$t.log
  : >"$log"
  echo "== $t: ${seconds}s, options: ${opts[*]:-none} (log: fuzz/$log)"
  left=$seconds rounds=0 rc=0
  while [ "$left" -gt 0 ] && [ $rc -eq 0 ]; do
    s=$((left < round ? left : round))
    left=$((left - s)) rounds=$((rounds + 1))
    # cargo fuzz runs from the directory above fuzz/.
    (cd .. && cargo +nightly fuzz run "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$s" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" "${opts[@]}") >>"$log" 2>&1
    rc=$?
  done
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  if [ $rc -eq 0 ] && [ -n "$done_line" ]; then
    stats=$(awk '/^stat::number_of_executed_units:/ {runs += $2}
                 /^stat::peak_rss_mb:/ {if ($2 > rss) rss = $2}
                 END {printf "%d executions (%d/s), peak RSS %d MB", runs, runs / '"$seconds"', rss}' "$log")
    cov=$(sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [0-9]+).*/\1/' <<<"$done_line")
    summary+=("OK    $t: ${seconds}s in $rounds round(s): $stats; $cov inputs")
  else
    status=1
    art=$(ls -t "artifacts/$t"/* 2>/dev/null | head -n 1)
    summary+=("FAIL  $t: exit $rc; see fuzz/$log${art:+; input: fuzz/$art}")
    tail -n 40 "$log" | sed 's/^/    | /'
    if [ -n "$art" ]; then
      echo "  reproduce: cargo +nightly fuzz run $t fuzz/$art"
    fi
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
