//! Gives the shared library its soname (docs/ffi.md, "Versioning"): `libnetron.so.0` while the
//! ABI is 0.x; the major number changes only when a symbol is removed or changes meaning.
fn main() {
    let target = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnetron.so.0");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
