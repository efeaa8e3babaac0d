//! End-to-end tests of the `fitalloc` command: help, replay, map and run,
//! happy paths and error paths. Traces are written here with the crate's own
//! encoder; `run` needs allocator.so (built by `make`), found through
//! FITALLOC_SO.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use fitalloc::trace::{Header, Op, Record, RECORD, VERSION};
use predicates::prelude::*;

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "fitalloc-cli-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fitalloc() -> Command {
    Command::cargo_bin("fitalloc").expect("the fitalloc binary is built")
}

fn so() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../allocator.so");
    assert!(
        p.is_file(),
        "{} is missing: run `make` first (the run tests need it)",
        p.display()
    );
    p.canonicalize().unwrap()
}

fn name(s: &str) -> [u8; 31] {
    let mut n = [0u8; 31];
    n[..s.len()].copy_from_slice(s.as_bytes());
    n
}

/// A trace file with these (operation, returned pointer) records.
fn trace(dir: &TempDir, file: &str, ops: &[(Op, u64)]) -> PathBuf {
    let h = Header {
        version: VERSION,
        page_size: fitalloc::os::page_size() as u32,
        pid: 4242,
        parent: 0,
        fork_child: false,
        program_units: 0,
    };
    let mut f = h.encode().to_vec();
    for &(op, out) in ops {
        let mut buf = [0u8; 2 * RECORD];
        let n = Record { op, thread: 7, out }.encode(&mut buf);
        f.extend_from_slice(&buf[..n]);
    }
    let p = dir.path().join(file);
    std::fs::write(&p, f).unwrap();
    p
}

/// A version 2 trace file written by `exe` run as `argv0` (pid `pid`), with
/// these records.
fn trace_of(
    dir: &TempDir,
    file: &str,
    exe: &str,
    argv0: &str,
    pid: u32,
    ops: &[(Op, u64)],
) -> PathBuf {
    let mut block = [0u8; fitalloc::trace::PROGRAM_MAX];
    let units = fitalloc::trace::Program {
        exe: exe.as_bytes(),
        argv0: argv0.as_bytes(),
    }
    .encode(&mut block);
    let h = Header {
        version: VERSION,
        page_size: fitalloc::os::page_size() as u32,
        pid,
        parent: 1,
        fork_child: false,
        program_units: units,
    };
    let mut f = h.encode().to_vec();
    f.extend_from_slice(&block[..units as usize * RECORD]);
    for &(op, out) in ops {
        let mut buf = [0u8; 2 * RECORD];
        let n = Record { op, thread: 7, out }.encode(&mut buf);
        f.extend_from_slice(&buf[..n]);
    }
    let p = dir.path().join(file);
    std::fs::write(&p, f).unwrap();
    p
}

/// 40 mallocs of 100 bytes, every other one freed, a named block, a mark,
/// then a realloc and frees (of a pointer the trace never returned too).
fn sample(dir: &TempDir) -> PathBuf {
    let mut ops = Vec::new();
    for i in 0..40u64 {
        ops.push((Op::Malloc { size: 100 }, 0x10000 + i * 0x100));
    }
    for i in (0..40u64).step_by(2) {
        ops.push((
            Op::Free {
                ptr: 0x10000 + i * 0x100,
            },
            0,
        ));
    }
    ops.push((
        Op::Named {
            size: 40,
            name: name("config <table>"),
        },
        0x90000,
    ));
    ops.push((Op::Mark { number: 1 }, 0));
    ops.push((
        Op::Realloc {
            ptr: 0x90000,
            size: 6000,
        },
        0xa0000,
    ));
    ops.push((Op::Free { ptr: 0xdead0 }, 0));
    ops.push((Op::Malloc { size: 1 << 60 }, 0));
    trace(dir, "sample.trace", &ops)
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

fn layout_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("REGION ") || l.starts_with("BLOCK "))
        .map(str::to_string)
        .collect()
}

fn rects(svg: &str) -> usize {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    doc.descendants().filter(|n| n.has_tag_name("rect")).count()
}

#[test]
fn help_is_complete() {
    let top = stdout_of(fitalloc().arg("--help"));
    for w in ["run", "replay", "map", "view", "first_fit", "Exit status"] {
        assert!(top.contains(w), "--help lacks {w}");
    }
    let run = stdout_of(fitalloc().args(["run", "--help"]));
    for w in [
        "--policy",
        "--scribble",
        "--leak-check",
        "--stats",
        "--check",
        "--trace",
        "FITALLOC_SO",
        "128+N",
    ] {
        assert!(run.contains(w), "run --help lacks {w}");
    }
    let replay = stdout_of(fitalloc().args(["replay", "--help"]));
    for w in [
        "--policy",
        "all",
        "--json",
        "--at-mark",
        "--layout",
        "BLOCK <region index>",
        "--plot",
        "--png",
        "--x-axis",
        "--points",
    ] {
        assert!(replay.contains(w), "replay --help lacks {w}");
    }
    let map = stdout_of(fitalloc().args(["map", "--help"]));
    for w in [
        "--dump",
        "--trace",
        "--at",
        "--compare",
        "--png",
        "-o",
        "--max-rects",
    ] {
        assert!(map.contains(w), "map --help lacks {w}");
    }
}

#[test]
fn replay_table_json_and_layout() {
    let dir = TempDir::new().unwrap();
    let t = sample(&dir);
    let table = stdout_of(fitalloc().arg("replay").arg(&t));
    for p in ["first_fit", "next_fit", "best_fit", "worst_fit"] {
        assert!(table.contains(p), "{table}");
    }
    assert!(
        table.contains("skipped: 1 operations on pointers the trace never returned, 1 failed"),
        "{table}"
    );
    assert!(
        table.contains("note: this is not a fork child's trace"),
        "{table}"
    );

    let json = stdout_of(fitalloc().arg("replay").arg(&t).arg("--json"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pols = v["policies"].as_array().unwrap();
    assert_eq!(pols.len(), 4);
    assert_eq!(v["operations_in_trace"], 64);
    assert_eq!(v["marks_in_trace"], 1);
    for p in pols {
        assert_eq!(p["operations"], 64);
        assert_eq!(p["skipped_unknown_pointer"], 1);
        assert_eq!(p["skipped_failed"], 1);
        assert_eq!(p["replay_failed"], 0);
        // 40 blocks of 128 bytes live at once.
        assert!(p["peak_in_use"].as_u64().unwrap() >= 40 * 128, "{p}");
        assert!(p["peak_mapped"].as_u64().unwrap() >= p["peak_in_use"].as_u64().unwrap());
        assert!(p["regions_mapped"].as_u64().unwrap() >= 2, "{p}");
        assert!(p["fragmentation_at_peak"].as_f64().unwrap() >= 0.0);
        assert!(p["ns_per_op"].as_f64().unwrap() > 0.0);
    }

    // At the mark: 20 used blocks of 128 bytes at even positions... under
    // first fit the named block (16 + 48 + 32 = 96 bytes) reuses the first hole.
    let out = stdout_of(fitalloc().arg("replay").arg(&t).args([
        "--policy",
        "first_fit",
        "--at-mark",
        "1",
        "--layout",
    ]));
    let lines = layout_lines(&out);
    assert_eq!(lines[0], "REGION 0 4096");
    assert_eq!(lines[1], "BLOCK 0 0 96 USED 'config <table>'");
    assert_eq!(lines[2], "BLOCK 0 96 32 FREE ''");
    assert_eq!(lines[3], "BLOCK 0 128 128 USED ''");
    let used = lines.iter().filter(|l| l.contains(" USED ")).count();
    assert_eq!(used, 21);

    // --at N stops after N operations.
    let out = stdout_of(
        fitalloc()
            .arg("replay")
            .arg(&t)
            .args(["--policy", "best_fit", "--at", "1", "--layout", "--json"]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["policies"][0]["in_use"], 128);
    assert_eq!(v["policies"][0]["layout"][0]["blocks"][0]["size"], 128);
}

/// The y pixel of the topmost point of an SVG path ("M x y L x y ... Z").
fn path_top(d: &str) -> f64 {
    d.split(|c: char| c.is_ascii_alphabetic())
        .filter_map(|xy| xy.split_whitespace().nth(1))
        .map(|y| y.parse::<f64>().unwrap())
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn replay_plots_a_timeline_whose_peaks_survive() {
    let dir = TempDir::new().unwrap();
    // 100k malloc/free pairs of 64 bytes; pair 61728 allocates 50 MiB
    // instead: one operation in 200k that no average would keep.
    let mut ops = Vec::new();
    for i in 0..100_000u64 {
        let size = if i == 61_728 { 50 << 20 } else { 64 };
        ops.push((Op::Malloc { size }, 0x10000));
        ops.push((Op::Free { ptr: 0x10000 }, 0));
        if i % 25_000 == 0 {
            ops.push((
                Op::Mark {
                    number: i / 25_000 + 1,
                },
                0,
            ));
        }
    }
    let t = trace(&dir, "spike.trace", &ops);
    let svg_path = dir.path().join("t.svg");
    let png = dir.path().join("t.png");
    fitalloc()
        .arg("replay")
        .arg(&t)
        .arg("--plot")
        .arg(&svg_path)
        .arg("--png")
        .arg(&png)
        .args(["--points", "500"])
        .assert()
        .success();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.len() < 1 << 20, "{} bytes", svg.len());
    let doc = roxmltree::Document::parse(&svg).expect("well-formed");
    let panel = |name: &str| {
        doc.descendants()
            .find(|n| n.attribute("data-panel") == Some(name))
            .unwrap()
    };
    let num = |n: roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
    let bytes = panel("bytes");
    let (top, bottom, ymax) = (
        num(bytes, "data-top"),
        num(bytes, "data-bottom"),
        num(bytes, "data-ymax"),
    );
    let series: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .collect();
    assert_eq!(
        series.len(),
        12,
        "4 policies x (in use, mapped, fragmentation)"
    );
    for p in ["first_fit", "next_fit", "best_fit", "worst_fit"] {
        for kind in ["in_use", "mapped", "fragmentation"] {
            let s: Vec<_> = series
                .iter()
                .filter(|n| {
                    n.attribute("data-policy") == Some(p) && n.attribute("data-kind") == Some(kind)
                })
                .collect();
            assert_eq!(s.len(), 1, "{p} {kind}");
            assert!(num(*s[0], "data-points") <= 500.0);
        }
        let in_use = series
            .iter()
            .find(|n| {
                n.attribute("data-policy") == Some(p) && n.attribute("data-kind") == Some("in_use")
            })
            .unwrap();
        // The 50 MiB block (its header included) is the series' maximum,
        // and the band is drawn up to it.
        assert_eq!(in_use.attribute("data-max"), Some("52428816"), "{p}");
        let want = bottom - 52428816.0 / ymax * (bottom - top);
        let got = path_top(in_use.attribute("d").unwrap());
        assert!(
            (got - want).abs() < 0.11,
            "{p}: top at {got}, the peak at {want}"
        );
        let mapped = series
            .iter()
            .find(|n| {
                n.attribute("data-policy") == Some(p) && n.attribute("data-kind") == Some("mapped")
            })
            .unwrap();
        assert_eq!(
            mapped.attribute("data-max"),
            Some("52432896"),
            "{p}: 12801 pages"
        );
    }
    let marks = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("marks"))
        .unwrap();
    assert_eq!(marks.attribute("data-count"), Some("4"));

    // Bytes requested on the x axis.
    fitalloc()
        .arg("replay")
        .arg(&t)
        .arg("--plot")
        .arg(&svg_path)
        .args(["--x-axis", "requested", "--policy", "best_fit"])
        .assert()
        .success();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed");
    let plot = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("plot"))
        .unwrap();
    assert_eq!(plot.attribute("data-axis"), Some("requested"));
    let requested = (99_999 * 64 + (50 << 20)) as f64;
    assert_eq!(num(plot, "data-xmax"), requested);
    assert_eq!(svg.matches(r#"class="series""#).count(), 3);
}

/// Standard base64 (what the page holds) back to bytes.
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    } as u32;
    let mut out = Vec::new();
    for chunk in s.trim().as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .fold(0u32, |n, &c| n << 6 | if c == b'=' { 0 } else { val(c) });
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

#[test]
fn view_writes_a_self_contained_page_whose_data_replays() {
    use std::io::Read;
    let dir = TempDir::new().unwrap();
    let t = sample(&dir);
    let html_path = dir.path().join("heap.html");
    fitalloc()
        .arg("view")
        .arg(&t)
        .arg("-o")
        .arg(&html_path)
        .assert()
        .success()
        .stderr(predicate::str::contains("fitalloc view: wrote"));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for bad in ["src=", "href=", "<link", "@import", "url(", "https:"] {
        assert!(!html.contains(bad), "the page holds {bad}");
    }
    let data = html
        .split(r#"<script type="application/json" id="fitalloc-data">"#)
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&data.replace("<\\/", "</")).unwrap();
    assert_eq!(v["ops"], 64);
    let pols = v["policies"].as_array().unwrap();
    assert_eq!(pols.len(), 4);
    // Each policy's events, inflated and played, end at the layout that
    // replay --layout prints (names included).
    for (i, p) in pols.iter().enumerate() {
        let name = p["name"].as_str().unwrap();
        let names: Vec<String> = p["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        assert!(names.contains(&"config <table>".to_string()), "{names:?}");
        let b64 = html
            .split(&format!(
                r#"<script type="application/octet-stream" id="ev-{i}">"#
            ))
            .nth(1)
            .and_then(|s| s.split("</script>").next())
            .unwrap();
        let mut events = Vec::new();
        flate2::read::ZlibDecoder::new(&unbase64(b64)[..])
            .read_to_end(&mut events)
            .unwrap();
        let mut player = fitalloc_cli::frames::Player::new();
        let mut ops = 0;
        while player.step(&events) {
            ops += 1;
        }
        assert_eq!(ops, 64);
        let want = stdout_of(
            fitalloc()
                .arg("replay")
                .arg(&t)
                .args(["--policy", name, "--layout"]),
        );
        assert_eq!(
            player.layout(&names).to_text(),
            layout_lines(&want).join("\n") + "\n",
            "{name}"
        );
    }
}

#[test]
fn an_empty_trace_names_the_traces_beside_it_that_hold_operations() {
    let dir = TempDir::new().unwrap();
    let some = |n: u64| -> Vec<(Op, u64)> {
        (0..n)
            .map(|i| (Op::Malloc { size: 64 }, 0x1000 + 0x100 * i))
            .collect()
    };
    let empty = trace_of(&dir, "t.trace", "/usr/bin/env", "env", 10, &[]);
    trace_of(
        &dir,
        "t.trace.10",
        "/usr/bin/python3.11",
        "python3",
        10,
        &some(30),
    );
    trace_of(&dir, "t.trace.11", "/usr/bin/bash", "sh", 11, &some(5));
    trace_of(&dir, "t.trace.11.2", "/usr/bin/true", "true", 11, &[]);
    std::fs::write(dir.path().join("t.trace.json"), "{}").unwrap();
    trace_of(&dir, "u.trace.12", "/usr/bin/other", "other", 12, &some(50));
    let stderr = |cmd: &mut Command| String::from_utf8(cmd.output().unwrap().stderr).unwrap();
    let err = stderr(fitalloc().arg("replay").arg(&empty));
    assert!(err.contains("t.trace holds no operations"), "{err}");
    assert!(err.contains("/usr/bin/env, pid 10"), "{err}");
    let listed: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(listed.len(), 2, "{err}");
    assert!(
        listed[0].contains("t.trace.10  30 operations  python3 (/usr/bin/python3.11), pid 10"),
        "{err}"
    );
    assert!(
        listed[1].contains("t.trace.11  5 operations  sh (/usr/bin/bash)"),
        "{err}"
    );
    fitalloc().arg("replay").arg(&empty).assert().success();
    // map and view have nothing to draw: an error after the same note.
    for args in [
        vec!["map"],
        vec!["map", "--trace"],
        vec!["view", "-o", "/dev/null"],
    ] {
        fitalloc()
            .args(&args)
            .arg(&empty)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("t.trace.10  30 operations"))
            .stderr(predicate::str::contains("no operations: nothing to"));
    }
    // From a sibling that is empty too; and a trace with operations says nothing.
    let err = stderr(
        fitalloc()
            .arg("replay")
            .arg(dir.path().join("t.trace.11.2")),
    );
    assert!(err.contains("t.trace.10  30 operations"), "{err}");
    let err = stderr(fitalloc().arg("replay").arg(dir.path().join("t.trace.11")));
    assert!(!err.contains("note"), "{err}");
    // No sibling with operations.
    let lone = trace_of(&dir, "lone.trace", "/bin/true", "true", 13, &[]);
    let err = stderr(fitalloc().arg("replay").arg(&lone));
    assert!(err.contains("no other trace of the same run"), "{err}");
}

#[test]
fn map_tells_a_trace_from_a_dump() {
    let dir = TempDir::new().unwrap();
    let t = sample(&dir);
    let dump = dir.path().join("memory.txt");
    std::fs::write(
        &dump,
        "-- Current Memory State --\n[REGION 0x1000-0x2000] 4096\n  [BLOCK 0x1000-0x1050] 80 [USED] 'a'\n  [BLOCK 0x1050-0x2000] 4016 [FREE] ''\n",
    )
    .unwrap();
    let svg_of = |args: &[&str], file: &Path| {
        stdout_of(fitalloc().arg("map").args(args).arg(file).args(["-o", "-"]))
    };
    assert_eq!(svg_of(&[], &t), svg_of(&["--trace"], &t));
    assert_eq!(
        svg_of(&["--compare"], &t),
        svg_of(&["--compare", "--trace"], &t)
    );
    assert_eq!(svg_of(&[], &dump), svg_of(&["--dump"], &dump));
    assert!(svg_of(&[], &dump).contains("print_memory dump 1 of 1"));
    fitalloc()
        .arg("map")
        .arg(&dump)
        .arg("--compare")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "read as a print_memory dump: --compare needs a trace",
        ));
    fitalloc()
        .arg("map")
        .arg(&t)
        .args(["--dump-index", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is a trace: --dump-index"));
    fitalloc()
        .arg("map")
        .arg(&t)
        .arg("--dump")
        .arg(&dump)
        .assert()
        .code(2);
}

#[test]
fn replay_errors() {
    let dir = TempDir::new().unwrap();
    let one_line = |s: &str| s.lines().count() == 1 && s.starts_with("fitalloc: error: ");

    fitalloc()
        .args(["replay", "/nonexistent/trace"])
        .assert()
        .code(1)
        .stderr(predicate::function(one_line))
        .stderr(predicate::str::contains("cannot read trace"));

    let bad = dir.path().join("bad");
    std::fs::write(&bad, b"this is not a trace, it is a text file.").unwrap();
    fitalloc()
        .arg("replay")
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::function(one_line))
        .stderr(predicate::str::contains("bad magic"));

    let mut bytes = std::fs::read(sample(&dir)).unwrap();
    bytes[RECORD * 5] = 0x77;
    std::fs::write(&bad, bytes).unwrap();
    fitalloc()
        .arg("replay")
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::function(one_line))
        .stderr(predicate::str::contains(
            "unknown record kind (record at byte 160)",
        ));

    let t = sample(&dir);
    fitalloc()
        .arg("replay")
        .arg(&t)
        .args(["--at-mark", "2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("1 mark records, not 2"));

    fitalloc()
        .arg("replay")
        .arg(&t)
        .args(["--policy", "good_fit"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'good_fit'"));
}

/// How long a command may take on input it must reject at once: far more
/// than it needs (milliseconds), far less than reading without end would
/// take to be noticed.
const FAST: Duration = Duration::from_secs(10);

/// Runs `fitalloc ARGS` in `sh` with `INPUT |` before it.
fn piped(input: &str, args: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("{input} | \"$0\" {args}"))
        .arg(assert_cmd::cargo::cargo_bin("fitalloc"))
        .timeout(FAST);
    c
}

#[test]
fn non_traces_fail_fast() {
    let dir = TempDir::new().unwrap();
    let text = dir.path().join("text");
    std::fs::write(&text, "-- Current Memory State --\n".repeat(1000)).unwrap();
    let bad_magic = predicate::str::contains("not a fitalloc trace (bad magic)");
    for file in [Path::new("/dev/zero"), &text] {
        for args in [&["replay"][..], &["map", "--at", "5", "--trace"]] {
            fitalloc()
                .args(args)
                .arg(file)
                .timeout(FAST)
                .assert()
                .code(1)
                .stderr(bad_magic.clone());
        }
    }
    for args in ["replay /dev/stdin", "map --at-mark 1 --trace /dev/stdin"] {
        piped("yes", args)
            .assert()
            .code(1)
            .stderr(bad_magic.clone());
    }
    // The peak needs two readings: a pipe is refused before it is read.
    piped("yes", "map --trace /dev/stdin")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("only a regular file allows"));
    // A trace through a pipe replays (one reading).
    let t = sample(&dir);
    let out = piped(
        &format!("cat '{}'", t.display()),
        "replay /dev/stdin --json",
    )
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["operations_in_trace"], 64);
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let dir = TempDir::new().unwrap();
    // 20,000 blocks: a layout of about 700 KB, far more than a pipe holds,
    // so fitalloc is still writing when `head` has gone.
    let ops: Vec<_> = (0..20_000u64)
        .map(|i| (Op::Malloc { size: 24 }, 0x100000 + i * 0x40))
        .collect();
    let t = trace(&dir, "many.trace", &ops);
    let err = dir.path().join("err");
    let out = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" replay \"$1\" --policy first_fit --layout 2>\"$2\" | head -n 1; cat \"$2\"")
        .arg(assert_cmd::cargo::cargo_bin("fitalloc"))
        .arg(&t)
        .arg(&err)
        .timeout(FAST)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    // The one line head let through, and nothing on fitalloc's stderr.
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
}

#[test]
fn a_trace_cut_short_replays_with_a_warning() {
    let dir = TempDir::new().unwrap();
    let whole = std::fs::read(sample(&dir)).unwrap();
    let warning = "fitalloc: warning: ";
    // Cut inside the last record, and inside the malloc_name pair (its name
    // record is the 63rd record after the header).
    for (cut, complete, marks) in [(whole.len() - 5, 63, 1), (RECORD * 62 + 3, 60, 0)] {
        let path = dir.path().join(format!("cut-{cut}"));
        std::fs::write(&path, &whole[..cut]).unwrap();
        let out = fitalloc()
            .arg("replay")
            .arg(&path)
            .assert()
            .success()
            .stderr(predicate::str::starts_with(warning))
            .stderr(predicate::str::contains(format!(
                "trace ends mid-record (file cut short?); its {complete} complete operations were replayed"
            )))
            .get_output()
            .stdout
            .clone();
        let table = String::from_utf8(out).unwrap();
        assert!(
            table.contains(&format!(
                "{complete} operations, {marks} marks; trace ends mid-record (file cut short?): replayed to its last complete record"
            )),
            "{table}"
        );
        assert!(!table.contains("replayed to the end"), "{table}");
        let json = stdout_of(fitalloc().arg("replay").arg(&path).arg("--json"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["cut_short"], true);
        assert_eq!(v["policies"][0]["operations"], complete);
        fitalloc()
            .args(["map", "--trace"])
            .arg(&path)
            .assert()
            .success()
            .stderr(predicate::str::contains("trace ends mid-record"));
    }
    let path = dir.path().join("whole");
    std::fs::write(&path, &whole).unwrap();
    let json = stdout_of(fitalloc().arg("replay").arg(&path).arg("--json"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["cut_short"], false);
}

#[test]
fn map_trace_dump_compare_png() {
    let dir = TempDir::new().unwrap();
    let t = sample(&dir);
    let svg = dir.path().join("one.svg");
    let png = dir.path().join("one.png");
    fitalloc()
        .args(["map", "--policy", "best_fit", "--at-mark", "1", "--trace"])
        .arg(&t)
        .arg("-o")
        .arg(&svg)
        .arg("--png")
        .arg(&png)
        .assert()
        .success();
    let text = std::fs::read_to_string(&svg).unwrap();
    let layout = stdout_of(fitalloc().arg("replay").arg(&t).args([
        "--policy",
        "best_fit",
        "--at-mark",
        "1",
        "--layout",
    ]));
    let blocks = layout_lines(&layout)
        .iter()
        .filter(|l| l.starts_with("BLOCK "))
        .count();
    assert_eq!(rects(&text), blocks, "one <rect> per block");
    assert!(text.contains("config &lt;table&gt;"), "names in tooltips");
    assert!(text.contains("policy best_fit"), "caption names the policy");
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Default moment (peak in use) to stdout; --compare has four panels.
    let text = stdout_of(fitalloc().args(["map", "--trace"]).arg(&t));
    assert!(text.contains("when bytes in use were highest"), "{text}");
    rects(&text);
    let text = stdout_of(
        fitalloc()
            .args(["map", "--compare", "--at", "40", "--trace"])
            .arg(&t),
    );
    let doc = roxmltree::Document::parse(&text).unwrap();
    for p in ["first_fit", "next_fit", "best_fit", "worst_fit"] {
        assert!(
            doc.descendants().any(|n| n.text() == Some(p)),
            "panel title {p}"
        );
    }
    // 40 used blocks and one free tail per policy.
    assert_eq!(rects(&text), 4 * 41);

    // A dump: one rect per block line; other lines ignored.
    let dump = dir.path().join("dump.txt");
    std::fs::write(
        &dump,
        "program output\n-- Current Memory State --\n\
         [REGION 0x7f0000000000-0x7f0000002000] 8192\n\
         \x20 [BLOCK 0x7f0000000000-0x7f00000000b0] 176 [USED] 'Test Allocation: 0'\n\
         \x20 [BLOCK 0x7f00000000b0-0x7f0000000100] 80 [FREE] ''\n\
         \x20 [BLOCK 0x7f0000000100-0x7f0000002000] 7936 [USED] ''\n\
         [REGION 0x7f0000010000-0x7f0000011000] 4096\n\
         \x20 [BLOCK 0x7f0000010000-0x7f0000011000] 4096 [USED] 'big'\n",
    )
    .unwrap();
    let text = stdout_of(fitalloc().args(["map", "--dump"]).arg(&dump));
    assert_eq!(rects(&text), 4);
    assert!(text.contains("Test Allocation: 0"));
}

#[test]
fn map_dump_warns_about_overlaps_and_disorder() {
    let dir = TempDir::new().unwrap();
    let dump = dir.path().join("bad.txt");
    let mut text = String::from(
        "-- Current Memory State --\n\
         [REGION 0x10000-0x12000] 8192\n\
         \x20 [BLOCK 0x10100-0x10200] 256 [USED] 'second'\n\
         \x20 [BLOCK 0x10000-0x10100] 256 [USED] 'first'\n\
         [REGION 0x11000-0x12000] 4096\n",
    );
    std::fs::write(&dump, &text).unwrap();
    let warned = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.starts_with("fitalloc: warning: bad.txt: "))
            .map(str::to_string)
            .collect()
    };
    let out = fitalloc()
        .args(["map", "--dump"])
        .arg(&dump)
        .assert()
        .success();
    let o = out.get_output();
    let w = warned(&String::from_utf8_lossy(&o.stderr));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("line 4: block at 0x10000 comes before the previous block"));
    assert!(w[1].contains("line 5: region 0x11000-0x12000 overlaps the region of line 2"));
    let svg = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(svg.contains("warning: 2 blocks or regions overlap or are out of address order"));
    assert_eq!(rects(&svg), 2, "still drawn");

    // Many overlapping blocks: one line each up to a cap, then a count.
    for _ in 0..30 {
        text.push_str("  [BLOCK 0x11000-0x11100] 256 [FREE] ''\n");
    }
    std::fs::write(&dump, &text).unwrap();
    let out = fitalloc()
        .args(["map", "--dump"])
        .arg(&dump)
        .assert()
        .success();
    let w = warned(&String::from_utf8_lossy(&out.get_output().stderr));
    assert_eq!(w.len(), 11, "{w:?}");
    assert!(
        w[1].contains("overlaps an earlier block of its region"),
        "{w:?}"
    );
    assert!(w[10].ends_with("21 more warnings like these"), "{w:?}");

    // A clean dump warns about nothing.
    std::fs::write(&dump, &text[..text.find("  [BLOCK 0x10100").unwrap()]).unwrap();
    fitalloc()
        .args(["map", "--dump"])
        .arg(&dump)
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").not());
}

/// Sizes near 2^64 (a hand-written dump) once overflowed the totals: a
/// panic in debug builds, nonsense in release ones.
#[test]
fn map_dump_with_huge_sizes() {
    let dir = TempDir::new().unwrap();
    let dump = dir.path().join("huge.txt");
    let max = u64::MAX;
    std::fs::write(
        &dump,
        format!(
            "[REGION 0x10000-0x11000] {max}\n\
             \x20 [BLOCK 0x10000-0x10100] {max} [USED] 'a'\n\
             \x20 [BLOCK 0x10100-0x10200] {max} [USED] 'b'\n\
             [REGION 0x20000-0x21000] {max}\n"
        ),
    )
    .unwrap();
    for max_rects in ["1", "20000"] {
        let svg = stdout_of(
            fitalloc()
                .args(["map", "--max-rects", max_rects, "--dump"])
                .arg(&dump),
        );
        assert!(svg.contains("17179869184 GiB in use"), "saturated totals");
    }
}

/// A name with characters XML cannot hold (U+FFFF, from a hand-written or
/// damaged dump) made an SVG no XML parser accepts, and no PNG (found by the
/// dump_parse fuzz target).
#[test]
fn map_dump_names_that_xml_cannot_hold() {
    let dir = TempDir::new().unwrap();
    let dump = dir.path().join("names.txt");
    std::fs::write(
        &dump,
        "[REGION 0x10000-0x12000] 8192\n\
         \x20 [BLOCK 0x10000-0x10100] 256 [USED] 'not\u{ffff}xml\u{fffe}'\n",
    )
    .unwrap();
    let png = dir.path().join("names.png");
    let svg = stdout_of(
        fitalloc()
            .args(["map", "-o", "-", "--png"])
            .arg(&png)
            .arg("--dump")
            .arg(&dump),
    );
    assert_eq!(rects(&svg), 1, "well-formed XML");
    assert!(svg.contains("&apos;not?xml?&apos;"), "{svg}");
    assert!(png.is_file());
}

#[test]
fn map_dump_rejects_binary_data_fast() {
    fitalloc()
        .args(["map", "--dump", "/dev/zero"])
        .timeout(FAST)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("line 1: a NUL byte: binary data"));
}

#[test]
fn map_caps_rectangles() {
    let dir = TempDir::new().unwrap();
    let mut ops = Vec::new();
    for i in 0..3000u64 {
        ops.push((Op::Malloc { size: 16 }, 0x100000 + i * 0x40));
    }
    for i in (0..3000u64).step_by(3) {
        ops.push((
            Op::Free {
                ptr: 0x100000 + i * 0x40,
            },
            0,
        ));
    }
    let t = trace(&dir, "many.trace", &ops);
    let text = stdout_of(
        fitalloc()
            .args(["map", "--max-rects", "200", "--trace"])
            .arg(&t),
    );
    let n = rects(&text);
    assert!(n <= 200, "{n} rects");
    assert!(text.contains("merged into"), "the caption says so");
}

/// 200,000 regions of one block each (a heap of many large allocations,
/// each in its own region): the cap must bound the whole picture, not each
/// region (one rectangle per region made a 72 MB SVG).
#[test]
fn map_caps_the_whole_picture() {
    use std::io::Write;
    let dir = TempDir::new().unwrap();
    let dump = dir.path().join("many.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&dump).unwrap());
    writeln!(f, "-- Current Memory State --").unwrap();
    for i in 0..200_000u64 {
        let a = 0x1000_0000 + i * 0x2000;
        let state = if i % 3 == 0 { "FREE" } else { "USED" };
        writeln!(f, "[REGION {a:#x}-{:#x}] 4096", a + 4096).unwrap();
        writeln!(
            f,
            "  [BLOCK {a:#x}-{:#x}] 4096 [{state}] 'block {i}'",
            a + 4096
        )
        .unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
    let svg = dir.path().join("many.svg");
    fitalloc()
        .args(["map", "--dump"])
        .arg(&dump)
        .arg("-o")
        .arg(&svg)
        .assert()
        .success();
    let text = std::fs::read_to_string(&svg).unwrap();
    // The default --max-rects is 20,000 shapes (rectangles and bands), each
    // a few hundred bytes at most with its tooltip: 5 MB leaves room for
    // that, and is far below the 72 MB of one rectangle per region.
    assert!(text.len() < 5_000_000, "{} bytes", text.len());
    assert!(rects(&text) <= 20_000, "{} rects", rects(&text));
    assert!(
        text.contains("200000 regions drawn as "),
        "the caption says so"
    );
    assert!(
        text.contains("200000 blocks drawn as "),
        "the caption says so"
    );
}

#[test]
fn map_errors() {
    let dir = TempDir::new().unwrap();
    fitalloc().arg("map").assert().code(2);
    fitalloc()
        .args(["map", "--dump", "/nonexistent/dump"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read dump"));
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "nothing here\n").unwrap();
    fitalloc()
        .arg("map")
        .arg("--dump")
        .arg(&empty)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no print_memory dump"));
    fitalloc()
        .args(["map", "--compare", "--dump"])
        .arg(&empty)
        .assert()
        .code(2);
    let two = dir.path().join("two.txt");
    std::fs::write(&two, "-- Current Memory State --\n".repeat(2)).unwrap();
    for (k, e) in [
        ("0", "counts from 1"),
        ("3", "there are 2 dumps in the file, not 3"),
    ] {
        fitalloc()
            .args(["map", "--dump-index", k, "--dump"])
            .arg(&two)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(e));
    }
    let t = sample(&dir);
    fitalloc()
        .args(["map", "--policy", "fastest_fit", "--trace"])
        .arg(&t)
        .assert()
        .code(2);
}

#[test]
fn run_lists_the_traces_it_wrote() {
    let so = so();
    let dir = TempDir::new().unwrap();
    let t = dir.path().join("w.trace");
    // A stale trace of an earlier run is not listed.
    std::fs::write(dir.path().join("w.trace.1"), b"old").unwrap();
    // env execs sh (same process: w.trace holds env's nothing, w.trace.PID
    // what sh records), which runs ls (w.trace.PID2).
    let out = fitalloc()
        .env("FITALLOC_SO", &so)
        .arg("run")
        .arg("--trace")
        .arg(&t)
        .args(["--", "env", "A=1", "sh", "-c", "ls / >/dev/null; exit 0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(
        err.contains("traces written, most operations first"),
        "{err}"
    );
    assert!(lines.len() >= 3, "{err}");
    assert!(!err.contains("w.trace.1 "), "{err}");
    let ops: Vec<u64> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(ops.windows(2).all(|w| w[0] >= w[1]), "{err}");
    assert!(ops[0] > 0, "{err}");
    // ls allocates the most; env, which only execs, nothing.
    assert!(lines[0].contains(" operations  /usr/bin/ls, pid"), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/w.trace ") && l.contains(" 0 operations  /usr/bin/env, pid")),
        "{err}"
    );
}

#[test]
fn run_sets_the_environment_and_returns_the_status() {
    let so = so();
    let out = stdout_of(
        fitalloc()
            .env("FITALLOC_SO", &so)
            .env_remove("ALLOCATOR_ALGORITHM")
            .args([
                "run",
                "--policy",
                "worst_fit",
                "--scribble",
                "--check",
                "--",
                "sh",
                "-c",
                "echo $LD_PRELOAD $ALLOCATOR_ALGORITHM $ALLOCATOR_SCRIBBLE $ALLOCATOR_CHECK",
            ]),
    );
    assert_eq!(out.trim(), format!("{} worst_fit 1 1", so.display()));

    fitalloc()
        .env("FITALLOC_SO", &so)
        .args(["run", "--", "sh", "-c", "exit 3"])
        .assert()
        .code(3);
    fitalloc()
        .env("FITALLOC_SO", &so)
        .args(["run", "sh", "-c", "kill -TERM $$"])
        .assert()
        .code(128 + 15);
    fitalloc()
        .env("FITALLOC_SO", &so)
        .args(["run", "--", "/nonexistent/program"])
        .assert()
        .code(127)
        .stderr(predicate::str::contains("cannot run /nonexistent/program"));

    // --stats and --leak-check reach the program (bash allocates, ends with
    // exit() and keeps its stderr open, so the reports are written).
    fitalloc()
        .env("FITALLOC_SO", &so)
        .args([
            "run",
            "--stats",
            "--leak-check",
            "--",
            "bash",
            "-c",
            "echo hi",
        ])
        .assert()
        .success()
        .stdout("hi\n")
        .stderr(predicate::str::contains(
            "fitalloc: stats (policy first_fit",
        ))
        .stderr(predicate::str::contains("blocks lost ("));

    // A trace, relative to the current directory, replays.
    let dir = TempDir::new().unwrap();
    fitalloc()
        .env("FITALLOC_SO", &so)
        .current_dir(dir.path())
        .args(["run", "--trace", "sh.trace", "--", "bash", "-c", "echo hi"])
        .assert()
        .success();
    let t = dir.path().join("sh.trace");
    assert!(t.is_file());
    let v: serde_json::Value =
        serde_json::from_str(&stdout_of(fitalloc().arg("replay").arg(&t).arg("--json"))).unwrap();
    assert!(v["operations_in_trace"].as_u64().unwrap() > 0);
}

#[test]
fn run_without_allocator_so() {
    let dir = TempDir::new().unwrap();
    let bin = dir.path().join("fitalloc");
    std::fs::copy(assert_cmd::cargo::cargo_bin("fitalloc"), &bin).unwrap();
    Command::new(&bin)
        .current_dir(dir.path())
        .env_remove("FITALLOC_SO")
        .args(["run", "--", "true"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot find allocator.so"));
    Command::new(&bin)
        .current_dir(dir.path())
        .args(["run", "--so", "/nonexistent.so", "--", "true"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "--so /nonexistent.so: no such file",
        ));
    // Next to the executable wins.
    std::fs::copy(so(), dir.path().join("allocator.so")).unwrap();
    Command::new(&bin)
        .current_dir("/")
        .env("FITALLOC_SO", "/nonexistent.so")
        .args(["run", "--", "sh", "-c", "echo $LD_PRELOAD"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            dir.path()
                .canonicalize()
                .unwrap()
                .join("allocator.so")
                .display()
                .to_string(),
        ));
}
