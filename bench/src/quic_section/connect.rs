//! The quic section's connect table (issue 22, docs/quic.md "0-RTT"): how long a client takes
//! from `Client::connect` to the reply of its first 64-byte call, for a full TLS handshake,
//! a resumed session (1-RTT: a ticket, no certificate exchange), and a resumed session with
//! 0-RTT (`ClientConfig::zero_rtt`, the call marked idempotent), in the same run.

use std::time::{Duration, Instant};

use netron_engine::quic::{ClientConfig, ServerConfig};
use netron_engine::{CallOptions, Engine};

use super::server;
use crate::engine_section::{METHOD, SERVICE};
use crate::stats::{Samples, ratio, us};
use crate::table::Table;

/// One way of connecting: resumption, 0-RTT.
struct Mode {
    name: &'static str,
    resumption: bool,
    zero_rtt: bool,
}

const MODES: [Mode; 3] = [
    Mode {
        name: "full handshake (resumption off)",
        resumption: false,
        zero_rtt: false,
    },
    Mode {
        name: "resumed (1-RTT, ticket)",
        resumption: true,
        zero_rtt: false,
    },
    Mode {
        name: "resumed with 0-RTT (idempotent call)",
        resumption: true,
        zero_rtt: true,
    },
];

/// `n` connects, each followed by one idempotent 64-byte call and a close, by a client engine
/// of `tls` configured for `mode` (after one connect that leaves it a ticket); nanoseconds
/// from the connect to the reply, each.
fn connects(server: &Engine, tls: &ClientConfig, mode: &Mode, n: usize) -> Samples {
    let mut cc = tls.clone();
    (cc.resumption, cc.zero_rtt) = (mode.resumption, mode.zero_rtt);
    let client = Engine::builder()
        .cores(1)
        .quic_client(cc)
        .build()
        .expect("client engine");
    let endpoint = server.endpoints()[0].to_string();
    let (service, method) = (
        std::str::from_utf8(SERVICE).expect("ASCII"),
        std::str::from_utf8(METHOD).expect("ASCII"),
    );
    let opts = CallOptions::new()
        .idempotent()
        .deadline(Duration::from_secs(10));
    let msg = vec![0x5au8; super::SIZE];
    let mut s = Samples::with_capacity(n);
    for i in 0..=n {
        let t = Instant::now();
        let ch = client.client().connect(&endpoint).expect("connect");
        let reply = ch.call_with(service, method, msg.clone(), &opts);
        let took = t.elapsed();
        assert_eq!(reply.result().expect("call").len(), msg.len());
        drop(ch);
        if i > 0 {
            // The first connect leaves the ticket the others use.
            s.push(took.as_nanos() as u64);
        }
    }
    client.shutdown(Duration::from_millis(200));
    s
}

pub(super) fn table(tls: &(ServerConfig, ClientConfig), quick: bool) -> Table {
    let n = if quick { 30 } else { 300 };
    let engine = server("quic://127.0.0.1:0", &tls.0);
    let mut t = Table::new(
        "quic: connect + first 64-byte call (Client::connect to the reply), busy-poll server on cpu1",
        &["client", "p50", "p99", "p50 / full handshake"],
    );
    let mut full = None;
    for mode in &MODES {
        let mut s = connects(&engine, &tls.1, mode, n);
        let p50 = s.percentile(50.0);
        let base = *full.get_or_insert(p50);
        t.row(&[
            mode.name.to_owned(),
            us(p50),
            us(s.percentile(99.0)),
            ratio(p50 as f64, base as f64),
        ]);
    }
    let zero = engine.total_stats().zero_rtt_calls_in();
    engine.shutdown(Duration::from_millis(200));
    t.note(format!(
        "{n} connects per row (after one that leaves a ticket), each followed by one call marked idempotent (the method is declared idempotent) and a close; client engine of one core (adaptive idle policy); the server served {zero} of the 0-RTT row's calls from 0-RTT data (on loopback the handshake often completes before the call leaves the client: the 0-RTT gain shows with real round trips, the resumed rows' gain is the certificate exchange and its verification)"
    ));
    t
}
