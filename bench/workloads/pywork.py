"""(f) An object-heavy, deterministic Python workload.

Builds records (dicts, lists, tuples, small class instances), round-trips them
through json, runs regular expressions over generated text, sorts, groups and
counts. Prints one line: a SHA-256 of everything it computed, so the harness
can check that every allocator produced the same result.
Usage: python3 pywork.py [scale]   (scale 1.0 is the full-size run)
"""
import collections
import hashlib
import json
import random
import re
import sys

scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
ROUNDS = max(1, round(2 * scale))   # scale 1: two rounds
SIZE = min(1.0, 2 * scale)          # below 0.5: one smaller round
rng = random.Random(12345)
h = hashlib.sha256()
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
         "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho",
         "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"]


class Item:
    __slots__ = ("key", "tags", "weight", "children")

    def __init__(self, key, tags, weight):
        self.key = key
        self.tags = tags
        self.weight = weight
        self.children = []


def records(n):
    out = []
    for i in range(n):
        out.append({
            "id": i,
            "name": "-".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))),
            "score": rng.random() * 1000,
            "tags": [rng.choice(WORDS) for _ in range(rng.randint(0, 6))],
            "pos": (rng.randint(-500, 500), rng.randint(-500, 500)),
            "meta": {"k%d" % j: rng.randint(0, 99) for j in range(rng.randint(0, 5))},
        })
    return out


for rnd in range(ROUNDS):
    recs = records(int(40000 * SIZE))
    text = json.dumps(recs, sort_keys=True)
    back = json.loads(text)
    assert len(back) == len(recs)
    h.update(hashlib.sha256(text.encode()).digest())

    # object graph: many small instances, linked
    items = [Item(r["name"], tuple(r["tags"]), r["score"]) for r in back]
    for i, it in enumerate(items):
        if i:
            items[rng.randrange(i)].children.append(it)
    depth_sum = 0
    stack = [(items[0], 0)]
    while stack:
        it, d = stack.pop()
        depth_sum += d
        stack.extend((c, d + 1) for c in it.children)
    h.update(str(depth_sum).encode())

    # group, count, sort
    groups = collections.defaultdict(list)
    for r in back:
        for t in r["tags"]:
            groups[t].append(r["id"])
    counts = collections.Counter(t for r in back for t in r["tags"])
    top = sorted(back, key=lambda r: (-len(r["tags"]), r["name"], r["id"]))[:100]
    h.update(repr(sorted(counts.items())).encode())
    h.update(repr([r["id"] for r in top]).encode())
    h.update(repr({k: len(v) for k, v in sorted(groups.items())}).encode())

    # regular expressions over generated text
    lines = ["%s=%d; %s <%s@%s.example> #%x" % (rng.choice(WORDS), rng.randint(0, 10 ** 6),
                                               rng.choice(WORDS), rng.choice(WORDS),
                                               rng.choice(WORDS), rng.getrandbits(32))
             for _ in range(int(60000 * SIZE))]
    blob = "\n".join(lines)
    emails = re.findall(r"<([a-z]+)@([a-z]+)\.example>", blob)
    nums = [int(m) for m in re.findall(r"=(\d+);", blob)]
    subst = re.sub(r"#([0-9a-f]+)", lambda m: "#" + m.group(1)[::-1], blob)
    h.update(str((len(emails), sum(nums), len(subst))).encode())

    # string building and slicing
    parts = [w.upper() + str(i) for i, w in enumerate(rng.choice(WORDS) for _ in range(int(200000 * SIZE)))]
    joined = ",".join(parts)
    h.update(hashlib.sha256(joined[::7].encode()).digest())
    del recs, text, back, items, groups, lines, blob, subst, parts, joined

print(h.hexdigest())
