//! The quic section's UDP offload table (issue 22): Netron `quic://` with UDP GSO and GRO on
//! (the default, `QuicSettings::gso` / `::gro`) against both off, in the same run: bulk
//! stream throughput and pipelined 64-byte calls, with the datagrams each `sendmsg` and
//! `recvmsg` carried (the engine's `DriverStats::udp_*` counters).

use std::time::{Duration, Instant};

use netron_engine::quic::{ClientConfig, ServerConfig};
use netron_engine::{CallSlot, CoreStats, DriverStats};

use super::{CHUNK, SIZE, client, server};
use crate::engine_section::{METHOD, SERVICE, pipelined_calls};
use crate::table::Table;

/// Runs per row, alternating on and off.
const RUNS: usize = 3;
/// Calls in flight in the pipelined row.
const DEPTH: usize = 64;

/// `tls` with GSO and GRO set to `on` on both sides.
fn with_offload(tls: &(ServerConfig, ClientConfig), on: bool) -> (ServerConfig, ClientConfig) {
    let (mut s, mut c) = tls.clone();
    (s.settings.gso, s.settings.gro) = (on, on);
    (c.settings.gso, c.settings.gro) = (on, on);
    (s, c)
}

/// What one run measured: the rate, and the datagrams per `sendmsg` and per `recvmsg` of
/// both sides together.
struct Run {
    rate: f64,
    per_send: f64,
    per_recv: f64,
}

fn counts(a: &DriverStats, b: &DriverStats) -> (f64, f64) {
    let sends = (a.udp_sends + b.udp_sends).max(1) as f64;
    let recvs = (a.udp_receives + b.udp_receives).max(1) as f64;
    (
        (a.udp_datagrams_sent + b.udp_datagrams_sent) as f64 / sends,
        (a.udp_datagrams_received + b.udp_datagrams_received) as f64 / recvs,
    )
}

/// A server stream of `count` chunks of [`CHUNK`] bytes; bytes per second.
fn bulk(tls: &(ServerConfig, ClientConfig), count: u32) -> Run {
    let (rate, client, server) = super::netron_bulk_counted("quic://127.0.0.1:0", tls, count);
    let (per_send, per_recv) = counts(&client, &server);
    Run {
        rate,
        per_send,
        per_recv,
    }
}

/// [`DEPTH`] 64-byte calls in flight for `window`; calls per second.
fn calls(tls: &(ServerConfig, ClientConfig), window: Duration) -> Run {
    let engine = server("quic://127.0.0.1:0", &tls.0);
    let (mut core, conn) = client(&engine, &tls.1);
    let mut slots: Vec<CallSlot> = (0..DEPTH).map(|_| CallSlot::new()).collect();
    let msg = [0x5au8; SIZE];
    let call = (SERVICE, METHOD, &msg[..], None);
    pipelined_calls(&mut core, conn, call, &mut slots, window / 4);
    let (c0, s0): (CoreStats, CoreStats) = (core.stats(), engine.total_stats());
    let t = Instant::now();
    let n = pipelined_calls(&mut core, conn, call, &mut slots, window);
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let (c1, s1) = (core.stats(), engine.total_stats());
    let diff = |a: &DriverStats, b: &DriverStats| {
        let mut d = DriverStats::default();
        d.udp_sends = a.udp_sends - b.udp_sends;
        d.udp_datagrams_sent = a.udp_datagrams_sent - b.udp_datagrams_sent;
        d.udp_receives = a.udp_receives - b.udp_receives;
        d.udp_datagrams_received = a.udp_datagrams_received - b.udp_datagrams_received;
        d
    };
    let (per_send, per_recv) = counts(
        &diff(c1.driver(), c0.driver()),
        &diff(s1.driver(), s0.driver()),
    );
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    Run {
        rate,
        per_send,
        per_recv,
    }
}

/// The median run by rate.
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    runs.swap_remove(runs.len() / 2)
}

/// The table: bulk and pipelined calls, offload on and off, alternating runs.
pub(super) fn table(tls: &(ServerConfig, ClientConfig), quick: bool) -> Table {
    let (on, off) = (with_offload(tls, true), with_offload(tls, false));
    let mib = if quick { 16 } else { 256 };
    let count = (mib << 20) / CHUNK as u32;
    let window = Duration::from_millis(if quick { 300 } else { 2_000 });
    let mut t = Table::new(
        "quic: UDP GSO and GRO on vs off (Netron quic://, busy-poll, client cpu0, server cpu1)",
        &[
            "workload",
            "offload",
            "rate",
            "on / off",
            "datagrams per sendmsg",
            "datagrams per recvmsg",
        ],
    );
    let mut rows = |name: &str, unit: &str, scale: f64, f: &dyn Fn(bool) -> Run| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            a.push(f(true));
            b.push(f(false));
        }
        let (a, b) = (median(a), median(b));
        for (label, r) in [("on", &a), ("off", &b)] {
            t.row(&[
                name.to_owned(),
                label.to_owned(),
                format!("{:.0} {unit}", r.rate / scale),
                if label == "on" {
                    format!("{:.2}x", a.rate / b.rate)
                } else {
                    "-".to_owned()
                },
                format!("{:.1}", r.per_send),
                format!("{:.1}", r.per_recv),
            ]);
        }
    };
    rows(
        "bulk stream, 64 KiB chunks",
        "MiB/s",
        (1 << 20) as f64,
        &|o| bulk(if o { &on } else { &off }, count),
    );
    rows(
        &format!("pipelined 64-byte calls, {DEPTH} in flight"),
        "calls/s",
        1.0,
        &|o| calls(if o { &on } else { &off }, window),
    );
    t.note(format!(
        "{RUNS} alternating on / off runs per row, medians; bulk {mib} MiB per run, calls {} ms per run after a quarter as long of warm-up; datagram counts are both sides' sendmsg / recvmsg calls on their QUIC sockets (DriverStats::udp_*); on loopback a GSO train sent to a GRO socket arrives whole, so the two columns match",
        window.as_millis()
    ));
    t
}
