//! `netron-bench compare`: Netron next to what users would pick instead, in one run, on the
//! same pinned cores, with the same workloads (feature `compare`; docs/benchmarks.md,
//! "Netron vs tonic, tarpc and iceoryx2").
//!
//! - floors of this run: blocking and busy-poll TCP ping-pong, shared-memory spin ping-pong;
//! - TCP: unary 64-byte round trip (p50/p99/p99.9), CPU time per call (getrusage of this
//!   process, which holds both sides), pipelined calls/s at 1/16/256 in flight: Netron
//!   (default adaptive, busy-poll, spin 0) vs tonic (gRPC) vs tarpc (bincode), each tokio peer
//!   on a pinned `current_thread` runtime per side and on the default `multi_thread` runtime;
//! - local IPC (information only): iceoryx2 request-response and publish-subscribe ping-pong vs
//!   the netron-shm ring round trip and Netron over unix://;
//! - overhead bytes on the wire per steady-state unary call, counted by a TCP proxy.
//!
//! With `--write-docs` the tables also replace the marked block of docs/benchmarks.md and the
//! chart is written to docs/compare.svg.

mod chart;
mod doc;
mod iceoryx;
mod netron;
mod proxy;
mod rt;
mod tarpc_peer;
mod tonic_peer;

use std::time::Duration;

use crate::Options;
use crate::engine_section::{floor, tcp_pair};
use crate::pin::pin_to_cpu;
use crate::stats::{Samples, us};
use crate::table::Table;

/// Request and reply payload of every call.
pub(crate) const SIZE: usize = 64;
/// Calls in flight of the pipelined runs.
pub(crate) const DEPTHS: [usize; 3] = [1, 16, 256];
/// The deadline every call carries (tarpc always sends one; gRPC as `grpc-timeout`).
pub(crate) const DEADLINE: Duration = Duration::from_secs(1);
/// Rounds of the TCP rows in a full run (one with `--quick`).
const ROUNDS: usize = 3;

/// Counts shared by every system of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    /// Timed round trips (after `n / 10` warm-up round trips).
    pub n: usize,
    /// Timed window of each pipelined run (after a warm-up of a quarter of it).
    pub window: Duration,
    /// Calls whose bytes are counted (after as many warm-up calls).
    pub byte_calls: usize,
}

/// One system's TCP results.
#[derive(Debug, Clone)]
pub(crate) struct Rpc {
    /// "Netron", "tonic", "tarpc".
    pub system: &'static str,
    /// Mode or runtime, e.g. "spin 0" or "current_thread".
    pub mode: &'static str,
    /// Round trip samples.
    pub lat: Samples,
    /// CPU time (user + system, both sides) per call of the round-trip run, in ns.
    pub cpu_ns: f64,
    /// Calls/s at each of [`DEPTHS`].
    pub rates: [f64; 3],
}

impl Rpc {
    fn p(&self, q: f64) -> u64 {
        self.lat.clone().percentile(q)
    }
}

/// Overhead bytes per call for one system: (deadline only, with traceparent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Overhead {
    pub deadline: f64,
    pub traceparent: f64,
}

/// CPU time (user + system) of this whole process so far, in ns: client and server threads.
pub(crate) fn cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A fresh W3C `traceparent` for call `i` (a new span id every call, as a traced client sends).
pub(crate) fn traceparent(i: u64) -> String {
    format!(
        "00-0af7651916cd43dd8448eb211c80319c-{:016x}-01",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    )
}

/// Runs the comparison (and, with `write_docs`, updates docs/benchmarks.md and docs/compare.svg).
pub fn run(opts: &Options, write_docs: bool) -> Vec<Table> {
    // A re-executed shm child (the netron-shm row) never gets here: main routes it first.
    pin_to_cpu(0);
    let wl = if opts.quick {
        Workload {
            n: 2_000,
            window: Duration::from_millis(200),
            byte_calls: 200,
        }
    } else {
        Workload {
            n: 20_000,
            window: Duration::from_secs(1),
            byte_calls: 2_000,
        }
    };
    let started = std::time::SystemTime::now();

    // Floors first, same pinning (client cpu0, peer cpu1). The two TCP floors run at the
    // start of every round below, with their CPU time per round trip.
    const FLOOR_NAMES: [&str; 2] = [
        "TCP ping-pong, blocking std sockets",
        "TCP ping-pong, non-blocking busy-poll",
    ];
    let tcp_floors = |n: usize| -> Vec<(Samples, f64)> {
        [false, true]
            .into_iter()
            .map(|busy| {
                let (c, s) = tcp_pair();
                let cpu0 = cpu_ns();
                // `floor` times n round trips after n / 10 warm-up ones.
                let samples = floor(c, s, busy, n);
                (samples, (cpu_ns() - cpu0) as f64 / (n + n / 10) as f64)
            })
            .collect()
    };
    let mut floor_runs: Vec<(Samples, f64)> = Vec::new();
    let mut floors: Vec<(&str, Samples)> = Vec::new();
    match crate::shm_section::floors::spin_floor(wl.n * 5, Duration::from_secs(5)) {
        Ok((s, _)) => floors.push(("spin ping-pong on a shared cache line (two processes)", s)),
        Err(e) => eprintln!("netron-bench compare: spin floor failed: {e}"),
    }

    // The host's speed drifts from one minute to the next: run every TCP row in `rounds`
    // rounds of n / rounds round trips (and full pipelined windows), pool the samples, average
    // CPU and rates, and pair the p50s of each round for the headline ratios.
    let rounds = if opts.quick { 1 } else { ROUNDS };
    let per = Workload {
        n: wl.n / rounds,
        ..wl
    };
    let mut rpcs: Vec<Rpc> = Vec::new();
    let mut paired: [Vec<(u64, u64)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        let fl = tcp_floors(per.n);
        let blocking_p50 = fl[0].0.clone().percentile(50.0);
        if floor_runs.is_empty() {
            floor_runs = fl;
        } else {
            for (a, b) in floor_runs.iter_mut().zip(fl) {
                a.0.append(b.0);
                a.1 += b.1;
            }
        }
        let mut round: Vec<Rpc> = netron::tcp_rows(&per);
        for flavor in [rt::Flavor::CurrentThread, rt::Flavor::MultiThread] {
            round.push(tonic_peer::measure(flavor, &per));
        }
        for flavor in [rt::Flavor::CurrentThread, rt::Flavor::MultiThread] {
            round.push(tarpc_peer::measure(flavor, &per));
        }
        let park = round
            .iter()
            .find(|r| r.system == "Netron" && r.mode.starts_with("spin 0"))
            .map(|r| r.p(50.0));
        for (pairs, peer) in paired.iter_mut().zip(["tonic", "tarpc"]) {
            if let (Some(m), Some(b)) = (park, best(&round, peer)) {
                pairs.push((m, b.0));
            }
        }
        if let Some(m) = park {
            paired[2].push((m, blocking_p50));
        }
        if rpcs.is_empty() {
            rpcs = round;
        } else {
            for (a, b) in rpcs.iter_mut().zip(round) {
                a.lat.append(b.lat);
                a.cpu_ns += b.cpu_ns;
                for (x, y) in a.rates.iter_mut().zip(b.rates) {
                    *x += y;
                }
            }
        }
    }
    // The TCP floors first, then the shm spin floor (the IPC table's reference).
    let mut floor_cpu = Vec::new();
    let mut spin = std::mem::take(&mut floors);
    for (name, (s, cpu)) in FLOOR_NAMES.into_iter().zip(floor_runs) {
        floors.push((name, s));
        floor_cpu.push(cpu / rounds as f64);
    }
    floors.append(&mut spin);
    for r in &mut rpcs {
        r.cpu_ns /= rounds as f64;
        for x in &mut r.rates {
            *x /= rounds as f64;
        }
    }
    let wl = Workload {
        n: per.n * rounds,
        ..wl
    };

    let ipc = ipc_rows(&wl);

    let bytes = [
        ("Netron", netron::overhead(&wl)),
        ("gRPC (tonic)", tonic_peer::overhead(&wl)),
        ("tarpc", tarpc_peer::overhead(&wl)),
    ];

    let tables = vec![
        tcp_table(&floors, &floor_cpu, &rpcs, &wl, rounds),
        ratio_table(
            &rpcs,
            &paired,
            (floors[0].1.clone().percentile(50.0) as f64, floor_cpu[0]),
        ),
        ipc_table(&ipc, &floors, &wl),
        bytes_table(&bytes, &wl),
    ];
    if write_docs {
        let svg = chart::render(&floors, &rpcs);
        match doc::write(&tables, &svg, started, opts) {
            Ok(paths) => eprintln!("netron-bench compare: wrote {paths}"),
            Err(e) => eprintln!("netron-bench compare: could not write the docs: {e}"),
        }
    }
    tables
}

fn cell_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

fn tcp_table(
    floors: &[(&str, Samples)],
    floor_cpu: &[f64],
    rpcs: &[Rpc],
    wl: &Workload,
    rounds: usize,
) -> Table {
    let mut t = Table::new(
        "compare: unary 64-byte round trip over TCP loopback (client cpu0, server cpu1)",
        &[
            "system / mode",
            "p50",
            "p99",
            "p99.9",
            "CPU/call (both sides)",
            "calls/s, 1 in flight",
            "16 in flight",
            "256 in flight",
        ],
    );
    for ((name, s), cpu) in floors.iter().take(2).zip(floor_cpu) {
        let mut s = s.clone();
        t.row(&[
            format!("floor: {name}"),
            us(s.percentile(50.0)),
            us(s.percentile(99.0)),
            us(s.percentile(99.9)),
            us(*cpu as u64),
        ]);
    }
    for r in rpcs {
        t.row(&[
            format!("{} {}", r.system, r.mode),
            us(r.p(50.0)),
            us(r.p(99.0)),
            us(r.p(99.9)),
            us(r.cpu_ns as u64),
            cell_rate(r.rates[0]),
            cell_rate(r.rates[1]),
            cell_rate(r.rates[2]),
        ]);
    }
    t.note(format!(
        "{} round trips per row in {rounds} rounds (every row once per round, in table order, floors included), each after a tenth as many warm-up ones; pipelined: {:?} per depth and round after {:?} of warm-up, rates averaged over the rounds; every call carries a {:?} deadline; 64-byte request and reply",
        wl.n,
        wl.window,
        wl.window / 4,
        DEADLINE
    ));
    t.note("CPU/call: user + system time of this process (client and server threads) over the round-trip run, per call (getrusage)");
    t.note("current_thread: one tokio current_thread runtime per side, client thread pinned to cpu0, server thread to cpu1; multi_thread: tokio's default multi_thread runtime on each side, unpinned (the Netron server core sits on cpu1 and the client core on this thread, cpu0)");
    t
}

/// A peer's best figures: p50, p99 (ns), CPU per call (ns), calls/s at each depth.
type Best = (u64, u64, f64, [f64; 3]);

/// One ratio row: name, Netron's figure, the peer's, targets vs (tonic, tarpc), lower is better.
type Measure = (
    &'static str,
    fn(&Rpc) -> f64,
    fn(&Best) -> f64,
    Option<(f64, f64)>,
    bool,
);

/// The better of a tokio peer's two runtimes for each figure: lower latency and CPU, higher rate.
fn best<'a>(rpcs: &'a [Rpc], system: &str) -> Option<Best> {
    let rows: Vec<&'a Rpc> = rpcs.iter().filter(|r| r.system == system).collect();
    if rows.is_empty() {
        return None;
    }
    let min_u = |f: &dyn Fn(&Rpc) -> u64| rows.iter().map(|r| f(r)).min().unwrap_or(0);
    let p50 = min_u(&|r| r.p(50.0));
    let p99 = min_u(&|r| r.p(99.0));
    let cpu = rows.iter().map(|r| r.cpu_ns).fold(f64::INFINITY, f64::min);
    let mut rates = [0f64; 3];
    for (i, x) in rates.iter_mut().enumerate() {
        *x = rows.iter().map(|r| r.rates[i]).fold(0.0, f64::max);
    }
    Some((p50, p99, cpu, rates))
}

/// `blocking`: the blocking socket floor's p50 and CPU per round trip (ns), against which
/// each lower-is-better spin-0 target is checked: a target under that floor is out of reach
/// for any engine whose both sides park (the floor is the least two parked threads cost).
fn ratio_table(rpcs: &[Rpc], paired: &[Vec<(u64, u64)>; 3], blocking: (f64, f64)) -> Table {
    let mut t = Table::new(
        "compare: ratios, Netron / peer (the better of the peer's two runtimes)",
        &[
            "measure",
            "spin 0 / tonic",
            "target",
            "spin 0 / tarpc",
            "target",
            "adaptive / tonic",
            "adaptive / tarpc",
            "busy-poll / tonic",
            "busy-poll / tarpc",
        ],
    );
    let (Some(tonic), Some(tarpc)) = (best(rpcs, "tonic"), best(rpcs, "tarpc")) else {
        return t;
    };
    let mode = |m: &str| {
        rpcs.iter()
            .find(|r| r.system == "Netron" && r.mode.starts_with(m))
    };
    let (Some(park), Some(adaptive), Some(busy)) =
        (mode("spin 0"), mode("adaptive"), mode("busy-poll"))
    else {
        return t;
    };
    // The floor each measure's spin-0 target is held against (lower-is-better ones only).
    let floor_of = |name: &str| match name {
        "p50 round trip" => Some(blocking.0),
        "CPU time per call" => Some(blocking.1),
        _ => None,
    };
    let mut under_floor = Vec::new();
    let measures: [Measure; 6] = [
        (
            "p50 round trip",
            |r| r.p(50.0) as f64,
            |p| p.0 as f64,
            Some((0.5, 0.7)),
            true,
        ),
        (
            "p99 round trip",
            |r| r.p(99.0) as f64,
            |p| p.1 as f64,
            None,
            true,
        ),
        (
            "CPU time per call",
            |r| r.cpu_ns,
            |p| p.2,
            Some((0.3, 0.5)),
            true,
        ),
        (
            "calls/s, 1 in flight",
            |r| r.rates[0],
            |p| p.3[0],
            None,
            false,
        ),
        (
            "calls/s, 16 in flight",
            |r| r.rates[1],
            |p| p.3[1],
            None,
            false,
        ),
        (
            "calls/s, 256 in flight",
            |r| r.rates[2],
            |p| p.3[2],
            Some((20.0, 5.0)),
            false,
        ),
    ];
    for (name, pick, peer, target, lower) in measures {
        let x = |r: &Rpc, p: &Best| {
            let b = peer(p);
            if b == 0.0 { f64::NAN } else { pick(r) / b }
        };
        let judge = |v: f64, goal: Option<f64>| match goal {
            None => String::new(),
            Some(g) => {
                let met = if lower { v <= g } else { v >= g };
                format!(
                    "{}{g}x: {}",
                    if lower { "<= " } else { ">= " },
                    if met { "met" } else { "NOT met" }
                )
            }
        };
        let (a, b) = (x(park, &tonic), x(park, &tarpc));
        if let (Some(f), Some((ga, gb))) = (floor_of(name), target) {
            for (who, goal, best) in [("tonic", ga, &tonic), ("tarpc", gb, &tarpc)] {
                let aim = goal * peer(best);
                if aim < f {
                    under_floor.push(format!(
                        "{name} {goal}x {who} = {} < the blocking floor's {}",
                        us(aim as u64),
                        us(f as u64)
                    ));
                }
            }
        }
        t.row(&[
            name.to_owned(),
            format!("{a:.2}x"),
            judge(a, target.map(|t| t.0)),
            format!("{b:.2}x"),
            judge(b, target.map(|t| t.1)),
            format!("{:.2}x", x(adaptive, &tonic)),
            format!("{:.2}x", x(adaptive, &tarpc)),
            format!("{:.2}x", x(busy, &tonic)),
            format!("{:.2}x", x(busy, &tarpc)),
        ]);
    }
    for (pairs, peer) in paired.iter().zip([
        "tonic (each round's better runtime)",
        "tarpc (each round's better runtime)",
        "the blocking socket floor",
    ]) {
        if let Some(r) = crate::stats::PairedRatio::of(pairs) {
            t.note(format!(
                "p50 spin 0 / {peer}, round by round: median {:.2}x, range {:.2}-{:.2}x over {} rounds",
                r.median,
                r.min,
                r.max,
                pairs.len()
            ));
        }
    }
    t.note("spin 0: Netron parks in io_uring_enter whenever it has nothing to do, as the tokio peers park in epoll_wait, so these rows compare engines rather than idle policies");
    if !under_floor.is_empty() {
        t.note(format!(
            "spin-0 targets below the blocking socket floor of this run (two parked threads, one write and one read each per round trip: the least any engine that parks can cost), out of reach here: {}",
            under_floor.join("; ")
        ));
    }
    t.note("for time and CPU lower is better (ratio < 1 means Netron is cheaper); for calls/s higher is better");
    t
}

/// Local IPC rows: (name, samples).
fn ipc_rows(wl: &Workload) -> Vec<(String, Samples)> {
    let mut rows = Vec::new();
    match crate::shm_section::shm_round_trip(wl.n * 5, "echo", 0, Duration::from_secs(10)) {
        Ok((s, _)) => rows.push((
            "netron-shm ring round trip (two processes, spinning consumers)".to_owned(),
            s,
        )),
        Err(e) => eprintln!("netron-bench compare: netron-shm round trip failed: {e}"),
    }
    rows.extend(iceoryx::rows(wl));
    match crate::shm_section::shm_call_round_trips(wl.n) {
        Ok(s) => rows.push((
            "Netron unary call over shm://, busy-poll (server engine in a second process)"
                .to_owned(),
            s,
        )),
        Err(e) => eprintln!("netron-bench compare: Netron shm:// calls failed: {e}"),
    }
    rows.extend(netron::unix_rows(wl));
    rows
}

fn ipc_table(rows: &[(String, Samples)], floors: &[(&str, Samples)], wl: &Workload) -> Table {
    let mut t = Table::new(
        "compare: local IPC, 64-byte request and reply (information only)",
        &["path", "p50", "p99", "p99.9", "p50 / spin floor"],
    );
    let mut spin = floors.get(2).map(|f| f.1.clone()).unwrap_or_default();
    let f50 = spin.percentile(50.0);
    if let Some((name, _)) = floors.get(2) {
        t.row(&[
            format!("floor: {name}"),
            us(f50),
            us(spin.percentile(99.0)),
            us(spin.percentile(99.9)),
            "1.00x".to_owned(),
        ]);
    }
    for (name, s) in rows {
        let mut s = s.clone();
        let p50 = s.percentile(50.0);
        t.row(&[
            name.clone(),
            us(p50),
            us(s.percentile(99.0)),
            us(s.percentile(99.9)),
            crate::stats::ratio(p50 as f64, f50 as f64),
        ]);
    }
    t.note(format!("{} round trips per row (iceoryx2 and Unix rows: {}), client cpu0, server cpu1; iceoryx2 with its default configuration, both sides polling receive() in a loop as iceoryx2's own benchmarks do", wl.n * 5, wl.n));
    t.note("Netron shm:// calls: a client core on this thread (cpu0) and a one-core server engine in a re-executed child process (cpu1), both busy-poll, as netron-bench's shm section measures them; the unix:// rows' server engine runs in this process");
    t
}

fn bytes_table(rows: &[(&str, Option<Overhead>); 3], wl: &Workload) -> Table {
    let mut t = Table::new(
        "compare: overhead bytes on the wire per steady-state unary call (request + reply, payload excluded)",
        &[
            "metadata",
            "Netron",
            "gRPC (tonic)",
            "tarpc",
            "Netron / gRPC",
            "target",
            "Netron / tarpc",
            "target",
        ],
    );
    let get = |i: usize, tp: bool| {
        rows[i]
            .1
            .map(|o| if tp { o.traceparent } else { o.deadline })
    };
    for (label, tp) in [("deadline only", false), ("deadline + traceparent", true)] {
        let (n, g, r) = (get(0, tp), get(1, tp), get(2, tp));
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} B"));
        let rt = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (ng, nr) = (rt(n, g), rt(n, r));
        let judge = |v: Option<f64>, goal: f64| match v {
            Some(v) => format!("<= {goal}x: {}", if v <= goal { "met" } else { "NOT met" }),
            None => "-".to_owned(),
        };
        t.row(&[
            label.to_owned(),
            cell(n),
            cell(g),
            cell(r),
            ng.map_or("-".to_owned(), |v| format!("{v:.2}x")),
            judge(ng, 0.4),
            nr.map_or("-".to_owned(), |v| format!("{v:.2}x")),
            if tp {
                "(reported as is)".to_owned()
            } else {
                judge(nr, 0.7)
            },
        ]);
    }
    t.note(format!("counted by a TCP proxy between client and server over {} sequential calls after {} warm-up calls (both directions, everything the sockets carried: framing, headers, flow-control and window updates), minus 2 x 64 payload bytes per call", wl.byte_calls, wl.byte_calls));
    t.note("deadline: Netron's relative deadline field, gRPC's grpc-timeout header, tarpc's context deadline; traceparent: a new span id on every call (W3C trace context) — Netron as traceparent request metadata (packed: 12 bytes within one trace, as here, where every call keeps the trace-id and changes the span id; a call starting a new trace costs 16 more, docs/protocol.md §9.10), gRPC as traceparent metadata, tarpc in the trace context its Context always carries (so its two rows are the same)");
    t
}
