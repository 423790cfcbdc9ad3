//! A client and a server QuicEndpoint exchanging datagrams in memory (no sockets), in virtual
//! time: handshake, ALPN, echo, concurrency limits, resets, mutual TLS, loss and reordering,
//! Retry, anti-amplification, handshake budgets, idle timeout.

mod common;

use std::time::Duration;

use bytes::BytesMut;

use common::*;
use netron_quic::*;

fn server(ca: &Ca) -> ServerConfig {
    ServerConfig::new(ca.server())
}

fn client(ca: &Ca) -> ClientConfig {
    ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]))
}

fn echo(
    net: &mut Net,
    s: std::net::SocketAddr,
    c: std::net::SocketAddr,
    caller: &mut Caller,
    echo: &mut Echo,
) {
    net.run_until(200_000, |net| {
        echo.turn(net, s);
        caller.turn(net, c);
        caller.all_done()
    });
    for call in &caller.calls {
        assert_eq!(call.got.len(), call.data.len());
        assert!(call.got == call.data, "echoed bytes differ");
    }
}

#[test]
fn handshake_checks_alpn_and_echoes_4_mib() {
    let ca = Ca::new("ca");
    let (mut net, s, c, conn) = pair(server(&ca), client(&ca), 1);
    let mut srv = Echo::default();
    let mut caller = Caller::new(conn, vec![payload(7, 4 << 20)]);
    echo(&mut net, s, c, &mut caller, &mut srv);
    assert_eq!(connected(&caller.log), Some(conn));
    assert!(connected(&srv.log).is_some(), "server saw no Connected");
    assert_eq!(net.ep(s).stats().accepted, 1);
    // No client certificate was asked for: no identity.
    let sc = srv.conns[0];
    assert_eq!(net.ep(s).peer_identity(sc).unwrap(), None);
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[test]
fn a_client_offering_no_alpn_is_refused() {
    let ca = Ca::new("ca");
    let mut net = Net::new(2);
    let s = net.add(1, QuicEndpoint::new(Some(&server(&ca)), None).unwrap());
    // A raw quinn-proto client whose rustls config offers no ALPN.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let qc = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let cfg = quinn_proto::ClientConfig::new(std::sync::Arc::new(qc));
    let c = net.add(
        2,
        QuicEndpoint::from_quinn(None, Some(cfg), RetryPolicy::Never, 0),
    );
    let now = net.now;
    net.ep(c).connect(now, s, "localhost").unwrap();
    net.run_until(10_000, |net| closed(net.seen(c)).is_some());
    let r = closed(net.seen(c)).unwrap().to_string();
    assert!(
        r.contains("no_application_protocol") && r.contains("netron/1"),
        "{r}"
    );
    assert_eq!(net.ep(s).stats().accepted, 0);
    assert_eq!(net.ep(s).stats().refused, 1);
    assert_eq!(connected(net.seen(s)), None);
}

#[test]
fn a_server_speaking_another_alpn_is_refused_by_our_client() {
    let ca = Ca::new("ca");
    let mut net = Net::new(3);
    // A raw quinn-proto server speaking h3 only.
    let id = ca.server();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qs = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let scfg = std::sync::Arc::new(quinn_proto::ServerConfig::with_crypto(std::sync::Arc::new(
        qs,
    )));
    let s = net.add(
        1,
        QuicEndpoint::from_quinn(Some(scfg), None, RetryPolicy::Never, 16),
    );
    let c = net.add(2, QuicEndpoint::new(None, Some(&client(&ca))).unwrap());
    let now = net.now;
    net.ep(c).connect(now, s, "localhost").unwrap();
    net.run_until(10_000, |net| closed(net.seen(c)).is_some());
    let r = closed(net.seen(c)).unwrap().to_string();
    assert!(r.contains("no_application_protocol"), "{r}");
    assert_eq!(connected(net.seen(c)), None);
    assert_eq!(connected(net.seen(s)), None);
}

#[test]
fn many_concurrent_streams_respect_the_limit() {
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.settings.max_concurrent_bidi_streams = 16;
    let (mut net, s, c, conn) = pair(sc, client(&ca), 3);
    let mut srv = Echo::default();
    let mut caller = Caller::new(
        conn,
        (0..200)
            .map(|i| payload(i, 1000 + i as usize * 37))
            .collect(),
    );
    echo(&mut net, s, c, &mut caller, &mut srv);
    assert!(
        caller.max_open_seen <= 16,
        "{} streams open at once",
        caller.max_open_seen
    );
    assert!(
        caller.max_open_seen >= 8,
        "concurrency never reached: {}",
        caller.max_open_seen
    );
    assert!(has(&caller.log, |e| matches!(
        e,
        QuicEvent::StreamsAvailable { .. }
    )));
}

fn connect(net: &mut Net, s: std::net::SocketAddr, c: std::net::SocketAddr) -> ConnId {
    net.run_until(10_000, |net| {
        connected(net.seen(s)).is_some() && connected(net.seen(c)).is_some()
    });
    connected(&net.take(s)).unwrap()
}

fn opened(events: &[QuicEvent]) -> Option<StreamId> {
    events.iter().find_map(|e| match e {
        QuicEvent::StreamOpened { stream, .. } => Some(*stream),
        _ => None,
    })
}

#[test]
fn a_reset_from_each_side_reaches_the_other() {
    let ca = Ca::new("ca");
    let (mut net, s, c, conn) = pair(server(&ca), client(&ca), 4);
    let sconn = connect(&mut net, s, c);
    // The client (opener) writes, then resets: a Cancel (§27.2 rule 4).
    let st = net.ep(c).open_bi(conn).unwrap().unwrap();
    assert_eq!(net.ep(c).write(conn, st, b"hello").unwrap(), 5);
    net.run_until(1000, |net| opened(net.seen(s)).is_some());
    net.ep(c).reset(conn, st, 1).unwrap();
    let mut got = Vec::new();
    net.run_until(1000, |net| {
        matches!(
            net.ep(s).read(sconn, st, &mut got, 1 << 16),
            Ok(Read::Reset { code: 1 })
        )
    });
    assert!(got.is_empty() || got == b"hello");

    // The server stops the client's next stream (STOP_SENDING) and resets its own side.
    let st2 = net.ep(c).open_bi(conn).unwrap().unwrap();
    net.ep(c).write(conn, st2, b"more").unwrap();
    net.take(s);
    net.run_until(1000, |net| opened(net.seen(s)) == Some(st2));
    net.ep(s).stop(sconn, st2, 14).unwrap();
    net.ep(s).reset(sconn, st2, 14).unwrap();
    net.run_until(1000, |net| {
        net.seen(c)
            .iter()
            .any(|e| matches!(e, QuicEvent::Stopped { stream, code: 14, .. } if *stream == st2))
    });
    let mut buf = Vec::new();
    net.run_until(1000, |net| {
        matches!(
            net.ep(c).read(conn, st2, &mut buf, 1024),
            Ok(Read::Reset { code: 14 })
        )
    });
    assert_eq!(
        net.ep(c).write(conn, st2, b"x"),
        Err(QuicError::Stopped {
            stream: st2,
            code: 14
        })
    );
}

#[test]
fn mutual_tls_accepted_exposes_the_client_chain() {
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.client_auth = ClientAuth::Required(vec![ca.cert.clone()]);
    let mut cc = client(&ca);
    let id = ca.client("alice");
    let chain = id.chain.clone();
    cc.identity = Some(id);
    let (mut net, s, c, _conn) = pair(sc, cc, 5);
    let sconn = connect(&mut net, s, c);
    assert_eq!(net.ep(s).peer_identity(sconn).unwrap(), Some(chain));
}

fn refused(sc: ServerConfig, cc: ClientConfig) -> (CloseReason, CloseReason) {
    let (mut net, s, c, _conn) = pair(sc, cc, 6);
    net.run_until(10_000, |net| {
        closed(net.seen(s)).is_some() && closed(net.seen(c)).is_some()
    });
    assert_eq!(
        connected(net.seen(s)),
        None,
        "the server must not complete the handshake"
    );
    (closed(net.seen(s)).unwrap(), closed(net.seen(c)).unwrap())
}

#[test]
fn mutual_tls_rejects_a_client_without_certificate() {
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.client_auth = ClientAuth::Required(vec![ca.cert.clone()]);
    let (srv, cli) = refused(sc, client(&ca));
    let (srv, cli) = (srv.to_string(), cli.to_string());
    assert!(
        srv.contains("requires a client certificate"),
        "server: {srv}"
    );
    assert!(cli.contains("certificate_required"), "client: {cli}");
}

#[test]
fn mutual_tls_rejects_a_client_certificate_from_another_ca() {
    let ca = Ca::new("ca");
    let other = Ca::new("other");
    let mut sc = server(&ca);
    sc.client_auth = ClientAuth::Required(vec![ca.cert.clone()]);
    let mut cc = client(&ca);
    cc.identity = Some(other.client("mallory"));
    let (srv, cli) = refused(sc, cc);
    let (srv, cli) = (srv.to_string(), cli.to_string());
    // The side that detected it names its own setting (R9 finding 6: both were named).
    assert!(
        srv.contains("not signed by a CA this server accepts")
            && srv.contains("ServerConfig::client_auth")
            && !srv.contains("ClientConfig::trust"),
        "server: {srv}"
    );
    assert!(
        cli.contains("our certificate is not trusted"),
        "client: {cli}"
    );
}

#[test]
fn a_client_with_the_wrong_ca_gets_a_clear_error() {
    let ca = Ca::new("ca");
    let other = Ca::new("other");
    let (srv, cli) = refused(server(&ca), client(&other));
    let cli = cli.to_string();
    assert!(cli.starts_with("TLS handshake failed"), "client: {cli}");
    assert!(
        cli.contains("not signed by a CA this client trusts")
            && cli.contains("ClientConfig::trust")
            && !cli.contains("ServerConfig::client_auth"),
        "client: {cli}"
    );
    assert!(matches!(srv, CloseReason::Tls(_)), "server: {srv}");
}

#[test]
fn streams_complete_in_order_under_loss_and_reordering() {
    for seed in [11, 12] {
        let ca = Ca::new("ca");
        let (mut net, s, c, conn) = pair(server(&ca), client(&ca), seed);
        net.loss = 10;
        net.reorder = 20;
        let mut srv = Echo::default();
        let mut caller = Caller::new(
            conn,
            (0..8).map(|i| payload(seed * 100 + i, 200_000)).collect(),
        );
        echo(&mut net, s, c, &mut caller, &mut srv);
        let lost = net.ep(c).connection_stats(conn).unwrap().path.lost_packets;
        assert!(
            lost > 0,
            "seed {seed}: nothing was lost, the test proves nothing"
        );
    }
}

#[test]
fn retry_validates_addresses_before_the_handshake() {
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.retry = RetryPolicy::Always;
    let (mut net, s, c, conn) = pair(sc, client(&ca), 7);
    let mut srv = Echo::default();
    let mut caller = Caller::new(conn, vec![payload(1, 10_000)]);
    echo(&mut net, s, c, &mut caller, &mut srv);
    assert_eq!(net.ep(s).stats().retries, 1);
    assert_eq!(net.ep(s).stats().accepted, 1);
}

#[test]
fn an_unvalidated_client_gets_at_most_three_times_its_bytes() {
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.retry = RetryPolicy::Never;
    // A long chain makes the server's first flight larger than 3× the client's Initial, so the
    // anti-amplification limit is what bounds it.
    sc.identity
        .chain
        .extend(std::iter::repeat_n(ca.cert.clone(), 12));
    let (mut net, s, c, _conn) = pair(sc, client(&ca), 8);
    // Deliver the client's first flight only, and never let the client answer.
    let now = net.now;
    let mut buf = Vec::new();
    let mut sent = 0;
    let mut flights = Vec::new();
    while let Some(t) = net.ep(c).poll_transmit(now, &mut buf) {
        sent += t.len;
        flights.push(buf[..t.len].to_vec());
    }
    for f in flights {
        net.ep(s)
            .handle_datagram(now, c, None, bytes::BytesMut::from(&f[..]));
    }
    let mut answered = 0;
    for _ in 0..20 {
        let n = net.now;
        while let Some(t) = net.ep(s).poll_transmit(n, &mut buf) {
            answered += t.len;
        }
        net.now += Duration::from_millis(500);
        let n = net.now;
        net.ep(s).handle_timeout(n);
    }
    // The server wanted to send more than 3× (its chain is long), so the limit is what binds.
    assert!(
        answered > 2 * sent,
        "server sent {answered} bytes for {sent}: the limit was not reached"
    );
    assert!(
        answered <= 3 * sent,
        "server sent {answered} bytes to an unvalidated {sent}"
    );
}

#[test]
fn pending_handshakes_over_the_budget_are_refused() {
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.max_pending_handshakes = 2;
    sc.retry = RetryPolicy::Never;
    let mut net = Net::new(9);
    let s = net.add(1, QuicEndpoint::new(Some(&sc), None).unwrap());
    let now = net.now;
    let mut clients = Vec::new();
    for port in 10..13 {
        let c = net.add(port, QuicEndpoint::new(None, Some(&client(&ca))).unwrap());
        net.ep(c).connect(now, s, "localhost").unwrap();
        clients.push(c);
    }
    // Only the clients' first flights reach the server: three handshakes would be pending.
    let mut buf = Vec::new();
    for &c in &clients {
        while let Some(t) = net.ep(c).poll_transmit(now, &mut buf) {
            let d = bytes::BytesMut::from(&buf[..t.len]);
            net.ep(s).handle_datagram(now, c, None, d);
        }
    }
    assert_eq!(net.ep(s).stats().accepted, 2);
    assert_eq!(net.ep(s).stats().refused, 1);
    // The third client learns it was refused.
    net.run_until(10_000, |net| closed(net.seen(clients[2])).is_some());
    let r = closed(net.seen(clients[2])).unwrap().to_string();
    assert!(
        r.contains("CONNECTION_REFUSED") && r.contains("max_pending_handshakes"),
        "{r}"
    );
    // Completed handshakes free the budget: a fourth client is accepted.
    net.run_until(10_000, |net| {
        net.seen(s)
            .iter()
            .filter(|e| matches!(e, QuicEvent::Connected { .. }))
            .count()
            == 2
    });
    let d = net.add(13, QuicEndpoint::new(None, Some(&client(&ca))).unwrap());
    let now = net.now;
    net.ep(d).connect(now, s, "localhost").unwrap();
    net.run_until(10_000, |net| connected(net.seen(d)).is_some());
    assert_eq!(net.ep(s).stats().accepted, 3);
}

#[test]
fn an_idle_connection_times_out_on_both_sides() {
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.settings.idle_timeout = Duration::from_secs(2);
    let mut cc = client(&ca);
    cc.settings.idle_timeout = Duration::from_secs(2);
    let (mut net, s, c, _conn) = pair(sc, cc, 10);
    let _ = connect(&mut net, s, c);
    let start = net.now;
    net.loss = 100;
    net.run_until(10_000, |net| {
        closed(net.seen(s)).is_some() && closed(net.seen(c)).is_some()
    });
    assert_eq!(closed(net.seen(c)), Some(CloseReason::TimedOut));
    assert!(net.now - start >= Duration::from_secs(2));
    net.run_until(10_000, |net| {
        net.ep(s).connection_count() == 0 && net.ep(c).connection_count() == 0
    });
}

#[test]
fn a_close_code_reaches_the_peer_and_handles_go_stale() {
    let ca = Ca::new("ca");
    let (mut net, s, c, conn) = pair(server(&ca), client(&ca), 11);
    let sconn = connect(&mut net, s, c);
    let now = net.now;
    net.ep(c).close(now, conn, 14, b"going away").unwrap();
    net.run_until(10_000, |net| closed(net.seen(s)).is_some());
    assert_eq!(
        closed(net.seen(s)),
        Some(CloseReason::Application {
            code: 14,
            reason: "going away".into()
        })
    );
    net.run_until(10_000, |net| {
        net.ep(c).connection_count() == 0 && net.ep(s).connection_count() == 0
    });
    assert_eq!(net.ep(c).open_bi(conn), Err(QuicError::NoConnection));
    assert_eq!(net.ep(s).open_bi(sconn), Err(QuicError::NoConnection));
}

#[test]
fn settings_errors_name_the_setting() {
    let ca = Ca::new("ca");
    let mut cc = client(&ca);
    cc.settings.idle_timeout = Duration::ZERO;
    let e = QuicEndpoint::new(None, Some(&cc)).unwrap_err().to_string();
    assert!(e.contains("QuicSettings::idle_timeout"), "{e}");
    let cc = ClientConfig::new(Trust::Ca(Vec::new()));
    let e = QuicEndpoint::new(None, Some(&cc)).unwrap_err().to_string();
    assert!(e.contains("ClientConfig::trust"), "{e}");
    let mut sc = server(&ca);
    sc.identity.key = ca.client("x").key;
    let e = QuicEndpoint::new(Some(&sc), None).unwrap_err().to_string();
    assert!(e.contains("ServerConfig::identity"), "{e}");
    // A handshake budget of 0 would refuse every client: refused when built.
    let mut sc = server(&ca);
    sc.max_pending_handshakes = 0;
    let e = QuicEndpoint::new(Some(&sc), None).unwrap_err().to_string();
    assert!(e.contains("ServerConfig::max_pending_handshakes"), "{e}");
    let mut sc = server(&ca);
    sc.max_pending_handshakes_per_ip = 0;
    let e = QuicEndpoint::new(Some(&sc), None).unwrap_err().to_string();
    assert!(
        e.contains("ServerConfig::max_pending_handshakes_per_ip"),
        "{e}"
    );
}

/// Every datagram `ep` has to send now.
fn flight(ep: &mut QuicEndpoint, now: std::time::Instant) -> Vec<BytesMut> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        out.push(BytesMut::from(&buf[..t.len]));
    }
    out
}

#[test]
fn a_listener_gate_retries_under_load_and_the_connections_endpoint_takes_its_token() {
    // docs/quic.md "Address validation": a listener's gate endpoint decides Retry and refusals
    // from the handshakes in progress across the whole listener; an admitted client's
    // connection then runs on an endpoint of its own, which must accept the token of the
    // gate's Retry (every endpoint of a server shares its token key; with quinn-proto's
    // default key, random per configuration, the connection was refused INVALID_TOKEN).
    let ca = Ca::new("ca");
    let mut sc = server(&ca);
    sc.retry = RetryPolicy::UnderLoad { pending: 1 };
    sc.max_pending_handshakes = 4;
    sc.max_pending_handshakes_per_ip = 1;
    let (s_addr, c_addr) = (addr(1), addr(2));
    let mut gate = QuicEndpoint::new(Some(&sc), None).unwrap();
    let mut cl = QuicEndpoint::new(None, Some(&client(&ca))).unwrap();
    let mut now = std::time::Instant::now();
    let conn = cl.connect(now, s_addr, "localhost").unwrap();
    let first = flight(&mut cl, now);
    assert_eq!(first.len(), 1, "one coalesced Initial");
    // Calm (no handshake in progress): admitted without a Retry, nothing sent by the gate.
    assert_eq!(
        gate.screen(now, c_addr, first[0].clone(), (0, 0)),
        Admission::Admit { validated: false }
    );
    assert!(flight(&mut gate, now).is_empty());
    // At the listener's pending-handshake limit: refused.
    assert_eq!(
        gate.screen(now, c_addr, first[0].clone(), (4, 0)),
        Admission::Answered
    );
    assert_eq!(gate.stats().refused, 1);
    assert_eq!(flight(&mut gate, now).len(), 1, "the refusal");
    // Under load (one handshake in progress elsewhere): a Retry.
    assert_eq!(
        gate.screen(now, c_addr, first[0].clone(), (1, 0)),
        Admission::Answered
    );
    assert_eq!(gate.stats().retries, 1);
    let retry = flight(&mut gate, now);
    assert_eq!(retry.len(), 1);
    cl.handle_datagram(now, s_addr, None, retry[0].clone());
    let second = flight(&mut cl, now);
    assert!(!second.is_empty(), "the client answers the Retry");
    // The token proves the address: admitted even under load, unless that address already
    // holds its share of handshakes in progress (`max_pending_handshakes_per_ip`).
    assert_eq!(
        gate.screen(now, c_addr, second[0].clone(), (3, 1)),
        Admission::Answered
    );
    assert_eq!(gate.stats().refused, 2);
    flight(&mut gate, now);
    assert_eq!(
        gate.screen(now, c_addr, second[0].clone(), (3, 0)),
        Admission::Admit { validated: true }
    );
    assert_eq!(gate.stats().retries, 1);
    // The connection's own endpoint takes the gate's token and completes the handshake.
    let mut own = QuicEndpoint::new(Some(&sc), None).unwrap();
    own.admit_all();
    for d in second {
        own.handle_datagram(now, c_addr, None, d);
    }
    let (mut client_up, mut server_up) = (false, false);
    for _ in 0..50 {
        while let Some(e) = own.poll_event() {
            match e {
                QuicEvent::Connected { .. } => server_up = true,
                QuicEvent::Closed { reason, .. } => panic!("the server closed: {reason}"),
                _ => {}
            }
        }
        while let Some(e) = cl.poll_event() {
            match e {
                QuicEvent::Connected { conn: c } if c == conn => client_up = true,
                QuicEvent::Closed { reason, .. } => panic!("the client closed: {reason}"),
                _ => {}
            }
        }
        if client_up && server_up {
            break;
        }
        now += Duration::from_micros(100);
        for d in flight(&mut own, now) {
            cl.handle_datagram(now, s_addr, None, d);
        }
        for d in flight(&mut cl, now) {
            own.handle_datagram(now, c_addr, None, d);
        }
    }
    assert!(client_up && server_up, "the handshake completed");
    assert_eq!(own.stats().accepted, 1);
    assert_eq!(own.stats().retries, 0, "the gate decided; no second Retry");
}
