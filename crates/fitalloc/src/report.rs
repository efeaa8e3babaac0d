//! What fitalloc prints, and where: misuse lines while the program runs,
//! the leak report and the statistics at exit.
//!
//! Reports go to the program's standard error *as it was at start-up*:
//! [`prepare`] records the device and inode of fd 2 (and, when an exit
//! report is asked for, keeps a close-on-exec copy of it, because programs
//! such as coreutils close fd 2 before exiting). A line is written only to
//! a descriptor that is still that file; a program that closed stderr and
//! opened a data file in its place never gets fitalloc's text in it, and
//! nothing is printed at all if fd 2 was not open at start-up.

use core::fmt::Write;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering::*};

use crate::fmt::FdWriter;
use crate::global::{Arena, Call, CALLS};
use crate::heap::{Caller, Counters, Misuse, Policy};
use crate::options::Options;
use crate::os;

/// 0: nothing recorded yet; 1: fd 2 was not open; 2: identity recorded.
static STATE: AtomicU8 = AtomicU8::new(0);
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);
/// The copy of fd 2 for the exit reports (-1: none).
static COPY: AtomicI32 = AtomicI32::new(-1);

fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes into the struct we pass; a bad fd only fails.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Records fd 2's identity (first call only) and, if `exit_reports`, takes
/// the copy used at exit (once, and only while fd 2 is still that file).
/// Allocates nothing.
pub fn prepare(exit_reports: bool) {
    if STATE.load(Acquire) == 0 {
        match identity(2) {
            Some((dev, ino)) => {
                DEV.store(dev, Relaxed);
                INO.store(ino, Relaxed);
                STATE.store(2, Release);
            }
            None => STATE.store(1, Release),
        }
    }
    if exit_reports && COPY.load(Acquire) < 0 && is_stderr(2) {
        // SAFETY: duplicating fd 2; F_DUPFD_CLOEXEC allocates nothing and
        // keeps the copy out of exec'd programs.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
        if fd >= 0 && COPY.compare_exchange(-1, fd, AcqRel, Acquire).is_err() {
            // SAFETY: our own fresh descriptor, lost a race.
            unsafe { libc::close(fd) };
        }
    }
}

/// Whether `fd` is the standard error recorded at start-up.
fn is_stderr(fd: i32) -> bool {
    STATE.load(Acquire) == 2 && identity(fd) == Some((DEV.load(Relaxed), INO.load(Relaxed)))
}

/// Where a report goes now: the copy if it is still stderr, else fd 2 if it
/// is, else nowhere. Before anything was recorded (a Rust program using
/// the crate before its first allocation), fd 2.
pub fn fd() -> Option<i32> {
    match STATE.load(Acquire) {
        0 => Some(2),
        1 => None,
        _ => {
            let copy = COPY.load(Acquire);
            if copy >= 0 && is_stderr(copy) {
                Some(copy)
            } else {
                is_stderr(2).then_some(2)
            }
        }
    }
}

/// Writes one formatted line (at most 512 bytes) where reports go.
pub fn line(args: core::fmt::Arguments<'_>) {
    if let Some(fd) = fd() {
        crate::fmt::write_fd(fd, args);
    }
}

/// Reports a misuse of the heap found by `call` at `p`, and aborts.
#[cold]
#[inline(never)]
pub fn misuse(call: Call, m: Misuse, p: usize) -> ! {
    let caller = match call {
        Call::Realloc | Call::Reallocarray => Caller::Realloc,
        Call::UsableSize => Caller::UsableSize,
        _ => Caller::Free,
    };
    line(format_args!("fitalloc: {} at {p:#x}\n", m.what_in(caller)));
    os::abort()
}

/// The exit reports `options` ask for, over the arenas that have a heap
/// (`leaks` and `stats` iterate the same arenas).
pub fn at_exit(
    options: &Options,
    leaks: &mut dyn Iterator<Item = &Arena>,
    stats: &mut dyn Iterator<Item = &Arena>,
) {
    let Some(fd) = fd() else { return };
    let mut w = FdWriter::new(fd);
    if options.leak_check {
        let _ = leak_report(leaks, &mut w);
    }
    if options.stats {
        let _ = stats_report(stats, &mut w);
    }
    w.flush();
}

/// `ALLOCATOR_LEAK_CHECK`: every block still in use, then the total.
fn leak_report(arenas: &mut dyn Iterator<Item = &Arena>, w: &mut FdWriter) -> core::fmt::Result {
    let (mut n, mut bytes) = (0usize, 0usize);
    writeln!(w, "fitalloc: leak check: blocks still in use at exit")?;
    for heap in arenas.filter_map(|a| a.heap.as_ref()) {
        for d in heap.regions() {
            for b in heap.blocks(d).filter(|b| !b.free) {
                let name = crate::fmt::Text(b.name());
                let end = b.addr + b.size;
                writeln!(
                    w,
                    "  [BLOCK {:#x}-{end:#x}] {} [USED] '{name}'",
                    b.addr, b.size
                )?;
                n += 1;
                bytes += b.size;
            }
        }
    }
    writeln!(w, "{n} blocks lost ({bytes} bytes)")
}

/// `ALLOCATOR_STATS`: counters, one `key: value` line each.
fn stats_report(arenas: &mut dyn Iterator<Item = &Arena>, w: &mut FdWriter) -> core::fmt::Result {
    let mut c = Counters::default();
    let mut calls = [0u64; CALLS];
    let (mut used, mut policy) = (0, Policy::default());
    for a in arenas {
        let Some(h) = a.heap.as_ref() else { continue };
        c.add(&h.counters());
        for (t, n) in calls.iter_mut().zip(a.calls) {
            *t += n;
        }
        if used == 0 {
            policy = h.policy();
        }
        used += 1;
    }
    writeln!(
        w,
        "fitalloc: stats (policy {}, {used} arena(s))",
        policy.name()
    )?;
    write!(w, "  calls:")?;
    for call in Call::ALL {
        write!(w, " {}={}", call.name(), calls[call as usize])?;
    }
    writeln!(w)?;
    writeln!(w, "  in use now: {} bytes", c.in_use)?;
    writeln!(w, "  in use peak: {} bytes", c.peak_in_use)?;
    writeln!(w, "  mapped now: {} bytes", c.mapped)?;
    writeln!(w, "  mapped peak: {} bytes", c.peak_mapped)?;
    writeln!(w, "  regions mapped: {}", c.regions_mapped)?;
    writeln!(w, "  regions unmapped: {}", c.regions_unmapped)?;
    let (m, u) = (c.mapped_at_peak_in_use, c.peak_in_use);
    if u == 0 {
        return writeln!(w, "  fragmentation at peak: n/a");
    }
    // mapped / in use - 1, to three decimals without floating point.
    let milli = (m as u128 * 1000 / u as u128).saturating_sub(1000);
    writeln!(
        w,
        "  fragmentation at peak: {}.{:03}",
        milli / 1000,
        milli % 1000
    )
}
