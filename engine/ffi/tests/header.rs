//! The committed header `include/netron.h` is what cbindgen generates from this crate now,
//! and it compiles warning-free as C11 and as C++17.
//!
//! After a deliberate change of the C surface: `NETRON_BLESS=1 cargo test -p netron-ffi
//! --test header` rewrites the header, and docs/ffi.md's versioning rules apply.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

#[test]
fn header_is_up_to_date() {
    let path = crate_dir().join("include/netron.h");
    let fresh = generate();
    if std::env::var_os("NETRON_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let diff = Command::new("diff")
            .arg("-u")
            .arg(&path)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(fresh.as_bytes())?;
                c.wait_with_output()
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "engine/ffi/include/netron.h is out of date with the Rust sources (a change of the C \
             ABI: if deliberate, run `NETRON_BLESS=1 cargo test -p netron-ffi --test header`, \
             commit the header and follow docs/ffi.md \"Versioning\"):\n{diff}"
        );
    }
}

fn compile(compiler: &str, args: &[&str], src: &Path) {
    let out =
        std::env::temp_dir().join(format!("netron-header-{}-{compiler}.o", std::process::id()));
    let status = Command::new(compiler)
        .args(args)
        .arg("-Wall")
        .arg("-Wextra")
        .arg("-Werror")
        .arg("-pedantic")
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    let _ = std::fs::remove_file(&out);
    assert!(
        status.success(),
        "netron.h does not compile cleanly with {compiler} {args:?}"
    );
}

#[test]
fn header_compiles_as_c11_and_cpp17() {
    let dir = std::env::temp_dir().join(format!("netron-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let c = dir.join("h.c");
    std::fs::write(&c, "#include \"netron.h\"\nint main(void) { ntr_buf b = {0}; return (int)ntr_buf_free(&b); }\n")
        .expect("write");
    compile("cc", &["-std=c11"], &c);
    let cpp = dir.join("h.cpp");
    std::fs::write(
        &cpp,
        "#include \"netron.h\"\nint main() { ntr_buf b{}; return (int)ntr_buf_free(&b); }\n",
    )
    .expect("write");
    compile("c++", &["-std=c++17"], &cpp);
    let _ = std::fs::remove_dir_all(&dir);
}
