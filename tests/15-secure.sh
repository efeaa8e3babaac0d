#!/usr/bin/env bash
# A setuid program linked with the library ignores every ALLOCATOR_* option
# (AT_SECURE, as glibc does for its own malloc settings): run by an
# unprivileged user with ALLOCATOR_TRACE, _STATS and _LEAK_CHECK set, it
# creates no trace file and prints no report. The same binary without the
# setuid bit obeys them (so the test can fail). Needs root (to make a setuid
# binary and run it as nobody); skipped otherwise.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ] || ! command -v runuser >/dev/null || ! id nobody >/dev/null 2>&1; then
  echo "SKIP: needs root, runuser and a 'nobody' user"
  exit 0
fi
dir=$(mktemp -d /tmp/fitalloc-secure.XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
cp "$SO" "$dir/libfitalloc.so"
gcc "${CFLAGS[@]}" -o "$dir/probe" "$ROOT/tests/c/secure.c" -L"$dir" -lfitalloc -Wl,-rpath,"$dir"
mkdir "$dir/out" && chmod 777 "$dir/out"

# runs AS_SETUID: the probe as nobody with the options set; prints stderr
run() {
  if [ "$1" = setuid ]; then chmod 4755 "$dir/probe"; else chmod 0755 "$dir/probe"; fi
  rm -f "$dir/out/"*
  runuser -u nobody -- env ALLOCATOR_TRACE="$dir/out/trace" ALLOCATOR_STATS=1 \
    ALLOCATOR_LEAK_CHECK=1 ALLOCATOR_ALGORITHM=best_fit "$dir/probe" 2>"$dir/err" >"$dir/stdout"
}

run plain || fail "the probe failed without the setuid bit: $(cat "$dir/err")"
[ -e "$dir/out/trace" ] || fail "control: no trace file without the setuid bit (the test could not fail)"
grep -q '^fitalloc: stats' "$dir/err" || fail "control: no statistics without the setuid bit"
grep -q 'blocks lost' "$dir/err" || fail "control: no leak report without the setuid bit"
echo "ok   not setuid: trace file, statistics and leak report, as asked"

run setuid || fail "the setuid probe failed: $(cat "$dir/err")"
grep -q '^ran' "$dir/stdout" || fail "the setuid probe did not run"
[ ! -e "$dir/out/trace" ] || fail "setuid: ALLOCATOR_TRACE created $(ls "$dir/out")"
[ ! -s "$dir/err" ] || fail "setuid: reports on stderr: $(head -c 300 "$dir/err")"
echo "ok   setuid: no trace file, no statistics, no leak report"
