// The library is installed as libfitalloc.so (make install); programs that
// link it directly record that name.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfitalloc.so");
}
