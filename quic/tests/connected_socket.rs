//! An endpoint that serves one connected socket (`limit_connections(1)`, as the engine's
//! per-connection endpoints are) against datagrams the kernel hands it from another address.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use common::*;
use netron_quic::*;

/// The datagrams of a new client's first flight to `server`.
fn first_flight(cc: &ClientConfig, server: SocketAddr, now: Instant) -> Vec<Vec<u8>> {
    let mut c = QuicEndpoint::new(None, Some(cc)).unwrap();
    c.connect(now, server, "localhost").unwrap();
    let (mut tx, mut out) = (Vec::new(), Vec::new());
    while let Some(t) = c.poll_transmit(now, &mut tx) {
        out.push(tx[..t.len].to_vec());
    }
    out
}

/// Feeds `datagrams` from `from` to `s` and returns the events they caused.
fn feed(
    s: &mut QuicEndpoint,
    from: SocketAddr,
    datagrams: &[Vec<u8>],
    now: Instant,
) -> Vec<QuicEvent> {
    for d in datagrams {
        s.handle_datagram(now, from, None, BytesMut::from(&d[..]));
    }
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn a_new_client_from_another_address_neither_closes_nor_joins_the_handshake_in_progress() {
    let ca = Ca::new("ca");
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    let mut s = QuicEndpoint::new(Some(&ServerConfig::new(ca.server())), None).unwrap();
    s.limit_connections(1);
    s.admit_all();
    let (server, peer, stray) = (addr(1), addr(2), addr(3));
    let now = Instant::now();
    let first = feed(&mut s, peer, &first_flight(&cc, server, now), now);
    assert!(
        has(&first, |e| matches!(e, QuicEvent::Accepted { .. })),
        "{first:?}"
    );
    // Another client's first flight, handed to this endpoint's socket by mistake: the
    // handshake in progress goes on (it was closed, "replaced by a new connection from its
    // address"), and the stray client is not taken either.
    let strays = feed(&mut s, stray, &first_flight(&cc, server, now), now);
    assert_eq!(closed(&strays), None, "{strays:?}");
    assert!(
        !has(&strays, |e| matches!(e, QuicEvent::Accepted { .. })),
        "{strays:?}"
    );
    assert_eq!(s.stats().strays, 1);
    assert_eq!(s.stats().accepted, 1);
    // A new Initial from the peer's own address still replaces a handshake that never
    // completed (a forged Initial must not lock the real client out).
    let again = feed(&mut s, peer, &first_flight(&cc, server, now), now);
    assert!(closed(&again).is_some(), "{again:?}");
    assert!(
        has(&again, |e| matches!(e, QuicEvent::Accepted { .. })),
        "{again:?}"
    );
}
