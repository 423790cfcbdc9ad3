//! The shared library exports exactly the symbols listed in `symbols.txt` (one a line,
//! sorted): a symbol appears or disappears only on purpose (docs/ffi.md, "Versioning").
//! After a deliberate change: `NETRON_BLESS=1 cargo test -p netron-ffi --test symbols`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn exported_symbols_match_the_committed_list() {
    let exe = std::env::current_exe().expect("test executable path");
    // `cargo test` builds the cdylib next to the test executables (target/<profile>/deps).
    let so = exe.parent().expect("deps dir").join("libnetron.so");
    assert!(so.exists(), "{} not built", so.display());
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("run nm (binutils)");
    assert!(out.status.success(), "nm failed: {out:?}");
    let mut symbols: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    symbols.sort();
    let fresh = symbols.join("\n") + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("symbols.txt");
    if std::env::var_os("NETRON_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write symbols.txt");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let added: Vec<&str> = fresh
        .lines()
        .filter(|s| !committed.lines().any(|c| c == *s))
        .collect();
    let removed: Vec<&str> = committed
        .lines()
        .filter(|c| !fresh.lines().any(|s| s == *c))
        .collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "libnetron.so's exported symbols differ from engine/ffi/symbols.txt: added {added:?}, \
         removed {removed:?}. If deliberate, run `NETRON_BLESS=1 cargo test -p netron-ffi --test \
         symbols` and follow docs/ffi.md \"Versioning\" (a removal changes the soname)."
    );
    assert!(
        symbols.iter().all(|s| s.starts_with("ntr_")),
        "only ntr_ symbols: {symbols:?}"
    );
}
