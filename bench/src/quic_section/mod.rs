//! The quic section of `netron-bench` (issue 21): Netron over `quic://` against a QUIC floor
//! of the same run (bare quinn-proto over busy-polled UDP, [`floor`]), with `tcp://` beside
//! it. Unary 64-byte round trips, client core on cpu0 and server core on cpu1, busy-poll on
//! both sides (the floor busy-polls); and one-way bulk: a server stream of 64 KiB chunks read
//! by the client, against the floor's one stream of the same bytes.
//!
//! The UDP offload table ([`offload`], issue 22): GSO and GRO on against off, same run. The
//! connect table ([`connect`], issue 22): connect + first call, full handshake against
//! resumed and 0-RTT.
//!
//! Targets (issue 21): quic unary p50 <= 1.2x the QUIC floor; bulk >= 70 % of the floor's
//! throughput.

mod connect;
mod floor;
mod offload;

use std::time::{Duration, Instant};

use netron_engine::quic::{ClientConfig, Identity, PrivateKeyDer, ServerConfig, Trust};
use netron_engine::{
    Core, CoreConfig, Endpoint, Engine, IdlePolicy, ProtocolConfig, RuntimeConfig,
};

use crate::Options;
use crate::engine_section::SERVICE;
use crate::pin::pin_to_cpu;
use crate::stats::{PairedRatio, Samples, ratio, us};
use crate::table::Table;

const SIZE: usize = 64;
/// Alternating floor / Netron runs per latency row.
const REPS: usize = 5;
/// Bulk chunk size (bytes), as the streams section's largest.
const CHUNK: usize = 64 << 10;

/// The TLS settings of both sides: a self-signed certificate for 127.0.0.1, trusted by the
/// client. The floor builds its quinn-proto configs from the same settings.
fn tls() -> (ServerConfig, ClientConfig) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    (
        ServerConfig::new(Identity {
            chain: vec![cert.clone()],
            key,
        }),
        ClientConfig::new(Trust::Ca(vec![cert])),
    )
}

fn busy() -> RuntimeConfig {
    RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll)
}

/// A one-core Netron server on cpu1 (echo and the streams section's `flood`) at `endpoint`.
fn server(endpoint: &str, tls: &ServerConfig) -> Engine {
    Engine::builder()
        .cores(1)
        .cpus(&[1])
        .config(busy())
        .quic_server(tls.clone())
        .service(crate::stream_section::stream_service())
        .listen(endpoint)
        .build()
        .expect("netron server")
}

/// A client core on this thread, connected to `server`.
fn client(server: &Engine, tls: &ClientConfig) -> (Core, netron_engine::ConnId) {
    let ep: Endpoint = server.endpoints()[0].clone();
    let cfg = CoreConfig::new(
        busy(),
        ProtocolConfig::default().with_quic_client(tls.clone()),
    );
    let mut core = Core::new(cfg).expect("client core");
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    (core, conn)
}

/// `n` unary round trips over `endpoint` (after `n / 10` warm-up ones); nanoseconds each.
fn netron_rtt(endpoint: &str, tls: &(ServerConfig, ClientConfig), n: usize) -> Samples {
    let engine = server(endpoint, &tls.0);
    let (mut core, conn) = client(&engine, &tls.1);
    let s = crate::engine_section::round_trips(&mut core, conn, n);
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    s
}

/// A server stream of `count` chunks of [`CHUNK`] bytes over `endpoint`; bytes per second.
fn netron_bulk(endpoint: &str, tls: &(ServerConfig, ClientConfig), count: u32) -> f64 {
    netron_bulk_counted(endpoint, tls, count).0
}

/// [`netron_bulk`], with the client core's and the server's driver counters after it.
fn netron_bulk_counted(
    endpoint: &str,
    tls: &(ServerConfig, ClientConfig),
    count: u32,
) -> (f64, netron_engine::DriverStats, netron_engine::DriverStats) {
    let engine = server(endpoint, &tls.0);
    let (mut core, conn) = client(&engine, &tls.1);
    let mut req = (CHUNK as u32).to_le_bytes().to_vec();
    req.extend_from_slice(&count.to_le_bytes());
    let t = Instant::now();
    let s = core
        .open_stream(conn, SERVICE, b"flood", Some(&req), true, None)
        .expect("open");
    let mut got = 0usize;
    while let Some(len) = core.recv_chunk(&s, |c| c.len()).expect("chunk") {
        got += len;
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    assert_eq!(got, CHUNK * count as usize);
    let counts = (*core.stats().driver(), *engine.total_stats().driver());
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    (rate, counts.0, counts.1)
}

/// Runs the quic measurements.
pub fn run(opts: &Options) -> Vec<Table> {
    pin_to_cpu(0);
    let tls = tls();
    let floor_cfgs = || {
        (
            tls.0.build().expect("server TLS"),
            tls.1.build().expect("client TLS"),
        )
    };
    let n = if opts.quick { 2_000 } else { 20_000 };
    let per = (n / REPS).max(1);
    let mut lat = Table::new(
        "quic: unary round trip, 64-byte request and reply, busy-poll (client cpu0, server cpu1)",
        &[
            "system",
            "p50",
            "p99",
            "p99.9",
            "QUIC floor p50",
            "p50 / QUIC floor",
            "range",
            "p99 / QUIC floor",
        ],
    );
    let msg = [0x5au8; SIZE];
    for (name, endpoint) in [
        ("Netron quic://", "quic://127.0.0.1:0"),
        ("Netron tcp://", "tcp://127.0.0.1:0"),
    ] {
        let (mut fl, mut s) = (Samples::with_capacity(n), Samples::with_capacity(n));
        let mut rounds = Vec::with_capacity(REPS);
        for _ in 0..REPS {
            let (sc, cc) = floor_cfgs();
            let mut f = floor::Floor::start(sc, cc).round_trips(&msg, per);
            let mut m = netron_rtt(endpoint, &tls, per);
            rounds.push((m.percentile(50.0), f.percentile(50.0)));
            fl.append(f);
            s.append(m);
        }
        let (f50, f99) = (fl.percentile(50.0), fl.percentile(99.0));
        let (p50, p99, p999) = (s.percentile(50.0), s.percentile(99.0), s.percentile(99.9));
        let (r, range) = match PairedRatio::of(&rounds) {
            Some(r) => (
                format!("{:.2}x", r.median),
                format!("{:.2}-{:.2}x", r.min, r.max),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        lat.row(&[
            name.to_owned(),
            us(p50),
            us(p99),
            us(p999),
            us(f50),
            r,
            range,
            ratio(p99 as f64, f99 as f64),
        ]);
    }
    lat.note(format!(
        "{n} round trips per row in {REPS} alternating floor / Netron runs of {per} (each after a tenth as many warm-up ones); QUIC floor: bare quinn-proto (the version netron-quic uses) over busy-polled non-blocking std UDP sockets on loopback, one new bidirectional stream per request as Netron calls use, the same TLS settings (netron-quic's configs), server thread on cpu1"
    ));
    lat.note("the p50 ratio is the median of the per-round ratios (floor and Netron back to back), with their range; target (issue 21): quic:// p50 <= 1.2x the QUIC floor (the tcp:// row is for comparison)");

    let mib = if opts.quick { 16 } else { 256 };
    let count = (mib << 20) / CHUNK as u32;
    let mut bulk = Table::new(
        "quic: bulk, one server stream of 64 KiB chunks read by the client, busy-poll",
        &["system", "MiB/s", "QUIC floor MiB/s", "/ QUIC floor"],
    );
    for (name, endpoint) in [
        ("Netron quic://", "quic://127.0.0.1:0"),
        ("Netron tcp://", "tcp://127.0.0.1:0"),
    ] {
        let (mut f, mut m) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (sc, cc) = floor_cfgs();
            f.push(floor::Floor::start(sc, cc).bulk(CHUNK, count));
            m.push(netron_bulk(endpoint, &tls, count));
        }
        let fm = crate::stats::median(&mut f) / (1 << 20) as f64;
        let mm = crate::stats::median(&mut m) / (1 << 20) as f64;
        bulk.row(&[
            name.to_owned(),
            format!("{mm:.0}"),
            format!("{fm:.0}"),
            format!("{:.0} %", 100.0 * mm / fm),
        ]);
    }
    bulk.note(format!(
        "{mib} MiB per run, 3 alternating floor / Netron runs per row, medians; the floor writes the same bytes on one quinn-proto stream as fast as its flow control lets it; target (issue 21): quic:// >= 70 % of the floor"
    ));
    vec![
        lat,
        bulk,
        offload::table(&tls, opts.quick),
        connect::table(&tls, opts.quick),
    ]
}
