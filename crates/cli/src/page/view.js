// fitalloc view: the heap of every policy after any operation of a replay.
//
// Data (see crates/cli/src/frames.rs for the event stream, page.rs for the
// rest): per policy, the changes each operation made to the layout,
// deflated and base64-encoded. At load, each stream is played once and a
// snapshot of the heap is kept every so often (copy on write: a snapshot
// shares the block arrays of the regions that no operation changed since
// the previous one); moving to operation t restores the last snapshot at or
// before t and plays forward (or plays forward from where the heap already
// is).
//
// Drawing: a port of crates/cli/src/svg.rs (`render`): the same bands,
// rows or flow, minimum widths and merging of small blocks, with the same
// constants (passed in D.params), so that a panel shows what
// `fitalloc map --compare --at t` draws.
(function () {
  "use strict";
  const T0 = performance.now();
  const D = JSON.parse(document.getElementById("fitalloc-data").textContent);
  const P = D.params;
  const N = D.ops;
  const TWO32 = 4294967296;
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- data

  function b64bytes(s) {
    const bin = atob(s.trim());
    const a = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
    return a;
  }

  async function inflate(bytes) {
    const ds = new DecompressionStream("deflate");
    const out = new Blob([bytes]).stream().pipeThrough(ds);
    return new Uint8Array(await new Response(out).arrayBuffer());
  }

  // A block is one number: name id * 2^32 + size in 16-byte units * 2 + used.
  // (`>>>` and `&` take their operand modulo 2^32: the name drops out.)
  const unitsOf = (x) => x >>> 1;
  const usedOf = (x) => x & 1;
  const nameOf = (x) => Math.floor(x / TWO32);

  // One policy's heap, played from its event stream.
  class Heap {
    constructor(ev) {
      this.ev = ev;
      this.regs = new Map(); // id -> {u: size in units, b: [blocks]}
      this.order = []; // live region ids, in list order (ids increase)
      this.nextId = 0;
      this.pos = 0;
      this.op = 0;
      this.blocks = 0;
    }

    // Plays one operation; false at the end of the stream.
    step() {
      const ev = this.ev;
      let p = this.pos;
      if (p >= ev.length) return false;
      const rv = () => {
        let b = ev[p++];
        if (b < 128) return b;
        let v = b & 127, m = 128;
        for (;;) {
          b = ev[p++];
          v += (b & 127) * m;
          if (b < 128) return v;
          m *= 128;
        }
      };
      for (;;) {
        const f = ev[p++];
        if (f === 0) break;
        const kind = f & 3;
        if (kind === 1) {
          const u = rv();
          const id = this.nextId++;
          this.regs.set(id, { u: u, b: [u * 2], shared: false });
          this.order.push(id);
          this.blocks += 1;
        } else if (kind === 2) {
          const id = rv();
          this.blocks -= this.regs.get(id).b.length;
          this.regs.delete(id);
          const o = this.order;
          let lo = 0, hi = o.length;
          while (lo < hi) {
            const mid = (lo + hi) >> 1;
            if (o[mid] < id) lo = mid + 1;
            else hi = mid;
          }
          o.splice(lo, 1);
        } else {
          const id = rv(), at = rv();
          let d = (f >> 2) & 7;
          if (!d) d = rv();
          let n = f >> 5;
          if (!n) n = rv();
          const r = this.regs.get(id);
          if (r.shared) {
            r.b = r.b.slice();
            r.shared = false;
          }
          const b = r.b;
          let left = 0;
          for (let i = at; i < at + d; i++) left += unitsOf(b[i]);
          const ins = new Array(n);
          for (let j = 0; j < n; j++) {
            const v = rv();
            const u = j + 1 < n ? Math.floor(v / 4) : left;
            left -= u;
            const name = v & 2 ? rv() : 0;
            ins[j] = name * TWO32 + u * 2 + (v & 1);
          }
          b.splice(at, d, ...ins);
          this.blocks += n - d;
        }
      }
      this.pos = p;
      this.op++;
      return true;
    }

    // A snapshot shares the regions' block arrays with the heap (and with
    // earlier snapshots): a region is copied when an operation first
    // changes it after a snapshot or a restore (copy on write), so a
    // snapshot costs the regions changed since the last one.
    snapshot() {
      const n = this.order.length;
      const ids = Uint32Array.from(this.order), us = new Float64Array(n), bs = new Array(n);
      for (let i = 0; i < n; i++) {
        const r = this.regs.get(ids[i]);
        r.shared = true;
        us[i] = r.u;
        bs[i] = r.b;
      }
      return { op: this.op, pos: this.pos, nextId: this.nextId, blocks: this.blocks, ids, us, bs };
    }

    restore(s) {
      this.regs = new Map();
      this.order = Array.from(s.ids);
      for (let i = 0; i < s.ids.length; i++) this.regs.set(s.ids[i], { u: s.us[i], b: s.bs[i], shared: true });
      this.op = s.op;
      this.pos = s.pos;
      this.nextId = s.nextId;
      this.blocks = s.blocks;
    }

    regions() {
      return this.order.map((id) => this.regs.get(id));
    }
  }

  // A snapshot is taken when the events since the last one reach this many
  // bytes, or this many per block of the heap if more (measured on a 1.3M
  // operation trace of python: 1 per block gave 140 snapshots per policy,
  // 7 ms to reach a moment and about 240 MB of script memory; 2 gives 80,
  // 10 ms and 125 MB; 16 gives 12, 67 ms and 130 MB).
  const SNAP_MIN = 32768;
  const SNAP_PER_BLOCK = 2;

  // A policy: its heap, its snapshots, its names.
  const pols = [];

  async function load(status) {
    for (let i = 0; i < D.policies.length; i++) {
      const pd = D.policies[i];
      status("inflating " + pd.name);
      await new Promise((r) => setTimeout(r, 0));
      const ev = await inflate(b64bytes($("ev-" + i).textContent));
      const h = new Heap(ev);
      const snaps = [h.snapshot()];
      let last = 0;
      status("indexing " + pd.name);
      await new Promise((r) => setTimeout(r, 0));
      while (h.step()) {
        if (h.pos - last >= Math.max(SNAP_MIN, SNAP_PER_BLOCK * h.blocks)) {
          snaps.push(h.snapshot());
          last = h.pos;
        }
      }
      if (h.op !== N) throw new Error(pd.name + ": " + h.op + " operations in the data, not " + N);
      pols.push({ name: pd.name, names: pd.names, heap: h, snaps: snaps, peakOp: pd.peakOp });
    }
  }

  function seek(pl, t) {
    const s = pl.snaps;
    let lo = 0, hi = s.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (s[mid].op <= t) lo = mid;
      else hi = mid - 1;
    }
    const h = pl.heap;
    const a = performance.now();
    if (!(h.op <= t && h.op >= s[lo].op)) h.restore(s[lo]);
    cost.restore += performance.now() - a;
    while (h.op < t && h.step());
  }

  // ------------------------------------------- geometry (svg.rs's render)

  function regionsPerBand(panels, maxRects) {
    const counts = panels.map((p) => p.length);
    const shapes = (per) => 2 * counts.reduce((a, n) => a + Math.ceil(n / per), 0);
    const most = Math.max(0, ...counts);
    let per = Math.max(Math.ceil(shapes(1) / Math.max(maxRects, 1)), 1);
    while (per < most && shapes(per) > maxRects) per++;
    return per;
  }

  function bandsOf(regs, per) {
    const out = [];
    for (let first = 0; first < regs.length; first += per) {
      const last = Math.min(regs.length, first + per) - 1;
      let size = 0;
      for (let i = first; i <= last; i++) size += regs[i].u * 16;
      out.push({ first, last, size });
    }
    return out;
  }

  function place(bands, mode, width) {
    const p = { boxes: [], rows: [], height: 0 };
    let x = 0, y = 0;
    bands.forEach((b, i) => {
      const w = mode.flow ? Math.min(Math.max(b.size * mode.scale, P.flowMin), width) : width;
      if (p.rows.length === 0 || x + w > width + 0.01) {
        if (p.rows.length) y += mode.band + mode.gap;
        x = 0;
        p.rows.push([y, i]);
      }
      p.boxes.push([x, y, w]);
      x += w + (mode.flow ? 3 : 0);
    });
    if (p.rows.length) p.height = y + mode.band;
    return p;
  }

  // Rectangles of a region of w px with runs of blocks narrower than t px
  // merged: [first, last] block indices.
  function segments(r, w, t) {
    const out = [];
    const b = r.b, rs = Math.max(r.u * 16, 1);
    let run = -1;
    for (let i = 0; i < b.length; i++) {
      const pw = (w * (unitsOf(b[i]) * 16)) / rs;
      if (pw < t) {
        if (run < 0) run = i;
      } else {
        if (run >= 0) out.push([run, i - 1]);
        run = -1;
        out.push([i, i]);
      }
    }
    if (run >= 0) out.push([run, b.length - 1]);
    return out;
  }

  function countSegments(r, w, t) {
    if (t === 0) return r.b.length;
    const b = r.b, rs = Math.max(r.u * 16, 1);
    let n = 0, run = false;
    for (let i = 0; i < b.length; i++) {
      if ((w * (unitsOf(b[i]) * 16)) / rs < t) run = true;
      else {
        if (run) n++;
        run = false;
        n++;
      }
    }
    return run ? n + 1 : n;
  }

  function merge(panels, bands, places, maxRects, width) {
    const fits = (t, keep) => {
      let shapes = 0, ok = true;
      const all = [];
      panels.forEach((regs, pi) => {
        const ps = [];
        bands[pi].forEach((b, bi) => {
          const w = places[pi].boxes[bi][2];
          let n = 0, s = [];
          if (b.first === b.last) {
            if (keep) {
              s = segments(regs[b.first], w, t);
              n = s.length;
            } else n = countSegments(regs[b.first], w, t);
          }
          shapes += 1 + Math.max(n, 1);
          ok = ok && n <= Math.floor(w);
          ps.push(s);
        });
        all.push(ps);
      });
      return [ok && shapes <= maxRects, all];
    };
    // svg.rs tries t = 0, 1, 2, 4, ... up to 2 * width and keeps the first
    // that fits (else every band is one run). Fewer segments come with a larger t
    // (a block that turns small joins a run or becomes one), so whether t
    // fits only goes from no to yes along the sequence: a binary search
    // finds the same t.
    const ts = [0];
    for (let t = 1; t <= 2 * width; t *= 2) ts.push(t);
    let chosen;
    if (fits(0, false)[0]) chosen = 0;
    else {
      let lo = 1, hi = ts.length - 1; // the answer is in lo..=hi (hi: the last tried)
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (fits(ts[mid], false)[0]) hi = mid;
        else lo = mid + 1;
      }
      chosen = ts[lo];
      // As svg.rs: if even the last does not fit (blocks wider than their
      // band), one run per band.
      if (lo === ts.length - 1 && !fits(chosen, false)[0]) chosen = Infinity;
    }
    return fits(chosen, true)[1];
  }

  function layoutAll(panels) {
    const width = Math.max(P.width, 100);
    const per = regionsPerBand(panels, P.maxRects);
    const bands = panels.map((regs) => bandsOf(regs, per));
    const mostBands = Math.max(0, ...bands.map((b) => b.length));
    let largest = 0, any = false;
    for (const bs of bands) for (const b of bs) { largest = Math.max(largest, b.size); any = true; }
    if (!any) largest = 1;
    const widest = Math.max(...panels.map((regs) => regs.reduce((a, r) => a + r.u * 16, 0)));
    const flow = mostBands > P.rowsMax;
    const mode = {
      flow,
      band: flow ? 18 : 22,
      gap: flow ? 5 : 7,
      scale: Math.min(width / Math.max(largest, 65536), (P.flowRows * width) / Math.max(widest, 1)),
    };
    const places = bands.map((b) => place(b, mode, width));
    const segs = merge(panels, bands, places, P.maxRects, width);
    return { width, per, bands, places, segs, mode, flow };
  }

  // ------------------------------------------------------------- drawing

  const hex = (c) => "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");
  const USED = hex(P.used), FREE = hex(P.free);
  const mixed = new Map();
  const mix = (share) => {
    const c = P.used.map((a, i) => Math.round(P.free[i] + (a - P.free[i]) * share));
    const key = c[0] * 65536 + c[1] * 256 + c[2];
    let s = mixed.get(key);
    if (s === undefined) mixed.set(key, (s = hex(c)));
    return s;
  };

  function human(bytes) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let v = bytes, u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u++; }
    if (u === 0) return bytes + " B";
    return (v >= 100 || v % 1 === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[u];
  }

  function rowLabel(b, flow) {
    if (flow) return "#" + b.first;
    if (b.first === b.last) return "#" + b.first + " " + human(b.size);
    return "#" + b.first + "-#" + b.last + " " + human(b.size);
  }

  const esc = (s) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]);

  // Draws every panel; returns per panel what was drawn. Each rectangle is
  // a subpath "M x y h w v h h -w z" of the path of its fill (and stroke):
  // a few paths per panel instead of thousands of elements, which the
  // browser lays out in a fraction of the time. Hovering finds the
  // rectangle under the mouse from the same coordinates (pl.hit).
  function draw() {
    const a = performance.now();
    const panels = pols.map((pl) => pl.heap.regions());
    const L = layoutAll(panels);
    cost.geometry += performance.now() - a;
    const out = [];
    pols.forEach((pl, pi) => {
      const regs = panels[pi];
      const pla = L.places[pi];
      const x0 = P.label, top = 6, h = L.mode.band;
      const hs = String(h);
      const groups = new Map(); // "fill|stroke" -> [subpaths]
      const r2 = (v) => Math.round(v * 100) / 100;
      const add = (key, x, y, w) => {
        let g = groups.get(key);
        if (!g) groups.set(key, (g = []));
        const ws = r2(w);
        g.push("M" + r2(x) + " " + y + "h" + ws + "v" + hs + "h-" + ws + "z");
      };
      const hit = []; // per band: [x, y, w, band, xs (segment starts, then the end), segs]
      const labels = [];
      const outline = [];
      let rects = 0, runs = 0, blocks = 0, inUse = 0, mapped = 0;
      for (const r of regs) {
        blocks += r.b.length;
        mapped += r.u * 16;
        for (const x of r.b) if (usedOf(x)) inUse += unitsOf(x) * 16;
      }
      for (const [ry, first] of pla.rows) {
        labels.push('<text x="' + (x0 - 6).toFixed(1) + '" y="' + (top + ry + h / 2 + 4).toFixed(1) +
          '" font-size="11" text-anchor="end" fill="#333">' + esc(rowLabel(L.bands[pi][first], L.flow)) + "</text>");
      }
      L.bands[pi].forEach((b, bi) => {
        const [bx, by, w] = pla.boxes[bi];
        const gx = x0 + bx, gy = top + by;
        if (b.first !== b.last) {
          let u = 0;
          for (let i = b.first; i <= b.last; i++) for (const x of regs[i].b) if (usedOf(x)) u += unitsOf(x) * 16;
          rects++;
          runs++;
          add(mix(u / Math.max(b.size, 1)) + "|R", gx, gy, w);
          hit.push([gx, gy, w, b, null, null]);
          return;
        }
        const r = regs[b.first];
        const segs = L.segs[pi][bi];
        const rs = Math.max(r.u * 16, 1);
        const extra = Math.max(w - segs.length, 0);
        const offs = new Float64Array(segs.length + 1);
        let off = 0, k = 0;
        for (let i = 0; i < r.b.length && k < segs.length; i++) {
          if (segs[k][0] === i) offs[k++] = off;
          off += unitsOf(r.b[i]) * 16;
        }
        offs[segs.length] = r.u * 16;
        const xs = new Float64Array(segs.length + 1);
        for (let j = 0; j < segs.length; j++) xs[j] = gx + j + (extra * offs[j]) / rs;
        xs[segs.length] = gx + w;
        for (let j = 0; j < segs.length; j++) {
          const [f, l] = segs[j];
          const sw = Math.max(xs[j + 1] - xs[j], 0.5);
          let fill;
          if (f === l) fill = usedOf(r.b[f]) ? USED : FREE;
          else {
            let u = 0, all = 0;
            for (let i = f; i <= l; i++) {
              const s = unitsOf(r.b[i]) * 16;
              all += s;
              if (usedOf(r.b[i])) u += s;
            }
            fill = mix(u / Math.max(all, 1));
            runs++;
          }
          rects++;
          add(fill + (sw >= 3 ? "|s" : "|"), xs[j], gy, sw);
        }
        outline.push("M" + gx.toFixed(2) + " " + gy.toFixed(1) + "h" + w.toFixed(2) + "v" + hs + "h" + (-w).toFixed(2) + "z");
        hit.push([gx, gy, w, b, xs, segs, offs]);
      });
      const parts = labels;
      for (const [key, subpaths] of groups) {
        const [fill, kind] = key.split("|");
        const stroke = kind === "s" ? ' stroke="#fff" stroke-width="0.6"' : kind === "R" ? ' stroke="#444" stroke-width="0.7"' : "";
        parts.push('<path class="blocks" data-n="' + subpaths.length + '" fill="' + fill + '"' + stroke + ' d="' + subpaths.join("") + '"/>');
      }
      if (outline.length) parts.push('<path class="outline" fill="none" stroke="#444" stroke-width="0.7" d="' + outline.join("") + '"/>');
      if (!regs.length) {
        parts.push('<text x="' + x0 + '" y="22" font-size="12" fill="#666">(no regions: the heap is empty)</text>');
      }
      const height = Math.max(pla.height, 24) + top + 8;
      const width = P.label + L.width + P.margin;
      const el = $("panel-" + pi);
      const svg = el.querySelector(".map");
      svg.setAttribute("width", width);
      svg.setAttribute("height", height);
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
      const hA = performance.now();
      svg.innerHTML = parts.join("");
      cost.html += performance.now() - hA;
      pl.hit = hit;
      pl.band = h;
      pl.regs = regs;
      const frag = inUse > 0 ? " (mapped/in use - 1 = " + (mapped / inUse - 1).toFixed(3) + ")" : "";
      el.querySelector(".cap").textContent =
        "in use " + inUse + " B (" + human(inUse) + "), mapped " + mapped + " B (" + human(mapped) + ")" + frag +
        "; " + regs.length + " regions, " + blocks + " blocks";
      el.querySelector(".merged").textContent = runs
        ? blocks + " blocks drawn as " + rects + " rectangles: runs of blocks too narrow to draw one by one merged into " + runs + " runs"
        : "";
      Object.assign(el.dataset, {
        inUse: inUse, mapped: mapped, regions: regs.length, blocks: blocks, rects: rects, runs: runs, op: pl.heap.op,
      });
      out.push({ rects, runs });
    });
    cost.svg += performance.now() - a;
    return out;
  }

  // What is under (x, y) of panel pl's drawing: the tooltip's text.
  function hitText(pl, x, y) {
    for (const [gx, gy, w, b, xs, segs, offs] of pl.hit || []) {
      if (x < gx || x > gx + w || y < gy || y > gy + pl.band) continue;
      if (!xs) return tipText(pl, ["R", b.first, b.last]);
      let lo = 0, hi = segs.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (xs[mid] <= x) lo = mid;
        else hi = mid - 1;
      }
      return tipText(pl, [b.first, segs[lo][0], segs[lo][1], offs[lo]]);
    }
    return "";
  }

  function tipText(pl, tip) {
    if (tip[0] === "R") {
      let n = 0, nu = 0, u = 0, size = 0;
      for (let i = tip[1]; i <= tip[2]; i++) {
        size += pl.regs[i].u * 16;
        for (const x of pl.regs[i].b) {
          n++;
          if (usedOf(x)) { nu++; u += unitsOf(x) * 16; }
        }
      }
      return "regions #" + tip[1] + "-#" + tip[2] + " merged (" + (tip[2] - tip[1] + 1) + " regions, " + size +
        " bytes): " + n + " blocks (" + nu + " used), " + u + " bytes in use";
    }
    const [ri, f, l, off] = tip;
    const r = pl.regs[ri];
    const region = "region #" + ri + ": " + r.u * 16 + " bytes, " + r.b.length + " blocks";
    if (f === l) {
      const x = r.b[f];
      return "'" + pl.names[nameOf(x)] + "' " + unitsOf(x) * 16 + " bytes [" + (usedOf(x) ? "USED" : "FREE") +
        "] at offset 0x" + off.toString(16) + " of region #" + ri + "\n" + region;
    }
    let u = 0, all = 0, nu = 0;
    for (let i = f; i <= l; i++) {
      const s = unitsOf(r.b[i]) * 16;
      all += s;
      if (usedOf(r.b[i])) { u += s; nu++; }
    }
    return (l - f + 1) + " small blocks merged (" + nu + " used, " + (l - f + 1 - nu) + " free): " + u + " of " + all +
      " bytes in use, offsets 0x" + off.toString(16) + "-0x" + (off + all).toString(16) + " of region #" + ri + "\n" + region;
  }

  // ------------------------------------------------------------ the page

  let t = 0, playing = false, hashTimer = 0;
  const slider = $("slider"), opbox = $("opbox");
  let cursor = null;

  function setupTimeline() {
    const svg = document.querySelector("#timeline svg");
    if (!svg) return;
    const g = svg.querySelector("#plot");
    const top = +g.dataset.top, bottom = +g.dataset.bottom;
    cursor = document.createElementNS("http://www.w3.org/2000/svg", "path");
    cursor.setAttribute("id", "cursor");
    cursor.setAttribute("stroke", "#000");
    cursor.setAttribute("stroke-width", "1.5");
    cursor.dataset.top = top;
    cursor.dataset.bottom = bottom;
    svg.appendChild(cursor);
    svg.addEventListener("click", (e) => {
      const box = svg.getBoundingClientRect();
      const vb = svg.viewBox.baseVal;
      const x = ((e.clientX - box.left) * vb.width) / box.width;
      const f = (x - +g.dataset.left) / +g.dataset.width;
      go(Math.round(Math.min(Math.max(f, 0), 1) * N));
    });
  }

  function moveCursor() {
    if (!cursor) return;
    const g = document.querySelector("#timeline #plot");
    const x = +g.dataset.left + (t / Math.max(+g.dataset.xmax, 1)) * +g.dataset.width;
    cursor.setAttribute("d", "M" + x.toFixed(1) + " " + cursor.dataset.top + "V" + cursor.dataset.bottom);
  }

  // Moves to operation n (0..N) and redraws; returns the milliseconds taken.
  const cost = { seek: 0, geometry: 0, svg: 0, restore: 0, html: 0 };
  function go(n, keepHash) {
    const a = performance.now();
    t = Math.min(Math.max(Math.round(n), 0), N);
    for (const pl of pols) seek(pl, t);
    cost.seek += performance.now() - a;
    draw();
    slider.value = t;
    opbox.value = t;
    $("when").textContent = "after operation " + t + " of " + N;
    moveCursor();
    document.body.dataset.op = t;
    if (!keepHash) {
      clearTimeout(hashTimer);
      hashTimer = setTimeout(() => history.replaceState(null, "", "#t=" + t), 250);
    }
    return performance.now() - a;
  }

  function hashParams() {
    const out = {};
    for (const kv of location.hash.replace(/^#/, "").split("&")) {
      const [k, v] = kv.split("=");
      if (k) out[k] = v;
    }
    return out;
  }

  function stepSize() {
    const v = $("speed").value;
    return v === "auto" ? Math.max(1, Math.round(N / 600)) : +v;
  }

  function play(on) {
    playing = on && t < N;
    $("play").textContent = playing ? "\u23f8 pause" : "\u25b6 play";
    if (playing) requestAnimationFrame(tick);
  }

  function tick() {
    if (!playing) return;
    go(t + stepSize());
    if (t >= N) play(false);
    else requestAnimationFrame(tick);
  }

  function controls() {
    slider.max = N;
    opbox.max = N;
    slider.addEventListener("input", () => go(+slider.value));
    opbox.addEventListener("change", () => go(+opbox.value));
    $("play").addEventListener("click", () => play(!playing));
    $("back").addEventListener("click", () => go(t - 1));
    $("fwd").addEventListener("click", () => go(t + 1));
    $("peak").addEventListener("click", () => go(pols[0].peakOp));
    document.addEventListener("keydown", (e) => {
      if (e.target === opbox) return;
      const big = Math.max(1, Math.round(N / 100));
      const k = {
        ArrowLeft: () => go(t - (e.shiftKey ? 100 : 1)),
        ArrowRight: () => go(t + (e.shiftKey ? 100 : 1)),
        PageUp: () => go(t - big),
        PageDown: () => go(t + big),
        Home: () => go(0),
        End: () => go(N),
        " ": () => play(!playing),
      }[e.key];
      if (k) {
        e.preventDefault();
        k();
      }
    });
    window.addEventListener("hashchange", () => {
      const h = hashParams();
      if (h.t !== undefined && +h.t !== t) go(+h.t, true);
    });
    const tipEl = $("tip");
    document.querySelectorAll(".panel").forEach((el, pi) => {
      const svg = el.querySelector(".map");
      el.addEventListener("mousemove", (e) => {
        const box = svg.getBoundingClientRect();
        const text = hitText(pols[pi], e.clientX - box.left, e.clientY - box.top);
        if (!text) { tipEl.style.display = "none"; return; }
        tipEl.textContent = text;
        tipEl.style.display = "block";
        tipEl.style.left = e.pageX + 14 + "px";
        tipEl.style.top = e.pageY + 14 + "px";
      });
      el.addEventListener("mouseleave", () => { tipEl.style.display = "none"; });
    });
  }

  // #bench=K: K moves to scattered moments, timed (seek + draw + layout).
  function bench(k) {
    const times = [];
    cost.seek = cost.geometry = cost.svg = cost.restore = cost.html = 0;
    for (let i = 1; i <= k; i++) {
      const n = Math.round(N * ((i * 0.6180339887498949) % 1));
      const a = performance.now();
      go(n, true);
      void document.body.offsetHeight;
      times.push(performance.now() - a);
    }
    const sorted = times.slice().sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    const res = {
      moves: k,
      mean_ms: +mean.toFixed(1),
      median_ms: +sorted[Math.floor(sorted.length / 2)].toFixed(1),
      max_ms: +sorted[sorted.length - 1].toFixed(1),
      load_ms: +(document.body.dataset.loadMs || 0),
      snapshots: pols.map((p) => p.snaps.length),
      js_heap_mib: performance.memory ? Math.round(performance.memory.usedJSHeapSize / 1048576) : null,
      seek_ms: +(cost.seek / k).toFixed(1),
      restore_ms: +(cost.restore / k).toFixed(1),
      html_ms: +(cost.html / k).toFixed(1),
      geometry_ms: +(cost.geometry / k).toFixed(1),
      draw_ms: +((cost.svg - cost.geometry) / k).toFixed(1),
    };
    $("bench").textContent = JSON.stringify(res);
    console.log("fitalloc bench " + JSON.stringify(res));
  }

  async function main() {
    const status = (s) => ($("when").textContent = s + "\u2026");
    try {
      await load(status);
    } catch (e) {
      $("when").textContent = "cannot load the data: " + e;
      document.body.dataset.error = String(e);
      return;
    }
    setupTimeline();
    controls();
    const h = hashParams();
    go(h.t !== undefined ? +h.t : pols[0].peakOp, true);
    document.body.dataset.loadMs = (performance.now() - T0).toFixed(0);
    document.body.dataset.ready = "1";
    if (h.bench) bench(+h.bench);
  }

  main();
})();
