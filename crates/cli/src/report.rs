//! `fitalloc replay`: the per-policy table (or JSON) and layouts.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use fitalloc::trace::RecordError;
use fitalloc_cli::layout::Layout;
use fitalloc_cli::replay::{replay_file_watched, Outcome, Stop, Summary, Watch};
use fitalloc_cli::svg;
use fitalloc_cli::timeline::{self, PlotOptions, Sampler, Series, XAxis};
use fitalloc_cli::traces;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::ReplayArgs;

/// Traces of at least this many bytes (about a million records) show a
/// progress bar (on a terminal).
const PROGRESS_MIN: u64 = 32 << 20;

/// A progress bar on stderr for a trace of `len` bytes, if stderr is a
/// terminal and the replay is long.
pub fn progress_bar(len: u64, label: &str, disabled: bool) -> Option<ProgressBar> {
    if disabled || len < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    Some(pb)
}

/// Replays the trace at `path` under `policies` with an optional progress
/// bar (for a regular file: its length is known).
pub fn replay_with_progress(
    path: &Path,
    policies: &[fitalloc::Policy],
    stop: Stop,
    layout: bool,
    no_progress: bool,
) -> Result<(Summary, Vec<Outcome>)> {
    let (s, runs) =
        replay_watched_with_progress(path, policies, stop, layout, no_progress, |_| ())?;
    Ok((s, runs.into_iter().map(|(o, ())| o).collect()))
}

/// [`replay_with_progress`] with a watcher beside each policy's heap.
pub fn replay_watched_with_progress<W: Watch>(
    path: &Path,
    policies: &[fitalloc::Policy],
    stop: Stop,
    layout: bool,
    no_progress: bool,
    watch: impl FnMut(fitalloc::Policy) -> W,
) -> Result<(Summary, Vec<(Outcome, W)>)> {
    let len = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    let label = match policies {
        [p] => p.name().to_string(),
        _ => format!("{} policies", policies.len()),
    };
    let pb = progress_bar(len, &label, no_progress);
    let r = replay_file_watched(path, policies, stop, layout, pb.as_ref(), watch);
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    r
}

/// Warns (stderr) if the trace was cut short.
pub fn warn_if_cut_short(path: &Path, s: &Summary) {
    if s.cut_short {
        eprintln!(
            "fitalloc: warning: {}: {CUT_SHORT}; its {} complete operations were replayed",
            path.display(),
            s.ops
        );
    }
}

/// If the trace at `path` holds no operation, says so on stderr and names
/// the traces of the same run that hold some (a wrapper's trace beside the
/// program's, typically); returns whether it was empty.
pub fn note_if_empty(path: &Path, s: &Summary) -> bool {
    if s.ops > 0 {
        return false;
    }
    let who = if s.header.version >= 2 {
        format!("{}, pid {}", s.program.describe(), s.header.pid)
    } else {
        format!("pid {}", s.header.pid)
    };
    eprintln!(
        "fitalloc: note: {} holds no operations: its process ({who}) allocated nothing \
         it recorded (a wrapper that exec'd another program, or a process that ended with _exit)",
        path.display()
    );
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    let others = if regular {
        traces::with_operations(path)
    } else {
        Vec::new()
    };
    if others.is_empty() {
        eprintln!("fitalloc: note: no other trace of the same run (FILE.PID, FILE.PID.N beside it) holds operations");
        return true;
    }
    eprintln!("fitalloc: note: traces of the same run that hold operations, most first:");
    for (p, i) in others.iter().take(10) {
        eprintln!(
            "  {}  {} operations  {}, pid {}",
            p.display(),
            i.ops,
            i.program.describe(),
            i.header.pid
        );
    }
    if others.len() > 10 {
        eprintln!("  ... and {} more", others.len() - 10);
    }
    true
}

/// What a trace that ends inside a record is said to do.
const CUT_SHORT: &str = RecordError::Short.what();

#[derive(Serialize)]
struct JsonBlock<'a> {
    offset: u64,
    size: u64,
    used: bool,
    name: &'a str,
}

#[derive(Serialize)]
struct JsonRegion<'a> {
    size: u64,
    blocks: Vec<JsonBlock<'a>>,
}

fn json_layout(l: &Layout) -> Vec<JsonRegion<'_>> {
    l.regions
        .iter()
        .map(|r| JsonRegion {
            size: r.size,
            blocks: r
                .blocks
                .iter()
                .map(|b| JsonBlock {
                    offset: b.offset,
                    size: b.size,
                    used: b.used,
                    name: &b.name,
                })
                .collect(),
        })
        .collect()
}

#[derive(Serialize)]
struct JsonPolicy<'a> {
    policy: &'static str,
    operations: u64,
    replayed: u64,
    skipped_unknown_pointer: u64,
    skipped_failed: u64,
    replay_failed: u64,
    peak_in_use: usize,
    peak_mapped: usize,
    mapped_at_peak_in_use: usize,
    fragmentation_at_peak: Option<f64>,
    regions_mapped: u64,
    regions_unmapped: u64,
    in_use: usize,
    mapped: usize,
    peak_operation: u64,
    ns_per_op: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    layout: Option<Vec<JsonRegion<'a>>>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    trace: String,
    /// The trace format's version.
    version: u32,
    pid: u32,
    /// The parent process (version 1 traces: only for a fork child, else 0).
    parent: u32,
    fork_child: bool,
    /// The executable's path ('' if not recorded: version 1).
    exe: &'a str,
    /// `argv[0]` ('' if not recorded).
    argv0: &'a str,
    page_size: u32,
    operations_in_trace: u64,
    marks_in_trace: u64,
    /// The file ends inside a record (the complete ones were replayed).
    cut_short: bool,
    stop: String,
    policies: Vec<JsonPolicy<'a>>,
}

fn stop_text(s: Stop) -> String {
    match s {
        Stop::End => "end".into(),
        Stop::Mark(n) => format!("mark {n}"),
        Stop::Op(n) => format!("operation {n}"),
    }
}

/// The command.
pub fn replay(a: ReplayArgs) -> Result<()> {
    let stop = match (a.at_mark, a.at) {
        (Some(n), _) => Stop::Mark(n),
        (None, Some(n)) => Stop::Op(n),
        (None, None) => Stop::End,
    };
    let policies = a.policy.policies();
    let plotting = a.plot.is_some() || a.png.is_some();
    let points = if plotting { a.points } else { 2 };
    let (summary, runs) =
        replay_watched_with_progress(&a.trace, &policies, stop, a.layout, a.no_progress, |_| {
            Sampler::new(points)
        })?;
    warn_if_cut_short(&a.trace, &summary);
    note_if_empty(&a.trace, &summary);
    let (outcomes, samplers): (Vec<Outcome>, Vec<Sampler>) = runs.into_iter().unzip();
    if plotting {
        let x = match a.x_axis {
            crate::XAxisArg::Operations => XAxis::Operations,
            crate::XAxisArg::Requested => XAxis::Requested,
        };
        let svg = plot(&a.trace, &summary, &outcomes, &samplers, x);
        if let Some(p) = &a.plot {
            std::fs::write(p, &svg).with_context(|| format!("cannot write {}", p.display()))?;
        }
        if let Some(p) = &a.png {
            svg::to_png(&svg, p)?;
        }
    }
    let out = if a.json {
        json(&a.trace, &summary, stop, &outcomes)?
    } else {
        table(&a.trace, &summary, stop, &outcomes)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The timeline's caption: the trace, the program, how it was sampled.
pub fn plot_caption(path: &Path, t: &Summary, ops: u64, sampler: &Sampler) -> Vec<String> {
    let n = sampler.buckets().len();
    let sampled = match sampler.width() {
        1 => format!("every operation drawn ({n} points)"),
        w => format!(
            "each of the {n} points spans {w} consecutive operations and keeps their smallest and largest value"
        ),
    };
    vec![
        format!("fitalloc timeline: {}", file_name(path)),
        format!(
            "{}, pid {}: {ops} operations replayed under each policy, each from an empty heap",
            program_text(t),
            t.header.pid
        ),
        sampled,
    ]
}

/// What ran, in words.
pub fn program_text(t: &Summary) -> String {
    if t.header.version < 2 {
        "program not recorded (version 1 trace)".into()
    } else {
        format!("program {}", t.program.describe())
    }
}

/// The timeline of a replay, as SVG.
fn plot(path: &Path, t: &Summary, outcomes: &[Outcome], samplers: &[Sampler], x: XAxis) -> String {
    let ops = outcomes.first().map_or(0, |o| o.ops);
    let caption = plot_caption(path, t, ops, &samplers[0]);
    let series: Vec<Series> = outcomes
        .iter()
        .zip(samplers)
        .map(|(o, s)| Series {
            policy: o.policy,
            sampler: s,
        })
        .collect();
    timeline::render(&caption, &series, PlotOptions { width: 1100.0, x }).0
}

/// The last component of a path (or all of it).
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

fn json(path: &Path, t: &Summary, stop: Stop, outcomes: &[Outcome]) -> Result<String> {
    let r = JsonReport {
        trace: path.display().to_string(),
        version: t.header.version,
        pid: t.header.pid,
        parent: t.header.parent,
        fork_child: t.header.fork_child,
        exe: &t.program.exe,
        argv0: &t.program.argv0,
        page_size: t.header.page_size,
        operations_in_trace: t.ops,
        marks_in_trace: t.marks,
        cut_short: t.cut_short,
        stop: stop_text(stop),
        policies: outcomes
            .iter()
            .map(|o| JsonPolicy {
                policy: o.policy.name(),
                operations: o.ops,
                replayed: o.replayed,
                skipped_unknown_pointer: o.skipped_unknown,
                skipped_failed: o.skipped_failed,
                replay_failed: o.replay_failed,
                peak_in_use: o.counters.peak_in_use,
                peak_mapped: o.counters.peak_mapped,
                mapped_at_peak_in_use: o.counters.mapped_at_peak_in_use,
                fragmentation_at_peak: o.fragmentation(),
                regions_mapped: o.counters.regions_mapped,
                regions_unmapped: o.counters.regions_unmapped,
                in_use: o.counters.in_use,
                mapped: o.counters.mapped,
                peak_operation: o.peak_op,
                ns_per_op: (o.ns_per_op() * 10.0).round() / 10.0,
                layout: o.layout.as_ref().map(json_layout),
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&r)?;
    s.push('\n');
    Ok(s)
}

fn table(path: &Path, t: &Summary, stop: Stop, outcomes: &[Outcome]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let fork = match (t.header.fork_child, t.header.parent) {
        (true, p) => format!(", fork child of {p}"),
        (false, 0) => String::new(),
        (false, p) => format!(", parent {p}"),
    };
    let replayed = match (t.cut_short, stop) {
        (false, _) => format!("replayed to the {}", stop_text(stop)),
        (true, Stop::End) => format!("{CUT_SHORT}: replayed to its last complete record"),
        (true, _) => format!("replayed to the {}; {CUT_SHORT}", stop_text(stop)),
    };
    let _ = writeln!(
        s,
        "trace {} (pid {}{fork}): {} operations, {} marks; {replayed}",
        path.display(),
        t.header.pid,
        t.ops,
        t.marks,
    );
    if t.header.version >= 2 {
        let _ = writeln!(s, "{}", program_text(t));
    }
    let _ = writeln!(
        s,
        "{:<10} {:>11} {:>14} {:>14} {:>13} {:>14} {:>9}",
        "policy",
        "operations",
        "peak in use",
        "peak mapped",
        "frag. at peak",
        "regions mapped",
        "ns/op"
    );
    for o in outcomes {
        let frag = o
            .fragmentation()
            .map_or_else(|| "n/a".to_string(), |f| format!("{f:.3}"));
        let _ = writeln!(
            s,
            "{:<10} {:>11} {:>14} {:>14} {:>13} {:>14} {:>9.1}",
            o.policy.name(),
            o.ops,
            o.counters.peak_in_use,
            o.counters.peak_mapped,
            frag,
            o.counters.regions_mapped,
            o.ns_per_op()
        );
    }
    if let Some(o) = outcomes.first() {
        if o.skipped_unknown + o.skipped_failed > 0 {
            let _ = writeln!(
                s,
                "skipped: {} operations on pointers the trace never returned, {} failed recorded operations",
                o.skipped_unknown, o.skipped_failed
            );
        }
        if o.skipped_unknown > 0 && !t.header.fork_child {
            let _ = writeln!(
                s,
                "note: this is not a fork child's trace, yet it uses pointers it never returned: \
                 another process (a program the traced one exec'd?) may have written the same file"
            );
        }
    }
    for o in outcomes.iter().filter(|o| o.replay_failed > 0) {
        let _ = writeln!(
            s,
            "{}: {} operations that succeeded when recorded failed in the replay (out of memory)",
            o.policy.name(),
            o.replay_failed
        );
    }
    let _ = writeln!(
        s,
        "(bytes are whole blocks, headers included; frag. at peak = mapped / in use - 1 when bytes in use peaked)"
    );
    for o in outcomes {
        if let Some(l) = &o.layout {
            if outcomes.len() > 1 {
                let _ = writeln!(s, "LAYOUT {}", o.policy.name());
            }
            s.push_str(&l.to_text());
        }
    }
    s
}
