"""Minimal SVG charts for the benchmark (plain Python, no dependencies).

bars():   grouped bars, one group per workload, one colour per allocator, on a
          log scale around 1 (= glibc); two panels: time ratio and RSS ratio.
loglog(): lines on log-log axes (fragmentation scaling).
"""
import math
from xml.sax.saxutils import escape

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]


def _text(x, y, s, size=11, anchor="start", rotate=None, weight="normal", fill="#222"):
    tr = ' transform="rotate(%g %g %g)"' % (rotate, x, y) if rotate is not None else ""
    return '<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" font-weight="%s" fill="%s"%s>%s</text>' % (
        x, y, size, anchor, weight, fill, tr, escape(str(s)))


def _log_ticks(lo, hi):
    """Decade and 2/5 ticks between lo and hi (both > 0)."""
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def _fmt(v):
    if v >= 1:
        return "%g" % v
    return ("%.3f" % v).rstrip("0")


def _panel(out, x0, y0, w, h, groups, names, idx, ylabel):
    vals = [g[idx][n] for g in groups for n in names if g[idx].get(n)]
    if not vals:
        out.append(_text(x0 + w / 2, y0 + h / 2, "no data", anchor="middle"))
        return
    lo = min(min(vals), 1.0) / 1.25
    hi = max(max(vals), 1.0) * 1.25
    ly = lambda v: y0 + h - (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)) * h
    out.append('<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#999"/>' % (x0, y0, w, h))
    for t in _log_ticks(lo, hi):
        y = ly(t)
        out.append('<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e3e3e3"/>' % (x0, y, x0 + w, y))
        out.append(_text(x0 - 5, y + 4, _fmt(t), 10, "end"))
    y1 = ly(1.0)
    out.append('<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#000" stroke-width="1.5"/>' % (x0, y1, x0 + w, y1))
    out.append(_text(x0 + w - 4, y1 - 4, "glibc = 1", 10, "end"))
    out.append(_text(x0 - 42, y0 + h / 2, ylabel, 12, "middle", rotate=-90))
    gw = w / len(groups)
    bw = gw * 0.8 / len(names)
    for gi, g in enumerate(groups):
        for ni, n in enumerate(names):
            v = g[idx].get(n)
            x = x0 + gi * gw + gw * 0.1 + ni * bw
            if not v:
                out.append(_text(x + bw / 2, y1 - 2, "×", 9, "middle", fill=COLOURS[ni % len(COLOURS)]))
                continue
            y = ly(v)
            top, bot = min(y, y1), max(y, y1)
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2f</title></rect>' % (
                x, top, max(bw - 1, 1), max(bot - top, 0.5), COLOURS[ni % len(COLOURS)], escape(g[0]), n, v))


def bars(path, groups, names, title):
    """groups: [(label, {name: time_ratio}, {name: rss_ratio})]"""
    n = max(len(groups), 1)
    pw = max(700, n * (len(names) * 9 + 14))
    left, top, ph, gap, bottom = 70, 60, 260, 50, 170
    W = left + pw + 30
    H = top + ph + gap + ph + bottom
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>', _text(W / 2, 22, title, 14, "middle", weight="bold")]
    for i, nm in enumerate(names):
        x = left + i * 130
        out.append('<rect x="%d" y="32" width="12" height="12" fill="%s"/>' % (x, COLOURS[i % len(COLOURS)]))
        out.append(_text(x + 16, 43, nm, 12))
    _panel(out, left, top, pw, ph, groups, names, 1, "time / glibc (log)")
    _panel(out, left, top + ph + gap, pw, ph, groups, names, 2, "peak RSS / glibc (log)")
    gw = pw / n
    for gi, g in enumerate(groups):
        x = left + gi * gw + gw / 2
        y = top + ph + gap + ph + 12
        out.append(_text(x, y, g[0], 10, "end", rotate=-50))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def loglog(path, series, title):
    """series: {name: [(n, value)]}; draws also an O(n) reference line."""
    pts = [p for s in series.values() for p in s if p[1] and p[1] > 0]
    W, H, left, top, pw, ph = 760, 480, 80, 50, 470, 360
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>', _text(W / 2, 24, title, 13, "middle", weight="bold")]
    if not pts:
        out += [_text(W / 2, H / 2, "no data", anchor="middle"), "</svg>"]
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")
        return
    xs = [p[0] for p in pts]
    xlo, xhi = min(xs), max(xs)
    if xlo == xhi:
        xhi = xlo * 10
    # reference: a linear scan growing from the slowest fitalloc start point
    ref_name = next((k for k in series if k.startswith("fitalloc")), None)
    ref = None
    if ref_name and series[ref_name]:
        n0, v0 = series[ref_name][0]
        ref = [(xlo, v0 * xlo / n0), (xhi, v0 * xhi / n0)]
    ys = [p[1] for p in pts] + ([ref[1][1]] if ref else [])
    ylo, yhi = min(ys) / 1.5, max(ys) * 1.5
    lx = lambda v: left + (math.log(v) - math.log(xlo)) / (math.log(xhi) - math.log(xlo)) * pw
    ly = lambda v: top + ph - (math.log(v) - math.log(ylo)) / (math.log(yhi) - math.log(ylo)) * ph
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>' % (left, top, pw, ph))
    for t in _log_ticks(ylo, yhi):
        if len(_log_ticks(ylo, yhi)) > 12 and str(t)[0] != "1":
            continue
        y = ly(t)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e3e3"/>' % (left, y, left + pw, y))
        out.append(_text(left - 5, y + 4, _fmt(t), 10, "end"))
    for t in sorted(set(xs)):
        x = lx(t)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e3e3e3"/>' % (x, top, x, top + ph))
        out.append(_text(x, top + ph + 16, "1e%d" % round(math.log10(t)) if t >= 100 else t, 10, "middle"))
    out.append(_text(left + pw / 2, top + ph + 36, "free blocks n (log)", 12, "middle"))
    out.append(_text(left - 55, top + ph / 2, "ns per allocation (log)", 12, "middle", rotate=-90))
    if ref:
        out.append('<polyline fill="none" stroke="#aaa" stroke-dasharray="2,4" stroke-width="1.5" points="%s"/>' % " ".join(
            "%.1f,%.1f" % (lx(a), ly(b)) for a, b in ref))
    for i, (name, s) in enumerate(series.items()):
        s = [p for p in s if p[1] and p[1] > 0]
        if not s:
            continue
        c = COLOURS[i % len(COLOURS)]
        dash = "" if name.startswith("fitalloc") else ' stroke-dasharray="6,3"'
        width = 2.5 if name.startswith("fitalloc") else 1.5
        out.append('<polyline fill="none" stroke="%s" stroke-width="%g"%s points="%s"/>' % (
            c, width, dash, " ".join("%.1f,%.1f" % (lx(a), ly(b)) for a, b in s)))
        for a, b in s:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s n=%g: %.1f ns</title></circle>' % (
                lx(a), ly(b), c, escape(name), a, b))
        ly0 = top + 10 + i * 18
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="%g"%s/>' % (
            left + pw + 15, ly0, left + pw + 40, ly0, c, width, dash))
        out.append(_text(left + pw + 45, ly0 + 4, name, 11))
    if ref:
        ly0 = top + 10 + len(series) * 18
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#aaa" stroke-dasharray="2,4" stroke-width="1.5"/>' % (
            left + pw + 15, ly0, left + pw + 40, ly0))
        out.append(_text(left + pw + 45, ly0 + 4, "O(n) scan (slope 1)", 11, fill="#777"))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
