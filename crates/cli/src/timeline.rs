//! The heap over time: bytes in use, bytes mapped and fragmentation after
//! every operation of a replay, downsampled as it goes, and drawn as SVG.
//!
//! ```text
//!  op 1 2 3 4 | 5 6 7 8 | ...      a bucket keeps the min and max of every
//!     [bucket]  [bucket]  ...      series over its operations; when `cap`
//!                                  buckets are full, pairs merge and the
//!                                  width (operations per bucket) doubles
//! ```
//!
//! - **Bounded**: a [`Sampler`] holds at most `cap` buckets whatever the
//!   trace's length, and costs a few comparisons per operation, so a
//!   10-million-operation trace samples as fast as it replays.
//! - **Peaks survive**: a bucket keeps the minimum and the maximum of each
//!   series, and the picture draws the band between them, so a spike of
//!   one operation is still drawn at its full height.
//! - **Aligned**: every policy's sampler sees the same operations, so their
//!   buckets cover the same operations and share the x axis.
//!
//! Fragmentation is `mapped / in use - 1` after an operation (undefined
//! while nothing is in use). Early in a run, and late when the heap
//! empties, it is the ratio of two small numbers (one page mapped for one
//! small block is 127), so the picture draws it only for buckets whose
//! bytes in use stayed at least [`FRAG_FLOOR`] of that policy's peak, and
//! says so.
//!
//! The SVG names its parts for tools and tests: each series is a
//! `<path class="series" data-policy=".." data-kind="in_use|mapped|fragmentation"
//! data-max="..">`, each panel a `<g class="panel" data-top data-bottom
//! data-ymax>`, the plot area `<g id="plot" data-left data-width data-xmax>`.

use std::fmt::Write as _;

use fitalloc::{Heap, Policy};

use crate::pages::Pages;
use crate::replay::{Step, Watch};
use crate::svg::{self, esc, human};

/// Buckets kept by default: the points of each series.
pub const POINTS: usize = 1000;

/// Fragmentation is drawn where bytes in use are at least this share of
/// the policy's peak.
pub const FRAG_FLOOR: f64 = 0.1;

/// The smallest and largest value seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range<T> {
    /// Smallest.
    pub min: T,
    /// Largest.
    pub max: T,
}

impl<T: PartialOrd + Copy> Range<T> {
    fn of(v: T) -> Range<T> {
        Range { min: v, max: v }
    }

    fn add(&mut self, v: T) {
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
    }

    fn join(&mut self, o: Range<T>) {
        self.add(o.min);
        self.add(o.max);
    }
}

/// Consecutive operations summed up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Operations done at the bucket's end (its last operation, 1-based).
    pub ops: u64,
    /// Bytes requested by the program up to the bucket's end.
    pub requested: u64,
    /// Bytes in use (whole blocks) after each operation.
    pub in_use: Range<u64>,
    /// Bytes mapped after each operation.
    pub mapped: Range<u64>,
    /// `mapped / in use - 1` after each operation with something in use.
    pub frag: Option<Range<f64>>,
}

impl Bucket {
    fn join(&mut self, o: &Bucket) {
        self.ops = o.ops;
        self.requested = o.requested;
        self.in_use.join(o.in_use);
        self.mapped.join(o.mapped);
        self.frag = match (self.frag, o.frag) {
            (Some(mut a), Some(b)) => {
                a.join(b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
    }
}

/// A program mark (`print_memory` call): where it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Operations done before it.
    pub ops: u64,
    /// Bytes requested before it.
    pub requested: u64,
}

/// Most marks kept (a program printing its heap in a loop); the rest are
/// counted.
pub const MARKS_MAX: usize = 100_000;

/// Samples one policy's replay (see the module docs).
#[derive(Clone, Debug)]
pub struct Sampler {
    cap: usize,
    /// Operations per full bucket.
    width: u64,
    done: Vec<Bucket>,
    cur: Option<Bucket>,
    in_cur: u64,
    requested: u64,
    marks: Vec<Mark>,
    marks_dropped: u64,
}

impl Sampler {
    /// A sampler of at most `cap` buckets (rounded up to an even number,
    /// at least 2).
    pub fn new(cap: usize) -> Sampler {
        let cap = cap.max(2).next_multiple_of(2);
        Sampler {
            cap,
            width: 1,
            done: Vec::with_capacity(cap),
            cur: None,
            in_cur: 0,
            requested: 0,
            marks: Vec::new(),
            marks_dropped: 0,
        }
    }

    /// Adds the state after one operation.
    pub fn push(&mut self, ops: u64, requested: u64, in_use: u64, mapped: u64) {
        self.requested = requested;
        let frag = (in_use > 0).then(|| Range::of(mapped as f64 / in_use as f64 - 1.0));
        let b = Bucket {
            ops,
            requested,
            in_use: Range::of(in_use),
            mapped: Range::of(mapped),
            frag,
        };
        match &mut self.cur {
            Some(c) => c.join(&b),
            None => self.cur = Some(b),
        }
        self.in_cur += 1;
        if self.in_cur == self.width {
            self.done.extend(self.cur.take());
            self.in_cur = 0;
            if self.done.len() == self.cap {
                self.halve();
            }
        }
    }

    /// Merges pairs of buckets; the width doubles.
    fn halve(&mut self) {
        let pairs: Vec<Bucket> = self
            .done
            .chunks(2)
            .map(|c| {
                let mut b = c[0];
                if let Some(o) = c.get(1) {
                    b.join(o);
                }
                b
            })
            .collect();
        self.done = pairs;
        self.width *= 2;
    }

    /// Records a mark after the operations pushed so far.
    pub fn mark(&mut self, ops: u64) {
        if self.marks.len() < MARKS_MAX {
            self.marks.push(Mark {
                ops,
                requested: self.requested,
            });
        } else {
            self.marks_dropped += 1;
        }
    }

    /// The buckets, the last one possibly partial.
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut v = self.done.clone();
        v.extend(self.cur);
        v
    }

    /// Operations per full bucket.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// The marks kept, and how many more there were.
    pub fn marks(&self) -> (&[Mark], u64) {
        (&self.marks, self.marks_dropped)
    }

    /// Largest bytes in use after any operation, and the first operation
    /// after which it was reached is in a bucket ending at or after it.
    pub fn peak_in_use(&self) -> u64 {
        self.buckets()
            .iter()
            .map(|b| b.in_use.max)
            .max()
            .unwrap_or(0)
    }
}

impl Watch for Sampler {
    fn after(&mut self, heap: &Heap<Pages>, op: u64, step: &Step, _slots: &[usize]) {
        let c = heap.counters();
        let requested = self.requested.saturating_add(step.requested());
        self.push(op, requested, c.in_use as u64, c.mapped as u64);
    }

    fn mark(&mut self, ops: u64) {
        Sampler::mark(self, ops);
    }
}

/// What the x axis counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    /// Operations (mallocs, frees, ...).
    Operations,
    /// Bytes requested by the program so far (malloc sizes, realloc's new
    /// sizes, ...).
    Requested,
}

/// The colour of a policy's series.
pub fn policy_color(p: Policy) -> &'static str {
    match p {
        Policy::FirstFit => "#1f77b4",
        Policy::NextFit => "#e8710a",
        Policy::BestFit => "#2ca02c",
        Policy::WorstFit => "#c5221f",
    }
}

const LEFT: f64 = 96.0;
const RIGHT: f64 = 24.0;
const BYTES_H: f64 = 250.0;
const FRAG_H: f64 = 140.0;
const GAP: f64 = 46.0;

/// Drawing parameters.
#[derive(Clone, Copy, Debug)]
pub struct PlotOptions {
    /// Width of the whole picture (px).
    pub width: f64,
    /// What the x axis counts.
    pub x: XAxis,
}

/// One policy's samples.
pub struct Series<'a> {
    /// The policy.
    pub policy: Policy,
    /// Its samples.
    pub sampler: &'a Sampler,
}

/// A tick step for an axis up to `max` with about `n` ticks: 1, 2 or 5
/// times a power of ten, or (`binary`) 1, 2, 5, 10, 20, ... times a power
/// of 1024.
fn tick_step(max: f64, n: f64, binary: bool) -> f64 {
    let target = (max / n).max(f64::MIN_POSITIVE);
    let unit = if binary {
        let mut u = 1.0;
        while u * 1024.0 <= target {
            u *= 1024.0;
        }
        u
    } else {
        10f64.powf(target.log10().floor())
    };
    [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        .into_iter()
        .map(|m| m * unit)
        .find(|&s| s >= target)
        .unwrap_or(1024.0 * unit)
}

/// Axis maximum: a whole number of ticks at or above `max`.
fn axis_max(max: f64, step: f64) -> f64 {
    ((max / step).ceil() * step).max(step)
}

/// Count in a short form: 950, 12k, 1.5M.
fn short(v: f64) -> String {
    if v >= 1e6 {
        let m = v / 1e6;
        if m.fract() == 0.0 {
            format!("{m:.0}M")
        } else {
            format!("{m:.1}M")
        }
    } else if v >= 1e3 {
        let k = v / 1e3;
        if k.fract() == 0.0 {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else {
        format!("{v:.0}")
    }
}

/// A closed band through the maxima left to right and back through the
/// minima; `None` values cut it into several bands.
fn band(points: &[(f64, Option<(f64, f64)>)]) -> String {
    let mut d = String::new();
    let mut run: Vec<(f64, f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(f64, f64, f64)>, d: &mut String| {
        if run.is_empty() {
            return;
        }
        for (k, &(x, _, top)) in run.iter().enumerate() {
            let _ = write!(d, "{}{x:.1} {top:.1}", if k == 0 { "M" } else { "L" });
        }
        for &(x, bottom, _) in run.iter().rev() {
            let _ = write!(d, "L{x:.1} {bottom:.1}");
        }
        d.push('Z');
        run.clear();
    };
    for &(x, v) in points {
        match v {
            Some((lo, hi)) => run.push((x, lo, hi)),
            None => flush(&mut run, &mut d),
        }
    }
    flush(&mut run, &mut d);
    d
}

/// Where the plot area is, for the page's cursor.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Left edge of the plot area (px).
    pub left: f64,
    /// Its width (px).
    pub width: f64,
    /// Top of the first panel and bottom of the last (px).
    pub top: f64,
    /// Bottom of the last panel.
    pub bottom: f64,
    /// The x value at the right edge.
    pub xmax: f64,
}

/// Draws the series: bytes (in use dashed, mapped solid) in the first
/// panel, fragmentation in the second, marks as vertical lines. Returns
/// the SVG text and the plot area's geometry.
pub fn render(caption: &[String], series: &[Series], opts: PlotOptions) -> (String, Geometry) {
    let width = opts.width.max(300.0);
    let pw = width - LEFT - RIGHT;
    let buckets: Vec<Vec<Bucket>> = series.iter().map(|s| s.sampler.buckets()).collect();
    let xval = |b: &Bucket| match opts.x {
        XAxis::Operations => b.ops as f64,
        XAxis::Requested => b.requested as f64,
    };
    let xmax = buckets
        .iter()
        .flatten()
        .map(xval)
        .fold(0.0, f64::max)
        .max(1.0);
    let xpx = |v: f64| LEFT + v / xmax * pw;

    let mut body = String::new();
    let mut y = 20.0;
    for (k, line) in caption.iter().enumerate() {
        let (size, weight) = if k == 0 { (16, "bold") } else { (12, "normal") };
        y += if k == 0 { 0.0 } else { 16.0 };
        let _ = writeln!(
            body,
            r#"<text x="16" y="{y:.1}" font-size="{size}" font-weight="{weight}">{}</text>"#,
            esc(line)
        );
    }
    // Legend: one swatch per policy, then the line styles.
    y += 24.0;
    let mut lx = 16.0;
    for s in series {
        let c = policy_color(s.policy);
        let _ = writeln!(
            body,
            r##"<path d="M{lx:.1} {:.1}h18" stroke="{c}" stroke-width="3"/><text x="{:.1}" y="{y:.1}" font-size="12">{}</text>"##,
            y - 4.0,
            lx + 23.0,
            s.policy.name()
        );
        lx += 32.0 + 7.5 * s.policy.name().len() as f64;
    }
    let _ = writeln!(
        body,
        r##"<path d="M{:.1} {:.1}h18" stroke="#333" stroke-width="1.5"/><text x="{:.1}" y="{y:.1}" font-size="12">mapped</text><path d="M{:.1} {:.1}h18" stroke="#333" stroke-width="1.5" stroke-dasharray="4 2"/><text x="{:.1}" y="{y:.1}" font-size="12">in use</text>"##,
        lx + 8.0,
        y - 4.0,
        lx + 31.0,
        lx + 90.0,
        y - 4.0,
        lx + 113.0,
    );
    let marked = series
        .first()
        .is_some_and(|s| !s.sampler.marks().0.is_empty());
    if marked {
        let _ = writeln!(
            body,
            r##"<path d="M{:.1} {:.1}v-12" stroke="#777" stroke-width="1" stroke-dasharray="2 2"/><text x="{:.1}" y="{y:.1}" font-size="12">print_memory call</text>"##,
            lx + 170.0,
            y + 1.0,
            lx + 178.0,
        );
    }

    let top1 = y + 24.0;
    let (bot1, top2) = (top1 + BYTES_H, top1 + BYTES_H + GAP);
    let bot2 = top2 + FRAG_H;

    // Bytes panel.
    let bmax = buckets
        .iter()
        .flatten()
        .map(|b| b.mapped.max.max(b.in_use.max))
        .max()
        .unwrap_or(0) as f64;
    let bstep = tick_step(bmax.max(1.0), 5.0, true);
    let bymax = axis_max(bmax, bstep);
    let ybytes = |v: f64| bot1 - v / bymax * BYTES_H;
    axes(&mut body, (top1, bot1), (LEFT, pw), bymax, bstep, |v| {
        human(v as u64)
    });
    let _ = writeln!(
        body,
        r##"<g class="panel" data-panel="bytes" data-top="{top1:.1}" data-bottom="{bot1:.1}" data-ymax="{bymax}">"##
    );
    for (s, bs) in series.iter().zip(&buckets) {
        for (kind, dash, opacity) in [
            ("mapped", "", 0.18),
            ("in_use", " stroke-dasharray=\"4 2\"", 0.0),
        ] {
            let pick = |b: &Bucket| {
                if kind == "mapped" {
                    b.mapped
                } else {
                    b.in_use
                }
            };
            let pts: Vec<(f64, Option<(f64, f64)>)> = bs
                .iter()
                .map(|b| {
                    let r = pick(b);
                    (
                        xpx(xval(b)),
                        Some((ybytes(r.min as f64), ybytes(r.max as f64))),
                    )
                })
                .collect();
            let max = bs.iter().map(|b| pick(b).max).max().unwrap_or(0);
            let c = policy_color(s.policy);
            let _ = writeln!(
                body,
                r#"<path class="series" data-policy="{}" data-kind="{kind}" data-max="{max}" data-points="{}" d="{}" fill="{c}" fill-opacity="{opacity}" stroke="{c}" stroke-width="1.2" stroke-linejoin="round"{dash}/>"#,
                s.policy.name(),
                pts.len(),
                band(&pts)
            );
        }
    }
    body.push_str("</g>\n");

    // Fragmentation panel.
    let shown: Vec<Vec<Option<Range<f64>>>> = series
        .iter()
        .zip(&buckets)
        .map(|(s, bs)| {
            let floor = s.sampler.peak_in_use() as f64 * FRAG_FLOOR;
            bs.iter()
                .map(|b| b.frag.filter(|_| b.in_use.min as f64 >= floor.max(1.0)))
                .collect()
        })
        .collect();
    let fmax = shown
        .iter()
        .flatten()
        .flatten()
        .map(|r| r.max)
        .fold(0.0, f64::max);
    let fstep = tick_step(fmax.max(0.05), 4.0, false);
    let fymax = axis_max(fmax, fstep);
    let yfrag = |v: f64| bot2 - v.max(0.0) / fymax * FRAG_H;
    axes(&mut body, (top2, bot2), (LEFT, pw), fymax, fstep, |v| {
        format!("{v:.2}")
    });
    let _ = writeln!(
        body,
        r##"<text x="{LEFT}" y="{:.1}" font-size="12" font-weight="bold">fragmentation: mapped / in use - 1 (where bytes in use are at least {:.0}% of the peak)</text>"##,
        top2 - 8.0,
        FRAG_FLOOR * 100.0
    );
    let _ = writeln!(
        body,
        r##"<text x="{LEFT}" y="{:.1}" font-size="12" font-weight="bold">bytes in use and mapped (whole blocks, headers included)</text>"##,
        top1 - 8.0
    );
    let _ = writeln!(
        body,
        r##"<g class="panel" data-panel="fragmentation" data-top="{top2:.1}" data-bottom="{bot2:.1}" data-ymax="{fymax}">"##
    );
    for ((s, bs), sh) in series.iter().zip(&buckets).zip(&shown) {
        let pts: Vec<(f64, Option<(f64, f64)>)> = bs
            .iter()
            .zip(sh)
            .map(|(b, f)| (xpx(xval(b)), f.map(|r| (yfrag(r.min), yfrag(r.max)))))
            .collect();
        let max = sh.iter().flatten().map(|r| r.max).fold(0.0, f64::max);
        let c = policy_color(s.policy);
        let _ = writeln!(
            body,
            r#"<path class="series" data-policy="{}" data-kind="fragmentation" data-max="{max:.6}" data-points="{}" d="{}" fill="{c}" fill-opacity="0.18" stroke="{c}" stroke-width="1.2" stroke-linejoin="round"/>"#,
            s.policy.name(),
            pts.iter().filter(|p| p.1.is_some()).count(),
            band(&pts)
        );
    }
    body.push_str("</g>\n");

    // Marks (the same for every policy: the first sampler's), one line per
    // pixel column at most.
    if let Some(s) = series.first() {
        let (marks, dropped) = s.sampler.marks();
        let mut d = String::new();
        let mut last = f64::NEG_INFINITY;
        for m in marks {
            let v = match opts.x {
                XAxis::Operations => m.ops as f64,
                XAxis::Requested => m.requested as f64,
            };
            let x = (xpx(v) * 2.0).round() / 2.0;
            if x > last {
                let _ = write!(d, "M{x:.1} {top1:.1}V{bot1:.1}M{x:.1} {top2:.1}V{bot2:.1}");
                last = x;
            }
        }
        let _ = writeln!(
            body,
            r##"<path class="marks" data-count="{}" d="{d}" stroke="#777" stroke-width="1" stroke-dasharray="2 2" fill="none"/>"##,
            marks.len() as u64 + dropped
        );
    }

    // The x axis under each panel.
    let xstep = match opts.x {
        XAxis::Operations => tick_step(xmax, 8.0, false),
        XAxis::Requested => tick_step(xmax, 8.0, true),
    };
    let xlabel = |v: f64| match opts.x {
        XAxis::Operations => short(v),
        XAxis::Requested => human(v as u64),
    };
    for bot in [bot1, bot2] {
        let mut v = 0.0;
        while v <= xmax * 1.0001 {
            let x = xpx(v);
            let _ = writeln!(
                body,
                r##"<path d="M{x:.1} {bot:.1}v4" stroke="#333"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#333">{}</text>"##,
                bot + 15.0,
                esc(&xlabel(v))
            );
            v += xstep;
        }
    }
    let what = match opts.x {
        XAxis::Operations => "operations",
        XAxis::Requested => "bytes requested by the program so far",
    };
    let _ = writeln!(
        body,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{what}</text>"##,
        LEFT + pw / 2.0,
        bot2 + 32.0
    );
    let geometry = Geometry {
        left: LEFT,
        width: pw,
        top: top1,
        bottom: bot2,
        xmax,
    };
    let _ = writeln!(
        body,
        r##"<g id="plot" data-left="{LEFT}" data-width="{pw:.1}" data-top="{top1:.1}" data-bottom="{bot2:.1}" data-xmax="{xmax}" data-axis="{}"></g>"##,
        match opts.x {
            XAxis::Operations => "operations",
            XAxis::Requested => "requested",
        }
    );
    let height = bot2 + 46.0;
    let title = caption.first().map_or("fitalloc timeline", String::as_str);
    (svg::document(width, height, title, &body), geometry)
}

/// A panel's frame, horizontal grid lines and y labels.
fn axes(
    body: &mut String,
    (top, bottom): (f64, f64),
    (left, w): (f64, f64),
    ymax: f64,
    step: f64,
    label: impl Fn(f64) -> String,
) {
    let h = bottom - top;
    let mut v = 0.0;
    while v <= ymax * 1.0001 {
        let y = bottom - v / ymax * h;
        let _ = writeln!(
            body,
            r##"<path d="M{left:.1} {y:.1}h{w:.1}" stroke="#e3e3e3" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}</text>"##,
            left - 6.0,
            y + 4.0,
            esc(&label(v))
        );
        v += step;
    }
    let _ = writeln!(
        body,
        r##"<path d="M{left:.1} {top:.1}V{bottom:.1}H{:.1}" stroke="#333" stroke-width="1" fill="none"/>"##,
        left + w
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_every_peak_and_stay_bounded() {
        let mut s = Sampler::new(10);
        for op in 1..=1000u64 {
            let spike = if op == 537 { 1_000_000 } else { 0 };
            s.push(op, op * 10, 100 + op + spike, 4096 + spike);
        }
        let b = s.buckets();
        assert!(b.len() <= 10 && b.len() > 5, "{}", b.len());
        assert_eq!(b.last().unwrap().ops, 1000);
        assert_eq!(b.iter().map(|b| b.in_use.max).max(), Some(1_000_637));
        assert_eq!(b.iter().map(|b| b.in_use.min).min(), Some(101));
        assert_eq!(s.peak_in_use(), 1_000_637);
        let widths: Vec<u64> = b.windows(2).map(|w| w[1].ops - w[0].ops).collect();
        assert!(widths[..widths.len() - 1].iter().all(|&w| w == s.width()));
    }

    #[test]
    fn fragmentation_needs_bytes_in_use() {
        let mut s = Sampler::new(4);
        s.push(1, 0, 0, 0);
        assert_eq!(s.buckets()[0].frag, None);
        s.push(2, 10, 100, 200);
        assert_eq!(s.buckets()[1].frag, Some(Range::of(1.0)));
        let mut s = Sampler::new(2);
        s.push(1, 0, 0, 0);
        s.push(2, 10, 100, 200);
        s.push(3, 10, 100, 150);
        let b = s.buckets();
        assert_eq!((b.len(), s.width()), (2, 2));
        assert_eq!(
            b[0].frag,
            Some(Range::of(1.0)),
            "the empty heap adds nothing"
        );
    }

    #[test]
    fn renders_one_series_per_policy_and_kind() {
        let mut a = Sampler::new(100);
        let mut b = Sampler::new(100);
        for op in 1..=500u64 {
            a.push(op, op, op * 100, op * 120);
            b.push(op, op, op * 100, op * 150);
            if op % 100 == 0 {
                a.mark(op);
                b.mark(op);
            }
        }
        let series = [
            Series {
                policy: Policy::FirstFit,
                sampler: &a,
            },
            Series {
                policy: Policy::WorstFit,
                sampler: &b,
            },
        ];
        for x in [XAxis::Operations, XAxis::Requested] {
            let (svg, g) = render(&["t <1>".into()], &series, PlotOptions { width: 1000.0, x });
            assert_eq!(svg.matches(r#"class="series""#).count(), 6);
            assert!(svg.contains(r#"data-policy="worst_fit" data-kind="mapped" data-max="75000""#));
            assert!(svg.contains(r#"class="marks" data-count="5""#));
            assert!(svg.contains("t &lt;1&gt;"));
            assert_eq!(g.xmax, 500.0);
        }
    }

    #[test]
    fn ticks() {
        assert_eq!(tick_step(1000.0, 5.0, false), 200.0);
        assert_eq!(tick_step(16.0 * 1048576.0, 5.0, true), 5.0 * 1048576.0);
        assert_eq!(tick_step(0.3, 4.0, false), 0.1);
        assert_eq!(tick_step(1023.0 * 1024.0, 1.0, true), 1024.0 * 1024.0);
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(20_000.0), "20k");
    }
}
