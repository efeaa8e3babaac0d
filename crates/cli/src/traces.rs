//! The trace files of one run, and what each holds.
//!
//! A traced program that starts others leaves one file per process:
//! `BASE` for the first, `BASE.PID` (then `BASE.PID.2`, ...) for the rest
//! (see `fitalloc::trace`). When the program is a wrapper (a shell shim such
//! as pyenv's, `env`), `BASE` is the wrapper's and may hold no operation at
//! all, while the program the user meant wrote `BASE.PID.N`. [`family`]
//! finds the files of a run from any one of them; [`scan_file`] says what
//! one holds (reading it once, as a stream).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fitalloc::trace::{Header, Op};

use crate::records::{Program, Records};

/// What a trace file holds.
#[derive(Clone, Debug)]
pub struct TraceInfo {
    /// Its header.
    pub header: Header,
    /// The program that wrote it (empty for version 1).
    pub program: Program,
    /// Operation records (all but marks).
    pub ops: u64,
    /// Mark records.
    pub marks: u64,
    /// It ends inside a record.
    pub cut_short: bool,
}

/// Reads the trace at `path` to its end and counts its records. Errors if
/// it is not a trace or a record is bad.
pub fn scan_file(path: &Path) -> Result<TraceInfo> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut recs =
        Records::new(BufReader::new(file)).with_context(|| format!("{}", path.display()))?;
    let (mut ops, mut marks) = (0, 0);
    for r in recs.by_ref() {
        match r.with_context(|| format!("{}", path.display()))?.op {
            Op::Mark { .. } => marks += 1,
            _ => ops += 1,
        }
    }
    Ok(TraceInfo {
        header: recs.header(),
        program: recs.program().clone(),
        ops,
        marks,
        cut_short: recs.cut_short(),
    })
}

/// `name` without a trailing `.PID` or `.PID.N` (digits), if it has one.
fn base_of(name: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let (head, last) = name.rsplit_once('.')?;
    if !digits(last) {
        return None;
    }
    match head.rsplit_once('.') {
        Some((base, pid)) if digits(pid) && !base.is_empty() => Some(base),
        _ if !head.is_empty() => Some(head),
        _ => None,
    }
}

/// Whether `name` is `base`, `base.PID` or `base.PID.N`.
fn in_family(name: &str, base: &str) -> bool {
    name == base || base_of(name) == Some(base)
}

/// The files of the run that wrote `path`: in its directory, `BASE`,
/// `BASE.PID` and `BASE.PID.N`, where `BASE` is the name of `path` without
/// a trailing `.PID` or `.PID.N` (or the name itself when there is none,
/// or when `path` is itself the base of such files), named as `path` is
/// (relative stays relative). `path` is included; files are sorted by name.
pub fn family(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return vec![path.to_path_buf()];
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    // `path` is a base if other files extend it; else its base is what it
    // extends.
    let is_base = names.iter().any(|n| base_of(n) == Some(name));
    let base = if is_base {
        name
    } else {
        base_of(name).unwrap_or(name)
    };
    let mut out: Vec<PathBuf> = names
        .iter()
        .filter(|n| in_family(n, base))
        .map(|n| path.with_file_name(n))
        .collect();
    if !out.iter().any(|p| p.file_name() == path.file_name()) {
        out.push(path.to_path_buf());
    }
    out.sort();
    out
}

/// The files of `family(path)` but `path` that are traces holding
/// operations, with what they hold, most operations first.
pub fn with_operations(path: &Path) -> Vec<(PathBuf, TraceInfo)> {
    let mut v: Vec<(PathBuf, TraceInfo)> = family(path)
        .into_iter()
        .filter(|p| p.file_name() != path.file_name())
        .filter_map(|p| scan_file(&p).ok().map(|i| (p, i)))
        .filter(|(_, i)| i.ops > 0)
        .collect();
    v.sort_by(|a, b| b.1.ops.cmp(&a.1.ops).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases() {
        assert_eq!(base_of("t.trace.123"), Some("t.trace"));
        assert_eq!(base_of("t.trace.123.4"), Some("t.trace"));
        assert_eq!(base_of("t.trace"), None);
        assert_eq!(base_of("t.123"), Some("t"));
        assert_eq!(base_of(".123"), None);
        assert_eq!(base_of("t.12a"), None);
        assert_eq!(base_of("t..5"), Some("t."));
        assert!(in_family("t.trace.9.2", "t.trace"));
        assert!(in_family("t.trace", "t.trace"));
        assert!(!in_family("t.trace.json", "t.trace"));
        assert!(!in_family("t.tracex.9", "t.trace"));
    }

    #[test]
    fn families() {
        let dir = std::env::temp_dir().join(format!("fitalloc-family-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in [
            "a.trace",
            "a.trace.10",
            "a.trace.10.2",
            "a.trace.11",
            "a.trace.json",
            "b.trace.10",
        ] {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        let names = |p: &str| -> Vec<String> {
            family(&dir.join(p))
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let all = ["a.trace", "a.trace.10", "a.trace.10.2", "a.trace.11"];
        assert_eq!(names("a.trace"), all);
        assert_eq!(names("a.trace.10.2"), all);
        assert_eq!(names("a.trace.11"), all);
        assert_eq!(names("b.trace.10"), ["b.trace.10"]);
        assert_eq!(names("missing"), ["missing"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
