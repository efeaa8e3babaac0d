//! Arbitrary bytes as `print_memory` output (what `fitalloc map --dump FILE`
//! reads), parsed and drawn.
//!
//! An `Err` is the command's clean error path; a panic or a timeout is a
//! bug. The picture must be well-formed XML, hold one `<rect>` per shape
//! it reports, and respect the cap (`max_rects`, from the input's length,
//! but at least a band and a rectangle).
#![no_main]

use fitalloc_cli::dump;
use fitalloc_cli::svg::{self, Options, Panel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let which = (data.len() % 3 != 0).then_some(data.len() % 3);
    let Ok((Some(d), count)) = dump::read(data, which) else {
        return;
    };
    assert!(count >= 1 && which.is_none_or(|k| k == count));
    assert!(d.warnings.len() <= dump::MAX_WARNINGS);
    let _ = (d.layout.to_text(), d.layout.in_use(), d.layout.mapped());
    let max_rects = 1 + data.len() % 97;
    let panel = Panel {
        title: "dump".into(),
        subtitle: d.warnings,
        layout: d.layout,
    };
    let opts = Options {
        width: 100.0 + (data.len() % 7) as f64 * 150.0,
        max_rects,
        columns: 1,
    };
    let (text, drawn) = svg::render(&["fuzz".into()], &[panel], opts);
    let doc = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(rects, drawn.rects);
    assert!(drawn.rects + drawn.bands <= max_rects.max(2), "{drawn:?}");
});
