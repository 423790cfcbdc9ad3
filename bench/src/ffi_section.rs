//! The C ABI section of `netron-bench`: a unary round trip through `ntr_core_call` (what a C
//! caller of libnetron runs, called here through the same `extern "C"` functions) against the
//! Rust caller-driven core (`Core::call`) to the same server, alternated call by call (a Rust
//! call, then a C call, on two client cores of this thread), so the host's drift hits both
//! alike and the mean of the pairs' differences is what the C boundary adds per call (handle
//! lookups, panic boundary, the names' `strlen`, copying the reply into the caller's
//! `ntr_buf`), with its standard error.

use std::time::{Duration, Instant};

use netron_engine::{CallSlot, Core, CoreConfig, Endpoint, IdlePolicy};

use crate::Options;
use crate::engine_section::{METHOD, SERVICE, server};
use crate::pin::pin_to_cpu;
use crate::stats::{Samples, us};
use crate::table::Table;

const SIZE: usize = 64;

/// Runs the C ABI measurement.
pub fn run(opts: &Options) -> Vec<Table> {
    pin_to_cpu(0);
    let pairs = if opts.quick { 20_000 } else { 300_000 };
    vec![alternated(pairs)]
}

/// The mean and the standard error of `d` (ns).
fn mean_and_error(d: &[f64]) -> (f64, f64) {
    let n = d.len().max(1) as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, (var / n).sqrt())
}

fn alternated(pairs: usize) -> Table {
    let mut t = Table::new(
        "C ABI: unary round trip through ntr_core_call vs the Rust caller-driven core, alternated call by call (64 B, tcp, busy-poll server on cpu1)",
        &[
            "caller",
            "p50",
            "p99",
            "mean",
            "added per call (mean of pairs)",
        ],
    );
    let engine = server("tcp://127.0.0.1:0", IdlePolicy::BusyPoll);
    let ep: Endpoint = engine.endpoints()[0].clone();
    let ep_c = std::ffi::CString::new(ep.to_string()).expect("endpoint");
    let mut core = Core::new(CoreConfig::default()).expect("client core");
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    let mut slot = CallSlot::new();
    let mut c_core = netron::ntr_core { id: 0 };
    let mut c_conn = netron::ntr_conn { id: 0 };
    // SAFETY: a valid out-pointer to a local.
    let st = unsafe { netron::ntr_core_new(&mut c_core) };
    assert_eq!(st, netron::NTR_OK);
    // SAFETY: a NUL-terminated endpoint and a valid out-pointer to a local.
    let st = unsafe { netron::ntr_core_connect(c_core, ep_c.as_ptr(), 5000, &mut c_conn) };
    assert_eq!(st, netron::NTR_OK);
    let mut reply = netron::ntr_buf {
        data: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
    let msg = [0x5au8; SIZE];
    let (mut rust, mut c) = (Samples::with_capacity(pairs), Samples::with_capacity(pairs));
    let mut diffs = Vec::with_capacity(pairs);
    for i in 0..pairs + pairs / 10 {
        let t0 = Instant::now();
        let r = core
            .call(conn, SERVICE, METHOD, &msg, None, &mut slot)
            .expect("call");
        debug_assert_eq!(r.len(), SIZE);
        let t1 = Instant::now();
        // SAFETY: NUL-terminated static names, a live 64-byte request and a zeroed-then-ours
        // reply buffer, as netron.h requires; on this thread, which created the core.
        let st = unsafe {
            netron::ntr_core_call(
                c_core,
                c_conn,
                c"bench@1.0.0".as_ptr(),
                c"echo".as_ptr(),
                msg.as_ptr(),
                SIZE,
                0,
                &mut reply,
            )
        };
        let t2 = Instant::now();
        assert_eq!(st, netron::NTR_OK, "ntr_core_call");
        debug_assert_eq!(reply.len, SIZE);
        if i >= pairs / 10 {
            let (a, b) = ((t1 - t0).as_nanos() as u64, (t2 - t1).as_nanos() as u64);
            rust.push(a);
            c.push(b);
            diffs.push(b as f64 - a as f64);
        }
    }
    let (added, err) = mean_and_error(&diffs);
    t.row(&[
        "Rust: Core::call".to_owned(),
        us(rust.percentile(50.0)),
        us(rust.percentile(99.0)),
        us(rust.mean() as u64),
        "-".to_owned(),
    ]);
    t.row(&[
        "C ABI: ntr_core_call".to_owned(),
        us(c.percentile(50.0)),
        us(c.percentile(99.0)),
        us(c.mean() as u64),
        format!("{added:+.1} ns (standard error {err:.1} ns)"),
    ]);
    t.note(format!(
        "{pairs} pairs (after {} warm-up pairs): a Rust call then a C ABI call, each on its own client core of this thread, to the same server; added = mean of the pairs' differences",
        pairs / 10
    ));
    t.note("target: <= 50 ns added per call; allocations per call: 0 for both (engine/ffi/tests/alloc.rs asserts it for ntr_core_call); instruction count: docs/benchmarks.md \"C ABI\"");
    // SAFETY: filled by the library, unchanged since.
    unsafe { netron::ntr_buf_free(&mut reply) };
    assert_eq!(netron::ntr_core_close(c_core, c_conn), netron::NTR_OK);
    assert_eq!(netron::ntr_core_free(c_core), netron::NTR_OK);
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    t
}
