//! The C ABI section of `netron-bench`: a unary round trip through `ntr_core_call` (what a C
//! caller of libnetron runs, called here through the same `extern "C"` functions) against the
//! Rust caller-driven core (`Core::call`), in paired rounds against the same server, so the
//! difference is what the C boundary adds per call (handle lookup, panic boundary, copying the
//! reply into the caller's `ntr_buf`).

use std::time::{Duration, Instant};

use netron_engine::{CallSlot, Core, CoreConfig, Endpoint, IdlePolicy};

use crate::Options;
use crate::engine_section::{METHOD, SERVICE, server};
use crate::pin::pin_to_cpu;
use crate::stats::{Samples, median, us};
use crate::table::Table;

const SIZE: usize = 64;

/// Runs the C ABI measurement.
pub fn run(opts: &Options) -> Vec<Table> {
    pin_to_cpu(0);
    let (reps, per) = if opts.quick { (4, 1_000) } else { (10, 10_000) };
    vec![paired(reps, per)]
}

fn rust_run(core: &mut Core, conn: netron_engine::ConnId, per: usize) -> Samples {
    let mut slot = CallSlot::new();
    let msg = [0x5au8; SIZE];
    let mut s = Samples::with_capacity(per);
    for i in 0..per + per / 10 {
        let t = Instant::now();
        let r = core
            .call(conn, SERVICE, METHOD, &msg, None, &mut slot)
            .expect("call");
        debug_assert_eq!(r.len(), SIZE);
        if i >= per / 10 {
            s.push(t.elapsed().as_nanos() as u64);
        }
    }
    s
}

fn ffi_run(core: netron::ntr_core, conn: netron::ntr_conn, per: usize) -> Samples {
    let msg = [0x5au8; SIZE];
    let mut reply = netron::ntr_buf {
        data: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
    let mut s = Samples::with_capacity(per);
    for i in 0..per + per / 10 {
        let t = Instant::now();
        // SAFETY: NUL-terminated static names, a live 64-byte request and a zeroed-then-ours
        // reply buffer, as netron.h requires; on this thread, which created the core.
        let st = unsafe {
            netron::ntr_core_call(
                core,
                conn,
                c"bench@1.0.0".as_ptr(),
                c"echo".as_ptr(),
                msg.as_ptr(),
                SIZE,
                0,
                &mut reply,
            )
        };
        assert_eq!(st, netron::NTR_OK, "ntr_core_call");
        debug_assert_eq!(reply.len, SIZE);
        if i >= per / 10 {
            s.push(t.elapsed().as_nanos() as u64);
        }
    }
    // SAFETY: filled by the library, unchanged since.
    unsafe { netron::ntr_buf_free(&mut reply) };
    s
}

fn paired(reps: usize, per: usize) -> Table {
    let mut t = Table::new(
        "C ABI: unary round trip through ntr_core_call vs the Rust caller-driven core (64 B, tcp, busy-poll server on cpu1)",
        &[
            "caller",
            "p50",
            "p99",
            "added p50 (median of rounds)",
            "added range",
        ],
    );
    let engine = server("tcp://127.0.0.1:0", IdlePolicy::BusyPoll);
    let ep: Endpoint = engine.endpoints()[0].clone();
    let ep_c = std::ffi::CString::new(ep.to_string()).expect("endpoint");
    let mut core = Core::new(CoreConfig::default()).expect("client core");
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    let mut c_core = netron::ntr_core { id: 0 };
    let mut c_conn = netron::ntr_conn { id: 0 };
    // SAFETY: a valid out-pointer to a local.
    let st = unsafe { netron::ntr_core_new(&mut c_core) };
    assert_eq!(st, netron::NTR_OK);
    // SAFETY: a NUL-terminated endpoint and a valid out-pointer to a local.
    let st = unsafe { netron::ntr_core_connect(c_core, ep_c.as_ptr(), 5000, &mut c_conn) };
    assert_eq!(st, netron::NTR_OK);
    let (mut rust, mut c) = (
        Samples::with_capacity(reps * per),
        Samples::with_capacity(reps * per),
    );
    let mut added = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut r = rust_run(&mut core, conn, per);
        let mut f = ffi_run(c_core, c_conn, per);
        added.push(f.percentile(50.0) as f64 - r.percentile(50.0) as f64);
        rust.append(r);
        c.append(f);
    }
    let (lo, hi) = added
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &a| (lo.min(a), hi.max(a)));
    let mid = median(&mut added);
    t.row(&[
        "Rust: Core::call".to_owned(),
        us(rust.percentile(50.0)),
        us(rust.percentile(99.0)),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    t.row(&[
        "C ABI: ntr_core_call".to_owned(),
        us(c.percentile(50.0)),
        us(c.percentile(99.0)),
        format!("{mid:+.0} ns"),
        format!("{lo:+.0} to {hi:+.0} ns"),
    ]);
    t.note(format!(
        "{reps} rounds, each {per} Rust calls then {per} C ABI calls (after {} warm-up calls each) on two client cores of this thread to the same server; the added p50 pairs each round's two runs",
        per / 10
    ));
    t.note("target: <= 50 ns added per call; allocations per call: 0 for both (engine/ffi/tests/alloc.rs asserts it for ntr_core_call)");
    assert_eq!(netron::ntr_core_close(c_core, c_conn), netron::NTR_OK);
    assert_eq!(netron::ntr_core_free(c_core), netron::NTR_OK);
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    t
}
