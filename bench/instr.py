#!/usr/bin/env python3
"""Instructions per operation under callgrind: the noise-free witness for
speed work (`make instr`, through bench/run.sh, which compiles the workloads).

Each workload runs twice per allocator under `valgrind --tool=callgrind`,
with a small and a large operation count; the difference of the two
programs' instruction totals divided by the difference of their operation
counts is the cost of one operation, with the setup (and valgrind's own
start-up) cancelled out. Deterministic: the same library gives the same
figures on any machine load.

    bench/instr.py [--only churn,frag,...] [--policies] [--programs] [--so PATH]

Rows (an operation is one malloc plus one free):
  churn           row a: live=20000, ops 100000 vs 200000
  frag-n1e2/1e5   row b: n holes, iters 20000 vs 120000 (110,000 steps apart)
  frag2-n1e2/1e4  row b': n distinct hole sizes, iters 20000 vs 120000
  pair            churn with one live block (live=1): every operation frees
                  it and allocates another of 8..512 B, nothing to search:
                  the fixed cost of a call
  pc-1t           row c producer/consumer 1T (a worker thread hands each
                  block to itself through a queue, then frees it), ops
                  100000 vs 200000
  private-1t      row c private 1T (random frees and mallocs of 16 B-32 KiB
                  in a worker thread's array of 1024), steps 100000 vs 200000
  realloc         row d, nvec 5000 vs 10000: per realloc (the count is the
                  one the program prints after its checksum; an operation
                  here is one realloc, not a malloc+free)
With --policies, fitalloc runs the frag rows under all four policies.
With --programs, a second table gives the instructions of whole runs of
row f's allocation-heavy programs (python3 PYTHONMALLOC=malloc and perl at
a tenth of their bench scale): these count the program's own work too, so
their ratio is what the time ratio would be if every instruction cost the
same. (python varies by up to about 1% between runs even with a fixed hash
seed.)
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BUILD = os.path.join(BENCH, "build")
POLICIES = ["first_fit", "next_fit", "best_fit", "worst_fit"]


def rows():
    b = lambda name: os.path.join(BUILD, name)
    # (key, argv for a count, small count, large count, operations per
    # count unit, whether the policies matter)
    steps = 1.1  # frag's warm-up is iters/10 + 1 steps more
    return [
        ("churn", lambda k: [b("churn"), "live=20000", "ops=%d" % k], 100000, 200000, 1.0, False),
        ("pair", lambda k: [b("churn"), "live=1", "ops=%d" % k], 100000, 200000, 1.0, False),
        ("frag-n1e2", lambda k: [b("frag"), "n=100", "iters=%d" % k], 20000, 120000, steps, True),
        ("frag-n1e5", lambda k: [b("frag"), "n=100000", "iters=%d" % k], 20000, 120000, steps, True),
        ("frag2-n1e2", lambda k: [b("frag_distinct"), "n=100", "iters=%d" % k], 20000, 120000, steps, True),
        ("frag2-n1e4", lambda k: [b("frag_distinct"), "n=10000", "iters=%d" % k], 20000, 120000, steps, True),
        # Row c's single-thread rows: the threaded path (a second thread
        # exists: the process is threaded) at its fixed cost per call.
        ("pc-1t", lambda k: [b("threads"), "mode=pc", "threads=1", "ops=%d" % k], 100000, 200000, 1.0, False),
        ("private-1t", lambda k: [b("larson"), "mode=private", "threads=1", "seconds=0", "min_ops=%d" % k],
         100000, 200000, 1.0, False),
        # None: as many operations as the program reports (`realloc_count`)
        ("realloc", lambda k: [b("realloc"), "nvec=%d" % k], 5000, 10000, None, False),
    ]


def realloc_count(argv):
    """The number of reallocs realloc.c made: the suffix of its CHECK line."""
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("CHECK "):
            return int(line.rsplit("-", 1)[1])
    sys.exit("instr: no CHECK line from " + " ".join(argv))


def programs():
    """(key, argv, environment) of the whole-program rows."""
    py = os.environ.get("BENCH_PYTHON") or (
        "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
    work = os.path.join(BENCH, "workloads")
    return [
        ("python-malloc", [py, os.path.join(work, "pywork.py"), "0.1"],
         {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}),
        ("perl", ["perl", os.path.join(work, "perlwork.pl"), "0.1"], {}),
    ]


def instructions(argv, so, env):
    """Total instructions of the program `argv` (the biggest callgrind
    output: the program, not the `env` that starts it)."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = ["env", "-u", "ALLOCATOR_ALGORITHM"] + ["%s=%s" % kv for kv in sorted(env.items())]
        if so:
            pre.append("LD_PRELOAD=" + so)
        cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
               "--callgrind-out-file=" + os.path.join(tmp, "cg.%p")] + pre + argv
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            sys.exit("instr: %s failed:\n%s" % (" ".join(argv), r.stderr[-2000:]))
        best = 0
        for f in glob.glob(os.path.join(tmp, "cg.*")):
            with open(f) as fh:
                for line in fh:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        best = max(best, int(line.split()[1]))
        if best == 0:
            sys.exit("instr: no callgrind totals for " + " ".join(argv))
        return best


def per_op(row, so, env):
    key, argv, small, large, unit, _ = row
    a = instructions(argv(small), so, env)
    z = instructions(argv(large), so, env)
    if unit is None:
        return (z - a) / (realloc_count(argv(large)) - realloc_count(argv(small)))
    return (z - a) / ((large - small) * unit)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="row keys or prefixes, comma-separated")
    ap.add_argument("--policies", action="store_true", help="frag rows under every policy")
    ap.add_argument("--programs", action="store_true", help="also whole runs of python and perl")
    ap.add_argument("--so", default=os.path.join(ROOT, "allocator.so"), help="the fitalloc library")
    args = ap.parse_args()
    if subprocess.run(["valgrind", "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        sys.exit("instr: valgrind is needed (Debian package valgrind)")
    so = os.path.abspath(args.so)
    want = [w for w in args.only.split(",") if w]
    chosen = [r for r in rows() if not want or any(r[0].startswith(w) for w in want)]
    cols = ["glibc", "fitalloc"] + (["fitalloc/" + p for p in POLICIES[1:]] if args.policies else [])
    print("instructions per malloc+free (realloc: per realloc) under callgrind "
          "(difference of two runs; %s)" % so)
    print("| row | " + " | ".join(cols) + " | fitalloc / glibc |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for row in chosen:
        vals = [per_op(row, None, {}), per_op(row, so, {})]
        if args.policies:
            for p in POLICIES[1:]:
                vals.append(per_op(row, so, {"ALLOCATOR_ALGORITHM": p}) if row[5] else None)
        cells = ["%.0f" % v if v is not None else "-" for v in vals]
        print("| %s | %s | %.2f |" % (row[0], " | ".join(cells), vals[1] / vals[0]), flush=True)
    if args.programs:
        print()
        print("instructions of whole program runs under callgrind, millions")
        print("| program | glibc | fitalloc | fitalloc / glibc |")
        print("|---|---:|---:|---:|")
        for key, argv, env in programs():
            g, f = instructions(argv, None, env), instructions(argv, so, env)
            print("| %s | %.1f | %.1f | %.3f |" % (key, g / 1e6, f / 1e6, f / g), flush=True)


if __name__ == "__main__":
    main()
