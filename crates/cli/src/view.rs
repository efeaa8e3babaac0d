//! `fitalloc view`: the page that scrubs through a replay.

use std::path::Path;

use anyhow::{bail, Context, Result};
use fitalloc::Policy;
use fitalloc_cli::frames::Recorder;
use fitalloc_cli::page::{self, Page, PolicyPage};
use fitalloc_cli::replay::Stop;
use fitalloc_cli::svg::human;
use fitalloc_cli::timeline::{self, PlotOptions, Sampler, Series, XAxis};

use crate::report::{
    file_name, note_if_empty, plot_caption, program_text, replay_watched_with_progress,
    warn_if_cut_short,
};
use crate::ViewArgs;

/// The command.
pub fn view(a: ViewArgs) -> Result<()> {
    let policies = Policy::ALL;
    let (summary, runs) =
        replay_watched_with_progress(&a.trace, &policies, Stop::End, false, a.no_progress, |_| {
            (Recorder::new(), Sampler::new(a.points))
        })?;
    warn_if_cut_short(&a.trace, &summary);
    if note_if_empty(&a.trace, &summary) {
        bail!("{}: no operations: nothing to show", a.trace.display());
    }
    let ops = summary.ops;
    let series: Vec<Series> = runs
        .iter()
        .map(|(o, (_, s))| Series {
            policy: o.policy,
            sampler: s,
        })
        .collect();
    let caption = plot_caption(&a.trace, &summary, ops, &runs[0].1 .1);
    let heading = vec![
        "the run (click to move there; the black line is the moment shown below)".to_string(),
        caption[2].clone(),
    ];
    let (timeline, _) = timeline::render(
        &heading,
        &series,
        PlotOptions {
            width: 1100.0,
            x: XAxis::Operations,
        },
    );
    let p = Page {
        title: format!("fitalloc view: {}", file_name(&a.trace)),
        caption: vec![
            format!(
                "{}, pid {}: {ops} operations replayed under each policy, each from an empty heap",
                program_text(&summary),
                summary.header.pid
            ),
            format!(
                "each heap is drawn as `fitalloc map --compare --at N --width {} --max-rects {}` draws it; \
                 hover a block for its name, size, state and offset",
                a.width, a.max_rects
            ),
        ],
        ops,
        policies: runs
            .iter()
            .map(|(o, (r, _))| PolicyPage {
                policy: o.policy,
                recorder: r,
                peak_op: o.peak_op,
            })
            .collect(),
        timeline,
        width: a.width,
        max_rects: a.max_rects,
    };
    let (html, stats) = page::html(&p)?;
    write(&a.output, &html)?;
    let most = runs
        .iter()
        .map(|(_, (r, _))| r.most_blocks())
        .max()
        .unwrap_or(0);
    eprintln!(
        "fitalloc view: wrote {} ({}): {} policies, {ops} operations, up to {most} blocks; \
         layout changes {} deflated to {}",
        a.output.display(),
        human(stats.bytes as u64),
        policies.len(),
        human(stats.events as u64),
        human(stats.deflated as u64),
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
