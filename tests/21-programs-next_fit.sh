#!/usr/bin/env bash
# Real programs (ls, find, sort, python3, perl, git, gcc, tar, df, ps) on
# fitalloc with ALLOCATOR_ALGORITHM=next_fit: same exit status and stdout as on the
# system allocator, and no fitalloc diagnostics. See tests/c/programs.sh.
. "$(dirname "$0")/lib.sh"
POLICY=next_fit
. "$ROOT/tests/c/programs.sh"
