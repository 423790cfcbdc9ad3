//! The handshake timeout (both roles) and the keepalive each side uses: its own, or the
//! server's advertised one when shorter (docs/configuration.md, "Keepalive"), on virtual time.

use super::*;
use crate::ProtocolConfig;

/// A pair whose sides have their own configuration.
fn pair(server: &ProtocolConfig, client: &ProtocolConfig) -> Pair {
    let now = Instant::now();
    Pair {
        server: Connection::new(
            Role::Server,
            &std::rc::Rc::new(ConnConfig::new(server)),
            now,
        ),
        client: Connection::new(
            Role::Client,
            &std::rc::Rc::new(ConnConfig::new(client)),
            now,
        ),
        registry: registry(),
        stats: CoreStats::default(),
        now,
        direct: false,
    }
}

fn keepalive(every: u64, dead: u64) -> ProtocolConfig {
    ProtocolConfig::default()
        .with_keepalive(Duration::from_secs(every), Duration::from_secs(dead))
        .with_handshake_timeout(Duration::from_secs(3))
}

#[test]
fn an_accepted_connection_that_sends_nothing_is_closed_at_the_handshake_timeout() {
    let cfg = keepalive(15, 10);
    let mut p = pair(&cfg, &cfg);
    let t0 = p.now;
    // The stall timer (10 s) does not govern the handshake: its own timeout (3 s) does.
    assert_eq!(p.server.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    let early = t0 + Duration::from_millis(2999);
    p.server
        .handle_timeout(&mut conn_env!(p, early), &mut Vec::new())
        .unwrap();
    let at = t0 + Duration::from_secs(3);
    let e = p
        .server
        .handle_timeout(&mut conn_env!(p, at), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.counter, "handshake_timeout");
    assert!(
        e.message.contains("ProtocolConfig::handshake_timeout"),
        "{e:?}"
    );
    assert_eq!(p.stats.errors_of("handshake_timeout"), 1);
}

#[test]
fn a_client_whose_server_never_answers_is_closed_at_the_handshake_timeout() {
    let cfg = keepalive(15, 10);
    let mut p = pair(&cfg, &cfg);
    // The client's Hello goes nowhere: the server never answers.
    assert!(p.client.poll_transmit().is_some());
    let at = p.now + Duration::from_secs(3);
    assert_eq!(p.client.poll_timeout(), Some(at));
    let e = p
        .client
        .handle_timeout(&mut conn_env!(p, at), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.counter, "handshake_timeout");
    // Once open, the handshake timeout no longer applies.
    let mut q = pair(&cfg, &cfg);
    q.pump(usize::MAX);
    assert!(q.client.is_open() && q.server.is_open());
    let later = q.now + Duration::from_secs(4);
    q.server
        .handle_timeout(&mut conn_env!(q, later), &mut Vec::new())
        .unwrap();
}

#[test]
fn the_welcome_advertises_the_servers_keepalive() {
    let mut p = pair(&keepalive(7, 5), &keepalive(30, 10));
    p.pump(usize::MAX);
    let s = p.client.settings.as_ref().expect("open");
    assert_eq!(s.keepalive_interval_ms, 7_000);
    // The server's own offer field cannot disagree with the setting.
    let mut offer = netron_codec::handshake::ServerConfig::default();
    offer.keepalive_interval_ms = 1;
    let odd = ProtocolConfig::default()
        .with_keepalive(Duration::from_secs(7), Duration::from_secs(5))
        .with_server(offer);
    assert_eq!(ConnConfig::new(&odd).server.keepalive_interval_ms, 7_000);
    let off = ProtocolConfig::default().with_keepalive(Duration::ZERO, Duration::ZERO);
    assert_eq!(ConnConfig::new(&off).server.keepalive_interval_ms, 0);
}

#[test]
fn a_client_pings_at_the_shorter_of_its_keepalive_and_the_servers() {
    // The server asks for 7 s, the client would ping at 30 s: it pings at 7 s.
    let mut p = pair(&keepalive(7, 5), &keepalive(30, 10));
    p.pump(usize::MAX);
    assert_eq!(p.client.keepalive, Duration::from_secs(7));
    let t0 = p.now;
    assert_eq!(p.client.poll_timeout(), Some(t0 + Duration::from_secs(7)));
    let before = t0 + Duration::from_millis(6999);
    p.client
        .handle_timeout(&mut conn_env!(p, before), &mut Vec::new())
        .unwrap();
    assert!(p.client.ping_outstanding.is_none());
    let at = t0 + Duration::from_secs(7);
    p.client
        .handle_timeout(&mut conn_env!(p, at), &mut Vec::new())
        .unwrap();
    assert!(p.client.ping_outstanding.is_some());
    // The server keeps its own interval (a client advertises none).
    assert_eq!(p.server.keepalive, Duration::from_secs(7));

    // A longer advertised interval does not slow a client down.
    let mut q = pair(&keepalive(30, 10), &keepalive(4, 2));
    q.pump(usize::MAX);
    assert_eq!(q.client.keepalive, Duration::from_secs(4));
    assert_eq!(q.server.keepalive, Duration::from_secs(30));
}

#[test]
fn a_client_with_keepalive_off_never_pings_whatever_the_server_advertises() {
    let off = ProtocolConfig::default().with_keepalive(Duration::ZERO, Duration::ZERO);
    let mut p = pair(&keepalive(2, 1), &off);
    p.pump(usize::MAX);
    assert_eq!(p.client.keepalive, Duration::ZERO);
    assert_eq!(p.client.poll_timeout(), None);
    let later = p.now + Duration::from_secs(3600);
    p.client
        .handle_timeout(&mut conn_env!(p, later), &mut Vec::new())
        .unwrap();
    assert!(p.client.ping_outstanding.is_none());
    // A server whose keepalive is off advertises 0, and the client keeps its own.
    let mut q = pair(&off, &keepalive(5, 5));
    q.pump(usize::MAX);
    assert_eq!(q.client.settings.as_ref().unwrap().keepalive_interval_ms, 0);
    assert_eq!(q.client.keepalive, Duration::from_secs(5));
}

#[test]
fn effective_keepalive_rule() {
    let s = Duration::from_secs;
    assert_eq!(effective_keepalive(s(10), 5_000), s(5));
    assert_eq!(effective_keepalive(s(10), 20_000), s(10));
    assert_eq!(effective_keepalive(s(10), 0), s(10));
    assert_eq!(effective_keepalive(Duration::ZERO, 5_000), Duration::ZERO);
}
