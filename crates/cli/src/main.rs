//! The `fitalloc` command (work in progress).
fn main() {
    eprintln!("fitalloc: no subcommands yet");
    std::process::exit(2);
}
