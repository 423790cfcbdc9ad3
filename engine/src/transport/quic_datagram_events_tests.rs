//! Events in QUIC datagrams (docs/protocol.md §27.6): a subscription that accepts loss gets
//! its events in datagrams, whose losses show as `Event::lost`; a stream subscription on the
//! same lossy path loses nothing.

use std::time::{Duration, Instant};

use netron_quic::{ClientConfig, ServerConfig, Trust};
use rcgen::ExtendedKeyUsagePurpose;

use super::{Ca, Forwarder, quic_addr};
use crate::{Engine, ProtocolConfig, SubscribeOptions};

/// A one-core server and client with `QuicSettings::datagrams` on both.
fn pair(ca: &Ca) -> (Engine, Engine) {
    pair_with(ca, true)
}

/// A one-core server (`QuicSettings::datagrams` = `server_datagrams`) and a client with
/// datagrams on.
fn pair_with(ca: &Ca, server_datagrams: bool) -> (Engine, Engine) {
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.settings.datagrams = server_datagrams;
    let s = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.settings.datagrams = true;
    let c = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .unwrap();
    (s, c)
}

/// Over a path that drops 1 datagram in 13 and holds back 1 in 7 (both ways), the server
/// publishes 2,000 events to two subscriptions of one client: the one that accepts loss
/// (`SubscribeOptions::datagrams`) receives some and learns of every other one as a gap
/// (received + lost = published, up to the end marker it received), and some were lost; the
/// stream subscription receives all 2,000 in order, none lost.
#[test]
fn datagram_events_lost_on_the_path_are_counted_and_stream_events_are_not_lost() {
    const N: u32 = 2_000;
    let ca = Ca::new("ca");
    let (s, c) = pair(&ca);
    let fwd = Forwarder::lossy(quic_addr(&s), 13, 7);
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", fwd.port))
        .unwrap();
    let deep = || SubscribeOptions::new().queue_depth(8192);
    let lossy = ch.subscribe("ticks.>", deep().datagrams(true)).unwrap();
    let whole = ch.subscribe("ticks.>", deep()).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while s.total_stats().subscriptions() < 2 {
        assert!(Instant::now() < until, "subscriptions did not arrive");
        std::thread::sleep(Duration::from_millis(2));
    }
    for i in 0..N {
        s.publish("ticks.n", i.to_le_bytes().to_vec()).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // The stream subscription: every event, in order.
    for i in 0..N {
        let e = whole.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(e.payload()[..], i.to_le_bytes(), "stream event {i}");
        assert_eq!(e.lost(), 0, "stream event {i}");
    }
    // End markers until the lossy subscription sees one: everything before it is accounted.
    let (mut received, mut lost, mut k) = (0u64, 0u64, 0u32);
    let marker = loop {
        s.publish("ticks.end", k.to_le_bytes().to_vec()).unwrap();
        k += 1;
        let until = Instant::now() + Duration::from_millis(20);
        let mut seen = None;
        while let Ok(e) = lossy.recv_timeout(until.saturating_duration_since(Instant::now())) {
            received += 1;
            lost += u64::from(e.lost());
            if e.topic() == b"ticks.end" {
                seen = Some(u32::from_le_bytes(e.payload()[..4].try_into().unwrap()));
                break;
            }
        }
        if let Some(m) = seen {
            break m;
        }
        assert!(k < 500, "no end marker arrived in datagrams");
    };
    let published = u64::from(N) + u64::from(marker) + 1;
    eprintln!("datagram subscription: {received} received, {lost} lost of {published}");
    assert_eq!(
        received + lost,
        published,
        "every event received or counted as lost"
    );
    assert!(
        lost > 0,
        "the path lost datagrams: some events must be lost"
    );
    assert!(received > published / 2, "most events arrive");
    fwd.kill();
}

/// Without `QuicSettings::datagrams` on the server, DATAGRAM_EVENTS is not in force: a
/// subscription that accepts loss gets its events on its stream, all of them.
#[test]
fn without_datagrams_on_both_sides_events_go_on_the_stream() {
    let ca = Ca::new("ca");
    let (s, c) = pair_with(&ca, false);
    let fwd = Forwarder::lossy(quic_addr(&s), 13, 7);
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", fwd.port))
        .unwrap();
    let sub = ch
        .subscribe("ticks.>", SubscribeOptions::new().datagrams(true))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while s.total_stats().subscriptions() < 1 {
        assert!(Instant::now() < until, "the subscription did not arrive");
        std::thread::sleep(Duration::from_millis(2));
    }
    for i in 0..300u32 {
        s.publish("ticks.n", i.to_le_bytes().to_vec()).unwrap();
    }
    for i in 0..300u32 {
        let e = sub.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            (e.payload()[..].to_vec(), e.lost()),
            (i.to_le_bytes().to_vec(), 0)
        );
    }
    fwd.kill();
}
