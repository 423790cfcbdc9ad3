//! The C ABI section of `netron-bench`: a unary round trip through `ntr_core_call` (what a C
//! caller of libnetron runs, called here through the same `extern "C"` functions) against the
//! Rust caller-driven core (`Core::call`), alternated call by call: pairs of one Rust call and
//! one C call, the order swapped every pair, both on **the same core and connection** (the
//! Rust call reaches the `Core` behind the C handles through
//! `netron::with_core_and_conn` and is timed inside it, so the lookup is not in its time):
//! two separate client cores of one thread differ by ±200 ns per call from run to run (an
//! A/A test of two Rust cores showed +170, +270 and −39 ns), which would swamp a 50 ns
//! budget. What the C boundary adds per call
//! (handle lookups, panic boundary, the names' `strlen`, copying the reply into the caller's
//! `ntr_buf`) is estimated by the **median of the pairs' differences** with a
//! distribution-free 95 % confidence interval (the sign test's order statistics), beside
//! the mean and its standard error. Why the median: the two calls of a pair see the same
//! noise distribution (same server, same thread, order swapped), so their difference is
//! symmetric about the added cost, whose centre the median estimates; the round trips'
//! heavy tail (preemptions of several µs) makes the mean's standard error ~100 ns while the
//! median's interval stays a few ns wide.
//!
//! A second C row, the prepared call (`ntr_core_call_prepared`: core, connection and names
//! resolved once by `ntr_core_prepare_call`, so no `strlen` and no connection lookup per
//! call), is measured the same way: the pairs alternate between the two C variants, each
//! against its own Rust call, so both rows see the same stretch of the run.

use std::time::{Duration, Instant};

use netron_engine::{CallSlot, Endpoint, IdlePolicy};

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
    vec![alternated(pairs, false), alternated(pairs, true)]
}

/// The mean and the standard error of `d` (ns).
fn mean_and_error(d: &[f64]) -> (f64, f64) {
    let n = d.len().max(1) as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, (var / n).sqrt())
}

/// The median of `d` and its distribution-free 95 % confidence interval: the order
/// statistics of ranks n/2 ∓ 1.96·√n/2 (the sign test's interval, normal approximation of
/// Binomial(n, ½); Conover, *Practical Nonparametric Statistics*, §3.2). Sorts `d`.
fn median_and_interval(d: &mut [f64]) -> (f64, f64, f64) {
    if d.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    d.sort_unstable_by(f64::total_cmp);
    let n = d.len();
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let lo = ((n as f64 / 2.0 - half).floor().max(0.0) as usize).min(n - 1);
    let hi = ((n as f64 / 2.0 + half).ceil() as usize).min(n - 1);
    (d[n / 2], d[lo], d[hi])
}

/// One table: the pairs on a client core made by `ntr_core_new` (adaptive idle policy, the
/// default) or, with `busy`, by `ntr_core_new_with_idle(NTR_IDLE_BUSY_POLL)`.
fn alternated(pairs: usize, busy: bool) -> Table {
    let title = format!(
        "C ABI: unary round trip through ntr_core_call and ntr_core_call_prepared vs the Rust caller-driven core, alternated call by call (64 B, tcp, busy-poll server on cpu1; client core: {})",
        if busy {
            "ntr_core_new_with_idle(NTR_IDLE_BUSY_POLL)"
        } else {
            "ntr_core_new, adaptive 50 us spin"
        }
    );
    let mut t = Table::new(
        &title,
        &[
            "caller",
            "p50",
            "p99",
            "mean",
            "added per call: median of pairs [95% interval]",
            "mean of pairs (s.e.)",
        ],
    );
    let engine = server("tcp://127.0.0.1:0", IdlePolicy::BusyPoll);
    let ep: Endpoint = engine.endpoints()[0].clone();
    let ep_c = std::ffi::CString::new(ep.to_string()).expect("endpoint");
    let mut slot = CallSlot::new();
    let mut c_core = netron::ntr_core { id: 0 };
    let mut c_conn = netron::ntr_conn { id: 0 };
    let st = if busy {
        // SAFETY: a valid out-pointer to a local.
        unsafe { netron::ntr_core_new_with_idle(netron::NTR_IDLE_BUSY_POLL, 0, &mut c_core) }
    } else {
        // SAFETY: a valid out-pointer to a local.
        unsafe { netron::ntr_core_new(&mut c_core) }
    };
    assert_eq!(st, netron::NTR_OK);
    // SAFETY: a NUL-terminated endpoint and a valid out-pointer to a local.
    let st = unsafe { netron::ntr_core_connect(c_core, ep_c.as_ptr(), 5000, &mut c_conn) };
    assert_eq!(st, netron::NTR_OK);
    let mut reply = netron::ntr_buf {
        data: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
    let mut prepared = netron::ntr_core_prepared_call { id: 0 };
    // SAFETY: NUL-terminated static names and a valid out-pointer to a local; on this thread,
    // which created the core.
    let st = unsafe {
        netron::ntr_core_prepare_call(
            c_core,
            c_conn,
            c"bench@1.0.0".as_ptr(),
            c"echo".as_ptr(),
            &mut prepared,
        )
    };
    assert_eq!(st, netron::NTR_OK);
    let msg = [0x5au8; SIZE];
    // One pair compares a Rust call with one C variant: `ntr_core_call` (names and handles
    // per call) or `ntr_core_call_prepared` (resolved once), pairs of the two kinds
    // alternating, so both see the same stretch of the run.
    let (mut rust, mut c, mut p) = (
        Samples::with_capacity(2 * pairs),
        Samples::with_capacity(pairs),
        Samples::with_capacity(pairs),
    );
    let (mut diffs, mut diffs_p) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    // A Rust call on the C handles' core and connection, timed around `Core::call` alone.
    let rust_call = |slot: &mut CallSlot| {
        netron::with_core_and_conn(c_core, c_conn, |core, conn| {
            let t = Instant::now();
            let r = core
                .call(conn, SERVICE, METHOD, &msg, None, slot)
                .expect("call");
            debug_assert_eq!(r.len(), SIZE);
            t.elapsed()
        })
        .expect("the C handles' core")
    };
    let c_call = |reply: &mut netron::ntr_buf| {
        let t = Instant::now();
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
                reply,
            )
        };
        let took = t.elapsed();
        assert_eq!(st, netron::NTR_OK, "ntr_core_call");
        debug_assert_eq!(reply.len, SIZE);
        took
    };
    let prepared_call = |reply: &mut netron::ntr_buf| {
        let t = Instant::now();
        // SAFETY: a live 64-byte request and a zeroed-then-ours reply buffer, as netron.h
        // requires; on this thread, which created the core and the prepared call.
        let st = unsafe { netron::ntr_core_call_prepared(prepared, msg.as_ptr(), SIZE, 0, reply) };
        let took = t.elapsed();
        assert_eq!(st, netron::NTR_OK, "ntr_core_call_prepared");
        debug_assert_eq!(reply.len, SIZE);
        took
    };
    let warm = pairs / 10;
    let driver = || {
        netron::with_core_and_conn(c_core, c_conn, |core, _| *core.stats().driver())
            .expect("the C handles' core")
    };
    let mut before = None;
    for i in 0..2 * (pairs + warm) {
        if i == 2 * warm {
            before = Some(driver());
        }
        // The order alternates, so neither caller always runs second (warm caches, a
        // reply that arrived during the other's call); the C variant every other pair.
        let rust_first = i % 2 == 0;
        let use_prepared = (i / 2) % 2 == 1;
        let other = |reply: &mut netron::ntr_buf| {
            if use_prepared {
                prepared_call(reply)
            } else {
                c_call(reply)
            }
        };
        let (rust_ns, c_ns);
        if rust_first {
            rust_ns = rust_call(&mut slot);
            c_ns = other(&mut reply);
        } else {
            c_ns = other(&mut reply);
            rust_ns = rust_call(&mut slot);
        }
        if i >= 2 * warm {
            let (a, b) = (rust_ns.as_nanos() as u64, c_ns.as_nanos() as u64);
            rust.push(a);
            let d = b as f64 - a as f64;
            if use_prepared {
                p.push(b);
                diffs_p.push(d);
            } else {
                c.push(b);
                diffs.push(d);
            }
        }
    }
    t.row(&[
        "Rust: Core::call".to_owned(),
        us(rust.percentile(50.0)),
        us(rust.percentile(99.0)),
        us(rust.mean() as u64),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    for (name, samples, d) in [
        ("C ABI: ntr_core_call", &mut c, &mut diffs),
        ("C ABI: ntr_core_call_prepared", &mut p, &mut diffs_p),
    ] {
        let (added, err) = mean_and_error(d);
        let (median, lo, hi) = median_and_interval(d);
        t.row(&[
            name.to_owned(),
            us(samples.percentile(50.0)),
            us(samples.percentile(99.0)),
            us(samples.mean() as u64),
            format!("{median:+.0} ns [{lo:+.0}, {hi:+.0}]"),
            format!("{added:+.1} ns ({err:.1})"),
        ]);
    }
    t.note(format!(
        "{pairs} pairs per C variant (after {warm} warm-up pairs each): a Rust call and a C ABI call on the same core and connection, order swapped every pair, the C variant (ntr_core_call, ntr_core_call_prepared) every other pair; added = C minus Rust per pair",
    ));
    if let Some(b) = before {
        let a = driver();
        let calls = (4 * pairs) as f64;
        t.note(format!(
            "client core per call (both callers): {:.2} parks, {:.2} io_uring enters, {:.2} direct receives",
            (a.parks - b.parks) as f64 / calls,
            (a.submits - b.submits) as f64 / calls,
            (a.direct_recvs - b.direct_recvs) as f64 / calls,
        ));
    }
    t.note("target: <= 50 ns added per call; allocations per call: 0 for all three (engine/ffi/tests/alloc.rs asserts it for both C calls); instruction count: docs/benchmarks.md \"C ABI\"");
    assert_eq!(
        netron::ntr_core_prepared_call_free(prepared),
        netron::NTR_OK
    );
    // SAFETY: filled by the library, unchanged since.
    unsafe { netron::ntr_buf_free(&mut reply) };
    assert_eq!(netron::ntr_core_close(c_core, c_conn), netron::NTR_OK);
    assert_eq!(netron::ntr_core_free(c_core), netron::NTR_OK);
    engine.shutdown(Duration::from_millis(200));
    t
}
