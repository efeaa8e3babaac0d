//! `fitalloc run`: a program under LD_PRELOAD=allocator.so.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use std::collections::HashMap;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use fitalloc_cli::traces::{self, TraceInfo};

use crate::RunArgs;

/// Traces listed one by one after a run; the rest are summed up.
const LISTED: usize = 10;

/// allocator.so: `--so`, else next to this executable, else `$FITALLOC_SO`,
/// else `./allocator.so`.
pub fn find_so(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.canonicalize()?);
        }
        bail!("--so {}: no such file", p.display());
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join("allocator.so"));
    }
    if let Some(env) = std::env::var_os("FITALLOC_SO").filter(|v| !v.is_empty()) {
        tried.push(PathBuf::from(env));
    }
    tried.push(PathBuf::from("allocator.so"));
    for p in &tried {
        if p.is_file() {
            return Ok(p.canonicalize()?);
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "cannot find allocator.so (tried {}); build it with `make`, or set FITALLOC_SO or --so",
        list.join(", ")
    )
}

/// Runs the program; its exit status becomes ours (128+N for signal N).
pub fn run(a: RunArgs) -> Result<ExitCode> {
    let so = find_so(a.so.as_deref())?;
    let (prog, args) = a.command.split_first().context("no program to run")?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    let mut preload = OsString::from(&so);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload);
    if let Some(p) = a.policy {
        cmd.env("ALLOCATOR_ALGORITHM", fitalloc::Policy::from(p).name());
    }
    for (on, var) in [
        (a.scribble, "ALLOCATOR_SCRIBBLE"),
        (a.leak_check, "ALLOCATOR_LEAK_CHECK"),
        (a.stats, "ALLOCATOR_STATS"),
        (a.check, "ALLOCATOR_CHECK"),
    ] {
        if on {
            cmd.env(var, "1");
        }
    }
    if let Some(t) = &a.trace {
        // Absolute, so that a program that changes directory (or its fork
        // children, which write T.PID) still writes where it was asked.
        let abs =
            std::path::absolute(t).with_context(|| format!("bad trace path {}", t.display()))?;
        // An old trace would be truncated anyway; removing it lets the first
        // process of this run be the one that creates the file.
        match std::fs::remove_file(&abs) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {}", abs.display()));
            }
            _ => {}
        }
        cmd.env("ALLOCATOR_TRACE", &abs);
    }
    let before = a
        .trace
        .as_ref()
        .map(|t| files_of_run(&std::path::absolute(t).unwrap_or(t.clone())));
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            // As a shell does: 127 for a program not found, else 126.
            eprintln!(
                "fitalloc: error: cannot run {}: {e}",
                Path::new(prog).display()
            );
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(ExitCode::from(code));
        }
    };
    if let (Some(t), Some(before)) = (&a.trace, &before) {
        list_traces(t, before);
    }
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// The trace files of the run writing `abs` (see `traces::family`), with
/// their length and modification time.
fn files_of_run(abs: &Path) -> HashMap<PathBuf, (u64, Option<SystemTime>)> {
    traces::family(abs)
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, (m.len(), m.modified().ok())))
        })
        .collect()
}

/// Lists on stderr the traces this run wrote (files of the run that are
/// new or changed since `before`), most operations first.
fn list_traces(t: &Path, before: &HashMap<PathBuf, (u64, Option<SystemTime>)>) {
    let abs = std::path::absolute(t).unwrap_or(t.to_path_buf());
    let mut written: Vec<(PathBuf, Option<TraceInfo>)> = files_of_run(&abs)
        .into_iter()
        .filter(|(p, now)| before.get(p) != Some(now))
        .map(|(p, _)| {
            let info = traces::scan_file(&p).ok();
            // Shown as the user named the trace (relative stays relative).
            let shown = p.file_name().map_or(p.clone(), |n| t.with_file_name(n));
            (shown, info)
        })
        .collect();
    if written.is_empty() {
        eprintln!(
            "fitalloc: no trace was written to {} (did the program run on fitalloc?)",
            t.display()
        );
        return;
    }
    let ops = |i: &Option<TraceInfo>| i.as_ref().map_or(0, |i| i.ops);
    written.sort_by(|a, b| ops(&b.1).cmp(&ops(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let n = written.len();
    eprintln!(
        "fitalloc: {n} trace{} written{}:",
        if n == 1 { "" } else { "s" },
        if n == 1 {
            ""
        } else {
            ", most operations first"
        }
    );
    let width = written
        .iter()
        .take(LISTED)
        .map(|(p, _)| p.display().to_string().len())
        .max()
        .unwrap_or(0);
    for (p, info) in written.iter().take(LISTED) {
        let about = match info {
            Some(i) => format!(
                "{:>10} operations  {}, pid {}{}",
                i.ops,
                i.program.describe(),
                i.header.pid,
                if i.header.fork_child {
                    format!(", fork child of {}", i.header.parent)
                } else {
                    format!(", parent {}", i.header.parent)
                }
            ),
            None => format!("{:>10}", "not a trace (or unreadable)"),
        };
        eprintln!("  {:<width$}  {about}", p.display().to_string());
    }
    if n > LISTED {
        let rest = &written[LISTED..];
        eprintln!(
            "  ... and {} more ({} operations in all)",
            rest.len(),
            rest.iter().map(|(_, i)| ops(i)).sum::<u64>()
        );
    }
}
