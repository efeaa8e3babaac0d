"""Generates the deterministic inputs of the real-program workloads (f).

    python3 gen_inputs.py OUTDIR [scale]

OUTDIR/gcc/gen.c          a C file of a few hundred functions;
OUTDIR/git/base/          a tree of source-like text files;
OUTDIR/git/commits/NN/    files that commit NN overwrites or adds;
OUTDIR/sort/input.txt     a large text file of random lines.
Inputs are regenerated only when OUTDIR/stamp does not match the parameters.
"""
import os
import random
import shutil
import sys

WORDS = ("static const unsigned int return if else while for struct buffer size "
         "count index value node tree list head tail next prev data key hash "
         "alloc free region block split merge policy first best worst fit "
         "lock thread page map cache span header check").split()


def gen_c(d, nfunc, rng):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "gen.c"), "w") as f:
        f.write("#include <stdint.h>\n#include <string.h>\n\n")
        f.write("struct rec { uint32_t a, b; uint64_t c; double d; char name[16]; };\n\n")
        for i in range(nfunc):
            k1, k2, k3 = rng.randint(1, 97), rng.randint(3, 31), rng.randint(2, 13)
            f.write(f"""
static uint64_t helper_{i}(const struct rec *r, int n)
{{
    uint64_t acc = {rng.getrandbits(32)}u;
    for (int j = 0; j < n; j++) {{
        acc ^= (uint64_t)r[j].a * {k1}u + r[j].b;
        acc = (acc << {k3}) | (acc >> {64 - k3});
        if (r[j].d > {rng.random():.4f})
            acc += (uint64_t)(r[j].d * {k2});
        else
            acc -= r[j].c % {k2 + 1};
    }}
    return acc;
}}

uint64_t func_{i}(uint64_t seed)
{{
    struct rec r[{8 + i % 9}];
    for (int j = 0; j < {8 + i % 9}; j++) {{
        r[j].a = (uint32_t)(seed * {k1} + j);
        r[j].b = (uint32_t)(seed >> {k3}) ^ j;
        r[j].c = seed * {rng.getrandbits(31)}u + j * {k2};
        r[j].d = (double)(r[j].a % 1000) / 1000.0;
        memset(r[j].name, 'a' + j % 26, sizeof r[j].name);
    }}
    uint64_t s = helper_{i}(r, {8 + i % 9});
    switch ((unsigned)(s % 7)) {{
""")
            for c in range(7):
                f.write(f"    case {c}: s = s * {rng.randint(3, 999)}u + {rng.randint(0, 999)}u; break;\n")
            f.write("    }\n    return s;\n}\n")


def text_file(rng, nlines):
    out = []
    for _ in range(nlines):
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))))
    return "\n".join(out) + "\n"


def gen_git(d, nfiles, ncommits, rng):
    base = os.path.join(d, "base")
    names = []
    for i in range(nfiles):
        sub = f"dir{i % 17:02d}/sub{i % 5}"
        name = f"{sub}/file{i:04d}.txt"
        names.append(name)
        p = os.path.join(base, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text_file(rng, rng.randint(20, 200)))
    for c in range(ncommits):
        cd = os.path.join(d, "commits", f"{c:02d}")
        for name in rng.sample(names, max(1, nfiles // 10)):
            p = os.path.join(cd, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(os.path.join(base, name)) as f:
                lines = f.read().splitlines()
            for _ in range(rng.randint(1, 8)):  # edit a few lines
                lines[rng.randrange(len(lines))] = text_file(rng, 1).rstrip("\n")
            lines.insert(rng.randrange(len(lines) + 1), text_file(rng, 1).rstrip("\n"))
            with open(p, "w") as f:
                f.write("\n".join(lines) + "\n")
        p = os.path.join(cd, f"new/commit{c:02d}.txt")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text_file(rng, 50))


def gen_sort(d, mbytes, rng):
    os.makedirs(d, exist_ok=True)
    target = int(mbytes * 1e6)
    with open(os.path.join(d, "input.txt"), "w") as f:
        written = 0
        while written < target:
            chunk = []
            for _ in range(10000):
                chunk.append("%s %08x %s %d" % (rng.choice(WORDS), rng.getrandbits(32),
                                                rng.choice(WORDS), rng.randint(0, 10 ** 9)))
            s = "\n".join(chunk) + "\n"
            f.write(s)
            written += len(s)


def main():
    out = sys.argv[1]
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    nfunc = max(20, int(250 * scale))
    nfiles = max(20, int(400 * scale))
    ncommits = max(3, int(20 * scale))
    mbytes = max(2.0, 40 * scale)
    stamp = f"v1 nfunc={nfunc} nfiles={nfiles} ncommits={ncommits} mbytes={mbytes}\n"
    sp = os.path.join(out, "stamp")
    if os.path.exists(sp) and open(sp).read() == stamp:
        return
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    gen_c(os.path.join(out, "gcc"), nfunc, random.Random(7))
    gen_git(os.path.join(out, "git"), nfiles, ncommits, random.Random(8))
    gen_sort(os.path.join(out, "sort"), mbytes, random.Random(9))
    with open(sp, "w") as f:
        f.write(stamp)


if __name__ == "__main__":
    main()
