//! `fitalloc map`: a dump or a replayed trace drawn as SVG / PNG.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use fitalloc::Policy;
use fitalloc_cli::dump;
use fitalloc_cli::layout::Layout;
use fitalloc_cli::replay::{Outcome, Stop};
use fitalloc_cli::svg::{self, human, Panel};

use crate::report::{note_if_empty, replay_with_progress, warn_if_cut_short};
use crate::MapArgs;

fn stats_line(l: &Layout) -> String {
    let (u, m) = (l.in_use(), l.mapped());
    let frag = if u > 0 {
        format!(" (mapped/in use - 1 = {:.3})", m as f64 / u as f64 - 1.0)
    } else {
        String::new()
    };
    format!(
        "{} in use, {} mapped{frag}; {} regions, {} blocks",
        human(u),
        human(m),
        l.regions.len(),
        l.block_count()
    )
}

fn panel_for(o: &Outcome) -> Panel {
    let l = o.layout.clone().unwrap_or_default();
    let c = &o.counters;
    let peak = o
        .fragmentation()
        .map_or_else(String::new, |f| format!(", fragmentation at peak {f:.3}"));
    Panel {
        title: o.policy.name().to_string(),
        subtitle: vec![
            stats_line(&l),
            format!(
                "peak so far: {} in use, {} mapped{peak}",
                human(c.peak_in_use as u64),
                human(c.peak_mapped as u64)
            ),
        ],
        layout: l,
    }
}

/// Whether the file at `path` starts like a trace (its magic), rather than
/// being a print_memory dump.
fn looks_like_trace(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(n == head.len() && head == fitalloc::trace::MAGIC)
}

/// The command.
pub fn map(mut a: MapArgs) -> Result<()> {
    if let Some(file) = a.file.take() {
        if looks_like_trace(&file)? {
            if a.dump_index.is_some() {
                bail!(
                    "{} is a trace: --dump-index is for print_memory dumps",
                    file.display()
                );
            }
            a.trace = Some(file);
        } else {
            let trace_only = [
                (a.compare, "--compare"),
                (a.at.is_some(), "--at"),
                (a.at_mark.is_some(), "--at-mark"),
                (a.policy.is_some(), "--policy"),
            ];
            if let Some((_, flag)) = trace_only.iter().find(|(given, _)| *given) {
                bail!(
                    "{} is not a trace (it does not start with FITTRACE), so it is read as a \
                     print_memory dump: {flag} needs a trace",
                    file.display()
                );
            }
            a.dump = Some(file);
        }
    }
    let (caption, panels) = if let Some(dump) = &a.dump {
        from_dump(dump, a.dump_index)?
    } else {
        let trace = a.trace.as_deref().context("--dump or --trace is needed")?;
        from_trace(trace, &a)?
    };
    let opts = svg::Options {
        width: a.width.unwrap_or(if a.compare { 480 } else { 1000 }) as f64,
        max_rects: a.max_rects as usize,
        columns: panels.len(),
    };
    let (mut text, drawn) = svg::render(&caption, &panels, opts);
    if drawn.runs > 0 {
        let mut caption = caption;
        caption.push(format!(
            "{} blocks drawn as {} rectangles: {} blocks too narrow to draw one by one merged into {} runs",
            drawn.blocks, drawn.rects, drawn.merged_blocks, drawn.runs
        ));
        if drawn.bands < drawn.regions {
            caption.push(format!(
                "{} regions drawn as {} bands: runs of consecutive regions merged into one rectangle each (--max-rects {})",
                drawn.regions, drawn.bands, a.max_rects
            ));
        }
        text = svg::render(&caption, &panels, opts).0;
    }
    let to_stdout = match &a.output {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?;
            false
        }
        Some(_) => true,
        None => a.png.is_none(),
    };
    if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    if let Some(png) = &a.png {
        svg::to_png(&text, png)?;
    }
    let merged = match (drawn.runs, drawn.bands < drawn.regions) {
        (0, _) => String::new(),
        (runs, false) => format!(" ({runs} merged runs)"),
        (runs, true) => format!(" ({runs} merged runs; {} bands)", drawn.bands),
    };
    eprintln!(
        "fitalloc map: {} panel(s), {} regions, {} blocks, {} rectangles{merged}",
        panels.len(),
        drawn.regions,
        drawn.blocks,
        drawn.rects,
    );
    Ok(())
}

fn from_dump(path: &Path, index: Option<usize>) -> Result<(Vec<String>, Vec<Panel>)> {
    if index == Some(0) {
        bail!("--dump-index counts from 1");
    }
    let file = File::open(path).with_context(|| format!("cannot read dump {}", path.display()))?;
    let (dump, count) =
        dump::read(BufReader::new(file), index).with_context(|| format!("{}", path.display()))?;
    let Some(d) = dump else {
        if count == 0 {
            bail!(
                "{}: no print_memory dump in the file (no '-- Current Memory State --' line)",
                path.display()
            );
        }
        bail!(
            "{}: there are {count} dumps in the file, not {}",
            path.display(),
            index.unwrap_or(0)
        );
    };
    let k = index.unwrap_or(count);
    let name = file_name(path);
    for w in &d.warnings {
        eprintln!("fitalloc: warning: {name}: {w}");
    }
    let warnings = d.warnings.len() + d.more_warnings;
    if d.more_warnings > 0 {
        eprintln!(
            "fitalloc: warning: {name}: {} more warnings like these",
            d.more_warnings
        );
    }
    let l = d.layout;
    let of = if index.is_some() {
        String::new()
    } else {
        format!(" of {count}")
    };
    let mut caption = vec![
        format!("fitalloc heap: {name}"),
        format!("print_memory dump {k}{of} in the file (a dump does not record the policy)"),
        stats_line(&l),
    ];
    if warnings > 0 {
        caption.push(format!(
            "warning: {warnings} blocks or regions overlap or are out of address order (listed on stderr)"
        ));
    }
    let panel = Panel {
        title: format!("dump {k}"),
        subtitle: Vec::new(),
        layout: l,
    };
    Ok((caption, vec![panel]))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

/// The operation after which bytes in use peak under `policy` (a first
/// reading of the trace, so it must be a file, not a pipe).
fn peak_op(path: &Path, policy: Policy) -> Result<u64> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        bail!(
            "{}: finding the peak reads the trace twice, which only a regular file allows: \
             give --at or --at-mark, or save the trace to a file",
            path.display()
        );
    }
    let (_, o) = replay_with_progress(path, &[policy], Stop::End, false, false)?;
    Ok(o[0].peak_op)
}

fn from_trace(path: &Path, a: &MapArgs) -> Result<(Vec<String>, Vec<Panel>)> {
    let policy = Policy::from(a.policy.unwrap_or(crate::PolicyArg::FirstFit));
    let policies = if a.compare {
        Policy::ALL.to_vec()
    } else {
        vec![policy]
    };
    let stop = match (a.at, a.at_mark) {
        (Some(n), _) => Stop::Op(n),
        (None, Some(n)) => Stop::Mark(n),
        (None, None) => Stop::Op(peak_op(path, policy)?),
    };
    let (summary, outcomes) = replay_with_progress(path, &policies, stop, true, false)?;
    warn_if_cut_short(path, &summary);
    if note_if_empty(path, &summary) {
        bail!("{}: no operations: nothing to draw", path.display());
    }
    let when = match (a.at, a.at_mark) {
        (None, Some(n)) => format!("at mark {n} (print_memory call {n})"),
        (Some(n), _) => format!("after operation {n} of {}", summary.ops),
        (None, None) => format!(
            "after operation {} of {}, when bytes in use were highest under {}",
            outcomes[0].ops,
            summary.ops,
            policy.name()
        ),
    };
    let ops = outcomes[0].ops;
    let mut panels: Vec<Panel> = outcomes.iter().map(panel_for).collect();
    let name = file_name(path);
    let mut caption = vec![format!("fitalloc heap: {name}")];
    if a.compare {
        caption.push(format!("the four policies {when}"));
        caption.push(format!(
            "{ops} operations replayed under each policy, each from an empty heap"
        ));
    } else {
        caption.push(format!("policy {}, {when}", policy.name()));
        caption.push(format!(
            "{ops} operations replayed; {}",
            stats_line(&panels[0].layout)
        ));
        panels[0].subtitle.remove(0);
    }
    Ok((caption, panels))
}
