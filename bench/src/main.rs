//! `netron-bench`: runs Netron's side-by-side comparisons on this machine and prints a table.
//!
//! Every figure is measured in the same run as the floor it is compared with, because absolute
//! times on shared 2-core machines vary by up to 4x between runs (see docs/benchmarks.md).
//!
//! ```text
//! cargo run --release -p netron-bench            # all sections, human-readable tables
//! cargo run --release -p netron-bench -- --json  # one JSON object per line
//! cargo run --release -p netron-bench -- --quick # shorter runs (CI smoke)
//! cargo run --release -p netron-bench -- codec   # only the named sections
//! # Netron vs tonic, tarpc and iceoryx2 (builds the peers; --write-docs updates docs/)
//! cargo run --release -p netron-bench --features compare -- compare [--write-docs]
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod codec_section;
#[cfg(feature = "compare")]
mod compare;
mod engine_section;
mod event_section;
mod ffi_section;
mod pin;
mod quic_section;
mod shm_section;
mod stats;
mod stream_section;
mod table;

use table::Table;

/// Options shared by all sections.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Shorter measurement windows (for CI smoke runs).
    pub quick: bool,
}

type Section = (&'static str, fn(&Options) -> Vec<Table>);

const SECTIONS: &[Section] = &[
    ("engine", engine_section::run),
    ("codec", codec_section::run),
    ("shm", shm_section::run),
    ("streams", stream_section::run),
    ("ffi", ffi_section::run),
    ("events", event_section::run),
    ("quic", quic_section::run),
];

fn main() {
    let mut json = false;
    let mut quick = false;
    let mut only: Vec<String> = Vec::new();
    let mut compare = false;
    let mut write_docs = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => json = true,
            "--quick" => quick = true,
            "compare" => compare = true,
            "--write-docs" => write_docs = true,
            "-h" | "--help" => {
                println!("usage: netron-bench [--json] [--quick] [SECTION...]");
                println!(
                    "       netron-bench [--json] [--quick] compare [--write-docs]  (feature `compare`)"
                );
                println!(
                    "sections: {}",
                    SECTIONS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
                );
                return;
            }
            s if SECTIONS.iter().any(|(n, _)| *n == s) => only.push(s.to_owned()),
            other => {
                eprintln!("netron-bench: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let opts = Options { quick };
    // A re-executed shm child (which the compare run also starts) plays its role and exits.
    if std::env::var_os("NETRON_BENCH_SHM_CHILD").is_some() {
        shm_section::run(&opts);
    }
    if compare {
        run_compare(&opts, json, write_docs);
        return;
    }
    if !json {
        println!(
            "netron-bench {} — {} CPUs online; ratios compare against floors measured in this run",
            env!("CARGO_PKG_VERSION"),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!();
    }
    for (name, run) in SECTIONS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        for table in run(&opts) {
            if json {
                println!("{}", table.to_json());
            } else {
                println!("{}", table.render());
            }
        }
    }
}

#[cfg(feature = "compare")]
fn run_compare(opts: &Options, json: bool, write_docs: bool) {
    if !json {
        println!(
            "netron-bench {} compare — Netron vs tonic, tarpc and iceoryx2 on this machine, floors of the same run first",
            env!("CARGO_PKG_VERSION")
        );
        println!();
    }
    for table in compare::run(opts, write_docs) {
        if json {
            println!("{}", table.to_json());
        } else {
            println!("{}", table.render());
        }
    }
}

#[cfg(not(feature = "compare"))]
fn run_compare(_: &Options, _: bool, _: bool) {
    eprintln!(
        "netron-bench: this build has no comparison; build it with the peers:\n  cargo run --release -p netron-bench --features compare -- compare"
    );
    std::process::exit(2);
}
