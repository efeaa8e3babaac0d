#!/usr/bin/env bash
# make install PREFIX=...: the library, header and pkg-config file; a C program
# built with `pkg-config --cflags --libs fitalloc` links libfitalloc directly
# (no LD_PRELOAD), names blocks and prints the heap.
. "$(dirname "$0")/lib.sh"
prefix=$BUILD/tmp/prefix
rm -rf "$prefix"
make -s -C "$ROOT" install PREFIX="$prefix" >/dev/null
for f in lib/libfitalloc.so include/allocator.h lib/pkgconfig/fitalloc.pc; do
  [ -f "$prefix/$f" ] || fail "make install did not install $f"
done
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --cflags --libs fitalloc) || fail "pkg-config does not know fitalloc"
# shellcheck disable=SC2086
gcc -Wall -Wextra -Werror -o "$BUILD/bin/named_heap" "$ROOT/examples/c/named_heap.c" $flags
# (ldd's output is taken whole first: with pipefail, `ldd | grep -q` fails
# whenever grep stops reading before ldd has written everything.)
libs=$(ldd "$BUILD/bin/named_heap")
grep -q "libfitalloc.so => $prefix/lib/libfitalloc.so" <<<"$libs" \
  || fail "the example is not linked against the installed libfitalloc.so: $libs"
out=$(env -u LD_PRELOAD "$BUILD/bin/named_heap")
echo "$out"
grep -q '^-- Current Memory State --$' <<<"$out" || fail "no heap title"
grep -Eq "^  \[BLOCK 0x[0-9a-f]+-0x[0-9a-f]+\] 160 \[USED\] 'config'$" <<<"$out" \
  || fail "the 'config' block (100 bytes + 16 header + 32 name = 160 (rounded)) is missing"
grep -Eq "\[USED\] 'a very long name that will be c'$" <<<"$out" || fail "name not cut at 31 bytes"
grep -Eq "^  \[BLOCK 0x[0-9a-f]+-0x[0-9a-f]+\] 256 \[FREE\] 'parser state'$" <<<"$out" \
  || fail "the freed middle block (200 + 16 + 32 = 256) is not shown free with its name (SPEC §5)"
