//! Session resumption and 0-RTT between QuicEndpoints in memory (docs/quic.md "0-RTT"): the
//! tickets are shared by a configuration's clones, a resumed client writes in 0-RTT, the
//! server reads it while its handshake is in progress, and a server that does not know the
//! ticket rejects the early data (which the writer must then send again).

mod common;

use common::*;
use netron_quic::*;

fn configs(ca: &Ca) -> (ServerConfig, ClientConfig) {
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.zero_rtt = true;
    let mut sc = ServerConfig::new(ca.server());
    sc.zero_rtt = true;
    (sc, cc)
}

/// Connects a new client endpoint made from `cc` to the server at port 1 of `net`, and lets
/// the connection run (the server's tickets arrive after the handshake).
fn first_connection(net: &mut Net, cc: &ClientConfig, port: u16) {
    let c = net.add(port, QuicEndpoint::new(None, Some(cc)).unwrap());
    let s = addr(1);
    let now = net.now;
    let conn = net.ep(c).connect(now, s, "localhost").unwrap();
    assert!(!net.ep(c).has_0rtt(conn).unwrap(), "no ticket yet");
    net.run_until(10_000, |net| connected(net.seen(c)).is_some());
    // The NewSessionTicket messages follow the handshake (timers fire: acknowledgements).
    for _ in 0..200 {
        if net.step() == 0 && !net.tick() {
            break;
        }
    }
}

/// A second client endpoint of `cc` connects and writes `b"early"` before the handshake;
/// returns (client addr, its connection, the stream, what the server read while its
/// handshake was still in progress).
fn early_write(
    net: &mut Net,
    cc: &ClientConfig,
    port: u16,
) -> (std::net::SocketAddr, ConnId, StreamId) {
    let c = net.add(port, QuicEndpoint::new(None, Some(cc)).unwrap());
    let now = net.now;
    let conn = net.ep(c).connect(now, addr(1), "localhost").unwrap();
    assert!(
        net.ep(c).has_0rtt(conn).unwrap(),
        "the shared ticket store has no usable ticket"
    );
    let st = net.ep(c).open_bi(conn).unwrap().unwrap();
    assert_eq!(net.ep(c).write(conn, st, b"early").unwrap(), 5);
    (c, conn, st)
}

#[test]
fn a_resumed_client_writes_in_0rtt_and_the_server_reads_it_before_the_handshake_ends() {
    let ca = Ca::new("ca");
    let (sc, cc) = configs(&ca);
    let mut net = Net::new(11);
    let s = net.add(1, QuicEndpoint::new(Some(&sc), None).unwrap());
    first_connection(&mut net, &cc, 2);
    // A clone of the configuration shares the tickets (an engine builds an endpoint per
    // connect from its clone).
    let (c, conn, st) = early_write(&mut net, &cc.clone(), 3);
    net.take(s);
    let mut early = None;
    net.run_until(10_000, |net| {
        let events = net.seen(s).to_vec();
        for e in events {
            if let QuicEvent::StreamOpened {
                conn: sconn,
                stream,
            } = e
            {
                if stream == st && early.is_none() {
                    let handshaking = net.ep(s).is_handshaking(sconn).unwrap();
                    let mut got = Vec::new();
                    let _ = net.ep(s).read(sconn, stream, &mut got, 1024);
                    early = Some((handshaking, got));
                }
            }
        }
        early.is_some()
    });
    let (handshaking, got) = early.unwrap();
    assert!(
        handshaking,
        "the stream arrived after the handshake: not 0-RTT"
    );
    assert_eq!(got, b"early");
    net.run_until(10_000, |net| connected(net.seen(c)).is_some());
    assert!(net.ep(c).accepted_0rtt(conn).unwrap());
}

#[test]
fn a_server_that_does_not_know_the_ticket_rejects_the_early_data() {
    let ca = Ca::new("ca");
    let (sc, cc) = configs(&ca);
    let mut net = Net::new(12);
    net.add(1, QuicEndpoint::new(Some(&sc), None).unwrap());
    first_connection(&mut net, &cc, 2);
    // The same server name, restarted: a new configuration, an empty session cache.
    let (restarted, _) = configs(&ca);
    net.nodes_replace(1, QuicEndpoint::new(Some(&restarted), None).unwrap());
    let (c, conn, _st) = early_write(&mut net, &cc, 3);
    net.run_until(10_000, |net| connected(net.seen(c)).is_some());
    assert!(!net.ep(c).accepted_0rtt(conn).unwrap());
    // The rejected stream is gone: the next stream opened takes the first ID again.
    let again = net.ep(c).open_bi(conn).unwrap().unwrap();
    assert_eq!(again.index(), 0);
}

/// Whether a second client endpoint of `cc` can write in 0-RTT to a server of `sc` that a
/// first one of `cc` connected to.
fn second_connect_has_0rtt(sc: &ServerConfig, cc: &ClientConfig, seed: u64) -> bool {
    let mut net = Net::new(seed);
    net.add(1, QuicEndpoint::new(Some(sc), None).unwrap());
    first_connection(&mut net, cc, 2);
    let c = net.add(3, QuicEndpoint::new(None, Some(cc)).unwrap());
    let now = net.now;
    let conn = net.ep(c).connect(now, addr(1), "localhost").unwrap();
    net.ep(c).has_0rtt(conn).unwrap()
}

#[test]
fn zero_rtt_off_on_the_server_rejects_and_resumption_off_offers_none() {
    let ca = Ca::new("ca");
    let (sc, cc) = configs(&ca);
    assert!(second_connect_has_0rtt(&sc, &cc, 12));
    // The ticket allows no early data: the client knows and writes after the handshake.
    let (mut sc, cc) = configs(&ca);
    sc.zero_rtt = false;
    assert!(!second_connect_has_0rtt(&sc, &cc, 13));
    let (sc, mut cc) = configs(&ca);
    cc.resumption = false;
    assert!(!second_connect_has_0rtt(&sc, &cc, 14));
}
