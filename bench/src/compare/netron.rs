//! Netron's side of the comparison: a one-core engine server pinned to cpu1 and a client core
//! driven by this thread (cpu0), in three idle policies; and the overhead bytes per call.

use std::time::{Duration, Instant};

use netron_engine::{CallOptions, CallSlot, Core, CoreConfig, Endpoint, IdlePolicy, RuntimeConfig};

use super::{DEADLINE, DEPTHS, Overhead, Rpc, SIZE, Workload, cpu_ns, proxy, traceparent};
use crate::engine_section::{METHOD, SERVICE, server};
use crate::stats::Samples;

const MODES: [(&str, IdlePolicy); 3] = [
    (
        "adaptive (default: spin 50 µs)",
        IdlePolicy::Adaptive {
            spin: Duration::from_micros(50),
        },
    ),
    ("busy-poll", IdlePolicy::BusyPoll),
    (
        "spin 0 (parks like the peers)",
        IdlePolicy::Adaptive {
            spin: Duration::ZERO,
        },
    ),
];

fn endpoint_of(engine: &netron_engine::Engine) -> Endpoint {
    engine.endpoints()[0].clone()
}

/// Round trips with a deadline on every call, and the CPU time (both sides) they took.
fn round_trips(endpoint: &str, idle: IdlePolicy, n: usize) -> (Samples, f64) {
    let engine = server(endpoint, idle);
    let mut core = Core::new(RuntimeConfig::default().with_idle(idle)).expect("client core");
    let conn = core
        .connect(&endpoint_of(&engine), Duration::from_secs(5))
        .expect("connect");
    let mut slot = CallSlot::new();
    let msg = [0x5au8; SIZE];
    let mut s = Samples::with_capacity(n);
    for _ in 0..n / 10 {
        core.call(conn, SERVICE, METHOD, &msg, Some(DEADLINE), &mut slot)
            .expect("call");
    }
    let cpu0 = cpu_ns();
    for _ in 0..n {
        let t = Instant::now();
        let r = core
            .call(conn, SERVICE, METHOD, &msg, Some(DEADLINE), &mut slot)
            .expect("call");
        debug_assert_eq!(r.len(), SIZE);
        s.push(t.elapsed().as_nanos() as u64);
    }
    let cpu = (cpu_ns() - cpu0) as f64 / n as f64;
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    (s, cpu)
}

/// Calls/s with `depth` calls in flight on one TCP connection.
fn pipelined(idle: IdlePolicy, depth: usize, window: Duration) -> f64 {
    let engine = server("tcp://127.0.0.1:0", idle);
    let mut core = Core::new(RuntimeConfig::default().with_idle(idle)).expect("core");
    let conn = core
        .connect(&endpoint_of(&engine), Duration::from_secs(5))
        .expect("connect");
    let mut slots: Vec<CallSlot> = (0..depth).map(|_| CallSlot::new()).collect();
    let msg = [0x5au8; SIZE];
    let mut run = |core: &mut Core, dur: Duration| -> u64 {
        // The calls in flight at the end landed too: count them.
        crate::engine_section::pipelined_calls(
            core,
            conn,
            (SERVICE, METHOD, &msg, Some(DEADLINE)),
            &mut slots,
            dur,
        ) + depth as u64
    };
    run(&mut core, window / 4);
    let t = Instant::now();
    let calls = run(&mut core, window);
    let rate = calls as f64 / t.elapsed().as_secs_f64();
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    rate
}

/// The TCP rows: default adaptive, busy-poll, spin 0.
pub(crate) fn tcp_rows(wl: &Workload) -> Vec<Rpc> {
    MODES
        .iter()
        .map(|&(mode, idle)| {
            let (lat, cpu_ns) = round_trips("tcp://127.0.0.1:0", idle, wl.n);
            let mut rates = [0f64; 3];
            for (r, depth) in rates.iter_mut().zip(DEPTHS) {
                *r = pipelined(idle, depth, wl.window);
            }
            Rpc {
                system: "Netron",
                mode,
                lat,
                cpu_ns,
                rates,
            }
        })
        .collect()
}

/// Netron over unix:// (busy-poll and spin 0), for the IPC table.
pub(crate) fn unix_rows(wl: &Workload) -> Vec<(String, Samples)> {
    [("busy-poll", IdlePolicy::BusyPoll), ("spin 0", MODES[2].1)]
        .into_iter()
        .map(|(name, idle)| {
            let ep = format!(
                "unix:///tmp/netron-bench-compare-{}-{}.sock",
                std::process::id(),
                name.replace(' ', "")
            );
            let (s, _) = round_trips(&ep, idle, wl.n);
            (format!("Netron unary call over unix://, {name}"), s)
        })
        .collect()
}

/// Overhead bytes per call through a counting proxy: the engine's client with a deadline,
/// then with a deadline and a fresh W3C `traceparent` (request metadata) on every call.
pub(crate) fn overhead(wl: &Workload) -> Option<Overhead> {
    let engine = server("tcp://127.0.0.1:0", IdlePolicy::default());
    let Endpoint::Tcp(addr) = endpoint_of(&engine) else {
        return None;
    };
    let proxy = proxy::Proxy::start(addr);
    let calls = wl.byte_calls;

    let mut core = Core::new(CoreConfig::default()).expect("core");
    let conn = core
        .connect(&Endpoint::Tcp(proxy.addr), Duration::from_secs(5))
        .expect("connect through the proxy");
    let mut slot = CallSlot::new();
    let msg = [0x5au8; SIZE];
    let mut per_call = |traced: bool, first: usize| {
        let mut call = |i: usize| {
            let mut opts = CallOptions::new().deadline(DEADLINE);
            if traced {
                opts = opts.metadata("traceparent", traceparent(i as u64).as_bytes());
            }
            core.call_with(conn, SERVICE, METHOD, &msg, &opts, &mut slot)
                .map(|_| ())
                .expect("call");
        };
        (first..first + calls).for_each(&mut call);
        let before = proxy.bytes();
        (first + calls..first + 2 * calls).for_each(&mut call);
        (proxy.bytes() - before) as f64 / calls as f64 - 2.0 * SIZE as f64
    };
    let deadline = per_call(false, 0);
    let traceparent = per_call(true, 2 * calls);
    core.close(conn);
    drop(core);
    drop(proxy);
    engine.shutdown(Duration::from_millis(200));
    Some(Overhead {
        deadline,
        traceparent,
    })
}
