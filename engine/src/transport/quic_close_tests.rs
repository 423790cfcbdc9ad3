//! Fresh user R14 (twelfth session): a hostile QUIC peer against the close linger, the
//! slowloris rule and the buffer budget of the router's partial frames, and graceful
//! shutdowns over quic:// (docs/quic.md "In the engine").

use std::time::{Duration, Instant};

use netron_codec::{Flags, FrameHeader, FrameKind};
use netron_quic::{CloseReason, ConnId, QuicEndpoint, QuicEvent, Read, StreamId};

use super::*;

/// A hand-driven Netron-over-QUIC client (netron-quic's endpoint, the codec's client
/// handshake) that can go mute (drop every datagram from the server, send nothing: no
/// acknowledgements) while its socket stays bound (no ICMP).
pub(super) struct RawPeer {
    sock: std::net::UdpSocket,
    pub(super) ep: QuicEndpoint,
    pub(super) conn: ConnId,
    pub(super) control: StreamId,
    addr: std::net::SocketAddr,
    /// Why the connection closed, once it did.
    pub(super) closed: Option<CloseReason>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Read nothing from the control stream after the Welcome.
    deaf_control: bool,
    /// Read nothing from any exchange stream (replies stay in QUIC's buffers).
    deaf_exchanges: bool,
}

impl RawPeer {
    /// Connects to `addr` and completes the Netron handshake on the control stream.
    pub(super) fn connect(addr: std::net::SocketAddr, ca: &Ca) -> RawPeer {
        Self::connect_with(addr, ca, |_| {})
    }

    fn connect_with(
        addr: std::net::SocketAddr,
        ca: &Ca,
        tune: impl FnOnce(&mut ClientConfig),
    ) -> RawPeer {
        Self::connect_offering(addr, ca, tune, 0)
    }

    /// As [`RawPeer::connect_with`], offering `header_table_size` `table`: with a table, the
    /// server codes headers with QPACK and the test writes QPACK blocks by hand (§27.4).
    fn connect_offering(
        addr: std::net::SocketAddr,
        ca: &Ca,
        tune: impl FnOnce(&mut ClientConfig),
        table: u32,
    ) -> RawPeer {
        use netron_codec::handshake::{ClientHandshake, ClientProgress};
        use netron_quic::router::StreamIo;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
        tune(&mut cc);
        let mut ep = QuicEndpoint::new(None, Some(&cc)).unwrap();
        let conn = ep.connect(Instant::now(), addr, "127.0.0.1").unwrap();
        let (mut tx, mut rx) = (Vec::new(), vec![0u8; 65_535]);
        // By default it writes HPACK blocks without a dynamic table and opens no header
        // streams, so it offers header_table_size 0 (docs/protocol.md §27.4 (a)).
        let mut hs = ClientHandshake::new(
            netron_codec::handshake::ClientConfig::default().with_header_table_size(table),
        );
        let (mut control, mut got) = (None, Vec::new());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < until, "no Welcome");
            if ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                ep.handle_timeout(Instant::now());
            }
            while let Some(t) = ep.poll_transmit(Instant::now(), &mut tx) {
                let _ = sock.send(&tx[..t.len]);
            }
            let mut idle = true;
            while let Ok(n) = sock.recv(&mut rx) {
                idle = false;
                ep.handle_datagram(Instant::now(), addr, None, bytes::BytesMut::from(&rx[..n]));
            }
            if idle {
                std::thread::sleep(Duration::from_micros(200));
            }
            while let Some(ev) = ep.poll_event() {
                match ev {
                    QuicEvent::Connected { .. } => {
                        let mut io = netron_quic::router::EndpointStreams {
                            endpoint: &mut ep,
                            conn,
                        };
                        let c = io.open_bi().unwrap();
                        let mut hello = Vec::new();
                        hs.start(&mut hello).unwrap();
                        assert_eq!(io.write(c, &hello), Some(hello.len()));
                        control = Some(c);
                    }
                    QuicEvent::Readable { stream, .. } if Some(stream) == control => {
                        while let Ok(Read::Bytes { .. }) = ep.read(conn, stream, &mut got, 1 << 16)
                        {
                        }
                        if let Ok(ClientProgress::Done { .. }) = hs.handle(&got) {
                            return RawPeer {
                                sock,
                                ep,
                                conn,
                                control: stream,
                                addr,
                                closed: None,
                                rx,
                                tx,
                                deaf_control: false,
                                deaf_exchanges: false,
                            };
                        }
                    }
                    QuicEvent::Closed { reason, .. } => {
                        panic!("closed before the Welcome: {reason}")
                    }
                    _ => {}
                }
            }
        }
    }

    /// One turn: timers, datagrams in and out (none when `mute`: incoming ones are dropped).
    pub(super) fn turn(&mut self, mute: bool) {
        let now = Instant::now();
        if mute {
            while self.sock.recv(&mut self.rx).is_ok() {}
            return;
        }
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        while let Some(t) = self.ep.poll_transmit(Instant::now(), &mut self.tx) {
            let _ = self.sock.send(&self.tx[..t.len]);
        }
        while let Ok(n) = self.sock.recv(&mut self.rx) {
            self.ep.handle_datagram(
                Instant::now(),
                self.addr,
                None,
                bytes::BytesMut::from(&self.rx[..n]),
            );
        }
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                QuicEvent::Readable { stream, .. } => {
                    if stream == self.control && self.deaf_control {
                        continue;
                    }
                    if stream != self.control && self.deaf_exchanges {
                        continue;
                    }
                    let mut sink = Vec::new();
                    while let Ok(Read::Bytes { .. }) =
                        self.ep.read(self.conn, stream, &mut sink, 1 << 16)
                    {
                        sink.clear();
                    }
                }
                QuicEvent::Closed { reason, .. } => {
                    self.closed.get_or_insert(reason);
                }
                _ => {}
            }
        }
    }

    /// Turns for `d`, calling `f` every turn.
    fn run_for(&mut self, d: Duration, mute: bool, mut f: impl FnMut(&mut RawPeer)) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            f(self);
            self.turn(mute);
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    fn write_all(&mut self, s: StreamId, mut b: &[u8]) {
        let until = Instant::now() + Duration::from_secs(10);
        while !b.is_empty() {
            assert!(Instant::now() < until, "could not write");
            match self.ep.write(self.conn, s, b) {
                Ok(n) => b = &b[n..],
                Err(e) => {
                    // The server may cut the connection off while we write (what several
                    // tests wait for): then the write ends; anything else is a failure.
                    self.turn(false);
                    assert!(self.closed.is_some(), "write: {e:?}");
                    return;
                }
            }
            self.turn(false);
        }
    }

    /// A Ping on the control stream, unless the server already closed the connection.
    fn ping(&mut self, n: u32) {
        if self.closed.is_some() {
            return;
        }
        let h = FrameHeader::new(16, FrameKind::Ping, Flags::empty(), 0, 0, n);
        let c = self.control;
        let _ = self.ep.write(self.conn, c, h.as_bytes());
    }

    /// Opens a stream and writes `sent` bytes of a Request frame `len` long (id `id`).
    fn partial_request(&mut self, id: u32, len: usize, sent: usize) -> StreamId {
        let st = self.ep.open_bi(self.conn).unwrap().expect("stream credit");
        let h = FrameHeader::new(len as u32, FrameKind::Request, Flags::empty(), 0, id, 0);
        let mut b = h.as_bytes().to_vec();
        b.resize(sent, 0);
        self.write_all(st, &b);
        st
    }

    /// Sends the bad frame and nothing after (no acknowledgement of the server's answer).
    fn bad_frame_then_mute(&mut self) {
        let bad = [16, 0, 0, 0, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        let c = self.control;
        assert_eq!(self.ep.write(self.conn, c, &bad).unwrap(), 16);
        while let Some(t) = self.ep.poll_transmit(Instant::now(), &mut self.tx) {
            let _ = self.sock.send(&self.tx[..t.len]);
        }
    }
}

fn server_with(ca: &Ca, cfg: impl FnOnce(ProtocolConfig) -> ProtocolConfig) -> Engine {
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    Engine::builder()
        .cores(1)
        .config(cfg(ProtocolConfig::default().with_quic_server(sc)))
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap()
}

/// Attack 1 (slowloris evasion): partial frames on 8 streams, and a Ping on the control
/// stream every 200 ms. stall_timeout is 1 s; after 5 s the partial frames are still held
/// and charged to the core's budget, so one peer pins the budget for as long as it pings.
/// Then an honest client's 6 MiB call on another connection is refused for the budget.
#[test]
fn attack_slowloris_partial_frames_kept_alive_by_pings_pin_the_budget() {
    slowloris(true);
}

/// Control: the same without the pings is cut off as `stalled`.
#[test]
fn attack_slowloris_control_without_pings_is_cut_off() {
    slowloris(false);
}

fn slowloris(pings: bool) {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| {
        p.with_stall_timeout(Duration::from_secs(1))
            .with_max_buffer_bytes(20 << 20)
    });
    let mut peer = RawPeer::connect(quic_addr(&s), &ca);
    for i in 0..7u32 {
        peer.partial_request(1 + 2 * i, 4 << 20, 1536 << 10);
    }
    let mut n = 0u32;
    let mut last = Instant::now();
    peer.run_for(Duration::from_secs(5), false, |p| {
        if pings && last.elapsed() >= Duration::from_millis(200) {
            last = Instant::now();
            n += 1;
            p.ping(n);
        }
    });
    let st = s.total_stats();
    eprintln!(
        "after 5 s (5 x stall_timeout): buffer_bytes {} stalled {} closed {} peer closed {:?}",
        st.buffer_bytes(),
        st.errors_of("stalled"),
        st.closed(),
        peer.closed
    );
    // An honest client's large call meanwhile.
    let c = client(&ca, None);
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    let honest = ch.call("echo@1.0.0", "say", Bytes::from(vec![7u8; 6 << 20]), DL);
    eprintln!(
        "honest 6 MiB call while the attacker holds partial frames: {:?}",
        honest.as_ref().map(|b| b.len())
    );
    let st = s.total_stats();
    eprintln!("errors: {:?}", st.errors());
    assert!(
        peer.closed.is_some() || st.errors_of("stalled") > 0,
        "the partial frames were never cut off: buffer_bytes {}",
        st.buffer_bytes()
    );
    assert!(honest.is_ok(), "the honest call failed: {honest:?}");
}

/// The same evasion with a small partial frame: it misses 100 bytes, and Pings every 50 ms
/// (320 bytes a stall timeout) would have passed for progress while control-stream bytes
/// counted as such (they cost the peer nothing). Cut off as `stalled`.
#[test]
fn pings_are_no_progress_for_a_partial_frame() {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| p.with_stall_timeout(Duration::from_secs(1)));
    let mut peer = RawPeer::connect(quic_addr(&s), &ca);
    peer.partial_request(1, 200, 100);
    let (mut n, mut last) = (0u32, Instant::now());
    let until = Instant::now() + Duration::from_secs(20);
    while s.total_stats().errors_of("stalled") == 0 && Instant::now() < until {
        peer.run_for(Duration::from_millis(5), false, |p| {
            if last.elapsed() >= Duration::from_millis(50) {
                last = Instant::now();
                n += 1;
                p.ping(n);
            }
        });
    }
    assert_eq!(
        s.total_stats().errors_of("stalled"),
        1,
        "{:?}",
        s.total_stats().errors()
    );
}

/// Attack 2: a connection error, then the peer goes mute (never acknowledges). The server
/// must free the connection within close_linger.
#[test]
fn attack_mute_peer_after_an_error_is_closed_within_close_linger() {
    let ca = Ca::new("ca");
    let linger = Duration::from_secs(2);
    let s = server_with(&ca, |p| p.with_close_linger(linger));
    let mut peer = RawPeer::connect(quic_addr(&s), &ca);
    peer.partial_request(1, 1 << 20, 100 << 10);
    peer.run_for(Duration::from_millis(300), false, |_| {});
    peer.bad_frame_then_mute();
    let t0 = Instant::now();
    let mut done = None;
    peer.run_for(Duration::from_secs(8), true, |_| {
        if done.is_none() {
            let st = s.total_stats();
            if st.closed() == 1 {
                done = Some((t0.elapsed(), st.buffer_bytes()));
            }
        }
    });
    eprintln!(
        "closed after {done:?}; stats {:?}",
        s.total_stats().errors()
    );
    let (took, buf) = done.expect("the connection was never closed");
    // Bounded by the linger (a few times over, for a loaded host): never a hang.
    assert!(took < linger * 4, "took {took:?}");
    assert_eq!(buf, 0);
}

/// Attack 3a: Engine::shutdown with a peer that went mute. How long does it take?
#[test]
fn attack_shutdown_with_a_mute_peer_waits_at_most_close_linger() {
    let ca = Ca::new("ca");
    let linger = Duration::from_secs(3);
    let s = server_with(&ca, |p| p.with_close_linger(linger));
    let mut peer = RawPeer::connect(quic_addr(&s), &ca);
    peer.partial_request(1, 1 << 20, 100 << 10);
    peer.turn(false);
    // Peer mute from now on; its socket stays bound (no ICMP).
    let t0 = Instant::now();
    s.shutdown(Duration::ZERO);
    let took = t0.elapsed();
    eprintln!("Engine::shutdown(0) with a mute peer took {took:?}");
    drop(peer);
    // shutdown(0) ends the drain at once, and a linger with it (it waited close_linger).
    assert!(took < linger, "took {took:?}");
}

/// Attack 3b: the engine dropped while a link lingers. The peer answers QUIC (it
/// acknowledges) but reads nothing of its control stream, whose 2 KiB window the server's
/// Pongs fill, so the server's Error(0) cannot go and its close lingers (close_linger 30 s).
/// Dropping the engine must send the connection's CONNECTION_CLOSE then, with its reason.
#[test]
fn attack_drop_while_a_link_lingers() {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| p.with_close_linger(Duration::from_secs(30)));
    let mut peer = RawPeer::connect_with(quic_addr(&s), &ca, |cc| {
        cc.settings.stream_receive_window = 2 << 10;
    });
    peer.deaf_control = true;
    for i in 0..400 {
        peer.ping(i);
        peer.turn(false);
    }
    peer.run_for(Duration::from_millis(100), false, |_| {});
    peer.bad_frame_then_mute();
    // Not mute: the peer acknowledges, so only the control stream's window holds the close.
    let until = Instant::now() + Duration::from_secs(20);
    while s.total_stats().errors_of("unknown_kind") == 0 && Instant::now() < until {
        peer.run_for(Duration::from_millis(5), false, |_| {});
    }
    peer.run_for(Duration::from_millis(200), false, |_| {});
    assert!(
        peer.closed.is_none(),
        "the close lingers: {:?}",
        peer.closed
    );
    drop(s);
    let until = Instant::now() + Duration::from_secs(10);
    while peer.closed.is_none() && Instant::now() < until {
        peer.run_for(Duration::from_millis(5), false, |_| {});
    }
    // With its own reason (before, the core gave up on the link after 2 s and the link's
    // drop sent its "connection limit" refusal instead).
    assert!(
        matches!(&peer.closed, Some(CloseReason::Application { code, reason })
            if *code != 0 && reason.contains("kind")),
        "the dropped engine closed the lingering connection naming why: {:?}",
        peer.closed
    );
}

/// Attack 3c: Engine::shutdown while a link already lingers with close_linger 30 s.
#[test]
fn attack_shutdown_while_a_link_lingers_30s() {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| p.with_close_linger(Duration::from_secs(30)));
    let mut peer = RawPeer::connect(quic_addr(&s), &ca);
    peer.bad_frame_then_mute();
    peer.run_for(Duration::from_millis(300), true, |_| {});
    let t0 = Instant::now();
    let h = std::thread::spawn(move || s.shutdown(Duration::ZERO));
    while !h.is_finished() && t0.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed();
    eprintln!(
        "Engine::shutdown(0) with a link lingering (close_linger 30 s): {took:?} finished {}",
        h.is_finished()
    );
    let fin = h.is_finished();
    drop(peer);
    assert!(fin, "shutdown still running after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "Engine::shutdown(0) waited {took:?} for a lingering link"
    );
}

/// Attack 4: partial frames then RESET_STREAM on each, then new partial frames on new
/// streams, repeatedly; then the peer closes mid-partial. The budget must return to 0.
#[test]
fn attack_budget_after_resets_and_a_close_mid_frame() {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| p.with_max_buffer_bytes(64 << 20));
    let mut peer = RawPeer::connect(quic_addr(&s), &ca);
    let mut id = 1u32;
    for round in 0..5 {
        let mut sts = Vec::new();
        for _ in 0..4 {
            sts.push(peer.partial_request(id, 2 << 20, 1 << 20));
            id += 2;
        }
        // Turns until the server's stats say so (10 s at most: no timing is asserted).
        let turn_until = |peer: &mut RawPeer, done: &dyn Fn(u64) -> bool| {
            let until = Instant::now() + Duration::from_secs(10);
            while !done(s.total_stats().buffer_bytes()) && Instant::now() < until {
                peer.run_for(Duration::from_millis(5), false, |_| {});
            }
            s.total_stats().buffer_bytes()
        };
        let during = turn_until(&mut peer, &|b| b >= 4 << 20);
        for st in sts {
            peer.ep.reset(peer.conn, st, 0x1).unwrap();
        }
        let after = turn_until(&mut peer, &|b| b < 1 << 20);
        eprintln!("round {round}: buffer_bytes during {during} after resets {after}");
        assert!(during >= 4 << 20, "not charged: {during}");
        assert!(after < 1 << 20, "not released after resets: {after}");
    }
    peer.partial_request(id, 2 << 20, 1 << 20);
    peer.run_for(Duration::from_millis(100), false, |_| {});
    let c = peer.conn;
    peer.ep.close(Instant::now(), c, 0, b"bye").unwrap();
    peer.run_for(Duration::from_millis(300), false, |_| {});
    wait_stats(&s, |st| st.closed() == 1 && st.buffer_bytes() == 0);
}

/// Attack 6: a frame length below 16 on an exchange stream, and one above max_frame_size:
/// counted once under the byte stream's counter, Error(0) status in the CONNECTION_CLOSE.
#[test]
fn attack_bad_lengths_are_counted_once_under_the_decoders_names() {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| p);
    for len in [8u32, (16 << 20) + 1] {
        let mut peer = RawPeer::connect(quic_addr(&s), &ca);
        let st = peer.ep.open_bi(peer.conn).unwrap().unwrap();
        let h = FrameHeader::new(len, FrameKind::Request, Flags::empty(), 0, 1, 0);
        peer.write_all(st, h.as_bytes());
        let until = Instant::now() + Duration::from_secs(10);
        while peer.closed.is_none() && Instant::now() < until {
            peer.run_for(Duration::from_millis(5), false, |_| {});
        }
        eprintln!(
            "len {len}: peer saw {:?}; errors {:?}",
            peer.closed,
            s.total_stats().errors()
        );
        assert!(
            matches!(&peer.closed, Some(CloseReason::Application { code, .. }) if *code != 0),
            "{:?}",
            peer.closed
        );
    }
    wait_stats(&s, |st| st.closed() == 2);
    let st = s.total_stats();
    assert_eq!(st.errors_of("length_too_short"), 1, "{:?}", st.errors());
    assert_eq!(st.errors_of("frame_too_large"), 1, "{:?}", st.errors());
    assert_eq!(st.errors().values().sum::<u64>(), 2, "{:?}", st.errors());
    assert_eq!(st.buffer_bytes(), 0);
}

/// Attack 7: a graceful shutdown while 20 calls with 512 KiB replies are held by the
/// handler: every reply must arrive (the drained close waits for the streams' acks).
/// (10 MiB in all, beyond QUIC's windows: one reply waited for ever after a partial write
/// until the router wrote on to a refusal, `Router` flush.)
#[test]
fn attack_drained_shutdown_delivers_every_large_reply() {
    drained_shutdown(true, 512 << 10);
}

/// The same with 32 KiB replies (640 KiB in all, within QUIC's windows): all were lost while
/// the control stream's FIN went before the replies were acknowledged.
#[test]
fn attack_drained_shutdown_delivers_every_32k_reply() {
    drained_shutdown(true, 32 << 10);
}

/// The same with 100-byte replies: these arrive (they go out with the FIN).
#[test]
fn attack_drained_shutdown_delivers_every_small_reply() {
    drained_shutdown(true, 100);
}

/// The same over tcp:// (control).
#[test]
fn attack_drained_shutdown_delivers_every_large_reply_tcp_control() {
    drained_shutdown(false, 512 << 10);
}

fn drained_shutdown(quic: bool, size: usize) {
    use std::sync::{Arc, Mutex};
    const N: usize = 20;
    type Held = Arc<Mutex<Vec<(crate::DeferredReply, Vec<u8>)>>>;
    let held: Held = Arc::default();
    let h = held.clone();
    let svc = Service::new("gate", "1.0.0")
        .unwrap()
        .unary_deferred("wait", move |req, reply| {
            h.lock().unwrap().push((reply, req.payload().to_vec()));
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
        .listen(if quic {
            "quic://127.0.0.1:0"
        } else {
            "tcp://127.0.0.1:0"
        })
        .build()
        .unwrap();
    let c = client(&ca, None);
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    std::thread::scope(|sc| {
        let calls: Vec<_> = (0..N)
            .map(|i| {
                let ch = ch.clone();
                sc.spawn(move || ch.call("gate@1.0.0", "wait", vec![i as u8; 4], DL))
            })
            .collect();
        let until = Instant::now() + Duration::from_secs(10);
        while held.lock().unwrap().len() < N {
            assert!(Instant::now() < until);
            std::thread::sleep(Duration::from_millis(5));
        }
        let held2 = held.clone();
        sc.spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            for (r, p) in held2.lock().unwrap().drain(..) {
                r.answer(Ok(Bytes::from(vec![p[0]; size])));
            }
        });
        let t0 = Instant::now();
        s.shutdown(Duration::from_secs(5));
        eprintln!("shutdown took {:?}", t0.elapsed());
        let mut failed = Vec::new();
        for (i, call) in calls.into_iter().enumerate() {
            match call.join().unwrap() {
                Ok(got) => assert!(
                    got.len() == size && got.iter().all(|&b| b == i as u8),
                    "call {i}"
                ),
                Err(e) => failed.push((i, e)),
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let cs = c.total_stats();
        eprintln!(
            "quic {quic}: {} of {N} calls failed: {:?}; client bytes_in {} frames_in {} errors {:?}",
            failed.len(),
            failed.first(),
            cs.bytes_in(),
            cs.frames_in(),
            cs.errors()
        );
        assert!(failed.is_empty());
    });
}

/// Attack 8: 30 connections fail at once and their peers go mute: the core keeps serving an
/// honest client during the lingers, and frees every slot within close_linger.
#[test]
fn attack_many_mute_lingers_at_once() {
    let ca = Ca::new("ca");
    let linger = Duration::from_secs(2);
    let s = server_with(&ca, |p| p.with_close_linger(linger));
    let mut peers: Vec<RawPeer> = (0..30)
        .map(|_| RawPeer::connect(quic_addr(&s), &ca))
        .collect();
    let t0 = Instant::now();
    for p in &mut peers {
        p.bad_frame_then_mute();
    }
    let c = client(&ca, None);
    let ch = c.client().connect(&s.endpoints()[0].to_string()).unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        ch.call("echo@1.0.0", "say", vec![1u8; 100], DL)
            .expect("served during the lingers");
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_stats(&s, |st| st.closed() >= 30);
    let took = t0.elapsed();
    let st = s.total_stats();
    eprintln!(
        "30 lingers: all closed after {took:?}; worst honest call {worst:?}; buffer {} errors {:?}",
        st.buffer_bytes(),
        st.errors()
    );
    drop(peers);
    assert!(took < linger * 4, "{took:?}");
}

/// Attack 9: the same mute linger on a busy-poll core whose link is hot (read directly).
#[test]
fn attack_mute_linger_on_a_hot_busy_poll_core() {
    let ca = Ca::new("ca");
    let linger = Duration::from_secs(2);
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let s = Engine::builder()
        .cores(1)
        .runtime(
            crate::RuntimeConfig::default()
                .with_idle(crate::IdlePolicy::BusyPoll)
                .with_direct_recv(Some(crate::DirectRecv::new(8, Duration::from_secs(600)))),
        )
        .config(
            ProtocolConfig::default()
                .with_quic_server(sc)
                .with_close_linger(linger),
        )
        .service(echo())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let mut peer = RawPeer::connect(quic_addr(&s), &ca);
    for i in 0..50 {
        peer.ping(i);
    }
    peer.run_for(Duration::from_millis(200), false, |_| {});
    peer.partial_request(1, 1 << 20, 100 << 10);
    // Everything sent and acknowledged before the bad frame (congestion control).
    peer.run_for(Duration::from_millis(300), false, |_| {});
    peer.bad_frame_then_mute();
    let t0 = Instant::now();
    wait_stats(&s, |st| st.closed() == 1);
    let took = t0.elapsed();
    let st = s.total_stats();
    eprintln!(
        "hot: closed after {took:?}; buffer {} errors {:?}",
        st.buffer_bytes(),
        st.errors()
    );
    let t1 = Instant::now();
    drop(s);
    eprintln!("drop took {:?}", t1.elapsed());
    drop(peer);
    assert!(took < linger * 4, "{took:?}");
    assert_eq!(st.buffer_bytes(), 0);
}

/// A peer that sends calls and reads none of the replies, with a small connection window
/// (256 KiB): quinn-proto takes our writes only up to the peer's connection-level window
/// (MAX_DATA), so the replies it cannot send wait in the router and the held-bytes check
/// cuts the peer off at the stall timeout (`write_stalled`), as a TCP socket the peer does
/// not read. (Written while chasing the flood tests' flake on quic://; it holds.)
#[test]
fn a_peer_that_reads_no_reply_is_cut_off_once_its_connection_window_is_shut() {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| p.with_stall_timeout(Duration::from_millis(500)));
    let mut peer = RawPeer::connect_with(quic_addr(&s), &ca, |cc| {
        cc.settings.stream_receive_window = 64 << 10;
        cc.settings.receive_window = 256 << 10;
    });
    peer.deaf_exchanges = true;
    let mut id = 1u32;
    let until = Instant::now() + Duration::from_secs(20);
    while peer.closed.is_none() {
        assert!(
            Instant::now() < until,
            "not cut off in 20 s: {:?}",
            s.total_stats()
        );
        // As many 32 KiB echo calls as the server's stream limit lets us open.
        while let Ok(Some(st)) = peer.ep.open_bi(peer.conn) {
            peer.write_all(
                st,
                &super::echo_request(id, Duration::from_secs(60), &[5u8; 32 << 10]),
            );
            let _ = peer.ep.finish(peer.conn, st);
            id += 2;
        }
        peer.turn(false);
        std::thread::sleep(Duration::from_micros(300));
    }
    let st = s.total_stats();
    assert_eq!(st.errors_of("write_stalled"), 1, "{st:?}");
    assert!(
        matches!(peer.closed, Some(CloseReason::Application { .. })),
        "{:?}",
        peer.closed
    );
}

/// A peer whose header blocks need insertions it never sends (§27.4): each such Request is
/// held by the server (charged to the buffer budget, not dispatched) and the 17th blocked
/// exchange is a connection error `qpack_blocked_streams` (ResourceExhausted) with the
/// Error(0) and a CONNECTION_CLOSE naming the status; what was held is released with the
/// connection.
#[test]
fn a_peer_whose_blocks_never_unblock_holds_16_exchanges_at_most() {
    let ca = Ca::new("ca");
    let s = server_with(&ca, |p| p);
    let mut peer = RawPeer::connect_offering(quic_addr(&s), &ca, |_| {}, 4096);
    // Required Insert Count 1 (encoded 1 mod 256 + 1 = 2), Base 1, indexed dynamic relative
    // 0: absolute entry 0, which is never inserted.
    let block = [0x02u8, 0x00, 0x80];
    let request = |id: u32| {
        let mut b = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
        b.request(id, Some(Duration::from_secs(30)))
            .unwrap()
            .header_block(&block)
            .unwrap()
            .payload(&[9u8; 1000])
            .finish()
            .unwrap();
        b.as_slice().to_vec()
    };
    for i in 0..16u32 {
        let st = peer.ep.open_bi(peer.conn).unwrap().expect("stream credit");
        peer.write_all(st, &request(2 * i + 1));
    }
    // All 16 held (their bytes charged to the budget), none dispatched, the connection open.
    let until = Instant::now() + Duration::from_secs(10);
    while s.total_stats().buffer_bytes() < 16 * 1000 {
        assert!(
            Instant::now() < until,
            "not all held: {:?}",
            s.total_stats()
        );
        peer.turn(false);
        std::thread::sleep(Duration::from_millis(1));
    }
    peer.turn(false);
    assert!(peer.closed.is_none(), "16 blocked exchanges are allowed");
    let st = s.total_stats();
    assert_eq!(
        st.calls_in(),
        0,
        "a blocked request is not dispatched: {st:?}"
    );
    let st17 = peer.ep.open_bi(peer.conn).unwrap().expect("stream credit");
    peer.write_all(st17, &request(33));
    let until = Instant::now() + Duration::from_secs(10);
    while peer.closed.is_none() {
        assert!(Instant::now() < until, "not closed: {:?}", s.total_stats());
        peer.turn(false);
        std::thread::sleep(Duration::from_millis(1));
    }
    let Some(CloseReason::Application { code, .. }) = peer.closed else {
        panic!("{:?}", peer.closed);
    };
    assert_eq!(code, netron_codec::StatusCode::ResourceExhausted as u64);
    let until = Instant::now() + Duration::from_secs(10);
    while s.total_stats().errors_of("qpack_blocked_streams") != 1
        || s.total_stats().buffer_bytes() != 0
    {
        assert!(Instant::now() < until, "{:?}", s.total_stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}
