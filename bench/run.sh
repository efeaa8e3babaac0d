#!/bin/bash
# make bench [args='...']: the fitalloc benchmark harness (see bench/README.md).
#   1. checks ./allocator.so (run `make` first);
#   2. installs the comparison allocators and strace with apt-get when running
#      as root and they are missing (skip: --no-install or BENCH_NO_INSTALL=1);
#   3. compiles the C workloads (bench/src/*.c, -O2 -Wall) into bench/build/;
#   4. runs bench/bench.py with the same arguments (bench/instr.py for
#      `make instr`, whose first argument is --instructions).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f allocator.so ]; then
    echo "bench: ./allocator.so is missing: run 'make' first" >&2
    exit 1
fi

no_install=${BENCH_NO_INSTALL:-}
instr=""
for a in "$@"; do
    case $a in --no-install) no_install=1 ;; esac
done
# `make instr`: the same workloads under callgrind (bench/instr.py); it needs
# valgrind, not the comparison allocators.
if [ "${1:-}" = --instructions ]; then
    instr=1 no_install=1
    shift
fi

ma=$(gcc -print-multiarch 2>/dev/null || true)
have_lib() {
    local d
    for d in ${ma:+/usr/lib/$ma /lib/$ma} /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
        [ -e "$d/$1" ] && return 0
    done
    return 1
}
missing=()
have_lib libjemalloc.so.2 || missing+=(libjemalloc2)
have_lib libtcmalloc_minimal.so.4 || missing+=(libtcmalloc-minimal4)
have_lib libmimalloc.so.2 || missing+=(libmimalloc2.0)
command -v strace >/dev/null || missing+=(strace)
if [ ${#missing[@]} -gt 0 ] && [ -z "$instr" ]; then
    if [ -n "$no_install" ]; then
        echo "bench: not installing ${missing[*]} (--no-install): those columns/counts are skipped" >&2
    elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "bench: missing ${missing[*]}; cannot install (needs root and apt-get): those columns/counts are skipped" >&2
    else
        echo "bench: installing ${missing[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
            apt-get update -qq >/dev/null 2>&1 || true
            apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
                echo "bench: apt-get install ${missing[*]} failed: those columns/counts are skipped" >&2
        fi
    fi
fi

mkdir -p bench/build
for src in bench/src/*.c; do
    out=bench/build/$(basename "$src" .c)
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ bench/src/common.h -nt "$out" ]; then
        gcc -O2 -Wall -Wextra -o "$out" "$src" -pthread -lm -ldl
    fi
done

if [ -n "$instr" ]; then
    exec python3 bench/instr.py "$@"
fi
exec python3 bench/bench.py "$@"
