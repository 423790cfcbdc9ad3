//! `quic://` end to end through two engines on loopback: unary calls (each on its own QUIC
//! stream), mutual TLS, a client with the wrong CA, and the missing settings named.

use std::time::Duration;

use netron_quic::{
    CertificateDer, ClientAuth, ClientConfig, Identity, PrivateKeyDer, ServerConfig, Trust,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::{Bytes, ConnectError, Engine, ProtocolConfig, Service};

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert: cert.der().clone(),
            issuer: cert,
            key,
        }
    }

    fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer, &self.key).unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

fn echo() -> Service {
    Service::new("echo", "1.0.0")
        .unwrap()
        .unary("say", |req, reply| {
            reply.write(req.payload());
            Ok(())
        })
        .bidi_stream("chat", |_req, mut rx, mut tx| async move {
            while let Some(m) = rx.recv().await {
                tx.send(m?).await?;
            }
            Ok(())
        })
}

fn server(ca: &Ca, auth: ClientAuth) -> Engine {
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.client_auth = auth;
    Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap()
}

fn client(trust: &Ca, identity: Option<Identity>) -> Engine {
    let mut cc = ClientConfig::new(Trust::Ca(vec![trust.cert.clone()]));
    cc.identity = identity;
    Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .unwrap()
}

const DL: Option<Duration> = Some(Duration::from_secs(10));

/// The UDP address of `e`'s first `quic://` listen.
fn quic_addr(e: &Engine) -> std::net::SocketAddr {
    let a = e.endpoints()[0].to_string();
    a.strip_prefix("quic://").unwrap().parse().unwrap()
}

/// A UDP socket connected to `e`'s first `quic://` listen, for a raw QUIC client.
fn raw_socket(e: &Engine) -> std::net::UdpSocket {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(quic_addr(e)).unwrap();
    sock
}

/// Waits up to 20 s for `done` to hold on `e`'s counters.
fn wait_stats(e: &Engine, done: impl Fn(&crate::CoreStats) -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !done(&e.total_stats()) {
        assert!(std::time::Instant::now() < until, "{:?}", e.total_stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn unary_calls_over_quic_each_on_its_own_stream() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let ep = s.endpoints()[0].to_string();
    assert!(
        ep.starts_with("quic://127.0.0.1:") && !ep.ends_with(":0"),
        "{ep}"
    );
    let c = client(&ca, None);
    let ch = c.client().connect(&ep).expect("connects over quic");
    for i in 0..50u32 {
        let payload = vec![i as u8; 1 + (i as usize * 997) % 20_000];
        let got = ch
            .call("echo@1.0.0", "say", Bytes::from(payload.clone()), DL)
            .expect("the call succeeds");
        assert_eq!(got, payload, "call {i}");
    }
    // Concurrent calls from several threads share the connection, each on its own stream.
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            let ch = ch.clone();
            sc.spawn(move || {
                for i in 0..20u8 {
                    let p = vec![t, i];
                    assert_eq!(ch.call("echo@1.0.0", "say", p.clone(), DL).unwrap(), p);
                }
            });
        }
    });
}

#[test]
fn quic_admits_as_many_concurrent_calls_as_max_concurrent_calls() {
    // docs/protocol.md §27.2 rule 6: the QUIC stream limit follows max_concurrent_calls
    // (1024 by default), not netron-quic's own default of 101 streams. The server answers
    // nothing until 300 calls are in flight at once: under a 101-stream limit the 101st
    // waits for a stream that never frees, and every call reaches its deadline.
    use std::sync::{Arc, Mutex};
    const N: usize = 300;
    let held: Arc<Mutex<Vec<crate::DeferredReply>>> = Arc::default();
    let h = held.clone();
    let svc = Service::new("gate", "1.0.0")
        .unwrap()
        .unary_deferred("wait", move |_req, reply| {
            let mut held = h.lock().unwrap();
            held.push(reply);
            if held.len() == N {
                for r in held.drain(..) {
                    r.answer(Ok(Bytes::from_static(b"go")));
                }
            }
        });
    let ca = Ca::new("ca");
    let s = Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default().with_quic_server(ServerConfig::new(
                ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
            )),
        )
        .service(svc)
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let c = client(&ca, None);
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    std::thread::scope(|sc| {
        let calls: Vec<_> = (0..N)
            .map(|_| {
                let ch = ch.clone();
                sc.spawn(move || ch.call("gate@1.0.0", "wait", vec![], DL))
            })
            .collect();
        for call in calls {
            assert_eq!(call.join().unwrap().expect("every call is answered"), b"go");
        }
    });
}

#[test]
fn a_reply_larger_than_quic_flow_control_holds_arrives_whole() {
    // 6 MiB each way: more than a stream's 1 MiB window and the link's 4 MiB bound, so the
    // router holds bytes back and the link resumes the connection's output as QUIC takes them.
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let c = client(&ca, None);
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    let big: Vec<u8> = (0..6 << 20).map(|i: u32| (i % 251) as u8).collect();
    for _ in 0..2 {
        let got = ch
            .call("echo@1.0.0", "say", Bytes::from(big.clone()), DL)
            .expect("a large call succeeds");
        assert!(got == big, "the echo differs");
    }
}

#[test]
fn junk_datagrams_open_no_connection_and_a_client_after_them_is_served() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let ep = s.endpoints()[0].to_string();
    let addr: std::net::SocketAddr = ep.trim_start_matches("quic://").parse().unwrap();
    // 300 datagrams that are not QUIC, each from a source port of its own (as a flood from
    // many addresses): one byte, a short header of nothing, a long header with garbage.
    let mut long = vec![0xc0u8, 0, 0, 0, 1, 8];
    long.extend_from_slice(&[0x5a; 1200]);
    for i in 0..300 {
        let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bytes: &[u8] = match i % 3 {
            0 => &[0x42],
            1 => &[0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            _ => &long,
        };
        junk.send_to(bytes, addr).unwrap();
    }
    // The listener reads its datagrams in order: once a real client (sent after them) is
    // served, every junk datagram was seen, and none of them became a connection.
    let c = client(&ca, None);
    let ch = c
        .client()
        .connect(&ep)
        .expect("connects over quic after the junk");
    assert_eq!(ch.call("echo@1.0.0", "say", vec![7u8], DL).unwrap(), [7]);
    assert_eq!(s.total_stats().accepted(), 1, "junk opened connections");
}

#[test]
fn a_second_listener_on_a_quic_port_in_use_is_refused_naming_it() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let ep = s.endpoints()[0].to_string();
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let err = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(echo())
        .listen(&ep)
        .build()
        .map(drop)
        .expect_err("a second listener took the port");
    let text = err.to_string();
    assert!(text.contains("address in use"), "{text}");
}

#[test]
fn clean_closes_count_no_error_and_a_refused_handshake_counts_its_kind() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::Required(vec![ca.cert.clone()]));
    let ep = s.endpoints()[0].to_string();
    for i in 0..5u8 {
        let id = ca.leaf("client-a", ExtendedKeyUsagePurpose::ClientAuth);
        let c = client(&ca, Some(id));
        let ch = c.client().connect(&ep).unwrap();
        assert_eq!(ch.call("echo@1.0.0", "say", vec![i], DL).unwrap(), [i]);
        c.shutdown(Duration::from_secs(2));
    }
    wait_stats(&s, |st| st.closed() >= 5);
    let errors = s.total_stats().errors().clone();
    assert!(
        !errors.keys().any(|k| k.starts_with("quic_")),
        "clean closes counted as errors: {errors:?}"
    );
    // A client without the required certificate: the server counts a TLS failure.
    let anon = client(&ca, None);
    let _ = anon.client().connect_timeout(&ep, Duration::from_secs(5));
    wait_stats(&s, |st| st.errors_of("quic_tls_failed") > 0);
}

/// A UDP forwarder between one client and a server, on a port of its own: the client dials
/// the forwarder. [`Forwarder::kill`] closes its port with no CONNECTION_CLOSE, as a server
/// process killed with `kill -9` would: the client's next datagrams draw ICMP port
/// unreachable.
///
/// [`Forwarder::lossy`] also impairs the path, deterministically: after the first 20
/// datagrams (the handshake), every `drop`-th datagram is dropped and every `hold`-th is held
/// back and sent after the next one (reordered), each way.
struct Forwarder {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Datagrams dropped and reordered so far.
    impaired: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// Where the client's datagrams go ([`Forwarder::redirect`]).
    upstream: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(server: std::net::SocketAddr) -> Self {
        Self::lossy(server, 0, 0)
    }

    fn lossy(server: std::net::SocketAddr, drop: u64, hold: u64) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let impaired = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(server));
        let (halt, count, up) = (stop.clone(), impaired.clone(), upstream.clone());
        let thread = std::thread::spawn(move || {
            let (mut buf, mut client) = (vec![0u8; 65_535], None);
            let (mut n_seen, mut held): (u64, Option<(Vec<u8>, std::net::SocketAddr)>) = (0, None);
            while !halt.load(Ordering::Acquire) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                // The first sender is the client; the rest is the server's (any of them).
                let client = *client.get_or_insert(from);
                let to = if from == client {
                    *up.lock().unwrap()
                } else {
                    client
                };
                n_seen += 1;
                let impair = n_seen > 20;
                if impair && drop > 0 && n_seen % drop == 0 {
                    count[0].fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if impair && hold > 0 && n_seen % hold == 0 && held.is_none() {
                    count[1].fetch_add(1, Ordering::Relaxed);
                    held = Some((buf[..n].to_vec(), to));
                    continue;
                }
                let _ = sock.send_to(&buf[..n], to);
                if let Some((late, to)) = held.take() {
                    let _ = sock.send_to(&late, to);
                }
            }
        });
        Self {
            port,
            stop,
            impaired,
            upstream,
            thread: Some(thread),
        }
    }

    /// Sends the client's datagrams to `server` from now on (a server restarted elsewhere, as
    /// the client sees it: same address, no state).
    fn redirect(&self, server: std::net::SocketAddr) {
        *self.upstream.lock().unwrap() = server;
    }

    /// Datagrams dropped and reordered so far.
    fn impaired(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.impaired[0].load(Relaxed),
            self.impaired[1].load(Relaxed),
        )
    }

    /// Closes the forwarder's port (its thread ends and drops the socket).
    fn kill(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.thread.take().map(std::thread::JoinHandle::join);
    }
}

/// Runs one QUIC handshake from `sock` (connected to the server) with a raw client endpoint
/// and closes the connection (`close`) or leaves it open as a killed client would. Every
/// datagram goes out once: QUIC's timers are never run, so nothing is retransmitted and a
/// dropped Initial means no answer. `Err`: no answer, or the server's refusal.
fn raw_handshake(sock: &std::net::UdpSocket, cc: &ClientConfig, close: bool) -> Result<(), String> {
    use netron_quic::{QuicEndpoint, QuicEvent};
    let server = sock.peer_addr().unwrap();
    let mut ep = QuicEndpoint::new(None, Some(cc)).unwrap();
    let conn = ep
        .connect(std::time::Instant::now(), server, "127.0.0.1")
        .unwrap();
    let (mut tx, mut rx) = (Vec::new(), vec![0u8; 65_535]);
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    loop {
        while let Some(t) = ep.poll_transmit(std::time::Instant::now(), &mut tx) {
            sock.send(&tx[..t.len]).unwrap();
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                QuicEvent::Connected { .. } if close => {
                    ep.close(std::time::Instant::now(), conn, 0, b"bye")
                        .unwrap();
                    while let Some(t) = ep.poll_transmit(std::time::Instant::now(), &mut tx) {
                        sock.send(&tx[..t.len]).unwrap();
                    }
                    return Ok(());
                }
                QuicEvent::Connected { .. } => return Ok(()),
                QuicEvent::Closed { reason, .. } => return Err(reason.to_string()),
                _ => {}
            }
        }
        let n = sock
            .recv(&mut rx)
            .map_err(|e| format!("no answer from the server: {e}"))?;
        ep.handle_datagram(
            std::time::Instant::now(),
            server,
            None,
            bytes::BytesMut::from(&rx[..n]),
        );
    }
}

/// An `echo@1.0.0/say` Request frame with id `id`, as a raw peer without a dynamic table
/// writes it (HPACK, static table and literals: `header_table_size` 0, §27.4 (a)).
fn echo_request(id: u32, deadline: Duration, payload: &[u8]) -> Vec<u8> {
    let mut enc = netron_codec::hpack::HeaderEncoder::new(0);
    let mut b = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
    b.request(id, Some(deadline))
        .unwrap()
        .headers(
            &mut enc,
            &[
                netron_codec::hpack::Header::service(b"echo@1.0.0"),
                netron_codec::hpack::Header::method(b"say"),
            ],
        )
        .unwrap()
        .payload(payload)
        .finish()
        .unwrap();
    b.as_slice().to_vec()
}

/// A raw QUIC client that speaks Netron by hand ([`close::RawPeer`]): it connects to
/// `addr` and completes the Netron handshake, then calls `welcomed(endpoint, conn, control
/// stream)` once and `turn(endpoint, conn)` on every loop; returns the reason of the
/// CONNECTION_CLOSE that ends the connection (20 s at most).
fn raw_netron_client(
    addr: std::net::SocketAddr,
    ca: &Ca,
    welcomed: impl FnOnce(&mut netron_quic::QuicEndpoint, netron_quic::ConnId, netron_quic::StreamId),
    mut turn: impl FnMut(&mut netron_quic::QuicEndpoint, netron_quic::ConnId),
) -> netron_quic::CloseReason {
    let mut p = close::RawPeer::connect(addr, ca);
    welcomed(&mut p.ep, p.conn, p.control);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < until,
            "no CONNECTION_CLOSE from the server"
        );
        turn(&mut p.ep, p.conn);
        p.turn(false);
        if let Some(reason) = p.closed.take() {
            return reason;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_connection_error_closes_quic_with_its_status_code() {
    // docs/protocol.md §27.1: Error(0) on the control stream, then CONNECTION_CLOSE with the
    // application error code = the status code (it was 0, a clean close, and a close drops
    // unsent stream data, so the peer could learn nothing). A raw QUIC client completes the
    // Netron handshake, then sends a frame of an unknown kind.
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let reason = raw_netron_client(
        quic_addr(&s),
        &ca,
        |ep, conn, control| {
            // A frame of an unknown kind: a connection error.
            let bad = [16, 0, 0, 0, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
            ep.write(conn, control, &bad).unwrap();
        },
        |_, _| {},
    );
    let netron_quic::CloseReason::Application { code, reason } = reason else {
        panic!("not an application close: {reason}");
    };
    let status = netron_codec::StatusCode::from_u16(code as u16);
    assert!(
        code != 0 && status != netron_codec::StatusCode::Unknown,
        "code {code} ({status}): {reason}"
    );
    assert!(reason.contains("kind"), "the reason says why: {reason}");
}

#[test]
fn calls_whose_bytes_quic_spreads_over_many_streams_are_not_taken_for_a_slowloris() {
    // A peer sends 40 calls of 8 KiB at once, 256 bytes of each in turn every 20 ms: no frame
    // completes for ~640 ms, over twice the stall timeout, yet the peer sends ~150 KiB in
    // every stall timeout, more than any of its frames misses. QUIC senders spread their
    // bytes over streams like this (flow control, round-robin scheduling), so it is progress,
    // not a trickle: every call is answered and nothing is cut off as `stalled` (a clock per
    // frame alone, or one since the last whole frame, cut this peer off).
    let ca = Ca::new("ca");
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let s = Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default()
                .with_quic_server(sc)
                .with_stall_timeout(Duration::from_millis(300)),
        )
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let calls = 40;
    let streams = std::cell::RefCell::new(Vec::<(netron_quic::StreamId, Vec<u8>, usize)>::new());
    let mut last = std::time::Instant::now();
    let reason = raw_netron_client(
        quic_addr(&s),
        &ca,
        |ep, conn, _| {
            for i in 0..calls {
                let st = ep.open_bi(conn).unwrap().expect("stream credit");
                let request = echo_request(2 * i + 1, Duration::from_secs(20), &[7u8; 8 << 10]);
                streams.borrow_mut().push((st, request, 0));
            }
        },
        |ep, conn| {
            if s.total_stats().calls_ok() == u64::from(calls) {
                ep.close(std::time::Instant::now(), conn, 0, b"done")
                    .unwrap();
                return;
            }
            if last.elapsed() < Duration::from_millis(20) {
                return;
            }
            last = std::time::Instant::now();
            for (st, bytes, sent) in streams.borrow_mut().iter_mut() {
                if *sent < bytes.len() {
                    let end = (*sent + 256).min(bytes.len());
                    *sent += ep.write(conn, *st, &bytes[*sent..end]).unwrap_or(0);
                    if *sent == bytes.len() {
                        ep.finish(conn, *st).unwrap();
                    }
                }
            }
        },
    );
    assert!(
        matches!(reason, netron_quic::CloseReason::Local),
        "the client closed, not the server: {reason}"
    );
    let st = s.total_stats();
    assert_eq!(st.calls_ok(), u64::from(calls), "{st:?}");
    assert_eq!(st.errors_of("stalled"), 0, "{st:?}");
}

#[test]
fn partial_frames_on_many_quic_streams_are_charged_to_the_cores_buffer_budget() {
    // A byte stream holds one partial frame, charged to the core's buffer budget
    // (ProtocolConfig::max_buffer_bytes); over QUIC the router holds one per stream, and
    // they were charged to nothing: a peer could make a core hold max_frame_size (16 MiB)
    // per stream it opened. Here four streams each carry 6 MiB of an 8 MiB Request against
    // a 20 MiB budget: the connection is refused naming the budget (ResourceExhausted), its
    // Error(0) first, and the core holds nothing after.
    let ca = Ca::new("ca");
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let budget = 20 << 20;
    let s = Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default()
                .with_quic_server(sc)
                .with_max_buffer_bytes(budget),
        )
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let (frame_len, sent_each) = (8usize << 20, 6usize << 20);
    let streams = std::cell::RefCell::new(Vec::<(netron_quic::StreamId, Vec<u8>, usize)>::new());
    let chunk = vec![0u8; 64 << 10];
    let reason = raw_netron_client(
        quic_addr(&s),
        &ca,
        |ep, conn, _| {
            for id in [1u32, 3, 5, 7] {
                let st = ep.open_bi(conn).unwrap().expect("stream credit");
                let h = netron_codec::FrameHeader::new(
                    frame_len as u32,
                    netron_codec::FrameKind::Request,
                    netron_codec::Flags::empty(),
                    0,
                    id,
                    0,
                );
                streams.borrow_mut().push((st, h.as_bytes().to_vec(), 0));
            }
        },
        |ep, conn| {
            for (st, head, sent) in streams.borrow_mut().iter_mut() {
                if !head.is_empty() {
                    let n = ep.write(conn, *st, head).unwrap_or(0);
                    head.drain(..n);
                    continue;
                }
                while *sent < sent_each {
                    let n = ep.write(conn, *st, &chunk[..chunk.len().min(sent_each - *sent)]);
                    match n {
                        Ok(n) if n > 0 => *sent += n,
                        _ => break,
                    }
                }
            }
        },
    );
    let netron_quic::CloseReason::Application { code, reason } = reason else {
        panic!("not an application close: {reason}");
    };
    assert_eq!(
        code,
        netron_codec::StatusCode::ResourceExhausted as u64,
        "{reason}"
    );
    assert!(reason.contains("max_buffer_bytes"), "{reason}");
    // The link's charge goes with it (`buffer_bytes`: the budget in use).
    wait_stats(&s, |st| {
        st.errors_of("buffer_budget") == 1 && st.closed() == 1 && st.buffer_bytes() == 0
    });
}

#[test]
fn a_new_connection_from_a_reused_port_is_served_at_once() {
    // Fresh user R8's finding 4: the listener ignored an address for 2 s after handing it to
    // a connection, so a client reconnecting from the same port waited for QUIC to resend its
    // Initial (~1 s, then 2 s). Here nothing is ever resent: the second handshake gets an
    // answer only if the listener serves its first Initial.
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    let sock = raw_socket(&s);
    raw_handshake(&sock, &cc, true).expect("the first connection");
    // The server's socket for the first connection is gone once the connection is counted
    // closed (until then the kernel would hand it the new connection's datagrams).
    wait_stats(&s, |st| st.closed() >= 1);
    raw_handshake(&sock, &cc, true).expect("a second connection from the same port, at once");
}

#[test]
fn a_forged_initial_does_not_lock_the_real_client_out() {
    // Fresh user R10's finding A: one Initial from a client's address (forged; it never
    // completes a handshake) made the listener hold a connection for that address, and the
    // real client was refused until the handshake timeout (~10 s; forever if re-sent). A new
    // Initial now replaces a connection whose handshake never completed.
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    let sock = raw_socket(&s);
    // The forger: its first flight only, nothing after.
    let mut forged = netron_quic::QuicEndpoint::new(None, Some(&cc)).unwrap();
    let now = std::time::Instant::now();
    forged.connect(now, quic_addr(&s), "127.0.0.1").unwrap();
    let mut tx = Vec::new();
    while let Some(t) = forged.poll_transmit(now, &mut tx) {
        sock.send(&tx[..t.len]).unwrap();
    }
    wait_stats(&s, |st| st.accepted() >= 1);
    // The real client, from the same address and port, at once (nothing resent: only an
    // answer to its first Initial lets it in).
    raw_handshake(&sock, &cc, false).expect("the real client is served at once");
}

#[test]
fn a_second_connection_on_a_live_connections_port_is_refused_not_mixed_in() {
    // Fresh user R9's finding 1: a client killed and replaced on its port (or a forged
    // Initial from it) had its new connection accepted by the old connection's endpoint and
    // served as the old connection, with the old client's certificate. Now the endpoint of a
    // connected socket takes one connection: the second is refused, the first goes on.
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    let sock = raw_socket(&s);
    raw_handshake(&sock, &cc, false).expect("the first connection, left open");
    wait_stats(&s, |st| st.accepted() >= 1);
    let err = raw_handshake(&sock, &cc, false).expect_err("the second is refused");
    assert!(err.contains("still open"), "{err}");
    assert_eq!(s.total_stats().accepted(), 1, "{:?}", s.total_stats());
}

#[test]
fn an_ipv6_wildcard_listener_takes_ipv4_clients_too() {
    // As tcp://[::]:p does (fresh user R8's finding 5: quic://[::] was IPv6-only).
    let ca = Ca::new("ca");
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.client_auth = ClientAuth::None;
    let Ok(s) = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(echo())
        .listen("quic://[::]:0")
        .build()
    else {
        // A host without IPv6 cannot bind [::] at all; nothing to check there.
        assert!(std::net::UdpSocket::bind("[::]:0").is_err());
        return;
    };
    let ep = s.endpoints()[0].to_string();
    let port = ep.rsplit_once(':').unwrap().1;
    let c = client(&ca, None);
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{port}"))
        .expect("an IPv4 client reaches quic://[::]");
    assert_eq!(ch.call("echo@1.0.0", "say", vec![4], DL).unwrap(), [4]);
}

#[test]
fn the_endpoint_a_wildcard_listen_reports_can_be_dialled() {
    // R9 finding 7: quic://0.0.0.0:p, as `endpoints()` reports it, failed with "invalid
    // remote address"; as for tcp://, it means this host.
    let ca = Ca::new("ca");
    let s = Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default().with_quic_server(ServerConfig::new(
                ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
            )),
        )
        .service(echo())
        .listen("quic://0.0.0.0:0")
        .build()
        .unwrap();
    let ep = s.endpoints()[0].to_string();
    assert!(ep.starts_with("quic://0.0.0.0:"), "{ep}");
    let c = client(&ca, None);
    let ch = c.client().connect(&ep).expect("dials this host");
    assert_eq!(ch.call("echo@1.0.0", "say", vec![7], DL).unwrap(), [7]);
}

#[test]
fn a_server_killed_with_calls_in_flight_fails_them_promptly() {
    // R9 finding 4: the requests were acknowledged before the server died, so the client
    // sent nothing more and heard no ICMP until Netron's keepalive (15 s + 10 s). A link with
    // calls waiting now sends a QUIC PING after a second of silence.
    server_killed_with_a_call_in_flight(crate::RuntimeConfig::default(), false);
}

#[test]
fn a_server_killed_fails_the_calls_of_a_hot_busy_poll_client_promptly() {
    // The same with the client's link read directly by a busy-poll core the whole time (no
    // poll armed, no completion): the probe, the ICMP errors and the end come through
    // `QuicLink::read_direct`, and the call fails naming the cause, not at its deadline.
    let stay_hot = crate::RuntimeConfig::default()
        .with_idle(crate::IdlePolicy::BusyPoll)
        .with_direct_recv(Some(crate::DirectRecv::new(8, Duration::from_secs(600))));
    server_killed_with_a_call_in_flight(stay_hot, true);
}

fn server_killed_with_a_call_in_flight(client_runtime: crate::RuntimeConfig, hot: bool) {
    use std::sync::{Arc, Mutex};
    let held: Arc<Mutex<Vec<crate::DeferredReply>>> = Arc::default();
    let h = held.clone();
    let svc = Service::new("hold", "1.0.0")
        .unwrap()
        .unary_deferred("forever", move |_req, reply| h.lock().unwrap().push(reply));
    let ca = Ca::new("ca");
    let s = Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default().with_quic_server(ServerConfig::new(
                ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
            )),
        )
        .service(svc)
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let addr = quic_addr(&s);
    let fwd = Forwarder::start(addr);
    // No Netron keepalive: nothing but the probe makes the client send (before it, the call
    // waited for QUIC's idle timeout, 30 s, and failed naming it).
    let c = Engine::builder()
        .cores(1)
        .config(crate::CoreConfig::new(
            client_runtime,
            ProtocolConfig::default()
                .with_keepalive(Duration::ZERO, Duration::from_secs(10))
                .with_quic_client(ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]))),
        ))
        .build()
        .unwrap();
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", fwd.port))
        .unwrap();
    let call = std::thread::spawn(move || {
        ch.call(
            "hold@1.0.0",
            "forever",
            vec![1],
            Some(Duration::from_secs(120)),
        )
    });
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while held.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < until,
            "the call never reached the server"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Everything acknowledged both ways: the path falls silent, as it is when a server
    // dies in a long call.
    std::thread::sleep(Duration::from_millis(300));
    fwd.kill();
    let err = call.join().unwrap().expect_err("the server is gone");
    assert_eq!(err.code(), crate::StatusCode::Unavailable, "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    let st = c.total_stats();
    assert_eq!(st.errors_of("quic_peer_unreachable"), 1, "{st:?}");
    assert_eq!(st.driver().hot_promotions > 0, hot, "{st:?}");
    c.shutdown(Duration::from_secs(1));
}

#[test]
fn a_restarted_server_resets_its_old_clients_at_once() {
    // R9 finding 5: after a restart the server knows nothing of its old connections; their
    // next packets drew no stateless reset the clients would accept (each endpoint had a
    // random reset key), so they hung until the keepalive or the idle timeout. The reset key
    // now derives from the server's identity: the restarted server (another engine with the
    // same identity, which the forwarder now reaches) resets them.
    let ca = Ca::new("ca");
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let serve = |sc: ServerConfig| {
        Engine::builder()
            .cores(1)
            .config(ProtocolConfig::default().with_quic_server(sc))
            .service(echo())
            .listen("quic://127.0.0.1:0")
            .build()
            .unwrap()
    };
    let (first, second) = (serve(sc.clone()), serve(sc));
    let fwd = Forwarder::start(quic_addr(&first));
    // No keepalive: only the reset can end the old connection before QUIC's idle timeout.
    let c = Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default()
                .with_keepalive(Duration::ZERO, Duration::from_secs(10))
                .with_quic_client(ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]))),
        )
        .build()
        .unwrap();
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", fwd.port))
        .unwrap();
    assert_eq!(ch.call("echo@1.0.0", "say", vec![1], DL).unwrap(), [1]);
    fwd.redirect(quic_addr(&second));
    let err = ch
        .call("echo@1.0.0", "say", vec![2], Some(Duration::from_secs(120)))
        .expect_err("the old connection is gone");
    assert!(err.to_string().contains("reset"), "{err}");
    drop(first);
}

#[test]
fn calls_and_streams_survive_loss_and_reordering_on_the_path() {
    // The engine over an impaired path (quinn's loss recovery under the router and link):
    // 1 datagram in 13 dropped and 1 in 7 held behind the next, both ways; calls of 1 byte to
    // 200 KB, one at a time and from four threads, all answered exactly, and a stream.
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let addr = quic_addr(&s);
    let fwd = Forwarder::lossy(addr, 13, 7);
    let c = client(&ca, None);
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", fwd.port))
        .unwrap();
    let dl = Some(Duration::from_secs(30));
    for i in 0..40u32 {
        let payload: Vec<u8> = (0..1 + (i as usize * 5_003) % 200_000)
            .map(|j| (j as u32 ^ i) as u8)
            .collect();
        let got = ch.call("echo@1.0.0", "say", payload.clone(), dl).unwrap();
        assert!(got == payload, "call {i}: the echo differs");
    }
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            let ch = ch.clone();
            sc.spawn(move || {
                for i in 0..25u8 {
                    let p = vec![t ^ i; 1 + usize::from(i) * 1_500];
                    assert_eq!(ch.call("echo@1.0.0", "say", p.clone(), dl).unwrap(), p);
                }
            });
        }
    });
    // A bidirectional stream: 60 messages of 1 B to 60 KB, echoed in order.
    let opts = crate::CallOptions::new().deadline(Duration::from_secs(60));
    let (mut tx, mut rx) = ch.open_bidi("echo@1.0.0", "chat", &opts);
    let msgs: Vec<Vec<u8>> = (0..60u32)
        .map(|i| vec![i as u8; 1 + (i as usize * 7_919) % 60_000])
        .collect();
    block_on(async {
        for m in &msgs {
            tx.send(Bytes::from(m.clone())).await.unwrap();
        }
        tx.finish();
        for (i, m) in msgs.iter().enumerate() {
            let got = rx
                .recv()
                .await
                .expect("a message")
                .expect("the stream goes on");
            assert!(got[..] == m[..], "stream message {i} differs");
        }
        assert!(
            rx.recv().await.is_none(),
            "the stream ends after the echoes"
        );
    });
    let (dropped, reordered) = fwd.impaired();
    assert!(
        dropped > 20 && reordered > 20,
        "the path was impaired: {dropped} dropped, {reordered} reordered"
    );
    fwd.kill();
}

#[test]
fn a_killed_server_fails_calls_at_once_not_at_the_idle_timeout() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let addr = quic_addr(&s);
    let fwd = Forwarder::start(addr);
    let c = client(&ca, None);
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", fwd.port))
        .unwrap();
    assert_eq!(ch.call("echo@1.0.0", "say", vec![1], DL).unwrap(), [1]);
    fwd.kill();
    // Before: the call waited for QUIC's idle timeout (30 s) and failed naming it, or for
    // this deadline; the ICMP answers now end the connection as unreachable.
    let err = ch
        .call("echo@1.0.0", "say", vec![2], Some(Duration::from_secs(120)))
        .expect_err("nothing answers any more");
    assert_eq!(err.code(), crate::StatusCode::Unavailable, "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(
        c.total_stats().errors_of("quic_peer_unreachable"),
        1,
        "{:?}",
        c.total_stats()
    );
}

#[test]
fn mutual_tls_is_accepted_with_a_client_certificate_and_refused_without() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::Required(vec![ca.cert.clone()]));
    let ep = s.endpoints()[0].to_string();
    let id = ca.leaf("client-a", ExtendedKeyUsagePurpose::ClientAuth);
    let ok = client(&ca, Some(id));
    let ch = ok
        .client()
        .connect(&ep)
        .expect("a client certificate is accepted");
    assert_eq!(ch.call("echo@1.0.0", "say", vec![1], DL).unwrap(), vec![1]);
    let anon = client(&ca, None);
    let err = anon
        .client()
        .connect_timeout(&ep, Duration::from_secs(5))
        .expect_err("no certificate, no connection");
    // TLS 1.3: the client's handshake completes before the server checks its certificate,
    // so the refusal arrives as a close; still a TLS failure, and it says so (fresh user R8's
    // finding 7: it was `ConnectError::Closed`).
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("certificate") && msg.contains("ClientConfig::identity"),
        "{msg}"
    );
}

/// Lets a call through only if its caller showed a certificate (mutual TLS).
struct CertificateRequired;
impl crate::Interceptor for CertificateRequired {
    fn before(&self, call: &mut crate::Before<'_>) -> Result<(), crate::Status> {
        match call.peer_certificates() {
            Some(c) if !c.leaf().is_empty() => Ok(()),
            _ => Err(crate::Status::new(
                crate::StatusCode::PermissionDenied,
                "no client certificate",
            )),
        }
    }
}

#[test]
fn handlers_and_interceptors_see_the_callers_verified_certificate() {
    let ca = Ca::new("ca");
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.client_auth = ClientAuth::Required(vec![ca.cert.clone()]);
    let svc = Service::new("who", "1.0.0")
        .unwrap()
        .interceptor(CertificateRequired)
        .unary("sync", |req, reply| {
            let certs = req.peer_certificates().expect("the caller's chain");
            reply.write(certs.leaf());
            Ok(())
        })
        .unary_async("async", |req| async move {
            let certs = req.peer_certificates().expect("the caller's chain");
            Ok(Bytes::copy_from_slice(certs.leaf()))
        });
    let s = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(svc)
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let id = ca.leaf("client-a", ExtendedKeyUsagePurpose::ClientAuth);
    let mine = id.chain[0].to_vec();
    let c = client(&ca, Some(id));
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    for method in ["sync", "async"] {
        let got = ch.call("who@1.0.0", method, vec![], DL).unwrap();
        assert!(got == mine, "{method}: the handler saw another certificate");
    }
}

/// The same check as an async interceptor (fresh user R9's finding 3: behind one, sync,
/// deferred and stream handlers lost the certificates, and the hook itself saw none on a
/// stream).
struct CertificateRequiredAsync;
impl crate::AsyncInterceptor for CertificateRequiredAsync {
    fn before(&self, req: crate::AsyncRequest) -> crate::InterceptFuture {
        Box::pin(async move {
            match req.peer_certificates() {
                Some(c) if !c.leaf().is_empty() => Ok(req),
                _ => Err(crate::Status::new(
                    crate::StatusCode::PermissionDenied,
                    "no client certificate (async)",
                )),
            }
        })
    }
}

/// Polls `f` to completion on this thread (parking between wake-ups).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

#[test]
fn handlers_behind_async_interceptors_see_the_callers_certificate() {
    let ca = Ca::new("ca");
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.client_auth = ClientAuth::Required(vec![ca.cert.clone()]);
    let leaf = |c: Option<&crate::PeerCertificates>| {
        Bytes::copy_from_slice(c.expect("the caller's chain").leaf())
    };
    let svc = Service::new("who", "1.0.0")
        .unwrap()
        .async_interceptor(CertificateRequiredAsync)
        .unary("sync", move |req, reply| {
            reply.write(&leaf(req.peer_certificates()));
            Ok(())
        })
        .unary_deferred("deferred", move |req, reply| {
            reply.answer(Ok(leaf(req.peer_certificates())));
        })
        .server_stream("stream", move |req, _first, mut tx| async move {
            tx.send(leaf(req.peer_certificates())).await?;
            Ok(())
        });
    let s = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(svc)
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let id = ca.leaf("client-a", ExtendedKeyUsagePurpose::ClientAuth);
    let mine = id.chain[0].to_vec();
    let c = client(&ca, Some(id));
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    for method in ["sync", "deferred"] {
        let got = ch.call("who@1.0.0", method, vec![], DL).unwrap();
        assert!(got == mine, "{method}: the handler saw another certificate");
    }
    let opts = crate::CallOptions::new().deadline(Duration::from_secs(10));
    let mut rx = ch.open_server_stream("who@1.0.0", "stream", vec![0u8], &opts);
    let got = block_on(rx.recv())
        .expect("a message")
        .expect("the stream is served");
    assert!(
        got[..] == mine[..],
        "stream: the handler saw another certificate"
    );
}

#[test]
fn a_client_with_the_wrong_ca_gets_a_clear_error() {
    let ca = Ca::new("ca");
    let other = Ca::new("other");
    let s = server(&ca, ClientAuth::None);
    let ep = s.endpoints()[0].to_string();
    let c = client(&other, None);
    let err = c
        .client()
        .connect_timeout(&ep, Duration::from_secs(5))
        .expect_err("an unknown CA is refused");
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}"); // was `Io` (R8 finding 7)
    let msg = err.to_string();
    assert!(
        msg.contains("UnknownIssuer") || msg.contains("unknown_ca"),
        "{msg}"
    );
    assert!(
        msg.contains("ClientConfig::trust"),
        "names what to check: {msg}"
    );
}

#[test]
fn missing_quic_settings_are_named() {
    let e = Engine::builder()
        .cores(1)
        .listen("quic://127.0.0.1:0")
        .build()
        .map(|_| ())
        .expect_err("no server config");
    assert!(
        e.to_string().contains("ProtocolConfig::with_quic_server"),
        "{e}"
    );
    let c = Engine::builder().cores(1).build().unwrap();
    let e = c
        .client()
        .connect("quic://127.0.0.1:9")
        .expect_err("no client config");
    assert!(matches!(e, ConnectError::Io { .. }), "{e:?}");
    assert!(
        e.to_string().contains("ProtocolConfig::with_quic_client"),
        "{e}"
    );
}

#[test]
fn unusable_quic_settings_fail_the_build_naming_them() {
    // R9 finding 6: a client key that does not match its certificate, or an empty CA list,
    // passed `build()` and failed every connect later as `ConnectError::Io`.
    let ca = Ca::new("ca");
    let other = Ca::new("other");
    let mut id = ca.leaf("client-a", ExtendedKeyUsagePurpose::ClientAuth);
    id.key = other.leaf("x", ExtendedKeyUsagePurpose::ClientAuth).key;
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.identity = Some(id);
    let e = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .map(|_| ())
        .expect_err("a key that is not the certificate's");
    assert!(
        e.to_string().contains("ProtocolConfig::with_quic_client"),
        "{e}"
    );
    let e = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(ClientConfig::new(Trust::Ca(vec![]))))
        .build()
        .map(|_| ())
        .expect_err("no trusted CA at all");
    assert!(
        e.to_string().contains("ProtocolConfig::with_quic_client"),
        "{e}"
    );
}

#[test]
fn a_connection_past_the_limit_is_refused_at_once_naming_it() {
    let ca = Ca::new("ca");
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let s = Engine::builder()
        .cores(1)
        .config(crate::RuntimeConfig::default().with_max_connections(1))
        .quic_server(sc)
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let ep = s.endpoints()[0].to_string();
    let c = client(&ca, None);
    let first = c.client().connect(&ep).expect("the first connection fits");
    assert_eq!(
        first.call("echo@1.0.0", "say", vec![3], DL).unwrap(),
        vec![3]
    );
    let start = std::time::Instant::now();
    let err = c
        .client()
        .connect_timeout(&ep, Duration::from_secs(8))
        .expect_err("the second is refused");
    let msg = err.to_string();
    assert!(msg.contains("max_connections"), "{msg}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "refused before the timeout"
    );
}

/// A server engine listening on quic:// with `retry` and `max_pending` handshakes.
fn server_with_admission(ca: &Ca, retry: netron_quic::RetryPolicy, max_pending: usize) -> Engine {
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.retry = retry;
    sc.max_pending_handshakes = max_pending;
    Engine::builder()
        .cores(1)
        .quic_server(sc)
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap()
}

/// Proves its address to the server at `sock`'s peer (answers the Retry the server sends
/// first) and then vanishes, as one real host repeating this from many ports would: each
/// counts as a proven client's handshake in progress of 127.0.0.1.
fn proven_then_vanished(sock: &std::net::UdpSocket, cc: &ClientConfig) {
    let mut ep = netron_quic::QuicEndpoint::new(None, Some(cc)).unwrap();
    let server = sock.peer_addr().unwrap();
    let now = std::time::Instant::now();
    ep.connect(now, server, "127.0.0.1").unwrap();
    let mut tx = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut tx) {
        sock.send(&tx[..t.len]).unwrap();
    }
    let mut rx = vec![0u8; 65_535];
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = sock.recv(&mut rx).expect("the server's Retry");
    ep.handle_datagram(
        std::time::Instant::now(),
        server,
        None,
        bytes::BytesMut::from(&rx[..n]),
    );
    while let Some(t) = ep.poll_transmit(std::time::Instant::now(), &mut tx) {
        sock.send(&tx[..t.len]).unwrap();
    }
}

#[test]
fn one_host_holds_at_most_its_share_of_the_handshake_budget() {
    // Fresh user R13's finding 1: a host that answers Retry and vanishes, from many ports,
    // filled the whole budget (1,024 in 1 s) and locked every new client out. Proven clients
    // are now also counted per IP address, across every address of the listen.
    let ca = Ca::new("ca");
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.retry = netron_quic::RetryPolicy::Always;
    sc.max_pending_handshakes_per_ip = 2;
    let s = Engine::builder()
        .cores(1)
        .quic_server(sc)
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    for _ in 0..2 {
        proven_then_vanished(&raw_socket(&s), &cc);
    }
    wait_stats(&s, |st| st.accepted() >= 2);
    let c = client(&ca, None);
    let err = c
        .client()
        .connect_timeout(&s.endpoints()[0].to_string(), Duration::from_secs(8))
        .expect_err("refused: 127.0.0.1 holds its share");
    let msg = err.to_string();
    assert!(msg.contains("max_pending_handshakes_per_ip"), "{msg}");
    wait_stats(&s, |st| st.errors_of("quic_handshakes_refused") >= 1);
}

/// Sends the first flight of a QUIC handshake from `sock` and nothing after, as a forged or
/// vanished client would: the server counts it as a handshake in progress.
fn first_flight_only(sock: &std::net::UdpSocket, cc: &ClientConfig) {
    let mut forged = netron_quic::QuicEndpoint::new(None, Some(cc)).unwrap();
    let now = std::time::Instant::now();
    forged
        .connect(now, sock.peer_addr().unwrap(), "127.0.0.1")
        .unwrap();
    let mut tx = Vec::new();
    while let Some(t) = forged.poll_transmit(now, &mut tx) {
        sock.send(&tx[..t.len]).unwrap();
    }
}

#[test]
fn a_listener_under_load_validates_new_clients_with_a_retry_and_serves_them() {
    // docs/quic.md "Address validation": the Retry policy counts the handshakes in progress
    // across the whole listener (each connection has an endpoint of its own, so a count per
    // endpoint was never above 1 and `UnderLoad` never sent a Retry).
    let ca = Ca::new("ca");
    let s = server_with_admission(&ca, netron_quic::RetryPolicy::UnderLoad { pending: 1 }, 64);
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    // One handshake in progress that never completes.
    first_flight_only(&raw_socket(&s), &cc);
    wait_stats(&s, |st| st.accepted() >= 1);
    // A real client is now asked to validate its address, does, and is served.
    let c = client(&ca, None);
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    assert_eq!(ch.call("echo@1.0.0", "say", vec![5], DL).unwrap(), vec![5]);
    wait_stats(&s, |st| st.errors_of("quic_retry") >= 1);
    assert_eq!(s.total_stats().errors_of("quic_retry"), 1);
    assert_eq!(s.total_stats().errors_of("quic_handshakes_refused"), 0);
}

#[test]
fn handshakes_past_the_listeners_pending_budget_are_refused_naming_it() {
    // `max_pending_handshakes` bounds the handshakes in progress across the listener; a
    // completed handshake leaves the count.
    let ca = Ca::new("ca");
    let s = server_with_admission(&ca, netron_quic::RetryPolicy::Never, 1);
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    // A handshake that completes (the connection stays open) leaves the budget free (the
    // call's answer comes after the server saw the handshake complete)...
    let c = client(&ca, None);
    let ep = s.endpoints()[0].to_string();
    let first = c.client().connect(&ep).expect("the first client");
    assert_eq!(
        first.call("echo@1.0.0", "say", vec![1], DL).unwrap(),
        vec![1]
    );
    // ...for one that never completes...
    first_flight_only(&raw_socket(&s), &cc);
    wait_stats(&s, |st| st.accepted() >= 2);
    // ...which holds the whole budget: the next client is refused at once.
    let err = c
        .client()
        .connect_timeout(&ep, Duration::from_secs(8))
        .expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("max_pending_handshakes"), "{msg}");
    wait_stats(&s, |st| st.errors_of("quic_handshakes_refused") >= 1);
    assert_eq!(s.total_stats().errors_of("quic_retry"), 0);
}

/// Not a test: prints unary round-trip percentiles over quic:// and tcp:// in one run (test
/// profile, so indicative only; the netron-bench section is the figure of record).
/// `cargo test -p netron-engine --lib quic_vs_tcp_round_trips -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run by hand"]
fn quic_vs_tcp_round_trips() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let tcp = Engine::builder()
        .cores(1)
        .service(echo())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let c = client(&ca, None);
    for ep in [s.endpoints()[0].to_string(), tcp.endpoints()[0].to_string()] {
        let ch = c.client().connect(&ep).unwrap();
        let mut t = Vec::with_capacity(5000);
        for i in 0..5500u32 {
            let start = std::time::Instant::now();
            ch.call("echo@1.0.0", "say", vec![i as u8; 64], DL).unwrap();
            if i >= 500 {
                t.push(start.elapsed());
            }
        }
        t.sort();
        println!(
            "{ep}: 64-byte unary round trip p50 {:?} p99 {:?} (5000 calls)",
            t[t.len() / 2],
            t[t.len() * 99 / 100]
        );
    }
}

#[path = "quic_close_tests.rs"]
mod close;
#[path = "quic_datagram_events_tests.rs"]
mod datagram_events;
#[path = "quic_migration_tests.rs"]
mod migration;
#[path = "quic_review16_tests.rs"]
mod review16;
#[path = "quic_udp_tests.rs"]
mod udp;
#[path = "quic_zero_rtt_tests.rs"]
mod zero_rtt;

/// Engines on quic:// code headers with QPACK (docs/protocol.md §27.4 (c)): once the table
/// holds a call's `:service` and `:method`, each request carries one byte per field; a client
/// that offers `header_table_size` 0 gets the static table and literals (§27.4 (a)) and its
/// requests repeat both names. Counted in the bytes the server's connection took per call.
#[test]
fn quic_requests_reference_the_header_table_once_it_holds_their_fields() {
    let ca = Ca::new("ca");
    let s = server(&ca, ClientAuth::None);
    let ep = s.endpoints()[0].to_string();
    let per_call = |table: u32| {
        let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
        let c = Engine::builder()
            .cores(1)
            .config(ProtocolConfig::default().with_quic_client(cc).with_client(
                netron_codec::handshake::ClientConfig::default().with_header_table_size(table),
            ))
            .build()
            .unwrap();
        let ch = c.client().connect(&ep).expect("connects over quic");
        let method = ch.method("echo@1.0.0", "say");
        for _ in 0..3 {
            assert_eq!(method.call(&[1u8][..], DL).unwrap(), [1]);
        }
        let before = s.total_stats().bytes_in();
        for i in 0..20u8 {
            assert_eq!(method.call(vec![i], DL).unwrap(), [i]);
        }
        (s.total_stats().bytes_in() - before) / 20
    };
    let qpack = per_call(4096);
    let literal = per_call(0);
    // A request's block: 4 bytes against ~20 ("echo@1.0.0" and "say" as literals).
    assert!(
        qpack + 12 <= literal,
        "bytes per request: {qpack} with QPACK, {literal} without a dynamic table"
    );
    assert!(s.total_stats().errors().is_empty(), "{:?}", s.total_stats());
}

/// QPACK under churn (docs/protocol.md §27.4): a 300-byte table holds a handful of entries,
/// so 4 threads' concurrent calls with metadata values that change on every call evict
/// entries while other blocks that reference them are in flight, both ways (request and
/// response metadata). Eviction safety (never evict what an unacknowledged block needs) and
/// the blocked-streams bound must keep every block decodable: every call gets its own values
/// back and neither side counts an error.
#[test]
fn qpack_blocks_stay_decodable_while_a_small_table_churns() {
    let ca = Ca::new("ca");
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let small = |p: ProtocolConfig| {
        let mut server = netron_codec::handshake::ServerConfig::default();
        server.header_table_size = 300;
        p.with_server(server).with_client(
            netron_codec::handshake::ClientConfig::default().with_header_table_size(300),
        )
    };
    let svc = crate::Service::new("meta", "1.0.0")
        .unwrap()
        .unary("show", |req, reply| {
            let v = req.metadata("x-value").unwrap_or(b"-").to_vec();
            reply.write(&v);
            reply.metadata("x-echo", &v);
            Ok(())
        });
    let s = Engine::builder()
        .cores(1)
        .config(small(ProtocolConfig::default().with_quic_server(sc)))
        .service(svc)
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    let c = Engine::builder()
        .cores(1)
        .config(small(ProtocolConfig::default().with_quic_client(cc)))
        .build()
        .unwrap();
    let ch = c
        .client()
        .connect(&s.endpoints()[0].to_string())
        .expect("connects over quic");
    std::thread::scope(|sc| {
        for t in 0..4u32 {
            let ch = ch.clone();
            sc.spawn(move || {
                for i in 0..150u32 {
                    // A few repeating values (inserted, referenced) and unique ones (evicting).
                    let v = if i % 3 == 0 {
                        format!("shared-{}", i % 4)
                    } else {
                        format!("value-{t}-{i}-{}", "x".repeat((i % 7) as usize))
                    };
                    let opts = crate::CallOptions::new()
                        .deadline(Duration::from_secs(10))
                        .metadata("x-value", v.as_bytes());
                    let r = ch.call_with("meta@1.0.0", "show", &b""[..], &opts);
                    assert_eq!(r.get("x-echo"), Some(v.as_bytes()), "thread {t} call {i}");
                    assert_eq!(r.result().unwrap(), v.as_bytes());
                }
            });
        }
    });
    for (who, e) in [("server", &s), ("client", &c)] {
        let st = e.total_stats();
        assert!(st.errors().is_empty(), "{who}: {st:?}");
    }
}
