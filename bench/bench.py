#!/usr/bin/env python3
"""fitalloc benchmark harness (run it through `make bench`, i.e. bench/run.sh,
which installs the comparison allocators and compiles the C workloads first).

Every workload runs as its own process, once per allocator, with LD_PRELOAD
(glibc: no preload). Allocators alternate run by run (the order rotates each
run) so that machine noise is spread over all of them. For each workload and
allocator the harness keeps wall time, peak RSS and CPU time of every run
(wait4 rusage), plus the workload's own METRIC lines, and checks the
workload's result signature (CHECK line or output hash) against glibc's.

    bench/bench.py [--runs N] [--only a,b,...] [--quick] [--allocators LIST]
                   [--out DIR] [--profile ROW]

Environment equivalents: BENCH_RUNS, BENCH_ONLY, BENCH_QUICK=1,
BENCH_ALLOCATORS, BENCH_PYTHON (the python3 for workload f).
Outputs (in --out, default bench/results): results.csv, table.md, bench.svg,
scaling.svg, scaling-distinct.svg, raw.json; the table also goes to stdout.
"""
import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import svgplot

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BUILD = os.path.join(BENCH, "build")
FITALLOC = os.path.join(ROOT, "allocator.so")
POLICIES = ["first_fit", "next_fit", "best_fit", "worst_fit"]


# ---------------------------------------------------------------- allocators

class Config:
    """One column: an allocator (and for fitalloc possibly a policy)."""

    def __init__(self, name, preload, env=None, expect=None):
        self.name = name
        self.preload = preload
        self.env = env or {}
        self.expect = expect  # substring of the file that must define malloc

    def environ(self, base, var="LD_PRELOAD"):
        """The environment for a run; var="BENCH_PRELOAD" for bench/build/measure,
        which passes it on to the workload as LD_PRELOAD."""
        env = dict(base)
        env.pop("LD_PRELOAD", None)
        env.pop("BENCH_PRELOAD", None)
        for k in list(env):
            if k.startswith("ALLOCATOR_"):
                del env[k]
        if self.preload:
            env[var] = self.preload
        env.update(self.env)
        return env

    def prefix(self):
        """`env VAR=... ` words for running under perf/strace."""
        words = ["env", "-u", "LD_PRELOAD"]
        if self.preload:
            words.append("LD_PRELOAD=" + self.preload)
        words += ["%s=%s" % kv for kv in sorted(self.env.items())]
        return words


def lib_dirs():
    dirs = []
    try:
        ma = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
        if ma:
            dirs += ["/usr/lib/" + ma, "/lib/" + ma]
    except OSError:
        pass
    return dirs + ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"]


def find_lib(names):
    for d in lib_dirs():
        for n in names:
            p = os.path.join(d, n)
            if os.path.exists(p):
                return p
    return None


OTHERS = [
    ("jemalloc", ["libjemalloc.so.2"], "libjemalloc2", "jemalloc"),
    ("tcmalloc", ["libtcmalloc_minimal.so.4"], "libtcmalloc-minimal4", "tcmalloc"),
    ("mimalloc", ["libmimalloc.so.2", "libmimalloc.so.2.0"], "libmimalloc2.0", "mimalloc"),
]


def all_configs(wanted, notes):
    main = [Config("glibc", None, expect="libc.so"), Config("fitalloc", FITALLOC, expect="allocator.so")]
    for name, libs, pkg, expect in OTHERS:
        path = find_lib(libs)
        if path:
            main.append(Config(name, path, expect=expect))
        else:
            notes.append("%s not found (Debian package %s not installed): its column is skipped" % (name, pkg))
    main = [c for c in main if c.name in wanted]
    policies = [Config("fitalloc/" + p, FITALLOC, {"ALLOCATOR_ALGORITHM": p}, expect="allocator.so")
                for p in POLICIES[1:]]
    if "fitalloc" not in wanted:
        policies = []
    return main, policies


def probe(cfg):
    env = cfg.environ(os.environ)
    r = subprocess.run([os.path.join(BUILD, "probe")], env=env, capture_output=True, text=True)
    where = r.stdout.strip()
    if r.returncode != 0 or cfg.expect not in where:
        return "malloc comes from %r, expected %r (stderr: %s)" % (where, cfg.expect, r.stderr.strip()[:200])
    return None


# ---------------------------------------------------------------- workloads

class Row:
    """One workload row of the table."""

    def __init__(self, group, key, label, cmd, unit_metric=None, check=None, env=None,
                 cwd=None, policies=False, note=""):
        self.group = group          # a..f
        self.key = key              # unique id, e.g. "b-n1e4"
        self.label = label
        self.cmd = cmd
        self.unit_metric = unit_metric  # (METRIC name, unit) shown as "time" instead of wall
        self.check = check          # fn(stdout, workdir) -> signature; default CHECK line
        self.env = env or {}
        self.cwd = cwd
        self.policies = policies    # also run the other fitalloc policies
        self.note = note


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def python_for_workload():
    """Debian's python3 (not a pyenv shim or venv wrapper) unless BENCH_PYTHON says otherwise."""
    return os.environ.get("BENCH_PYTHON") or ("/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)


def larson_threads(args):
    """Thread counts of the larson rows (--larson-threads, default 2,4)."""
    return [int(x) for x in args.larson_threads.split(",") if x.strip()]


def build_rows(args, tmp):
    q = args.quick
    b = lambda name: os.path.join(BUILD, name)
    rows = []
    # (a)
    rows.append(Row("a", "a-churn", "a churn 8-512 B, 100k live",
                    [b("churn"), "live=100000", "ops=%d" % (1e6 if q else 5e6)]))
    # (b)
    for n in (100, 1000, 10000, 100000):
        exp = len(str(n)) - 1
        rows.append(Row("b", "b-n1e%d" % exp, "b frag n=1e%d (ns/alloc)" % exp,
                        [b("frag"), "n=%d" % n, "iters=%d" % (2e5 if q else 1e6)],
                        unit_metric=("ns_per_alloc", "ns"), policies=True))
    # (b') the same search past n holes of n distinct sizes
    for n in (100, 1000, 10000, 100000):
        exp = len(str(n)) - 1
        rows.append(Row("b2", "b2-n1e%d" % exp, "b' frag distinct sizes n=1e%d (ns/alloc)" % exp,
                        [b("frag_distinct"), "n=%d" % n, "iters=%d" % (1e5 if q else 3e5)],
                        unit_metric=("ns_per_alloc", "ns"), policies=True))
    # (c)
    ops = 400000 if q else 2000000
    for mode, name in (("pc", "producer/consumer"), ("srv", "server")):
        for t in (1, 2, 4):
            rows.append(Row("c", "c-%s-%dt" % (mode, t), "c %s %dT" % (name, t),
                            [b("threads"), "mode=" + mode, "threads=%d" % t, "ops=%d" % ops]))
    for t in larson_threads(args):
        rows.append(Row("c", "c-larson-%dt" % t, "c larson server %dT (ns/step)" % t,
                        [b("larson"), "mode=larson", "threads=%d" % t, "seconds=%g" % (0.5 if q else 1),
                         "min_ops=%d" % (1e5 if q else 2e5)],
                        unit_metric=("ns_per_op", "ns")))
    for t in (1, 2, 4):
        rows.append(Row("c", "c-private-%dt" % t, "c private malloc/free %dT (ns/step)" % t,
                        [b("larson"), "mode=private", "threads=%d" % t, "seconds=0",
                         "min_ops=%d" % (3e5 if q else 1e6)],
                        unit_metric=("ns_per_op", "ns")))
    # (d)
    rows.append(Row("d", "d-realloc", "d realloc growth",
                    [b("realloc"), "nvec=%d" % (3000 if q else 10000)]))
    # (e)
    rows.append(Row("e", "e-large", "e large 1-32 MiB",
                    [b("large"), "iters=%d" % (40 if q else 200)]))
    # (f)
    data = os.path.join(BUILD, "data-quick" if q else "data")
    py = python_for_workload()
    pyscript = os.path.join(BENCH, "workloads", "pywork.py")
    pyscale = "0.25" if q else "1"
    out_of = lambda stdout, wd: stdout.strip().splitlines()[-1] if stdout.strip() else ""
    rows.append(Row("f", "f-python", "f python3", [py, pyscript, pyscale], check=out_of))
    rows.append(Row("f", "f-python-malloc", "f python3 PYTHONMALLOC=malloc", [py, pyscript, pyscale],
                    check=out_of, env={"PYTHONMALLOC": "malloc"}))
    gcc_out = os.path.join(tmp, "gen.o")
    rows.append(Row("f", "f-gcc", "f gcc -O2 (generated C)",
                    ["gcc", "-O2", "-c", os.path.join(data, "gcc", "gen.c"), "-o", gcc_out],
                    check=lambda s, wd: sha_file(gcc_out)))
    gitwork = os.path.join(tmp, "git")
    rows.append(Row("f", "f-git", "f git (commit, log -p, gc)",
                    ["bash", os.path.join(BENCH, "workloads", "git.sh"), os.path.join(data, "git"), gitwork],
                    check=lambda s, wd: s.strip().replace("\n", " ") + " log=" + sha_file(os.path.join(gitwork, "log.txt"))))
    sort_out = os.path.join(tmp, "sorted.txt")
    rows.append(Row("f", "f-sort", "f sort (%s MB file)" % ("8" if q else "40"),
                    ["sort", "-o", sort_out, os.path.join(data, "sort", "input.txt")],
                    env={"LC_ALL": "C"}, check=lambda s, wd: sha_file(sort_out)))
    rows.append(Row("f", "f-perl", "f perl (hashes, regex, strings)",
                    ["perl", os.path.join(BENCH, "workloads", "perlwork.pl"), "0.25" if q else "1"], check=out_of))
    return rows, data


# ---------------------------------------------------------------- running

def run_once(cmd, env, cwd=None, timeout=600):
    """Runs cmd through bench/build/measure; returns dict(wall, rss_kib, cpu,
    rc, stdout, stderr). env carries the allocator as BENCH_PRELOAD."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".measure") as fm:
        p = subprocess.Popen([os.path.join(BUILD, "measure"), fm.name] + cmd, env=env, cwd=cwd,
                             stdout=fo, stderr=fe, start_new_session=True)
        killed = []

        def kill():
            killed.append(1)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.start()
        p.wait()
        timer.cancel()
        fo.seek(0)
        fe.seek(0)
        out = fo.read().decode(errors="replace")
        err = fe.read().decode(errors="replace")
        fields = fm.read().split()
    if killed:
        return {"rc": "timeout (%gs)" % timeout, "stdout": out, "stderr": err}
    if p.returncode != 0 or len(fields) != 6:
        return {"rc": "measure failed (%s)" % p.returncode, "stdout": out, "stderr": err}
    wall, rss, ut, st, code, minflt = fields
    return {"wall": float(wall), "rss_kib": int(rss), "cpu": float(ut) + float(st), "minflt": int(minflt),
            "rc": int(code), "stdout": out, "stderr": err}


def parse_metrics(stdout):
    m, check = {}, None
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "METRIC":
            m[parts[1]] = float(parts[2])
        elif len(parts) == 2 and parts[0] == "CHECK":
            check = parts[1]
    return m, check


def median(xs):
    return statistics.median(xs) if xs else None


def run_rows(rows, main, policies, runs, timeout, log):
    """results[row.key][config.name] = {"runs": [...], "error": str|None}"""
    results = {}
    for row in rows:
        cfgs = main + (policies if row.policies else [])
        res = {c.name: {"runs": [], "error": None} for c in cfgs}
        results[row.key] = res
        t_row = time.perf_counter()
        for r in range(runs):
            k = r % len(cfgs)
            for cfg in cfgs[k:] + cfgs[:k]:
                slot = res[cfg.name]
                if slot["error"]:
                    continue
                env = cfg.environ(os.environ, "BENCH_PRELOAD")
                env.update(row.env)
                o = run_once(row.cmd, env, cwd=row.cwd, timeout=timeout)
                if o["rc"] != 0:
                    slot["error"] = "exit %s: %s" % (o["rc"], (o["stderr"].strip().splitlines() or [""])[-1][:200])
                    log("  %s / %s: FAILED (%s)" % (row.key, cfg.name, slot["error"]))
                    continue
                metrics, check = parse_metrics(o["stdout"])
                if row.check:
                    check = row.check(o["stdout"], row.cwd)
                if "ERROR: ld.so" in o["stderr"]:
                    slot["error"] = "preload failed: " + o["stderr"].strip().splitlines()[0][:200]
                    continue
                slot["runs"].append({"wall": o["wall"], "rss_kib": o["rss_kib"], "cpu": o["cpu"], "minflt": o["minflt"],
                                     "metrics": metrics, "check": check})
        # signatures: every run of every allocator must agree with glibc's
        ref = None
        for cfg in cfgs:
            for rr in res[cfg.name]["runs"]:
                if ref is None:
                    ref = rr["check"]
                if rr["check"] != ref:
                    res[cfg.name]["error"] = res[cfg.name]["error"] or "result differs from %s's (%s vs %s)" % (
                        cfgs[0].name, rr["check"], ref)
        summary = []
        for cfg in cfgs:
            v = value_of(row, res[cfg.name])
            summary.append("%s %s" % (cfg.name, "FAIL" if v is None else fmt_num(v)))
        log("%-18s %5.1fs  %s" % (row.key, time.perf_counter() - t_row, "  ".join(summary)))
    return results


def value_of(row, slot, what="time", stat=median):
    """The row's time (wall s, or its unit metric) or rss (KiB) statistic."""
    if slot is None or slot["error"] or not slot["runs"]:
        return None
    if what == "rss":
        xs = [r["rss_kib"] for r in slot["runs"]]
    elif what == "cpu":
        xs = [r["cpu"] for r in slot["runs"]]
    elif what == "time" and row.unit_metric:
        xs = [r["metrics"].get(row.unit_metric[0]) for r in slot["runs"]]
        xs = [x for x in xs if x is not None]
    elif what == "time":
        xs = [r["wall"] for r in slot["runs"]]
    else:
        xs = [r["metrics"][what] for r in slot["runs"] if what in r["metrics"]]
    return stat(xs) if xs else None


def fmt_num(v):
    if v is None:
        return "-"
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.3g" % v


def fmt_time(row, v):
    if v is None:
        return "FAIL"
    if row.unit_metric:
        return "%s %s" % (fmt_num(v), row.unit_metric[1])
    return "%.3f s" % v


def fmt_rss(kib):
    if kib is None:
        return "FAIL"
    if kib >= 10240:
        return "%.0f MiB" % (kib / 1024)
    return "%.1f MiB" % (kib / 1024)


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)


# ---------------------------------------------------------------- syscalls (e)

def count_syscalls(cfg, cmd_base, iters_pair, log):
    """Per iteration of `large` in steady state: mmap+munmap, other memory
    syscalls (brk, mremap, madvise) and minor page faults. Each is the
    difference between two run lengths, divided by the difference in
    iterations, so start-up costs cancel out."""
    counts, faults = [], []
    for it in iters_pair:
        o = run_once(cmd_base + ["iters=%d" % it], cfg.environ(os.environ, "BENCH_PRELOAD"))
        if o["rc"] != 0:
            log("  %s: large iters=%d failed: %s" % (cfg.name, it, o["rc"]))
            return None
        faults.append(o["minflt"])
        with tempfile.NamedTemporaryFile(suffix=".strace") as tf:
            cmd = ["strace", "-f", "-qq", "-o", tf.name, "-e", "trace=mmap,munmap,mremap,brk,madvise"] + \
                cfg.prefix() + cmd_base + ["iters=%d" % it]
            env = Config("strace", None).environ(os.environ)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                log("  strace %s failed: %s" % (cfg.name, r.stderr.strip()[-200:]))
                return None
            c = {"mmap": 0, "munmap": 0, "mremap": 0, "brk": 0, "madvise": 0}
            with open(tf.name) as f:
                for line in f:
                    parts = line.split(None, 1)
                    if len(parts) < 2 or "resumed>" in parts[1][:30]:
                        continue
                    name = parts[1].split("(", 1)[0].strip()
                    if name in c:
                        c[name] += 1
            counts.append(c)
    d = iters_pair[1] - iters_pair[0]
    per = {k: (counts[1][k] - counts[0][k]) / d for k in counts[0]}
    return {"mmap_munmap_per_iter": per["mmap"] + per["munmap"],
            "other_per_iter": per["brk"] + per["mremap"] + per["madvise"],
            "per_iter": per, "minflt_per_iter": (faults[1] - faults[0]) / d,
            "counts": counts, "minflt": faults, "iters": list(iters_pair)}


# ---------------------------------------------------------------- reporting

def derived(rows, results, main, policies):
    """(b) and (b') scaling ratios, (c) thread ratios and the larson and
    private throughputs, by config name."""
    rowmap = {r.key: r for r in rows}
    scal = {}
    for group in ("b", "b2"):
        scal[group] = {}
        for cfg in main + policies:
            per_n = {}
            for exp in (2, 3, 4, 5):
                key = "%s-n1e%d" % (group, exp)
                if key in results and cfg.name in results[key]:
                    per_n[exp] = value_of(rowmap[key], results[key][cfg.name])
            if per_n:
                ratio = per_n[5] / per_n[2] if per_n.get(5) and per_n.get(2) else None
                scal[group][cfg.name] = (per_n, ratio)
    steps = {}
    for cfg in main:
        entry = {}
        for mode in ("larson", "private"):
            for row in rows:
                if row.key.startswith("c-%s-" % mode):
                    t = int(row.key.rsplit("-", 1)[1][:-1])
                    entry.setdefault(mode, {})[t] = value_of(row, results[row.key].get(cfg.name), "mops_per_s")
        if entry:
            steps[cfg.name] = entry
    thr = {}
    for cfg in main:
        entry = {}
        for mode in ("pc", "srv"):
            vals = {}
            for t in (1, 2, 4):
                key = "c-%s-%dt" % (mode, t)
                if key in results:
                    vals[t] = value_of(rowmap[key], results[key].get(cfg.name), "mops_per_s")
            if vals:
                r21 = vals[2] / vals[1] if vals.get(1) and vals.get(2) else None
                entry[mode] = (vals, r21)
        if entry:
            thr[cfg.name] = entry
    return scal, thr, steps


def md_table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(l) + " |" for l in lines]
    return out


def text_table(header, lines):
    w = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells))
    return [fmt(header), fmt(["-" * x for x in w])] + [fmt(l) for l in lines]


def report(rows, results, main, policies, sysc, notes, meta, outdir):
    glibc = "glibc"
    others = [c.name for c in main if c.name != glibc]
    have_glibc = any(c.name == glibc for c in main)
    header = ["workload", "glibc time", "glibc RSS"] + ["%s time×" % o for o in others] + ["%s RSS×" % o for o in others]
    lines = []
    for row in rows:
        res = results[row.key]
        g = res.get(glibc)
        gt, gr = value_of(row, g), value_of(row, g, "rss")
        cells = [row.label, fmt_time(row, gt) if have_glibc else "-", fmt_rss(gr) if have_glibc else "-"]
        for o in others:
            v = value_of(row, res[o])
            cells.append("FAIL" if v is None else fmt_ratio(v, gt))
        for o in others:
            v = value_of(row, res[o], "rss")
            cells.append("FAIL" if v is None else fmt_ratio(v, gr))
        lines.append(cells)

    scal, thr, steps = derived(rows, results, main, policies)
    sc_header = ["allocator", "n=1e2", "n=1e3", "n=1e4", "n=1e5", "1e5/1e2"]
    sc = {}
    for group in ("b", "b2"):
        sc[group] = []
        for name, (per_n, ratio) in scal[group].items():
            label = name + (" (first_fit)" if name == "fitalloc" else "")
            sc[group].append([label] + [fmt_num(per_n.get(e)) + " ns" if per_n.get(e) else "-" for e in (2, 3, 4, 5)] +
                             ["%.2f" % ratio if ratio else "-"])
    sc_lines = sc["b"]

    th_header = ["allocator", "p/c 1T", "p/c 2T", "p/c 4T", "p/c 2T/1T", "server 1T", "server 2T", "server 4T", "server 2T/1T"]
    th_lines = []
    for name, entry in thr.items():
        cells = [name]
        for mode in ("pc", "srv"):
            vals, r21 = entry.get(mode, ({}, None))
            cells += [fmt_num(vals.get(t)) if vals.get(t) else "-" for t in (1, 2, 4)] + ["%.2f" % r21 if r21 else "-"]
        th_lines.append(cells)

    lt = sorted({t for e in steps.values() for t in e.get("larson", {})})
    pt = sorted({t for e in steps.values() for t in e.get("private", {})})
    st_header = ["allocator"] + ["larson %dT" % t for t in lt] + ["private %dT" % t for t in pt]
    if 1 in pt and 2 in pt:
        st_header.append("private 2T/1T")
    st_lines = []
    for name, entry in steps.items():
        la, pr = entry.get("larson", {}), entry.get("private", {})
        cells = [name] + [fmt_num(la.get(t)) if la.get(t) else "-" for t in lt] + \
            [fmt_num(pr.get(t)) if pr.get(t) else "-" for t in pt]
        if 1 in pt and 2 in pt:
            cells.append("%.2f" % (pr[2] / pr[1]) if pr.get(1) and pr.get(2) else "-")
        st_lines.append(cells)

    # (b') on fitalloc: did the workload lay out n holes of n distinct sizes?
    for row in rows:
        if row.group != "b2":
            continue
        n = int(float(row.key.split("-n")[1]))
        for name, slot in results[row.key].items():
            for r in slot["runs"][:1]:
                d = r["metrics"].get("distinct_hole_sizes")
                if d is not None and (d < n or r["metrics"].get("usable_blocks") != 1):
                    notes.append("%s / %s: layout not as designed: %d holes of %d distinct sizes, %d usable free blocks" % (
                        row.key, name, r["metrics"].get("holes", 0), d, r["metrics"].get("usable_blocks", 0)))

    sy_header = ["allocator", "mmap+munmap / iter", "brk+mremap+madvise / iter", "page faults / iter"]
    num = lambda v, d: "%.*f" % (d, v) if abs(v) >= 0.5 * 10 ** -d else "0"  # no "-0"
    sy_lines = [[n, num(s["mmap_munmap_per_iter"], 2), num(s["other_per_iter"], 2), num(s["minflt_per_iter"], 0)]
                for n, s in sysc.items() if s]

    errors = []
    for row in rows:
        for name, slot in results[row.key].items():
            if slot["error"]:
                errors.append("%s / %s: %s" % (row.key, name, slot["error"]))

    intro = ("Median of %d run(s) per cell; ratios are allocator / glibc in the same run (below 1 is better). "
             "Time is wall time of the whole process, except (b) and (b'): ns per searching allocation measured inside the workload, "
             "and (c) larson and private: ns per step (one free and one malloc), the inverse of the throughput over all threads. "
             "RSS is the peak resident set (wait4)." % meta["runs"])
    md = ["# fitalloc benchmark results", "", "Command: `%s`  " % meta["command"],
          "Machine: %s, %s CPUs, %s; load average at start %s, at end %s  " % (
              meta["cpu"], meta["ncpu"], meta["kernel"], meta["load_start"], meta["load_end"]),
          "fitalloc sources at commit %s; %s; duration %s" % (meta["commit"], meta["date"], meta["duration"]), "", intro, ""]
    md += md_table(header, lines)
    md += ["", "## (b) fragmentation scaling: ns per allocation vs number of free blocks n", "",
           "Target: n=1e5 / n=1e2 at most 2 for every policy (a linear scan would be about 1000).", ""]
    md += md_table(sc_header, sc_lines)
    if sc["b2"]:
        md += ["", "## (b') fragmentation scaling with n distinct hole sizes: ns per allocation vs n", "",
               "The n holes have n different sizes (16 B to 16n B), so a size-ordered index holds n keys. Same target.", ""]
        md += md_table(sc_header, sc["b2"])
    md += ["", "## (c) threads: throughput (million allocations+frees per second, all threads)", "",
           "2T/1T is the scaling from one to two threads; the target is fitalloc's at least glibc's.", ""]
    md += md_table(th_header, th_lines)
    if st_lines:
        md += ["", "## (c) larson and private threads: throughput (million steps per second, all threads)", "",
               "A step frees one block and allocates one. larson: T arrays handed from thread to thread "
               "(fixed wall time); private: each thread its own blocks, no hand-over (fixed steps).", ""]
        md += md_table(st_header, st_lines)
    md += ["", "## (e) system calls and page faults per iteration in steady state (difference of two run lengths)", "",
           "Target: no mmap/munmap per iteration. A 1-32 MiB block is 256-8192 pages: page faults show memory handed back to the OS and touched again.", ""]
    md += md_table(sy_header, sy_lines) if sy_lines else ["(strace not available)"]
    if notes or errors:
        md += ["", "## Notes", ""] + ["- " + n for n in notes] + ["- **error** " + e for e in errors]
    md += ["", "![time and RSS ratios](bench.svg)", "", "![fragmentation scaling](scaling.svg)", ""]
    if sc["b2"]:
        md += ["![fragmentation scaling, distinct hole sizes](scaling-distinct.svg)", ""]

    txt = ["", "fitalloc benchmark: " + intro, ""] + text_table(header, lines)
    txt += ["", "(b) fragmentation scaling, ns per allocation:"] + text_table(sc_header, sc_lines)
    if sc["b2"]:
        txt += ["", "(b') fragmentation scaling, n distinct hole sizes, ns per allocation:"] + text_table(sc_header, sc["b2"])
    txt += ["", "(c) threads, Mops/s:"] + text_table(th_header, th_lines)
    if st_lines:
        txt += ["", "(c) larson and private threads, million steps/s:"] + text_table(st_header, st_lines)
    if sy_lines:
        txt += ["", "(e) syscalls and page faults per iteration (steady state):"] + text_table(sy_header, sy_lines)
    if notes or errors:
        txt += [""] + ["note: " + n for n in notes] + ["ERROR: " + e for e in errors]

    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(txt))

    # CSV: one row per workload x allocator x metric
    with open(os.path.join(outdir, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "allocator", "metric", "unit", "median", "min", "max", "runs"])
        for row in rows:
            for name, slot in results[row.key].items():
                if slot["error"] or not slot["runs"]:
                    w.writerow([row.key, name, "error", "", "", "", "", len(slot["runs"])])
                    continue
                n = len(slot["runs"])
                series = [("wall_s", "s", [r["wall"] for r in slot["runs"]]),
                          ("maxrss_kib", "KiB", [r["rss_kib"] for r in slot["runs"]]),
                          ("cpu_s", "s", [r["cpu"] for r in slot["runs"]]),
                          ("minor_faults", "", [r["minflt"] for r in slot["runs"]])]
                for mname in sorted(slot["runs"][0]["metrics"]):
                    series.append((mname, "", [r["metrics"].get(mname) for r in slot["runs"]]))
                for mname, unit, xs in series:
                    xs = [x for x in xs if x is not None]
                    w.writerow([row.key, name, mname, unit, "%.6g" % median(xs), "%.6g" % min(xs), "%.6g" % max(xs), n])
                g = results[row.key].get(glibc)
                if name != glibc and g:
                    for what, mname in (("time", "time_ratio_vs_glibc"), ("rss", "rss_ratio_vs_glibc")):
                        a, b = value_of(row, slot, what), value_of(row, g, what)
                        if a is not None and b:
                            w.writerow([row.key, name, mname, "", "%.4f" % (a / b), "", "", n])
        for group in ("b", "b2"):
            for name, (per_n, ratio) in scal[group].items():
                if ratio:
                    w.writerow(["%s-scaling" % group, name, "ns_per_alloc_1e5_over_1e2", "", "%.4f" % ratio, "", "", ""])
        for name, entry in thr.items():
            for mode, (vals, r21) in entry.items():
                if r21:
                    w.writerow(["c-%s-scaling" % mode, name, "throughput_2t_over_1t", "", "%.4f" % r21, "", "", ""])
        for name, entry in steps.items():
            pr = entry.get("private", {})
            if pr.get(1) and pr.get(2):
                w.writerow(["c-private-scaling", name, "throughput_2t_over_1t", "", "%.4f" % (pr[2] / pr[1]), "", "", ""])
        for name, s in sysc.items():
            if s:
                w.writerow(["e-large", name, "mmap_munmap_per_iter", "", "%.3f" % s["mmap_munmap_per_iter"], "", "", ""])
                w.writerow(["e-large", name, "brk_mremap_madvise_per_iter", "", "%.3f" % s["other_per_iter"], "", "", ""])
                w.writerow(["e-large", name, "minor_faults_per_iter", "", "%.1f" % s["minflt_per_iter"], "", "", ""])

    # plots
    groups = []
    for row in rows:
        g = results[row.key].get(glibc)
        t = {}
        r = {}
        for o in others:
            a, b = value_of(row, results[row.key][o]), value_of(row, g)
            t[o] = a / b if a is not None and b else None
            a, b = value_of(row, results[row.key][o], "rss"), value_of(row, g, "rss")
            r[o] = a / b if a is not None and b else None
        groups.append((row.label, t, r))
    if have_glibc:
        svgplot.bars(os.path.join(outdir, "bench.svg"), groups, others,
                     "fitalloc benchmark: ratio to glibc (median of %d runs; lower is better)" % meta["runs"])
    for group, fname, title in (("b", "scaling.svg", "(b) fragmentation scaling: time per searching allocation vs free blocks n"),
                                ("b2", "scaling-distinct.svg", "(b') the same with n distinct hole sizes")):
        if group == "b2" and not scal[group]:
            continue
        series = {}
        for name, (per_n, ratio) in scal[group].items():
            series[name + (" (first_fit)" if name == "fitalloc" else "")] = [(10 ** e, per_n[e]) for e in sorted(per_n) if per_n[e]]
        svgplot.loglog(os.path.join(outdir, fname), series, title)

    with open(os.path.join(outdir, "raw.json"), "w") as f:
        json.dump({"meta": meta, "notes": notes, "syscalls": sysc,
                   "results": {k: {c: {"error": s["error"], "runs": s["runs"]} for c, s in v.items()}
                               for k, v in results.items()}}, f, indent=1, sort_keys=True)


# ---------------------------------------------------------------- profile

def profile(rows, cfgname, main, policies, key, outdir):
    cfg = {c.name: c for c in main + policies}[cfgname]
    row = {r.key: r for r in rows}[key]
    data = os.path.join(outdir, "perf-%s-%s.data" % (key, cfgname.replace("/", "-")))
    env = Config("perf", None).environ(os.environ)
    env.update(row.env)
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-g", "-o", data, "--"] + cfg.prefix() + row.cmd
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
                          "-g", "none", "--percent-limit", "0.5"], capture_output=True, text=True).stdout
    txt = os.path.join(outdir, "profile-%s-%s.txt" % (key, cfgname.replace("/", "-")))
    with open(txt, "w") as f:
        f.write("# %s\n" % " ".join(cmd))
        f.write(rep)
    print("\n".join(l for l in rep.splitlines() if l and not l.startswith("#"))[:6000])
    print("(full report: %s; perf data: %s)" % (txt, data))


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description="fitalloc benchmarks (make bench args='...')")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "0")) or None)
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                    help="workload groups and/or row keys, comma separated (e.g. a,b or f-git)")
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    ap.add_argument("--larson-threads", default=os.environ.get("BENCH_LARSON_THREADS", "2,4"),
                    help="thread counts of the larson rows, comma separated (default 2,4)")
    ap.add_argument("--allocators", default=os.environ.get("BENCH_ALLOCATORS", "glibc,fitalloc,jemalloc,tcmalloc,mimalloc"))
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per process")
    ap.add_argument("--profile", metavar="ROW", help="perf-profile one row (e.g. a-churn) under --profile-allocator instead of benchmarking")
    ap.add_argument("--profile-allocator", default="fitalloc")
    ap.add_argument("--no-install", action="store_true", help="(handled by run.sh)")
    args = ap.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    os.makedirs(args.out, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)

    notes = []
    wanted = set(x.strip() for x in args.allocators.split(",") if x.strip())
    main_cfgs, policy_cfgs = all_configs(wanted, notes)

    tmp = tempfile.mkdtemp(prefix="fitalloc-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        # Benchmark a private copy of allocator.so: a rebuild in the working
        # tree during the run (cp over the file) must neither change the
        # library under test half-way nor crash running workloads (SIGBUS).
        snap = os.path.join(tmp, "allocator.so")
        shutil.copy2(FITALLOC, snap)
        with open(snap, "rb") as f:
            snap_sha = hashlib.sha256(f.read()).hexdigest()[:12]
        for c in main_cfgs + policy_cfgs:
            if c.preload == FITALLOC:
                c.preload = snap
        bad = []
        for c in main_cfgs + policy_cfgs:
            err = probe(c)
            if err:
                notes.append("%s skipped: %s" % (c.name, err))
                bad.append(c.name)
        main_cfgs = [c for c in main_cfgs if c.name not in bad]
        policy_cfgs = [c for c in policy_cfgs if c.name not in bad]
        for n in notes:
            log("bench: " + n)
        if "glibc" not in wanted:
            log("bench: glibc not selected: no ratios")
        rows, data = build_rows(args, tmp)
        subprocess.run([sys.executable, os.path.join(BENCH, "workloads", "gen_inputs.py"), data,
                        "0.2" if args.quick else "1"], check=True)
        if args.only:
            sel = set(x.strip() for x in args.only.split(",") if x.strip())
            rows = [r for r in rows if r.group in sel or r.key in sel]
            if not rows:
                sys.exit("bench: --only %s matches no workload (groups a-f, b2, or keys like b-n1e5)" % args.only)
        if args.profile:
            log("bench: profiling %s under %s (allocator.so sha256 %s)" % (args.profile, args.profile_allocator, snap_sha))
            return profile(rows, args.profile_allocator, main_cfgs, policy_cfgs, args.profile, args.out)

        start = time.time()
        load_start = "%.2f" % os.getloadavg()[0]
        log("bench: %d run(s) of %d workload row(s) x [%s]%s" % (
            runs, len(rows), ", ".join(c.name for c in main_cfgs),
            " (+ %s on b, b2)" % ", ".join(c.name for c in policy_cfgs) if policy_cfgs and any(r.policies for r in rows) else ""))
        results = run_rows(rows, main_cfgs, policy_cfgs, runs, args.timeout, log)

        sysc = {}
        if any(r.key == "e-large" for r in rows):
            if shutil.which("strace"):
                log("e-large: counting syscalls (strace) and page faults")
                pair = (10, 30) if args.quick else (20, 60)
                for c in main_cfgs:
                    sysc[c.name] = count_syscalls(c, [os.path.join(BUILD, "large")], pair, log)
                    if sysc[c.name]:
                        log("e-large syscalls    %s: mmap+munmap %.2f/iter, brk+mremap+madvise %.2f/iter, %.0f page faults/iter" % (
                            c.name, sysc[c.name]["mmap_munmap_per_iter"], sysc[c.name]["other_per_iter"], sysc[c.name]["minflt_per_iter"] + 0.0))
            else:
                notes.append("strace not installed: (e) syscall counts skipped")

        def version(cmd):
            try:
                return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
            except (OSError, IndexError):
                return "?"
        cpu = "?"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        # the last commit that changed the allocator's sources or its build
        # (the profile in pgo/, the Makefile), not bench/ or docs
        built_from = ["crates", "Cargo.toml", "Cargo.lock", "pgo", "Makefile"]
        commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h", "--"] + built_from,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--"] + built_from,
                               capture_output=True, text=True).stdout.strip()
        meta = {"runs": runs, "quick": args.quick,
                "command": "make bench" + ((" args='%s'" % " ".join(sys.argv[1:])) if sys.argv[1:] else ""),
                "cpu": cpu, "ncpu": os.cpu_count(), "kernel": platform.platform(),
                "load_start": load_start, "load_end": "%.2f" % os.getloadavg()[0],
                "commit": (commit or "?") + (" + uncommitted changes" if dirty else "") + ", allocator.so sha256 " + snap_sha,
                "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "duration": "%.0f s" % (time.time() - start),
                "tools": {"gcc": version(["gcc", "--version"]), "git": version(["git", "--version"]),
                          "python": version([python_for_workload(), "--version"]),
                          "sort": version(["sort", "--version"])}}
        notes.append("tools: " + "; ".join(meta["tools"].values()))
        report(rows, results, main_cfgs, policy_cfgs, sysc, notes, meta, args.out)
        log("bench: results in %s (results.csv, table.md, bench.svg, scaling.svg, scaling-distinct.svg, raw.json)" % os.path.relpath(args.out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
