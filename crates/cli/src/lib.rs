//! The library behind the `fitalloc` command: reading and replaying traces,
//! parsing `print_memory` dumps, heap layouts and their SVG drawing.
//!
//! The binary (`src/main.rs`) adds the command line (`run`, `replay`, `map`,
//! `view`)
//! on top; the fuzz targets (`fuzz/` at the top of the repository) call the
//! readers and the replay directly, so every error they can meet must be an
//! `Err`, never a panic.
//!
//! | module | role |
//! |---|---|
//! | [`records`] | a trace file read as a stream: header first, bounded memory |
//! | [`replay`] | the records replayed on fitalloc's own heap, every policy in one pass |
//! | [`page`] | the self-contained HTML page of `fitalloc view` (template, script, data) |
//! | [`pages`] | memory for replay heaps (one registry, pooled span caches) |
//! | [`dump`] | `print_memory` / `write_memory` text into layouts |
//! | [`frames`] | a replay recorded as the layout changes of each operation (for `view`) |
//! | [`layout`] | a heap as (region index, offset) blocks |
//! | [`svg`] | layouts drawn as SVG (and PNG) |
//! | [`traces`] | the trace files of one run (`FILE`, `FILE.PID`, ...) and what each holds |
//! | [`timeline`] | bytes in use, mapped and fragmentation over a replay, downsampled, as SVG |

pub mod dump;
pub mod frames;
pub mod layout;
pub mod page;
pub mod pages;
pub mod records;
pub mod replay;
pub mod svg;
pub mod timeline;
pub mod traces;
