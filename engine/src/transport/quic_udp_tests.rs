//! UDP GSO and GRO on `quic://` links (docs/quic.md "UDP GSO and GRO"): the per-core counters
//! of `sendmsg`/`recvmsg` calls and the datagrams they carried.

use std::time::Duration;

use netron_quic::{ClientAuth, ClientConfig, ServerConfig, Trust};
use rcgen::ExtendedKeyUsagePurpose;

use super::{Ca, DL, echo};
use crate::{Bytes, Engine, ProtocolConfig};

/// What this kernel offers, as quinn-udp finds it on a fresh socket: (GSO segments per send,
/// GRO segments per receive); 1 where the kernel lacks it.
fn offered() -> (usize, usize) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = quinn_udp::UdpSocketState::new((&sock).into()).unwrap();
    (s.max_gso_segments(), s.gro_segments())
}

/// A one-core server and client with `QuicSettings::gso` / `::gro` set to `offload` on both.
fn pair(offload: bool) -> (Engine, Engine) {
    let ca = Ca::new("ca");
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.client_auth = ClientAuth::None;
    (sc.settings.gso, sc.settings.gro) = (offload, offload);
    let s = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    (cc.settings.gso, cc.settings.gro) = (offload, offload);
    let c = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .unwrap();
    (s, c)
}

/// Echoes 4 MiB twice, and 200 small calls.
fn traffic(s: &Engine, c: &Engine) {
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
    for _ in 0..2 {
        let got = ch
            .call("echo@1.0.0", "say", Bytes::from(big.clone()), DL)
            .unwrap();
        assert!(got == big, "the echo differs");
    }
    for i in 0..200u32 {
        let p = i.to_le_bytes();
        assert_eq!(ch.call("echo@1.0.0", "say", p.to_vec(), DL).unwrap(), p);
    }
}

/// Bulk replies leave the server in GSO trains (more datagrams than `sendmsg` calls) and,
/// where the kernel also offers GRO, reach the client in GRO trains (loopback hands a GSO
/// train to a GRO socket whole). On a kernel without them, one datagram per call.
#[test]
fn bulk_transfers_go_out_in_gso_trains_and_come_in_gro_trains() {
    let (gso, gro) = offered();
    let (s, c) = pair(true);
    traffic(&s, &c);
    let (sd, cd) = (*s.total_stats().driver(), *c.total_stats().driver());
    eprintln!(
        "offered gso {gso} gro {gro}; server sends {} datagrams {}; client receives {} \
         datagrams {}",
        sd.udp_sends, sd.udp_datagrams_sent, cd.udp_receives, cd.udp_datagrams_received
    );
    assert!(sd.udp_sends > 0 && cd.udp_receives > 0);
    if gso > 1 {
        assert!(
            sd.udp_datagrams_sent > sd.udp_sends + sd.udp_sends / 2,
            "GSO offered but the server's bulk sends were not batched: {sd:?}"
        );
    } else {
        assert_eq!(sd.udp_datagrams_sent, sd.udp_sends);
    }
    if gso > 1 && gro > 1 {
        assert!(
            cd.udp_datagrams_received > cd.udp_receives + cd.udp_receives / 2,
            "GRO offered but the client received one datagram per call: {cd:?}"
        );
    } else {
        assert_eq!(cd.udp_datagrams_received, cd.udp_receives);
    }
    // The client's own datagrams were received by the server, counted too.
    let st = s.total_stats();
    assert!(st.driver().udp_datagrams_received >= st.driver().udp_receives);
}

/// With `QuicSettings::gso` and `::gro` off on both sides, every `sendmsg` and `recvmsg`
/// carries one datagram, and the same traffic arrives whole.
#[test]
fn with_gso_and_gro_off_each_call_carries_one_datagram() {
    let (s, c) = pair(false);
    traffic(&s, &c);
    for e in [&s, &c] {
        let d = *e.total_stats().driver();
        assert!(d.udp_sends > 100 && d.udp_receives > 100, "{d:?}");
        assert_eq!(d.udp_datagrams_sent, d.udp_sends, "{d:?}");
        assert_eq!(d.udp_datagrams_received, d.udp_receives, "{d:?}");
    }
    s.shutdown(Duration::from_secs(1));
}

/// 100 small calls in flight at once (ten rounds) carry few full-size datagrams: with offload
/// on, no GSO train goes out (quinn-proto pads a train's datagrams to its segment size, which
/// cost 64 pipelined small calls 11 % of their rate when trains were always on: this test
/// then saw 81 datagrams in 53 sends) and every datagram is received on its own.
#[test]
fn small_calls_go_out_and_come_in_one_datagram_at_a_time() {
    let (s, c) = pair(true);
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    let m = ch.method("echo@1.0.0", "say");
    for round in 0..10u8 {
        // 100 calls in flight at once: replies and acknowledgements go out together, in at
        // most 3 full-size datagrams (fewer than GSO_ON_AT).
        let calls: Vec<_> = (0..100u8)
            .map(|i| m.call_async(vec![round, i], DL))
            .collect();
        for (i, f) in calls.into_iter().enumerate() {
            assert_eq!(super::block_on(f).unwrap(), [round, i as u8]);
        }
    }
    for e in [&s, &c] {
        let d = *e.total_stats().driver();
        assert!(d.udp_sends > 20, "{d:?}");
        assert_eq!(d.udp_datagrams_sent, d.udp_sends, "{d:?}");
        assert_eq!(d.udp_datagrams_received, d.udp_receives, "{d:?}");
    }
}

/// A panic inside quinn-proto on one connection (as its debug assertion quinn-rs/quinn#2658
/// does after a migration, in builds with debug assertions) ends that connection only,
/// counted `quic_internal_error`: the core thread and its other connections go on, and new
/// clients are served (fresh user R16's finding 1: the core thread died with every
/// connection on it).
#[test]
fn a_panic_inside_quic_ends_one_connection_not_the_core() {
    let (s, c) = pair(true);
    let url = s.endpoints()[0].to_string();
    let (a, b) = (
        c.client().connect(&url).unwrap(),
        c.client().connect(&url).unwrap(),
    );
    for ch in [&a, &b] {
        assert_eq!(ch.call("echo@1.0.0", "say", &b"x"[..], DL).unwrap(), b"x");
    }
    let port = super::quic_addr(&s).port();
    crate::transport::quic::PANIC_AT_PORT.store(port, std::sync::atomic::Ordering::Relaxed);
    // Calls on both until one connection's link took the injected panic.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while crate::transport::quic::PANIC_AT_PORT.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        assert!(std::time::Instant::now() < until, "no link completed");
        for ch in [&a, &b] {
            let _ = ch.call(
                "echo@1.0.0",
                "say",
                &b"y"[..],
                Some(Duration::from_millis(200)),
            );
        }
    }
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while s.total_stats().errors_of("quic_internal_error") == 0 {
        assert!(std::time::Instant::now() < until, "{:?}", s.total_stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    // One of the two still works; a new client is served by the same core.
    let works = |ch: &crate::Channel| {
        ch.call("echo@1.0.0", "say", &b"z"[..], Some(Duration::from_secs(2)))
            .is_ok()
    };
    let alive = [works(&a), works(&b)];
    assert_eq!(alive.iter().filter(|&&w| w).count(), 1, "{alive:?}");
    let fresh = c.client().connect(&url).unwrap();
    assert_eq!(
        fresh.call("echo@1.0.0", "say", &b"new"[..], DL).unwrap(),
        b"new"
    );
    assert_eq!(s.total_stats().errors_of("quic_internal_error"), 1);
}
