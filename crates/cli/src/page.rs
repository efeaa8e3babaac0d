//! The page of `fitalloc view`: one self-contained HTML file (inline CSS,
//! script and data; nothing fetched) that shows every policy's heap after
//! any operation of a replay, under the replay's timeline.
//!
//! ```text
//!  view.html (template) + view.css + view.js      (include_str!, page/)
//!  + the timeline SVG (timeline.rs), inline, with a cursor added by the script
//!  + JSON: the drawing constants of svg.rs, the policies, their names
//!  + per policy: the event stream of frames.rs, zlib-deflated, base64
//! ```
//!
//! The script inflates the streams with the browser's own
//! `DecompressionStream` (every current browser has it), plays them once
//! to index them, and draws with a port of `svg::render`'s geometry.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Result;
use fitalloc::Policy;
use serde::Serialize;

use crate::frames::Recorder;
use crate::svg::{self, esc};

const TEMPLATE: &str = include_str!("page/view.html");
const CSS: &str = include_str!("page/view.css");
const JS: &str = include_str!("page/view.js");

/// One policy's recording.
pub struct PolicyPage<'a> {
    /// The policy.
    pub policy: Policy,
    /// What its replay did.
    pub recorder: &'a Recorder,
    /// The operation after which its bytes in use peaked.
    pub peak_op: u64,
}

/// Everything the page shows.
pub struct Page<'a> {
    /// Heading (and the window's title).
    pub title: String,
    /// Lines under the heading.
    pub caption: Vec<String>,
    /// Operations replayed (the slider's range).
    pub ops: u64,
    /// The policies, left to right.
    pub policies: Vec<PolicyPage<'a>>,
    /// The timeline (SVG text from [`crate::timeline::render`]).
    pub timeline: String,
    /// Width of each heap panel's drawing area (px), as `map --width`.
    pub width: u32,
    /// Most shapes in the four panels together, as `map --max-rects`.
    pub max_rects: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    rows_max: usize,
    flow_min: f64,
    flow_rows: f64,
    used: [u8; 3],
    free: [u8; 3],
    label: f64,
    margin: f64,
    width: u32,
    max_rects: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyData<'a> {
    name: &'static str,
    names: &'a [String],
    peak_op: u64,
    /// Bytes of the event stream, before and after deflating.
    event_bytes: usize,
    deflated_bytes: usize,
}

#[derive(Serialize)]
struct Data<'a> {
    ops: u64,
    params: Params,
    policies: Vec<PolicyData<'a>>,
}

/// What the page holds, for the command's report.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageStats {
    /// Bytes of the HTML file.
    pub bytes: usize,
    /// Bytes of the event streams, before deflating.
    pub events: usize,
    /// Bytes of the event streams, deflated.
    pub deflated: usize,
}

/// The HTML text of the page.
pub fn html(p: &Page) -> Result<(String, PageStats)> {
    let mut stats = PageStats::default();
    let mut blobs = Vec::new();
    let mut policies = Vec::new();
    for pp in &p.policies {
        let events = pp.recorder.events();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(events)?;
        let deflated = z.finish()?;
        stats.events += events.len();
        stats.deflated += deflated.len();
        policies.push(PolicyData {
            name: pp.policy.name(),
            names: pp.recorder.names(),
            peak_op: pp.peak_op,
            event_bytes: events.len(),
            deflated_bytes: deflated.len(),
        });
        blobs.push(base64(&deflated));
    }
    let (u, f) = (svg::USED, svg::FREE);
    let data = Data {
        ops: p.ops,
        params: Params {
            rows_max: svg::ROWS_MAX,
            flow_min: svg::FLOW_MIN,
            flow_rows: svg::FLOW_ROWS,
            used: [u.0, u.1, u.2],
            free: [f.0, f.1, f.2],
            label: svg::LABEL,
            margin: svg::MARGIN,
            width: p.width,
            max_rects: p.max_rects,
        },
        policies,
    };
    // `</` cannot appear inside a script element.
    let json = serde_json::to_string(&data)?.replace("</", "<\\/");
    let mut data_html =
        format!("<script type=\"application/json\" id=\"fitalloc-data\">{json}</script>\n");
    for (i, b) in blobs.iter().enumerate() {
        let _ = writeln!(
            data_html,
            "<script type=\"application/octet-stream\" id=\"ev-{i}\">{b}</script>"
        );
    }
    let caption: String = p
        .caption
        .iter()
        .map(|l| format!("<p class=\"sub\">{}</p>\n", esc(l)))
        .collect();
    let panels: String = p
        .policies
        .iter()
        .enumerate()
        .map(|(i, pp)| {
            format!(
                "<div class=\"panel\" id=\"panel-{i}\" data-policy=\"{0}\"><h3>{0}</h3><div class=\"cap\"></div><div class=\"merged\"></div>\
                 <svg class=\"map\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"DejaVu Sans, Verdana, sans-serif\"></svg></div>\n",
                pp.policy.name()
            )
        })
        .collect();
    let timeline = p
        .timeline
        .split_once("?>")
        .map_or(p.timeline.as_str(), |(_, rest)| rest.trim_start());
    let color = |(r, g, b): (u8, u8, u8)| format!("#{r:02x}{g:02x}{b:02x}");
    let mixed = color((
        ((u.0 as u16 + f.0 as u16) / 2) as u8,
        ((u.1 as u16 + f.1 as u16) / 2) as u8,
        ((u.2 as u16 + f.2 as u16) / 2) as u8,
    ));
    let peak_policy = p.policies.first().map_or("", |pp| pp.policy.name());
    let text = fill(TEMPLATE, |key| match key {
        "TITLE" => esc(&p.title),
        "CAPTION" => caption.clone(),
        "CSS" => CSS.to_string(),
        "JS" => JS.to_string(),
        "TIMELINE" => timeline.to_string(),
        "PANELS" => panels.clone(),
        "DATA" => data_html.clone(),
        "USED" => color(u),
        "FREE" => color(f),
        "MIXED" => mixed.clone(),
        "PEAK_POLICY" => peak_policy.to_string(),
        _ => format!("{{{{{key}}}}}"),
    });
    stats.bytes = text.len();
    Ok((text, stats))
}

/// The template with every `{{KEY}}` replaced by `value(KEY)`, in one pass
/// (so that a value holding `{{...}}` is left alone).
fn fill(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        match rest[at + 2..].find("}}") {
            Some(end) => {
                out.push_str(&value(&rest[at + 2..at + 2 + end]));
                rest = &rest[at + 2 + end + 2..];
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(ABC[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_every_tail() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn fill_is_one_pass() {
        let v = |k: &str| match k {
            "A" => "{{B}}".to_string(),
            "B" => "b".to_string(),
            k => format!("?{k}"),
        };
        assert_eq!(fill("x{{A}}y{{B}}z{{", v), "x{{B}}yb z{{".replace(' ', ""));
        assert_eq!(fill("{{C}}", v), "?C");
    }
}
