//! Gives the shared library its soname, `libnetron.so.<ABI>` (docs/ffi.md, "Versioning"). The
//! ABI number changes only when an exported symbol is removed or changes its signature or
//! meaning; adding symbols keeps it. scripts/install.sh reads it from here.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnetron.so.0");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
