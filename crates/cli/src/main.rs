//! The `fitalloc` command: run programs on fitalloc, replay their traces
//! under every placement policy, and draw the heap.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fitalloc::Policy;

mod map;
mod report;
mod run;
mod view;

const ABOUT: &str = "Run programs on fitalloc, replay their allocation traces under every \
placement policy, and draw the heap.";

const LONG_ABOUT: &str = "\
Run programs on fitalloc, replay their allocation traces under every placement \
policy, and draw the heap.

fitalloc is a malloc replacement (allocator.so, loaded with LD_PRELOAD) whose \
placement policy you choose: first_fit, next_fit, best_fit or worst_fit.

  fitalloc run --trace t.bin -- python3 script.py    run a program, record a trace
  fitalloc replay t.bin --policy all                 compare the four policies
  fitalloc map --trace t.bin --compare -o heap.svg   draw the heap at its peak
  fitalloc map --dump memory.txt -o heap.svg         draw a print_memory dump
  fitalloc view t.bin -o heap.html                   a page to scrub through the run

Exit status: run exits with the program's status (128+N if a signal N ended it); \
the other commands exit 0 on success, 1 on bad input (one 'fitalloc: error: ...' \
line) and 2 on bad arguments.";

#[derive(Parser, Debug)]
#[command(name = "fitalloc", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(RunArgs),
    Replay(ReplayArgs),
    Map(MapArgs),
    View(ViewArgs),
}

/// A placement policy (ALLOCATOR_ALGORITHM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// The first free block in list order that fits.
    #[value(name = "first_fit")]
    FirstFit,
    /// The first block that fits at or after the previous choice, wrapping once.
    #[value(name = "next_fit")]
    NextFit,
    /// The smallest block that fits; ties to the first in list order.
    #[value(name = "best_fit")]
    BestFit,
    /// The largest free block; ties to the first in list order.
    #[value(name = "worst_fit")]
    WorstFit,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::FirstFit => Policy::FirstFit,
            PolicyArg::NextFit => Policy::NextFit,
            PolicyArg::BestFit => Policy::BestFit,
            PolicyArg::WorstFit => Policy::WorstFit,
        }
    }
}

/// A placement policy, or all four.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoliciesArg {
    /// The first free block in list order that fits.
    #[value(name = "first_fit")]
    FirstFit,
    /// The first block that fits at or after the previous choice, wrapping once.
    #[value(name = "next_fit")]
    NextFit,
    /// The smallest block that fits; ties to the first in list order.
    #[value(name = "best_fit")]
    BestFit,
    /// The largest free block; ties to the first in list order.
    #[value(name = "worst_fit")]
    WorstFit,
    /// The four policies, one after the other.
    #[value(name = "all")]
    All,
}

impl PoliciesArg {
    fn policies(self) -> Vec<Policy> {
        match self {
            PoliciesArg::FirstFit => vec![Policy::FirstFit],
            PoliciesArg::NextFit => vec![Policy::NextFit],
            PoliciesArg::BestFit => vec![Policy::BestFit],
            PoliciesArg::WorstFit => vec![Policy::WorstFit],
            PoliciesArg::All => Policy::ALL.to_vec(),
        }
    }
}

/// Run a program on fitalloc (LD_PRELOAD=allocator.so) with the given options.
///
/// allocator.so is looked for next to the fitalloc executable, then at
/// $FITALLOC_SO, then at ./allocator.so (--so overrides all three). Options not
/// given here are inherited from the environment (ALLOCATOR_*). The exit status
/// is the program's, or 128+N if signal N ended it. The reports of --stats and
/// --leak-check go to the program's stderr at exit.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  fitalloc run --policy best_fit --stats -- ls -l /
  fitalloc run --trace git.trace -- git status      (a fork child writes git.trace.PID)
  fitalloc run --leak-check -- ./myprogram arg")]
pub struct RunArgs {
    /// Placement policy (ALLOCATOR_ALGORITHM) [default: inherited, else first_fit].
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// Fill every new allocation with 0xAA (ALLOCATOR_SCRIBBLE=1).
    #[arg(long)]
    pub scribble: bool,
    /// At exit, list every block still in use, then 'N blocks lost (B bytes)'
    /// (ALLOCATOR_LEAK_CHECK=1).
    #[arg(long)]
    pub leak_check: bool,
    /// At exit, print calls per function, bytes in use and mapped (now and at
    /// peak), regions mapped and unmapped, fragmentation at peak
    /// (ALLOCATOR_STATS=1).
    #[arg(long)]
    pub stats: bool,
    /// Check the whole heap after every operation; abort at the first broken
    /// invariant (ALLOCATOR_CHECK=1; slow).
    #[arg(long)]
    pub check: bool,
    /// Record every allocation to FILE (ALLOCATOR_TRACE; an existing FILE is
    /// replaced); a fork child, or a program the traced one starts, writes
    /// FILE.PID (then FILE.PID.2, ...). At the end, the traces written are
    /// listed on stderr with their programs and operation counts, most
    /// operations first. Replay one with `fitalloc replay FILE`.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Use this allocator.so instead of searching for it.
    #[arg(long, value_name = "PATH")]
    pub so: Option<PathBuf>,
    /// The program and its arguments (put `--` before it if it has options of
    /// its own that fitalloc might take).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// Replay a trace (from `fitalloc run --trace` or ALLOCATOR_TRACE) on
/// fitalloc's own heap, in this process, under one policy or all four.
///
/// Each policy starts from an empty heap. Recorded pointers are mapped to the
/// replay's pointers; operations on pointers the trace never returned (a fork
/// child's trace freeing its parent's blocks) and recorded operations that
/// failed are skipped and counted. For each policy it prints: operations,
/// peak bytes in use, peak bytes mapped, fragmentation at peak (bytes mapped
/// when bytes in use peaked / peak bytes in use - 1), regions mapped, and
/// nanoseconds per operation (replay loop only, not file parsing). Sizes are
/// whole blocks, headers included.
///
/// The trace is read once, as a stream (a pipe such as /dev/stdin will do),
/// and the policies are replayed side by side. A file that is not a trace is
/// rejected after its first 32 bytes; a trace that ends mid-record (cut
/// short, by a full disk say) is replayed up to its last complete record,
/// with a warning.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  fitalloc replay gcc.trace --policy all
  fitalloc replay t.bin --policy best_fit --json
  fitalloc replay t.bin --policy next_fit --at-mark 1 --layout
  fitalloc replay t.bin --plot timeline.svg --png timeline.png

--layout prints one line per region and per block, with addresses as region
index and offset (regions in list order, from 0):
  REGION <index> <size>
  BLOCK <region index> <offset> <size> USED|FREE '<name>'")]
pub struct ReplayArgs {
    /// The trace file.
    pub trace: PathBuf,
    /// Policy to replay under, or all four.
    #[arg(long, value_enum, default_value = "all")]
    pub policy: PoliciesArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Stop right after the N-th mark record (the N-th print_memory or
    /// write_memory call of the traced program).
    #[arg(long, value_name = "N", conflicts_with = "at")]
    pub at_mark: Option<u64>,
    /// Stop right after the N-th operation (marks not counted).
    #[arg(long, value_name = "N")]
    pub at: Option<u64>,
    /// Print the heap's layout where the replay stopped, addresses as region
    /// index + offset.
    #[arg(long)]
    pub layout: bool,
    /// Never show a progress bar (it shows only on a terminal, for long traces).
    #[arg(long)]
    pub no_progress: bool,
    /// Draw the timeline as SVG: for each policy, bytes in use (dashed) and
    /// mapped (solid) after every operation, and fragmentation (mapped / in
    /// use - 1) in a second panel; print_memory calls as vertical lines.
    /// Each point is the smallest and largest value over a bucket of
    /// consecutive operations, so peaks survive.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Also render the timeline as PNG.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// What the timeline's x axis counts.
    #[arg(long, value_enum, default_value = "operations")]
    pub x_axis: XAxisArg,
    /// Most points (buckets) per series of the timeline.
    #[arg(long, value_name = "N", default_value_t = fitalloc_cli::timeline::POINTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=100_000))]
    pub points: usize,
}

/// The timeline's x axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XAxisArg {
    /// Operations (malloc, free, realloc, ... calls) replayed.
    #[value(name = "operations")]
    Operations,
    /// Cumulative bytes the program requested (malloc and calloc sizes,
    /// realloc's new sizes, ...).
    #[value(name = "requested")]
    Requested,
}

/// Draw the heap as SVG (and PNG): one band per region, one rectangle per
/// block, coloured used/free, with a tooltip giving the block's name, size and
/// state.
///
/// The heap comes from a print_memory/write_memory dump or from a trace
/// replayed up to a moment (by default the moment of peak bytes in use):
/// `map FILE` tells which from the file's first bytes; --dump and --trace
/// say it explicitly. With --compare, the same moment is drawn under the
/// four policies, side by side (the moment is chosen under --policy).
///
/// Up to 40 regions, each region is one band and bands share a common width
/// (label: index and size). With more, bands flow in rows, each as wide as its
/// size (at least 16 px). Every block is at least 1 px wide; when blocks
/// outnumber the pixels of a band, or the picture would hold more than
/// --max-rects shapes (block rectangles and region bands), runs of small
/// blocks are merged into one rectangle shaded by the share in use, and the
/// caption says so; with more regions than that allows, runs of consecutive
/// regions merge into one band first.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  fitalloc map t.bin --compare -o compare.svg --png compare.png
  fitalloc map t.bin --policy best_fit --at 5000 -o heap.svg
  fitalloc map memory.txt -o heap.svg
  fitalloc map --dump out.log --dump-index 2 -o heap.svg")]
#[command(group(clap::ArgGroup::new("input").required(true).args(["file", "dump", "trace"])))]
pub struct MapArgs {
    /// A trace or a print_memory dump: a file that starts like a trace
    /// (FITTRACE) is replayed, anything else is read as a dump (--trace and
    /// --dump say which explicitly).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A file holding print_memory/write_memory output (other lines are
    /// ignored; blocks or regions that overlap, and blocks out of address
    /// order, are drawn but reported on stderr).
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// Which dump of the file to draw, from 1 [default: the last].
    #[arg(long, value_name = "K", conflicts_with = "trace")]
    pub dump_index: Option<usize>,
    /// A trace to replay (a regular file unless --at or --at-mark is given:
    /// finding the peak reads it twice).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Policy of the replay (with --compare: the policy whose peak picks the
    /// moment) [default: first_fit].
    #[arg(long, value_enum, conflicts_with = "dump")]
    pub policy: Option<PolicyArg>,
    /// Draw the heap after operation N [default: the moment of peak bytes in
    /// use].
    #[arg(long, value_name = "N", conflicts_with_all = ["at_mark", "dump"])]
    pub at: Option<u64>,
    /// Draw the heap right after the N-th mark record (print_memory call).
    #[arg(long, value_name = "N", conflicts_with = "dump")]
    pub at_mark: Option<u64>,
    /// Draw the same moment under the four policies, side by side.
    #[arg(long, conflicts_with = "dump")]
    pub compare: bool,
    /// Write the SVG here ('-': standard output, the default without --png).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also render a PNG here.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Width of a panel's drawing area in pixels [default: 1000, with
    /// --compare 480].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(100..=20000))]
    pub width: Option<u32>,
    /// Most shapes in the picture, block rectangles and region bands together
    /// (so it bounds the SVG's size): beyond it, runs of small blocks merge,
    /// and if the regions alone are too many, runs of regions.
    #[arg(long, value_name = "N", default_value_t = 20000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rects: u64,
}

/// Write one self-contained HTML page (no network, no external files) that
/// shows the four policies' heaps side by side after any operation of the
/// trace, under the replay's timeline.
///
/// The page has a slider and play/pause to scrub through the run, a cursor
/// on the timeline (click it to jump), and keys: left/right arrows step one
/// operation (shift: 100), page up/down 1% of the run, space plays. Hovering
/// a block shows its name, size, state and offset. The address's fragment
/// #t=N opens the page at operation N (by default: at the moment bytes in
/// use peaked under first fit). The heaps are drawn by the rules of `map`
/// (`map --compare --at N` with the same --width and --max-rects draws the
/// same rectangles).
///
/// The page holds, per policy, the changes each operation made to the heap,
/// deflated; the browser indexes them when the page opens.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  fitalloc view py.trace -o heap.html
  chromium heap.html#t=5000")]
pub struct ViewArgs {
    /// The trace file.
    pub trace: PathBuf,
    /// Write the page here.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Width of each heap's drawing area in pixels.
    #[arg(long, value_name = "PX", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(100..=20000))]
    pub width: u32,
    /// Most shapes in the four heaps together (as map --max-rects): beyond
    /// it, runs of small blocks merge. Lower it if moving the slider is slow.
    #[arg(long, value_name = "N", default_value_t = 20000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_rects: usize,
    /// Most points per series of the timeline.
    #[arg(long, value_name = "N", default_value_t = fitalloc_cli::timeline::POINTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=100_000))]
    pub points: usize,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Replay(a) => report::replay(a).map(|()| ExitCode::SUCCESS),
        Command::Map(a) => map::map(a).map(|()| ExitCode::SUCCESS),
        Command::View(a) => view::view(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // A reader that stopped early (`fitalloc replay T --layout | head`)
        // is not an error of ours: end quietly, as other filters do.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fitalloc: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
