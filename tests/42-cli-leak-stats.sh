#!/usr/bin/env bash
# The leak report and the statistics, through `fitalloc run` (SPEC §4):
# - --leak-check on tests/c/cli_leak.c, which leaks 3 known blocks (one
#   named): the report lists exactly those blocks, as
#   "  [BLOCK 0xSTART-0xEND] SIZE [USED] 'name'" lines with the addresses and
#   sizes the program computed, and ends with "3 blocks lost (704 bytes)".
# - --stats on a program making a known number of calls of each function:
#   the calls line matches the program's own count exactly; every documented
#   key is there; peak in use >= the bytes the program held at once;
#   mapped peak >= in use peak; everything freed: in use now 0, mapped now 0,
#   regions unmapped = regions mapped.
# Under each of the four policies.
. "$(dirname "$0")/lib.sh"
FA=$ROOT/fitalloc
[ -x "$FA" ] || fail "$FA missing: run make first"
prog=$(build cli_leak "$ROOT/tests/c/cli_leak.c")
tmp=$BUILD/tmp/cli-leak
rm -rf "$tmp"
mkdir -p "$tmp"
status=0
checks=0
check() { # check LABEL CONDITION-RESULT(0/1) DETAIL
  checks=$((checks + 1))
  if [ "$2" -eq 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; status=1; fi
}

for p in "${POLICIES[@]}"; do
  "$FA" run --policy "$p" --leak-check -- "$prog" leak >"$tmp/leak-$p.out" 2>"$tmp/leak-$p.err" ||
    fail "cli_leak leak under $p failed: $(tail -n 3 "$tmp/leak-$p.err")"
  # What the program says must be reported, in list order.
  sed -n "s/^LEAK \(0x[0-9a-f]*\) \(0x[0-9a-f]*\) \([0-9]*\) \('.*'\)$/  [BLOCK \1-\2] \3 [USED] \4/p" \
    "$tmp/leak-$p.out" >"$tmp/leak-$p.want"
  total=$(sed -n 's/^TOTAL \([0-9]*\) \([0-9]*\)$/\1 blocks lost (\2 bytes)/p' "$tmp/leak-$p.out")
  grep '^  \[BLOCK ' "$tmp/leak-$p.err" >"$tmp/leak-$p.got" || true
  r=0; cmp -s "$tmp/leak-$p.want" "$tmp/leak-$p.got" || r=1
  check "leak report lists exactly the 3 leaked blocks [$p]" $r "$(diff "$tmp/leak-$p.want" "$tmp/leak-$p.got" | head -n 8)"
  r=0; [ "$total" = "3 blocks lost (704 bytes)" ] && [ "$(tail -n 1 "$tmp/leak-$p.err")" = "$total" ] || r=1
  check "leak report ends with '$total' [$p]" $r "last line: $(tail -n 1 "$tmp/leak-$p.err")"
  r=0; grep -q "\[USED\] 'leaked config'$" "$tmp/leak-$p.err" || r=1
  check "the named block shows its name [$p]" $r "$(cat "$tmp/leak-$p.err")"

  "$FA" run --policy "$p" --stats -- "$prog" stats >"$tmp/stats-$p.out" 2>"$tmp/stats-$p.err" ||
    fail "cli_leak stats under $p failed: $(tail -n 3 "$tmp/stats-$p.err")"
  err=$tmp/stats-$p.err
  want=$(sed -n 's/^CALLS /calls: /p' "$tmp/stats-$p.out")
  got=$(sed -n 's/^ *\(calls: .*\)$/\1/p' "$err")
  r=0; [ -n "$want" ] && [ "$want" = "$got" ] || r=1
  check "stats: calls per function match the program's [$p]" $r "want '$want', got '$got'"
  r=0; grep -q "^fitalloc: stats (policy $p" "$err" || r=1
  check "stats: title names the policy [$p]" $r "$(head -n 1 "$err")"
  key() { sed -n "s/^ *$1: \([0-9.]*\).*/\1/p" "$err"; }
  missing=""
  for k in "in use now" "in use peak" "mapped now" "mapped peak" "regions mapped" "regions unmapped" "fragmentation at peak"; do
    [ -n "$(key "$k")" ] || missing+="'$k' "
  done
  r=0; [ -z "$missing" ] || r=1
  check "stats: every documented key is there [$p]" $r "missing $missing in: $(cat "$err")"
  live=$(sed -n 's/^LIVE //p' "$tmp/stats-$p.out")
  r=0
  [ "$(key "in use peak")" -ge "$live" ] && [ "$(key "mapped peak")" -ge "$(key "in use peak")" ] &&
    [ "$(key "in use now")" -eq 0 ] && [ "$(key "mapped now")" -eq 0 ] &&
    [ "$(key "regions mapped")" -ge 1 ] && [ "$(key "regions unmapped")" -eq "$(key "regions mapped")" ] || r=1
  check "stats: peak in use >= $live held at once, mapped >= in use, all freed and unmapped [$p]" $r "$(cat "$err")"
  # fragmentation at peak = mapped at that moment / in use - 1 >= 0, 3 decimals
  r=0; grep -Eq '^ *fragmentation at peak: [0-9]+\.[0-9]{3}$' "$err" || r=1
  check "stats: fragmentation at peak has 3 decimals [$p]" $r "$(grep fragmentation "$err")"
done

echo "cli-leak-stats: $checks checks"
[ "$status" -eq 0 ] || fail "leak / stats checks failed (see above)"
