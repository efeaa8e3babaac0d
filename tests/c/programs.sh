# Real programs on fitalloc, compared with the system allocator.
# Sourced (after lib.sh) by tests/2N-programs-<policy>.sh, which set POLICY.
#
# Every program runs twice with the same input, in the same kind of fresh
# directory: once on the C library's malloc (the reference) and once with
# LD_PRELOAD=allocator.so and ALLOCATOR_ALGORITHM=$POLICY. Child processes
# (git's helpers, gcc's cc1/as/ld, sort's helpers, sh -c pipelines) inherit the
# preload, so they run on fitalloc too. For each program the exit status and
# stdout must be identical byte for byte, and fitalloc must not have printed
# anything on stderr ("fitalloc: ..." lines). Every program is run even after
# a failure; the case fails at the end with the list of programs that failed.
#
# Nondeterminism is removed at the source, not by filtering the content:
# fixed LC_ALL/TZ/HOME, generated inputs (no $RANDOM, no clock), fixed git
# author/committer dates, sorted hash keys in perl and python, a fixed
# -frandom-seed for gcc, tar --sort=name. Only df (its numbers change between
# runs) and ps (pids) are reduced to their stable columns.
#
# PROGRAMS_KEEP=1 keeps the outputs in $BUILD/tmp/programs-$POLICY.

: "${POLICY:?POLICY must be set}"
T=$BUILD/tmp/programs-$POLICY
rm -rf "$T"
mkdir -p "$T/in"
export LC_ALL=C TZ=UTC HOME=$T/home GIT_CONFIG_NOSYSTEM=1 PAGER=cat
mkdir -p "$HOME"
TMO=${PROGRAMS_TIMEOUT:-180}
failures=()
passes=()

# ---------------------------------------------------------------------------
# Inputs, generated once per case (deterministic: no $RANDOM, no clock).

# ~5 MB of lines "word<TAB>number<TAB>text" from a 32-bit LCG.
awk 'BEGIN {
  x = 12345
  for (i = 0; i < 110000; i++) {
    x = (x * 1103515245 + 12345) % 2147483648; a = x
    x = (x * 1103515245 + 12345) % 2147483648; b = x
    w = ""
    for (k = 0; k < 6 + a % 9; k++) w = w sprintf("%c", 97 + (int(a / (k + 1)) + b) % 26)
    printf "%s\t%d\t%08x-%d-%s\n", w, b % 100000, a, i, substr("lorem ipsum dolor sit amet consectetur adipiscing", 1 + b % 20, 5 + a % 17)
  }
}' >"$T/in/sort.txt"

cat >"$T/in/py.py" <<'EOF'
import json, re, sqlite3, hashlib
from concurrent.futures import ThreadPoolExecutor

db = sqlite3.connect(":memory:")
db.execute("create table t (id integer primary key, name text, grp int, val real, doc text)")
rows = []
x = 7
for i in range(5000):
    x = (x * 1103515245 + 12345) % 2**31
    name = "item-%05d-%s" % (i, "abcdefghijklmnopqrstuvwxyz"[x % 26] * (1 + x % 7))
    doc = json.dumps({"i": i, "tags": ["t%d" % (x % 13), "u%d" % (x % 5)],
                      "nested": {"x": x, "s": name[::-1]}}, sort_keys=True)
    rows.append((i, name, x % 17, (x % 10007) / 7.0, doc))
db.executemany("insert into t values (?,?,?,?,?)", rows)
db.execute("create index t_grp on t(grp)")
db.commit()
for grp, n, s in db.execute("select grp, count(*), round(sum(val), 3) from t group by grp order by grp"):
    print("grp", grp, n, s)
pat = re.compile(r"item-(\d+)-([a-z])\2{2,}$")
hits = 0
h = hashlib.sha256()
for (i, name, doc) in db.execute("select id, name, doc from t where grp in (1, 3, 5) order by name desc"):
    m = pat.match(name)
    d = json.loads(doc)
    assert d["i"] == i and d["nested"]["s"] == name[::-1]
    if m:
        hits += 1
        h.update(m.group(1).encode())
    h.update(json.dumps(d, sort_keys=True).encode())
print("hits", hits, h.hexdigest())
big = json.loads(json.dumps([dict(zip("abcdef", range(k, k + 6))) for k in range(20000)]))
print("big", len(big), sum(d["f"] for d in big))
words = re.findall(r"[a-z]+", " ".join(r[1] for r in rows))
print("words", len(words), sorted(set(words))[:5])
db.execute("delete from t where val > 500")
print("left", db.execute("select count(*) from t").fetchone()[0])
print(db.execute("select name from t order by val desc, id limit 3").fetchall())

def work(k):  # threads building and dropping many objects at once
    d = {("key%d" % i): [i, str(i) * (i % 50), {"k": k}] for i in range(20000)}
    s = json.dumps(d, sort_keys=True)
    return hashlib.md5(s.encode()).hexdigest(), len(re.findall(r'"key\d+7"', s))
with ThreadPoolExecutor(max_workers=4) as ex:
    for h, n in ex.map(work, range(8)):
        print("thread", h, n)
EOF

cat >"$T/in/pl.pl" <<'EOF'
use strict; use warnings;
my (%h, %count, @list);
my $x = 11;
for my $i (0 .. 199999) {
    $x = ($x * 1103515245 + 12345) % 2147483648;
    my $k = sprintf("k%06d_%s", $x % 150000, join("", map { chr(97 + ($x >> $_) % 26) } 0 .. 4));
    $h{$k} .= "$i,";
    push @list, [$x % 1000, $k];
}
for my $k (keys %h) {
    my $n = () = $h{$k} =~ /(\d+),/g;
    $count{$n}++;
    delete $h{$k} if $k =~ /^k\d*7_[aeiou]/;
}
print "keys ", scalar(keys %h), "\n";
print "n=$_: $count{$_}\n" for sort { $a <=> $b } keys %count;
my @s = sort { $a->[0] <=> $b->[0] or $a->[1] cmp $b->[1] } @list;
print join(" ", map { "$_->[0]:$_->[1]" } @s[0 .. 4, -5 .. -1]), "\n";
my $text = join(" ", map { $_->[1] } @list[0 .. 49999]);
(my $t2 = $text) =~ s/k(\d+)_([a-z]+)/<$2:$1>/g;
my @m = $t2 =~ /<([aeiou][a-z]*):(\d+)>/g;
print "matches ", scalar(@m), " len ", length($t2), "\n";
my %rev = reverse %h;
print "rev ", scalar(keys %rev), "\n";
print join(",", (sort keys %h)[0 .. 9]), "\n";
EOF

# A C file with a few hundred functions that call each other, and a main
# that prints a checksum.
{
  echo '#include <stdio.h>'
  echo '#include <string.h>'
  for i in $(seq 0 399); do
    echo "static unsigned long f$i(unsigned long x);"
  done
  for i in $(seq 0 399); do
    j=$(( (i * 7 + 3) % 400 ))
    cat <<EOF
struct s$i { int a[$(( i % 13 + 1 ))]; double d; char name[$(( i % 29 + 3 ))]; };
static unsigned long f$i(unsigned long x) {
  struct s$i v; memset(&v, 0, sizeof v);
  for (int k = 0; k < $(( i % 13 + 1 )); k++) v.a[k] = (int)(x >> k) + $i;
  v.d = (double)x / ($i + 1.5);
  snprintf(v.name, sizeof v.name, "f$i-%lu", x % 97);
  unsigned long r = x * $(( 2 * i + 1 ))UL + (unsigned long)v.a[$(( i % 13 ))] + strlen(v.name) + (unsigned long)v.d;
  if ($j > $i && (x & 3) == 0) r ^= f$j(x >> 2);
  return r;
}
EOF
  done
  echo 'int main(void) {'
  echo '  unsigned long sum = 0;'
  for i in $(seq 0 399); do echo "  sum += f$i(${i}UL * 2654435761UL);"; done
  echo '  printf("sum %lu\n", sum);'
  echo '  return 0;'
  echo '}'
} >"$T/in/gen.c"

cat >"$T/in/git.sh" <<'EOF'
set -e
export GIT_AUTHOR_NAME=Tester GIT_AUTHOR_EMAIL=t@example.com
export GIT_COMMITTER_NAME=Tester GIT_COMMITTER_EMAIL=t@example.com
git init -q -b main repo
cd repo
git config gc.autoDetach false
git config core.fsyncMethod batch
for c in 0 1 2 3 4; do
  for i in $(seq 0 79); do
    n=$((c * 80 + i))
    mkdir -p "d$((n % 10))"
    { echo "file $n commit $c"; seq $n $((n + 40 + c)); } >"d$((n % 10))/f$n.txt"
    [ $c -gt 0 ] && [ $((i % 3)) -eq 0 ] && echo "edit $c" >>"d$((i % 10))/f$i.txt"
  done
  git add -A
  t=$((1700000000 + c * 3600))
  GIT_AUTHOR_DATE="$t +0000" GIT_COMMITTER_DATE="$t +0000" git commit -q -m "commit $c"
done
git rm -q -r d3
GIT_AUTHOR_DATE="1700100000 +0000" GIT_COMMITTER_DATE="1700100000 +0000" git commit -q -m "remove d3"
git log --stat
git gc -q --aggressive
git fsck --full --no-progress
git count-objects -v | grep -E '^(count|in-pack|packs|garbage):'
git cat-file --batch-all-objects --batch-check
git log --format='%H %s' | sha1sum
git show --stat HEAD~2 | tail -n 3
git diff --stat HEAD~4 HEAD | tail -n 1
EOF

# ---------------------------------------------------------------------------
# run_both NAME COMMAND: runs the shell COMMAND (a string, run by bash in a
# fresh working directory $T/<ref|fit>/NAME) once per allocator and compares.
run_both() {
  local name=$1 cmd=$2 side rc
  for side in ref fit; do
    local d=$T/$side/$name
    mkdir -p "$d"
    rc=0
    if [ $side = ref ]; then
      (cd "$d" && timeout "$TMO" bash -c "$cmd") >"$d.out" 2>"$d.err" || rc=$?
    else
      (cd "$d" && ALLOCATOR_ALGORITHM=$POLICY LD_PRELOAD=$SO timeout "$TMO" bash -c "$cmd") \
        >"$d.out" 2>"$d.err" || rc=$?
    fi
    echo $rc >"$d.rc"
  done
  local why=""
  [ "$(cat "$T/ref/$name.rc")" = 0 ] ||
    echo "note: $name exits $(cat "$T/ref/$name.rc") on the system allocator" >&2
  [ "$(cat "$T/ref/$name.rc")" = "$(cat "$T/fit/$name.rc")" ] ||
    why+=" exit status $(cat "$T/fit/$name.rc") (system: $(cat "$T/ref/$name.rc"))"
  [ "$(cat "$T/fit/$name.rc")" != 124 ] || why+=" (timed out after ${TMO}s)"
  cmp -s "$T/ref/$name.out" "$T/fit/$name.out" || why+=" stdout differs"
  [ -s "$T/ref/$name.out" ] || why+=" reference stdout is empty"
  ! grep -q 'fitalloc:' "$T/fit/$name.err" || why+=" fitalloc wrote to stderr"
  if [ -n "$why" ]; then
    echo "FAIL $name:$why"
    echo "  command: $cmd"
    if ! cmp -s "$T/ref/$name.out" "$T/fit/$name.out"; then
      { diff "$T/ref/$name.out" "$T/fit/$name.out" || :; } | head -n 20 | sed 's/^/  | /' || :
    fi
    echo "  stderr on fitalloc:"
    tail -n 10 "$T/fit/$name.err" | sed 's/^/  ! /' || :
    failures+=("$name")
  else
    printf 'ok   %-8s %7s bytes of stdout\n' "$name" "$(wc -c <"$T/fit/$name.out")"
    passes+=("$name")
  fi
}

IN=$T/in
run_both ls 'ls -la --time-style=full-iso /usr/bin'
run_both find 'find /usr/include -name "*.h" | sort'
run_both sort "sort $IN/sort.txt; sort -t '	' -k2,2n -k1,1 -S 1M -T . --parallel=2 $IN/sort.txt | md5sum; sort -u -k3 $IN/sort.txt | tail -n 5"
run_both python "python3 $IN/py.py"
run_both perl "perl $IN/pl.pl"
run_both git "bash $IN/git.sh"
# The object file itself must be identical (same source path, fixed seed),
# and so must the symbol table and what the linked program prints.
run_both gcc "cp $IN/gen.c . && gcc -O2 -frandom-seed=1 -c gen.c -o gen.o && md5sum gen.o && nm gen.o && gcc -O1 gen.c -o gen && ./gen"
# The archive of /usr/include (ordered, owner and mtime as on disk), its
# listing, and a re-extraction of part of it.
run_both tar "tar --sort=name -cf inc.tar -C /usr include && tar tvf inc.tar && md5sum inc.tar && tar xf inc.tar include/stdio.h include/linux && find include -type f | sort | xargs md5sum | md5sum && rm -rf inc.tar include"
# df: the numbers change between runs; compare the header, the filesystem,
# the mount point and the column count.
run_both df 'df -h / | awk "NR == 1 { print; next } { print \$1, \$NF, NF }"'
# ps: a fixed process set (pid 1 and a sleep we start), with stable columns.
# (ps waits until the child has exec'd sleep: before that, under load, it
# is still a copy of bash.) The pid fields are replaced by field, not by
# text (pid 1's arguments may hold the same number), and spaces squeezed:
# ps pads pids to the widest, which differs between the two runs when a pid
# gains a digit.
run_both ps 'sleep 60 & s=$!; for i in $(seq 500); do [ "$(cat /proc/$s/comm 2>/dev/null)" = sleep ] && break; sleep 0.01; done; ps -o pid=,ppid=,comm=,args= -p 1,$s | while read -r pid ppid rest; do [ "$pid" = "$s" ] && pid=SLEEP; [ "$ppid" = "$$" ] && ppid=SHELL; echo "$pid $ppid $rest"; done | tr -s " "; ps -p 1 -o comm=; kill $s'

echo "policy $POLICY: ${#passes[@]} programs pass (${passes[*]:-none}), ${#failures[@]} fail (${failures[*]:-none})"
if [ ${#failures[@]} -gt 0 ]; then
  echo "outputs kept in $T" >&2
  fail "programs differing or crashing on fitalloc ($POLICY): ${failures[*]}"
fi
[ -n "${PROGRAMS_KEEP:-}" ] || rm -rf "$T"
