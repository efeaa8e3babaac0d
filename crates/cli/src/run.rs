//! `fitalloc run`: a program under LD_PRELOAD=allocator.so.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::RunArgs;

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
        cmd.env("ALLOCATOR_TRACE", abs);
    }
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
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
