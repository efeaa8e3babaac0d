//! Drawing layouts as SVG (and PNG through resvg).
//!
//! Geometry:
//! - A picture is a caption, a legend and one or more *panels* (one heap
//!   each; `--compare` puts four side by side, in columns).
//! - **Rows** (at most [`ROWS_MAX`] regions in every panel): one band per
//!   region, all scaled to the same width, so the blocks of small and large
//!   regions are equally legible; the label left of a band gives the
//!   region's index and size.
//! - **Flow** (more regions): bands flow left to right, then wrap, in list
//!   order, each as wide as its size on a scale shared by every panel, but at
//!   least [`FLOW_MIN`] px; the label left of a row is the index of its first
//!   region. The scale gives the largest region (at least 64 KiB) a whole
//!   row, or less if the panels would then need more than [`FLOW_ROWS`] rows
//!   of proportional widths.
//! - Inside a band, blocks are rectangles whose widths are proportional to
//!   their sizes, except that each is at least 1 px wide (the extra pixels
//!   are taken from the proportional part, so a band is exactly filled).
//! - `max_rects` bounds the whole picture: block rectangles plus region
//!   bands. When blocks outnumber the pixels of a band, or the picture would
//!   hold more shapes than that, runs of consecutive blocks narrower than a
//!   threshold are merged into one rectangle shaded by the share of its
//!   bytes in use; the threshold doubles until everything fits. When the
//!   regions alone are too many (a band and a rectangle each), runs of
//!   consecutive regions first merge into one band drawn as one rectangle.
//!   The caption says how many blocks (and regions) were merged.
//!
//! `fitalloc view` draws the same pictures in the browser, with a port of
//! [`render`]'s geometry (`page/view.js`: `regionsPerBand`, `place`,
//! `merge`, `segments`, the x positions of `draw_region`) that takes these
//! constants from here; test 46 checks that the page and `map --compare`
//! draw the same number of rectangles and merged runs.
//!
//! So the SVG grows with `max_rects`, not with the heap: each shape is at
//! most a few hundred bytes (its tooltip holds a name of at most 31 bytes).
//!
//! Block rectangles (and merged runs) are the only `<rect>` elements: the
//! background, the region outlines and the legend swatches are `<path>`s, so
//! counting `<rect>` counts blocks. Each rectangle has a `<title>` tooltip
//! with the block's name, size, state and offset.

use std::fmt::Write as _;

use crate::layout::{total, Block, Layout, Region};

/// Panels with at most this many regions draw one region per row.
pub const ROWS_MAX: usize = 40;
/// Narrowest band in flow mode (px).
pub const FLOW_MIN: f64 = 16.0;
/// Most rows the proportional widths of a flow panel fill (bands widened to
/// [`FLOW_MIN`] may add more), so that the picture's height is bounded too.
pub const FLOW_ROWS: f64 = 150.0;

/// Colour of a used block.
pub const USED: (u8, u8, u8) = (0x34, 0x65, 0xa4);
/// Colour of a free block.
pub const FREE: (u8, u8, u8) = (0xf5, 0xc4, 0x5e);
/// Margin around the picture (px).
pub const MARGIN: f64 = 16.0;
/// Room left of a panel's bands for their labels (px).
pub const LABEL: f64 = 96.0;

/// One heap to draw.
pub struct Panel {
    /// Heading (e.g. the policy).
    pub title: String,
    /// Lines of numbers under the heading.
    pub subtitle: Vec<String>,
    /// The heap.
    pub layout: Layout,
}

/// Drawing parameters.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Width of the drawing area of a panel (px), labels excluded.
    pub width: f64,
    /// Most shapes in the picture, block rectangles and region bands
    /// together, before runs of small blocks (and, if that is not enough,
    /// of regions) merge. At least two per panel are drawn.
    pub max_rects: usize,
    /// Panels per row of the grid.
    pub columns: usize,
}

/// What the drawing did, for the caption and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drawn {
    /// Block rectangles drawn (merged runs included).
    pub rects: usize,
    /// Blocks in the layouts.
    pub blocks: usize,
    /// Merged rectangles (runs of blocks, or of whole regions).
    pub runs: usize,
    /// Blocks inside merged runs.
    pub merged_blocks: usize,
    /// Regions in the layouts.
    pub regions: usize,
    /// Bands drawn: one per region, unless runs of regions were merged.
    pub bands: usize,
}

/// Escapes text for XML content and attribute values; characters XML 1.0
/// does not allow (controls, U+FFFE, U+FFFF) become '?'.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// Bytes in a short human form (B, KiB, MiB, GiB).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn color((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The shade of a merged run with `share` of its bytes in use.
fn mix(share: f64) -> String {
    let m = |a: u8, b: u8| (b as f64 + (a as f64 - b as f64) * share).round() as u8;
    color((m(USED.0, FREE.0), m(USED.1, FREE.1), m(USED.2, FREE.2)))
}

/// A rectangle to draw: blocks `first..=last` of a region.
#[derive(Clone, Copy, Debug)]
struct Seg {
    first: usize,
    last: usize,
}

/// The segments of a region of `w` px with runs of blocks narrower than
/// `t` px merged (`t` = 0: no merging).
fn segments(r: &Region, w: f64, t: f64) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::new();
    let mut run: Option<Seg> = None;
    for (i, b) in r.blocks.iter().enumerate() {
        let pw = w * b.size as f64 / r.size.max(1) as f64;
        if pw < t {
            run = Some(match run {
                Some(s) => Seg {
                    first: s.first,
                    last: i,
                },
                None => Seg { first: i, last: i },
            });
        } else {
            out.extend(run.take());
            out.push(Seg { first: i, last: i });
        }
    }
    out.extend(run);
    out
}

/// What one band of a panel draws: one region, or, when the regions are too
/// many for `max_rects`, a run of consecutive regions merged into one
/// rectangle.
#[derive(Clone, Copy, Debug)]
struct Band {
    first: usize,
    last: usize,
    /// Bytes in its regions.
    size: u64,
}

/// The bands of `l`, `per` consecutive regions to a band.
fn bands(l: &Layout, per: usize) -> Vec<Band> {
    l.regions
        .chunks(per)
        .enumerate()
        .map(|(k, c)| Band {
            first: k * per,
            last: k * per + c.len() - 1,
            size: total(c.iter().map(|r| r.size)),
        })
        .collect()
}

/// Regions per band: the fewest that leave room, within `max_rects`, for
/// every band and at least one rectangle in it (1 unless the regions are
/// many).
fn regions_per_band(panels: &[Panel], max_rects: usize) -> usize {
    let counts: Vec<usize> = panels.iter().map(|p| p.layout.regions.len()).collect();
    let shapes = |per: usize| 2 * counts.iter().map(|n| n.div_ceil(per)).sum::<usize>();
    let most = counts.iter().copied().max().unwrap_or(0);
    let mut per = shapes(1).div_ceil(max_rects.max(1)).max(1);
    while per < most && shapes(per) > max_rects {
        per += 1;
    }
    per
}

/// Where each band goes: (x, y, width) relative to the panel's region area,
/// and the area's height.
struct Placement {
    boxes: Vec<(f64, f64, f64)>,
    /// Rows: (y, index of the first band) for the labels.
    rows: Vec<(f64, usize)>,
    height: f64,
}

#[derive(Clone, Copy)]
struct Mode {
    flow: bool,
    band: f64,
    gap: f64,
    scale: f64,
}

fn place(bands: &[Band], mode: Mode, width: f64) -> Placement {
    let mut p = Placement {
        boxes: Vec::new(),
        rows: Vec::new(),
        height: 0.0,
    };
    let (mut x, mut y) = (0.0, 0.0);
    for (i, b) in bands.iter().enumerate() {
        let w = if mode.flow {
            (b.size as f64 * mode.scale).clamp(FLOW_MIN, width)
        } else {
            width
        };
        if p.rows.is_empty() || x + w > width + 0.01 {
            if !p.rows.is_empty() {
                y += mode.band + mode.gap;
            }
            x = 0.0;
            p.rows.push((y, i));
        }
        p.boxes.push((x, y, w));
        x += w + if mode.flow { 3.0 } else { 0.0 };
    }
    if !p.rows.is_empty() {
        p.height = y + mode.band;
    }
    p
}

/// The rectangles of every band of every panel (none listed for a band of
/// several regions: it is one rectangle). Runs of blocks narrower than a
/// threshold merge; the threshold is 0, then 1 px, doubling, until every
/// band has a pixel per rectangle and the picture holds at most `max_rects`
/// rectangles and bands.
fn merge(
    panels: &[Panel],
    bands: &[Vec<Band>],
    places: &[Placement],
    max_rects: usize,
    width: f64,
) -> Vec<Vec<Vec<Seg>>> {
    let fits = |t: f64| -> (bool, Vec<Vec<Vec<Seg>>>) {
        let mut shapes = 0;
        let mut ok = true;
        let segs = panels
            .iter()
            .zip(bands.iter().zip(places))
            .map(|(p, (bs, pl))| {
                bs.iter()
                    .zip(&pl.boxes)
                    .map(|(b, &(_, _, w))| {
                        let s = if b.first == b.last {
                            segments(&p.layout.regions[b.first], w, t)
                        } else {
                            Vec::new()
                        };
                        shapes += 1 + s.len().max(1);
                        ok &= s.len() as f64 <= w.floor();
                        s
                    })
                    .collect()
            })
            .collect();
        (ok && shapes <= max_rects, segs)
    };
    let (mut ok, mut segs) = fits(0.0);
    let mut t = 1.0;
    while !ok && t <= 2.0 * width {
        (ok, segs) = fits(t);
        t *= 2.0;
    }
    if !ok {
        // Blocks wider than their band (a dump whose blocks outgrow their
        // region) never fall under a finite threshold: one run per band,
        // which `regions_per_band` left room for.
        segs = fits(f64::INFINITY).1;
    }
    segs
}

fn block_tip(i: usize, b: &Block) -> String {
    let state = if b.used { "USED" } else { "FREE" };
    format!(
        "'{}' {} bytes [{state}] at offset {:#x} of region #{i}",
        b.name, b.size, b.offset
    )
}

/// The label left of a row starting with band `b`.
fn row_label(b: &Band, flow: bool) -> String {
    match (flow, b.first == b.last) {
        (true, _) => format!("#{}", b.first),
        (false, true) => format!("#{} {}", b.first, human(b.size)),
        (false, false) => format!("#{}-#{} {}", b.first, b.last, human(b.size)),
    }
}

/// Draws the picture; returns the SVG text and what was drawn.
pub fn render(caption: &[String], panels: &[Panel], opts: Options) -> (String, Drawn) {
    let width = opts.width.max(100.0);
    let columns = opts.columns.clamp(1, panels.len().max(1));
    let per = regions_per_band(panels, opts.max_rects);
    let bands: Vec<Vec<Band>> = panels.iter().map(|p| bands(&p.layout, per)).collect();
    let most_bands = bands.iter().map(Vec::len).max().unwrap_or(0);
    let largest = bands.iter().flatten().map(|b| b.size).max().unwrap_or(1);
    let widest = panels.iter().map(|p| p.layout.mapped()).max().unwrap_or(1);
    let flow = most_bands > ROWS_MAX;
    let mode = Mode {
        flow,
        band: if flow { 18.0 } else { 22.0 },
        gap: if flow { 5.0 } else { 7.0 },
        scale: (width / largest.max(64 << 10) as f64).min(FLOW_ROWS * width / widest.max(1) as f64),
    };
    let places: Vec<Placement> = bands.iter().map(|b| place(b, mode, width)).collect();
    let segs = merge(panels, &bands, &places, opts.max_rects, width);
    let mut drawn = Drawn {
        blocks: panels.iter().map(|p| p.layout.block_count()).sum(),
        regions: panels.iter().map(|p| p.layout.regions.len()).sum(),
        bands: bands.iter().map(Vec::len).sum(),
        ..Drawn::default()
    };
    let merged = per > 1 || segs.iter().flatten().flatten().any(|s| s.first != s.last);

    let mut body = String::new();
    let mut y = MARGIN + 4.0;
    for (k, line) in caption.iter().enumerate() {
        let (size, weight) = if k == 0 { (16, "bold") } else { (12, "normal") };
        y += if k == 0 { 12.0 } else { 16.0 };
        let _ = writeln!(
            body,
            r#"<text x="{MARGIN}" y="{y:.1}" font-size="{size}" font-weight="{weight}">{}</text>"#,
            esc(line)
        );
    }
    // Legend.
    y += 20.0;
    let mut lx = MARGIN;
    let mut legend = vec![(color(USED), "used block"), (color(FREE), "free block")];
    if merged {
        let what = if per > 1 {
            "merged run of small blocks or of regions (shade: share of bytes in use)"
        } else {
            "merged run of small blocks (shade: share of bytes in use)"
        };
        legend.push((mix(0.5), what));
    }
    for (c, label) in legend {
        let _ = writeln!(
            body,
            r##"<path d="M{lx:.1} {:.1}h14v12h-14z" fill="{c}" stroke="#555" stroke-width="0.5"/><text x="{:.1}" y="{y:.1}" font-size="12">{}</text>"##,
            y - 10.0,
            lx + 19.0,
            esc(label)
        );
        lx += 32.0 + 7.0 * label.len() as f64;
    }
    y += 6.0;

    // Panels, `columns` per row of the grid.
    let cell = LABEL + width + MARGIN;
    let mut grid_top = y;
    let mut bottom = y;
    for (n, (panel, (pl, (pbands, psegs)))) in panels
        .iter()
        .zip(places.iter().zip(bands.iter().zip(&segs)))
        .enumerate()
    {
        if n > 0 && n % columns == 0 {
            grid_top = bottom + 12.0;
        }
        let px = MARGIN + (n % columns) as f64 * cell;
        let mut y = grid_top + 24.0;
        let _ = writeln!(
            body,
            r#"<text x="{px}" y="{y:.1}" font-size="14" font-weight="bold">{}</text>"#,
            esc(&panel.title)
        );
        for line in &panel.subtitle {
            y += 15.0;
            let _ = writeln!(
                body,
                r##"<text x="{px}" y="{y:.1}" font-size="11" fill="#333">{}</text>"##,
                esc(line)
            );
        }
        y += 10.0;
        let top = y;
        let x0 = px + LABEL;
        if panel.layout.regions.is_empty() {
            let _ = writeln!(
                body,
                r##"<text x="{x0}" y="{:.1}" font-size="12" fill="#666">(no regions: the heap is empty)</text>"##,
                y + 16.0
            );
            bottom = bottom.max(y + 16.0);
            continue;
        }
        for &(ry, first) in &pl.rows {
            let _ = writeln!(
                body,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}</text>"##,
                x0 - 6.0,
                top + ry + mode.band / 2.0 + 4.0,
                esc(&row_label(&pbands[first], flow))
            );
        }
        for ((b, &(bx, by, w)), bsegs) in pbands.iter().zip(&pl.boxes).zip(psegs) {
            let at = (x0 + bx, top + by, w, mode.band);
            if b.first == b.last {
                let r = &panel.layout.regions[b.first];
                draw_region(&mut body, &mut drawn, b.first, r, bsegs, at);
            } else {
                draw_regions(&mut body, &mut drawn, b, &panel.layout.regions, at);
            }
        }
        bottom = bottom.max(top + pl.height);
    }
    let total_w = MARGIN + columns as f64 * cell;
    let total_h = bottom + MARGIN + 8.0;
    let title = caption.first().map_or("fitalloc heap", String::as_str);
    (document(total_w, total_h, title, &body), drawn)
}

/// A whole SVG document of `width` x `height` px on a white ground, titled
/// `title` (escaped here), holding `body`.
pub fn document(width: f64, height: f64, title: &str, body: &str) -> String {
    let mut svg = String::with_capacity(body.len() + 512);
    let _ = writeln!(
        svg,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Verdana, sans-serif">
<title>{}</title>
<path d="M0 0H{width:.0}V{height:.0}H0z" fill="#ffffff"/>"##,
        esc(title)
    );
    svg.push_str(body);
    svg.push_str("</svg>\n");
    svg
}

/// A band of several regions at (x, y) of width w and height h: one
/// rectangle, outlined like a region, shaded by the share of its bytes in
/// use, whose tooltip sums up its regions.
fn draw_regions(
    body: &mut String,
    drawn: &mut Drawn,
    b: &Band,
    regions: &[Region],
    (x, y, w, h): (f64, f64, f64, f64),
) {
    let blocks = || regions[b.first..=b.last].iter().flat_map(|r| &r.blocks);
    let n = blocks().count();
    let nu = blocks().filter(|bl| bl.used).count();
    let u = total(blocks().filter(|bl| bl.used).map(|bl| bl.size));
    drawn.rects += 1;
    drawn.runs += 1;
    drawn.merged_blocks += n;
    let _ = writeln!(
        body,
        r##"<rect x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{h:.1}" fill="{}" stroke="#444" stroke-width="0.7"><title>regions #{}-#{} merged ({} regions, {} bytes): {n} blocks ({nu} used), {u} bytes in use</title></rect>"##,
        mix(u as f64 / b.size.max(1) as f64),
        b.first,
        b.last,
        b.last - b.first + 1,
        b.size
    );
}

/// One region's band at (x, y) of width w and height h: its segments, then
/// its outline, in a group whose tooltip describes the region.
fn draw_region(
    body: &mut String,
    drawn: &mut Drawn,
    i: usize,
    r: &Region,
    rsegs: &[Seg],
    (gx, gy, w, h): (f64, f64, f64, f64),
) {
    let used = r.blocks.iter().filter(|b| b.used).count();
    let _ = writeln!(
        body,
        "<g><title>region #{i}: {} bytes, {} blocks ({used} used)</title>",
        r.size,
        r.blocks.len()
    );
    let extra = (w - rsegs.len() as f64).max(0.0);
    let xs = |j: usize| -> f64 {
        if j == rsegs.len() {
            return gx + w;
        }
        let off = r.blocks[rsegs[j].first].offset as f64;
        gx + j as f64 + extra * off / r.size.max(1) as f64
    };
    for (j, s) in rsegs.iter().enumerate() {
        let (xa, xb) = (xs(j), xs(j + 1));
        let sw = (xb - xa).max(0.5);
        let (fill, tip) = if s.first == s.last {
            let b = &r.blocks[s.first];
            let c = if b.used { color(USED) } else { color(FREE) };
            (c, block_tip(i, b))
        } else {
            let bl = &r.blocks[s.first..=s.last];
            let u = total(bl.iter().filter(|b| b.used).map(|b| b.size));
            let all = total(bl.iter().map(|b| b.size));
            let nu = bl.iter().filter(|b| b.used).count();
            drawn.runs += 1;
            drawn.merged_blocks += bl.len();
            let end = bl[bl.len() - 1]
                .offset
                .saturating_add(bl[bl.len() - 1].size);
            (
                mix(u as f64 / all.max(1) as f64),
                format!(
                    "{} small blocks merged ({nu} used, {} free): {u} of {all} bytes in use, offsets {:#x}-{end:#x} of region #{i}",
                    bl.len(),
                    bl.len() - nu,
                    bl[0].offset,
                ),
            )
        };
        let stroke = if sw >= 3.0 {
            r##" stroke="#fff" stroke-width="0.6""##
        } else {
            ""
        };
        drawn.rects += 1;
        let _ = writeln!(
            body,
            r#"<rect x="{xa:.2}" y="{gy:.1}" width="{sw:.2}" height="{h:.1}" fill="{fill}"{stroke}><title>{}</title></rect>"#,
            esc(&tip)
        );
    }
    let _ = writeln!(
        body,
        r##"<path d="M{gx:.2} {gy:.1}h{w:.2}v{h:.1}h{:.2}z" fill="none" stroke="#444" stroke-width="0.7"/></g>"##,
        -w
    );
}

/// Renders SVG text to a PNG file.
pub fn to_png(svg: &str, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options {
        font_family: "DejaVu Sans".into(),
        ..usvg::Options::default()
    };
    opt.fontdb_mut().load_system_fonts();
    let tree = usvg::Tree::from_str(svg, &opt).context("the SVG does not parse")?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .context("the picture is too large for a PNG")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .save_png(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(regions: usize, blocks: usize) -> Layout {
        let size = 4096u64 * 4;
        let each = size / blocks as u64;
        Layout {
            regions: (0..regions)
                .map(|_| Region {
                    size,
                    blocks: (0..blocks)
                        .map(|i| Block {
                            offset: i as u64 * each,
                            size: if i + 1 == blocks {
                                size - i as u64 * each
                            } else {
                                each
                            },
                            used: i % 2 == 0,
                            name: "<x&y>".into(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn count_rects(svg: &str) -> usize {
        svg.matches("<rect ").count()
    }

    #[test]
    fn one_rect_per_block_unless_capped() {
        let p = Panel {
            title: "t".into(),
            subtitle: vec!["s".into()],
            layout: layout(3, 50),
        };
        let opts = Options {
            width: 1000.0,
            max_rects: 10_000,
            columns: 1,
        };
        let (svg, d) = render(&["c".into()], std::slice::from_ref(&p), opts);
        assert_eq!(count_rects(&svg), 150);
        assert_eq!((d.rects, d.runs), (150, 0));
        assert!(svg.contains("&lt;x&amp;y&gt;"));
        let (svg, d) = render(
            &["c".into()],
            &[p],
            Options {
                width: 1000.0,
                max_rects: 30,
                columns: 1,
            },
        );
        assert!(count_rects(&svg) <= 30, "{d:?}");
        assert!(d.runs > 0 && d.merged_blocks > 0);
    }

    #[test]
    fn many_blocks_in_a_narrow_band_merge() {
        let p = Panel {
            title: "t".into(),
            subtitle: vec!["s".into()],
            layout: layout(100, 500),
        };
        let opts = Options {
            width: 1000.0,
            max_rects: 1_000_000,
            columns: 1,
        };
        let (svg, d) = render(&["c".into()], &[p], opts);
        assert!(d.runs > 0, "flow bands are narrower than 500 px");
        assert_eq!(count_rects(&svg), d.rects);
    }

    #[test]
    fn the_cap_bounds_the_whole_picture() {
        let one_block_regions = |n: usize| Panel {
            title: "t".into(),
            subtitle: Vec::new(),
            layout: Layout {
                regions: (0..n)
                    .map(|i| Region {
                        size: 4096,
                        blocks: vec![Block {
                            offset: 0,
                            size: 4096,
                            used: i % 3 != 0,
                            name: format!("block {i}"),
                        }],
                    })
                    .collect(),
            },
        };
        for (regions, max_rects, panels) in [(5000, 1000, 1), (5000, 1000, 4), (499, 1000, 2)] {
            let ps: Vec<Panel> = (0..panels).map(|_| one_block_regions(regions)).collect();
            let opts = Options {
                width: 1000.0,
                max_rects,
                columns: panels,
            };
            let (svg, d) = render(&["c".into()], &ps, opts);
            let case = format!("{regions} regions, {panels} panels: {d:?}");
            assert_eq!(count_rects(&svg), d.rects, "{case}");
            assert!(d.rects + d.bands <= max_rects, "{case}");
            assert_eq!(d.regions, regions * panels, "{case}");
            let merged = regions * panels * 2 > max_rects;
            assert_eq!(d.bands < d.regions, merged, "{case}");
            assert!(d.bands * 2 > max_rects / 2, "no needless merging: {case}");
            assert!(svg.len() < 300 * max_rects, "{} bytes: {case}", svg.len());
            let tall = svg.split("height=\"").nth(1).unwrap();
            let height: f64 = tall[..tall.find('"').unwrap()].parse().unwrap();
            assert!(height < 10_000.0, "{height} px: {case}");
            if merged {
                assert!(svg.contains("merged ("), "{case}");
            }
        }
    }

    #[test]
    fn huge_sizes_draw() {
        let mut l = layout(2, 300);
        for r in &mut l.regions {
            r.size = u64::MAX;
            for b in &mut r.blocks {
                b.size = u64::MAX;
            }
        }
        let p = Panel {
            title: "t".into(),
            subtitle: Vec::new(),
            layout: l,
        };
        let opts = Options {
            width: 100.0,
            max_rects: 4,
            columns: 1,
        };
        let (svg, d) = render(&["c".into()], &[p], opts);
        assert!(d.runs > 0 && svg.contains("offsets 0x0-0xffffffffffffffff"));
    }

    #[test]
    fn blocks_wider_than_their_region_stay_within_the_cap() {
        // Found by the dump_parse fuzz target: a block larger than its
        // region is wider than its band at every finite threshold.
        let mut l = layout(2, 2);
        l.regions[0].size = 4096;
        l.regions[0].blocks[0].size = u64::MAX;
        l.regions[0].blocks[1].size = 1 << 40;
        let p = Panel {
            title: "t".into(),
            subtitle: Vec::new(),
            layout: l,
        };
        let opts = Options {
            width: 550.0,
            max_rects: 4,
            columns: 1,
        };
        let (svg, d) = render(&["c".into()], &[p], opts);
        assert!(d.rects + d.bands <= 4, "{d:?}");
        assert_eq!(count_rects(&svg), d.rects);
    }

    #[test]
    fn escapes_what_xml_cannot_hold() {
        assert_eq!(esc("a<b>&'\"\t\u{1}"), "a&lt;b&gt;&amp;&apos;&quot;??");
        assert_eq!(
            esc("x\u{fffe}\u{ffff}\u{fffd}\u{10000}é"),
            "x??\u{fffd}\u{10000}é"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(100), "100 B");
        assert_eq!(human(8192), "8 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 20), "3 MiB");
    }
}
