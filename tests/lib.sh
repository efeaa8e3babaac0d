# Shared helpers for the numbered cases; source it first:
#   . "$(dirname "$0")/lib.sh"
# A case may also be run by hand: bash tests/NN-name.sh (after `make`).
set -euo pipefail
# A command that stops a case through set -e says which one it was (in
# functions and substitutions too): otherwise a pipeline killed by SIGPIPE,
# or a command whose stderr went to a file, ends the case with no word.
set -E
trap 'echo "FAIL: line $LINENO of ${BASH_SOURCE[0]##*/}: \`$BASH_COMMAND\` exited $?" >&2' ERR
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SO=${SO:-$ROOT/allocator.so}
BUILD=${BUILD:-$ROOT/tests/build}
POLICIES=(first_fit next_fit best_fit worst_fit)
mkdir -p "$BUILD/bin" "$BUILD/tmp"
[ -f "$SO" ] || { echo "allocator.so missing: run make first" >&2; exit 1; }

CFLAGS=(-O1 -g -Wall -Wextra -Werror -pthread -I"$ROOT/include")

# build NAME SOURCE... [gcc flags]: compiles into $BUILD/bin/NAME, prints the path.
build() {
  local name=$1; shift
  gcc "${CFLAGS[@]}" -o "$BUILD/bin/$name" "$@" || return 1
  echo "$BUILD/bin/$name"
}

# build_linked NAME SOURCE...: like build, but links the library under test
# ($SO) directly, through its SONAME libfitalloc.so (no LD_PRELOAD needed).
build_linked() {
  local name=$1; shift
  mkdir -p "$BUILD/lib"
  ln -sf "$SO" "$BUILD/lib/libfitalloc.so"
  gcc "${CFLAGS[@]}" -o "$BUILD/bin/$name" "$@" -L"$BUILD/lib" -lfitalloc -Wl,-rpath,"$BUILD/lib" || return 1
  echo "$BUILD/bin/$name"
}

# expect_ok NAME WHAT ENV: runs $BUILD/bin/NAME on fitalloc with ENV (VAR=value
# words) added to the environment, its output in $BUILD/tmp/NAME.log; it passes
# when it exits 0 with "NAME: ok" as its last line. Prints "ok   WHAT under ENV",
# or FAIL with the log and returns 1.
expect_ok() {
  local name=$1 what=$2 env=$3 rc=0 log=$BUILD/tmp/$1.log
  # shellcheck disable=SC2086
  timeout 120 env $env LD_PRELOAD="$SO" "$BUILD/bin/$name" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || [ "$(tail -n 1 "$log")" != "$name: ok" ]; then
    echo "FAIL: $what under $env (exit status $rc$([ $rc = 124 ] && echo ': timed out')):"
    sed 's/^/    /' "$log"
    return 1
  fi
  echo "ok   $what under $env"
}

# preload CMD...: runs CMD on fitalloc.
preload() { LD_PRELOAD=$SO "$@"; }

fail() { echo "FAIL: $*" >&2; exit 1; }
