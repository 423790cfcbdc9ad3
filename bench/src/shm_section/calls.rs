//! Netron calls over `shm://` between two processes (issue 19's benchmarks): a client core in
//! this process on cpu0, a server engine in a re-executed child on cpu1, against the raw
//! netron-shm ring round trip of the same run (also two processes) and the same server over
//! `unix://` and `tcp://`.
//!
//! - unary round trip of 64-byte calls: p50/p99/p99.9, the p50 ratio to the raw ring taken round
//!   by round (the ring and the calls measured back to back);
//! - pipelined calls/s at 1 / 16 / 256 in flight over `shm://` and `tcp://`, and echo
//!   throughput of 64 KiB and 1 MiB payloads over `shm://`, `unix://` and `tcp://`;
//! - every round first runs a spin-floor probe; rounds whose probe p50 is within 2x of the
//!   fastest probe are "near" placement (the host kept the two vCPUs close), the others "far",
//!   and each figure is given over all rounds, near rounds and far rounds (as the ring
//!   throughput table of this section does).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use netron_engine::{CallSlot, Core, Endpoint, Engine, IdlePolicy, RuntimeConfig};

use super::floors::spin_floor;
use super::{BenchResult, CHILD, PROBE_ROUND_TRIPS, shm_round_trip};
use crate::Options;
use crate::engine_section::{METHOD, SERVICE, noise, pipelined_calls, service};
use crate::stats::{Samples, median, ratio, us};
use crate::table::Table;

/// The child's role.
pub(super) const ROLE: &str = "calls_server";
/// Payload of the round-trip and pipelined rows.
const SMALL: usize = 64;
/// Payloads of the echo-throughput rows.
const LARGE: [usize; 2] = [64 << 10, 1 << 20];

/// The server child: an engine of one busy-poll core on cpu1 listening on `shm://`, `unix://`
/// and `tcp://`; prints its three endpoints (one per line) and serves until its stdin closes.
pub(super) fn child_server() -> BenchResult<()> {
    let pid = std::process::id();
    let engine = Engine::builder()
        .cores(1)
        .cpus(&[1])
        .config(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll))
        .service(service())
        .listen(&format!("shm://netron-bench-calls-{pid}"))
        .listen(&format!("unix:///tmp/netron-bench-calls-{pid}.sock"))
        .listen("tcp://127.0.0.1:0")
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    for ep in engine.endpoints() {
        writeln!(out, "{ep}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    // Serve until the parent closes our stdin (or dies).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    engine.shutdown(Duration::from_millis(200));
    Ok(())
}

/// A running server child and its endpoints (shm, unix, tcp).
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    shm: Endpoint,
    unix: Endpoint,
    tcp: Endpoint,
}

impl Server {
    fn start() -> BenchResult<Server> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .arg("shm")
            .env(CHILD, ROLE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning the server child: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut next = || -> BenchResult<Endpoint> {
            let line = lines
                .next()
                .ok_or("the server child ended before printing its endpoints")?
                .map_err(|e| e.to_string())?;
            line.parse::<Endpoint>().map_err(|e| format!("{line}: {e}"))
        };
        let (shm, unix, tcp) = (next()?, next()?, next()?);
        Ok(Server {
            child,
            stdin,
            shm,
            unix,
            tcp,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> BenchResult<Core> {
    Core::new(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll)).map_err(|e| e.to_string())
}

/// `n` timed 64-byte round trips (after `n / 10` warm-up ones).
fn round_trips(ep: &Endpoint, n: usize) -> BenchResult<Samples> {
    let mut core = client()?;
    let conn = core
        .connect(ep, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut slot = CallSlot::new();
    let msg = [0x5au8; SMALL];
    let mut s = Samples::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let r = core
            .call(conn, SERVICE, METHOD, &msg, None, &mut slot)
            .map_err(|e| e.to_string())?;
        let ns = t.elapsed().as_nanos() as u64;
        if r.len() != SMALL {
            return Err(format!("{ep}: a reply of {} bytes", r.len()));
        }
        if i >= n / 10 {
            s.push(ns);
        }
    }
    core.close(conn);
    Ok(s)
}

/// `n` 64-byte unary calls over `shm://` to a server engine in a child process (busy-poll
/// both sides, client on this thread), for `netron-bench compare`'s local IPC table.
#[cfg(feature = "compare")]
pub(crate) fn shm_call_round_trips(n: usize) -> BenchResult<Samples> {
    let server = Server::start()?;
    round_trips(&server.shm, n)
}

/// Calls per second with `depth` 64-byte calls in flight for `window`.
fn pipelined(ep: &Endpoint, depth: usize, window: Duration) -> BenchResult<f64> {
    let mut core = client()?;
    let conn = core
        .connect(ep, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut slots: Vec<CallSlot> = (0..depth).map(|_| CallSlot::new()).collect();
    let msg = [0x5au8; SMALL];
    let call = (SERVICE, METHOD, &msg[..], None);
    pipelined_calls(&mut core, conn, call, &mut slots, window / 4);
    let t = Instant::now();
    let calls = pipelined_calls(&mut core, conn, call, &mut slots, window);
    let rate = calls as f64 / t.elapsed().as_secs_f64();
    core.close(conn);
    Ok(rate)
}

/// Payload bytes per second each way, echoing `payload` one call at a time for `window`.
fn echo_rate(ep: &Endpoint, payload: &[u8], window: Duration) -> BenchResult<f64> {
    let mut core = client()?;
    let conn = core
        .connect(ep, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut slot = CallSlot::new();
    let mut once = |core: &mut Core| -> BenchResult<()> {
        let r = core
            .call(conn, SERVICE, METHOD, payload, None, &mut slot)
            .map_err(|e| e.to_string())?;
        if r.len() == payload.len() {
            Ok(())
        } else {
            Err(format!("{ep}: a reply of {} bytes", r.len()))
        }
    };
    for _ in 0..3 {
        once(&mut core)?;
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < window {
        once(&mut core)?;
        n += 1;
    }
    let rate = (n * payload.len() as u64) as f64 / t.elapsed().as_secs_f64();
    core.close(conn);
    Ok(rate)
}

/// One figure per round, and whether the round was near placement.
#[derive(Default)]
struct Figure {
    per_round: Vec<f64>,
}

impl Figure {
    fn push(&mut self, v: f64) {
        self.per_round.push(v);
    }

    /// Medians over all rounds, near rounds and far rounds ("-" where none).
    fn medians(&self, near: &[bool], show: impl Fn(f64) -> String) -> [String; 3] {
        let pick = |want: Option<bool>| {
            let mut v: Vec<f64> = self
                .per_round
                .iter()
                .zip(near)
                .filter(|&(_, &n)| want.is_none_or(|w| w == n))
                .map(|(&x, _)| x)
                .collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                show(median(&mut v))
            }
        };
        [pick(None), pick(Some(true)), pick(Some(false))]
    }
}

/// Which rounds were near placement: a probe p50 within 2x of the fastest probe.
fn near_rounds(probes: &[u64]) -> Vec<bool> {
    let fastest = probes.iter().copied().min().unwrap_or(0).max(1);
    probes.iter().map(|&p| p <= 2 * fastest).collect()
}

/// The tables of this part of the section.
pub(super) fn tables(opts: &Options) -> BenchResult<Vec<Table>> {
    let (reps, per, window) = if opts.quick {
        (3, 2_000, Duration::from_millis(150))
    } else {
        (6, 10_000, Duration::from_millis(500))
    };
    let budget = Duration::from_secs(5);
    let mut probes = Vec::with_capacity(reps);
    // Round trips: pooled samples per row and per-round p50s.
    let mut pools = [
        Samples::with_capacity(reps * per),
        Samples::with_capacity(reps * per),
        Samples::with_capacity(reps * per),
    ];
    let (mut ring_p50, mut shm_p50, mut unix_p50) =
        (Figure::default(), Figure::default(), Figure::default());
    let (mut shm_to_ring, mut unix_to_ring) = (Figure::default(), Figure::default());
    // Pipelined: [shm, tcp] x [1, 16, 256]; echo: [shm, unix, tcp] x LARGE.
    let mut piped: Vec<[Figure; 2]> = (0..3).map(|_| Default::default()).collect();
    let mut piped_ratio: Vec<Figure> = (0..3).map(|_| Figure::default()).collect();
    let mut echo: Vec<[Figure; 3]> = (0..LARGE.len()).map(|_| Default::default()).collect();
    let payloads: Vec<Vec<u8>> = LARGE.iter().map(|&n| noise(n)).collect();
    for _ in 0..reps {
        let (mut probe, _) = spin_floor(PROBE_ROUND_TRIPS, budget)?;
        probes.push(probe.percentile(50.0));
        // The raw ring first (its own echo child), then the calls: back to back.
        let (mut ring, _) = shm_round_trip(per, "echo", 0, budget)?;
        let server = Server::start()?;
        let mut shm = round_trips(&server.shm, per)?;
        let mut unix = round_trips(&server.unix, per)?;
        let (r, s, u) = (
            ring.percentile(50.0) as f64,
            shm.percentile(50.0) as f64,
            unix.percentile(50.0) as f64,
        );
        ring_p50.push(r);
        shm_p50.push(s);
        unix_p50.push(u);
        shm_to_ring.push(s / r.max(1.0));
        unix_to_ring.push(u / r.max(1.0));
        for (pool, s) in pools.iter_mut().zip([ring, shm, unix]) {
            pool.append(s);
        }
        for (k, depth) in [1usize, 16, 256].into_iter().enumerate() {
            let s = pipelined(&server.shm, depth, window)?;
            let t = pipelined(&server.tcp, depth, window)?;
            piped[k][0].push(s);
            piped[k][1].push(t);
            piped_ratio[k].push(s / t.max(1.0));
        }
        for (k, payload) in payloads.iter().enumerate() {
            for (j, ep) in [&server.shm, &server.unix, &server.tcp]
                .into_iter()
                .enumerate()
            {
                echo[k][j].push(echo_rate(ep, payload, window)?);
            }
        }
    }
    let near = near_rounds(&probes);
    let near_n = near.iter().filter(|&&n| n).count();
    let placement = format!(
        "{reps} rounds, {near_n} near / {} far placement (spin-floor probe p50s: {})",
        reps - near_n,
        probes.iter().map(|&p| us(p)).collect::<Vec<_>>().join(", ")
    );
    let x = |v: f64| format!("{v:.2}x");
    let t_us = |v: f64| us(v as u64);

    let mut rtt = Table::new(
        "shm: Netron calls over shm:// between two processes, unary round trip of 64-byte calls (client cpu0, server engine in a child on cpu1, both busy-poll)",
        &[
            "row",
            "p50",
            "p99",
            "p99.9",
            "p50 / ring (all)",
            "near",
            "far",
            "target",
        ],
    );
    let [all, n, f] = shm_to_ring.medians(&near, x);
    let met = shm_to_ring.medians(&near, |v| {
        if v <= 3.0 { "met" } else { "NOT met" }.to_owned()
    });
    let mut row = |name: &str, pool: &mut Samples, cells: [String; 3], target: String| {
        rtt.row(&[
            name.to_owned(),
            us(pool.percentile(50.0)),
            us(pool.percentile(99.0)),
            us(pool.percentile(99.9)),
            cells[0].clone(),
            cells[1].clone(),
            cells[2].clone(),
            target,
        ]);
    };
    let [ring_pool, shm_pool, unix_pool] = &mut pools;
    row(
        "raw netron-shm ring (floor)",
        ring_pool,
        ["1.00x".into(), "1.00x".into(), "1.00x".into()],
        String::new(),
    );
    row(
        "shm:// call",
        shm_pool,
        [all, n, f],
        format!("<= 3x the ring: {}", met[0]),
    );
    let u = unix_to_ring.medians(&near, x);
    row("unix:// call", unix_pool, u, String::new());
    let [a, n, f] = ring_p50.medians(&near, t_us);
    rtt.note(format!(
        "{per} round trips per row per round; ratios are medians of per-round p50 ratios (ring and calls back to back); ring p50 per round: all {a}, near {n}, far {f}"
    ));
    rtt.note(placement.clone());
    rtt.note("the ring: a 64-byte record echoed by a spinning netron-shm consumer in a child process (the round-trip table above); the calls: Core::call on a busy-poll client core, the server an engine of one busy-poll core, its shm:// endpoint untrusting (each record copied once, docs/protocol.md §26.5)");

    let mut tp = Table::new(
        "shm: pipelined calls and large payloads over shm:// between two processes (medians over rounds: all, near, far placement)",
        &["row", "all", "near", "far", "target"],
    );
    let rate = |v: f64| format!("{v:.0}/s");
    for (k, depth) in [1usize, 16, 256].into_iter().enumerate() {
        for (j, name) in ["shm://", "tcp://"].into_iter().enumerate() {
            let [a, n, f] = piped[k][j].medians(&near, rate);
            tp.row(&[
                format!("{depth} in flight, {name} calls"),
                a,
                n,
                f,
                String::new(),
            ]);
        }
        let [a, n, f] = piped_ratio[k].medians(&near, x);
        let target = if depth == 256 {
            let met = piped_ratio[k].medians(&near, |v| {
                if v >= 2.0 { "met" } else { "NOT met" }.to_owned()
            });
            format!(">= 2x tcp: {}", met[0])
        } else {
            String::new()
        };
        tp.row(&[format!("{depth} in flight, shm / tcp"), a, n, f, target]);
    }
    let mib = |v: f64| format!("{:.0} MiB/s", v / f64::from(1u32 << 20));
    let size_name = |n: usize| {
        if n >= 1 << 20 {
            format!("{} MiB", n >> 20)
        } else {
            format!("{} KiB", n >> 10)
        }
    };
    for (k, size) in LARGE.into_iter().enumerate() {
        for (j, name) in ["shm://", "unix://", "tcp://"].into_iter().enumerate() {
            let [a, n, f] = echo[k][j].medians(&near, mib);
            tp.row(&[
                format!("{} echo, {name}", size_name(size)),
                a,
                n,
                f,
                String::new(),
            ]);
        }
        let mut r = Figure::default();
        for (s, u) in echo[k][0].per_round.iter().zip(&echo[k][1].per_round) {
            r.push(s / u.max(1.0));
        }
        let [a, n, f] = r.medians(&near, x);
        tp.row(&[
            format!("{} echo, shm / unix", size_name(size)),
            a,
            n,
            f,
            String::new(),
        ]);
    }
    tp.note(format!(
        "pipelined: 64-byte calls, {} ms per row per round after a quarter of that as warm-up; echo: one call in flight, payload bytes per second each way (incompressible payloads), {} ms per row per round",
        window.as_millis(),
        window.as_millis()
    ));
    tp.note(placement);
    tp.note(format!(
        "the shm:// segment has netron-shm's default 1 MiB rings, so a 1 MiB payload travels as fragments (docs/protocol.md §26.3); ratio of the ring p50s shows how far the host moved: {}",
        ratio(
            ring_p50.per_round.iter().copied().fold(f64::MIN, f64::max),
            ring_p50.per_round.iter().copied().fold(f64::MAX, f64::min)
        )
    ));
    Ok(vec![rtt, tp])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_splits_rounds_by_the_fastest_probe() {
        assert_eq!(
            near_rounds(&[100, 250, 190, 201, 400]),
            [true, false, true, false, false]
        );
        let mut f = Figure::default();
        for v in [1.0, 5.0, 2.0, 6.0, 3.0] {
            f.push(v);
        }
        let near = [true, false, true, false, true];
        assert_eq!(
            f.medians(&near, |v| format!("{v}")),
            ["3".to_owned(), "2".to_owned(), "6".to_owned()]
        );
        assert_eq!(
            Figure::default().medians(&[], |v| format!("{v}")),
            ["-", "-", "-"].map(String::from)
        );
    }
}
