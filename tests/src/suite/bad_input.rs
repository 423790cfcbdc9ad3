//! Bad input from raw peers against a live server: each misbehaving peer is cut off with a
//! counter incremented, and a well-behaved client on the same core is served throughout.
//!
//! The two main scenarios run twice: on an adaptive core (every byte arrives through the
//! io_uring receive) and on a busy-poll core, where a connection is hot after its first bytes
//! and the bad frames arrive through direct `recv` calls (`DirectRecv`).
//!
//! A partial frame is where byte streams and records differ: on a stream the server waits for
//! the rest (until the stall timeout); in a record it is `Incomplete` at once
//! (docs/protocol.md §7 checks 1 and 9, §10.2).

use std::time::{Duration, Instant};

use netron_codec::control::ControlEncoder;
use netron_codec::handshake::{ClientConfig, ServerConfig};
use netron_codec::{BatchEncoder, FrameKind, Limits, StatusCode};
use netron_engine::{CoreConfig, Engine, IdlePolicy, ProtocolConfig, RuntimeConfig};

use super::util::{frames, poll, read_frames, request, wait_for};
use crate::{Kind, RawPeer, Transport, calc};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// The adaptive policy of these tests (short spin: the core parks often).
const ADAPTIVE: IdlePolicy = IdlePolicy::Adaptive {
    spin: Duration::from_micros(20),
};

/// Bad peers against an adaptive core.
pub fn misbehaving_peers_are_cut_off_and_others_lose_nothing(t: &Transport) {
    misbehaving_peers(t, ADAPTIVE);
}

/// Bad peers against a busy-poll core: the bad frames arrive through direct reads.
pub fn misbehaving_peers_on_hot_connections_are_cut_off(t: &Transport) {
    misbehaving_peers(t, IdlePolicy::BusyPoll);
}

fn misbehaving_peers(t: &Transport, idle: IdlePolicy) {
    // One core, so every bad peer shares the core with the good client.
    let cfg = CoreConfig::new(
        RuntimeConfig::default().with_idle(idle),
        ProtocolConfig::default()
            .with_stall_timeout(Duration::from_millis(300))
            .with_handshake_timeout(Duration::from_millis(300))
            .with_keepalive(Duration::from_millis(300), Duration::from_millis(300)),
    );
    let (e, addr) = crate::engine(t, cfg, &[calc()], "bad");
    let wait_for = |label| wait_for(&e, label, Duration::from_secs(10));
    let good = e.client().connect(&addr).unwrap();
    let check_good = || {
        assert_eq!(
            good.call("calc@1.2.0", "add", &[20u8, 22][..], DL).unwrap(),
            [42]
        )
    };
    check_good();

    // 1. Garbage instead of the preface: closed without a reply.
    let mut p = RawPeer::connect(t, &addr);
    p.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(p.read_to_close().unwrap().is_empty());
    assert_eq!(wait_for("bad_preface"), 1);
    check_good();

    // 2. A frame header claiming 4 GiB after a good handshake: Error(0) then close. (In a
    // record, too: the header is checked before the missing bytes, §7, §26.3.)
    let mut p = RawPeer::handshake(t, &addr);
    let mut h = vec![0xff, 0xff, 0xff, 0xff, FrameKind::Request as u8, 0, 0, 0];
    h.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    p.send(&h).unwrap();
    let got = p.read_to_close().unwrap();
    assert_eq!(frames(&got), vec![(FrameKind::Error, 0)]);
    assert_eq!(wait_for("frame_too_large"), 1);
    check_good();

    // 3. An unknown frame kind.
    let mut p = RawPeer::handshake(t, &addr);
    p.send(&[16, 0, 0, 0, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        frames(&p.read_to_close().unwrap()),
        vec![(FrameKind::Error, 0)]
    );
    assert_eq!(wait_for("unknown_kind"), 1);
    check_good();

    // 4. A truncated frame, then the peer closes: on a stream the server cleans up quietly; a
    // record that ends inside a frame header is Incomplete.
    let mut p = RawPeer::handshake(t, &addr);
    p.send(&[200, 0, 0, 0, FrameKind::Request as u8, 0, 0, 0, 1, 0, 0, 0])
        .unwrap();
    drop(p);
    if t.kind == Kind::Record {
        assert_eq!(wait_for("incomplete"), 1);
    }
    check_good();

    // 5. Slowloris: half a frame, then silence. On a stream: closed by the stall timeout. In
    // a record: Incomplete at once.
    let mut p = RawPeer::handshake(t, &addr);
    p.send(&[100, 0, 0, 0, FrameKind::Request as u8]).unwrap();
    // The stall timeout is 300 ms and the peer's read timeout 10 s: the read ends because the
    // server closed (Ok), or fails with a timeout and the test fails. At most a keepalive Ping
    // (200 ms) went out before.
    let sent = p
        .read_to_close()
        .expect("the server closes a stalled connection");
    // Keepalive Pings, then the Error frame that says why the server closes.
    let kinds = frames(&sent);
    assert_eq!(kinds.last(), Some(&(FrameKind::Error, 0)), "{kinds:?}");
    assert!(
        kinds[..kinds.len() - 1]
            .iter()
            .all(|(k, _)| *k == FrameKind::Ping),
        "{kinds:?}"
    );
    match t.kind {
        Kind::Stream => assert!(wait_for("stalled") >= 1),
        Kind::Record => assert!(wait_for("incomplete") >= 2),
    }
    check_good();

    // 6. A peer that completes the handshake and then never answers pings: dead-peer timeout.
    let mut p = RawPeer::handshake(t, &addr);
    let got = p.read_to_close().unwrap();
    assert!(
        frames(&got).iter().any(|(k, _)| *k == FrameKind::Ping),
        "server pinged the idle peer"
    );
    assert!(wait_for("dead_peer") >= 1);
    check_good();

    // 7. Bad flags on a Request: a protocol error.
    let mut p = RawPeer::handshake(t, &addr);
    p.send(&[
        16,
        0,
        0,
        0,
        FrameKind::Request as u8,
        0x80,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ])
    .unwrap();
    assert_eq!(
        frames(&p.read_to_close().unwrap()),
        vec![(FrameKind::Error, 0)]
    );
    assert_eq!(wait_for("bad_flags"), 1);

    check_good();
    // A connection is counted closed once its link is quiescent, which may be after the peer
    // saw the close: wait for the count rather than read it once.
    assert!(poll(&e, |s| s.closed() >= 7), "{:?}", e.total_stats());
    let s = e.total_stats();
    if idle == IdlePolicy::BusyPoll {
        // The bad frames came through direct reads (each peer got hot on its first bytes).
        assert!(
            s.driver().hot_promotions >= 7 && s.driver().direct_recvs > 0,
            "{s:?}"
        );
    }
    e.shutdown(Duration::from_secs(1));
}

/// A peer that sends requests and never reads the replies: the server's backlog is bounded
/// and the peer is cut off.
pub fn a_flood_without_reading_is_cut_off(t: &Transport) {
    flood_without_reading(t, IdlePolicy::default());
}

/// The same on a busy-poll core (a hot connection).
pub fn a_flood_on_a_hot_connection_is_cut_off(t: &Transport) {
    flood_without_reading(t, IdlePolicy::BusyPoll);
}

fn flood_without_reading(t: &Transport, idle: IdlePolicy) {
    // The peer sends requests and never reads the replies: the server's backlog is bounded.
    // The backlog cap must hold one largest frame plus a batch (checked by build()).
    let limits = Limits::default().with_max_frame_size(64 << 10);
    let mut server = ServerConfig::default();
    server.limits = limits;
    let cfg = CoreConfig::new(
        RuntimeConfig::default().with_idle(idle),
        ProtocolConfig::default()
            .with_stall_timeout(Duration::from_millis(300))
            .with_handshake_timeout(Duration::from_millis(300))
            .with_max_backlog_bytes(256 << 10)
            .with_server(server)
            .with_client(ClientConfig::default().with_limits(limits)),
    );
    let cut = |e: &Engine| {
        let s = e.total_stats();
        s.errors_of("slow_consumer") + s.errors_of("write_stalled")
    };
    let (e, addr) = crate::engine(t, cfg, &[calc()], "flood");
    let good = e.client().connect(&addr).unwrap();
    let mut p = RawPeer::handshake(t, &addr);
    let mut batch = BatchEncoder::new(Limits::default().with_max_batch_bytes(1 << 20));
    let mut enc = p.header_encoder();
    let payload = vec![0u8; 16 << 10];
    let mut sent = 0usize;
    let end = Instant::now() + Duration::from_secs(20);
    'flood: while Instant::now() < end && cut(&e) == 0 {
        batch.clear();
        for id in 0..8u32 {
            request(&mut batch, &mut enc, 2 * id + 1, None, b"echo", &payload);
        }
        // One write on a stream; conforming records on a record transport (a record over
        // the batch limits would be a protocol error, not a flood).
        let units = match t.kind {
            Kind::Stream => vec![batch.as_slice()],
            Kind::Record => crate::records_of(batch.as_slice()),
        };
        for mut buf in units {
            // Non-blocking sends, so the flood stops (instead of hanging) once the server
            // stops reading.
            while !buf.is_empty() {
                match p.link.try_send(buf) {
                    Ok(n) => {
                        buf = &buf[n..];
                        sent += n;
                    }
                    // No room: the server stopped reading (backpressure) or cut the
                    // connection; the loop's bounds apply here too (a hang otherwise).
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= end || cut(&e) != 0 {
                            break 'flood;
                        }
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break 'flood,
                }
            }
        }
    }
    assert!(
        cut(&e) >= 1,
        "sent {sent} bytes without being cut off: {:?}",
        e.total_stats()
    );
    assert_eq!(
        good.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
        [3]
    );
    e.shutdown(Duration::from_secs(1));
}

/// Response and Error(id) frames sent by a client to a server: ignored (unknown_id), the
/// connection goes on and a later Request is answered.
pub fn replies_from_client_to_server_are_ignored(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = p.header_encoder();
    let mut ctl = ControlEncoder::new();
    b.response(1).unwrap().payload(b"x").finish().unwrap();
    ctl.error(&mut b, 3, StatusCode::Internal, "boo", &[])
        .unwrap();
    b.empty_frame(FrameKind::Cancel, 0, 0).unwrap();
    request(&mut b, &mut enc, 5, DL, b"add", &[1, 2]);
    p.send(b.as_slice()).unwrap();
    let (f, _) = read_frames(&mut p, |f| f.iter().any(|x| x.1 == 5));
    assert!(
        f.iter()
            .any(|x| x.0 == FrameKind::Response && x.1 == 5 && x.2 == [3]),
        "{f:?}"
    );
    assert!(wait_for(&e, "unknown_id", Duration::from_secs(5)) >= 2);
    e.shutdown(Duration::from_secs(1));
}

/// The preface and Hello trickled one byte per write, each well within the stall timeout: on
/// a stream, closed at the handshake timeout (counter `handshake_timeout`). In a
/// record transport a 1-byte record is not a preface: closed at once (`bad_preface`).
pub fn handshake_trickle_is_bounded(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::connect(t, &addr);
    let mut hs = netron_codec::handshake::ClientHandshake::new(Default::default());
    let mut out = Vec::new();
    hs.start(&mut out).unwrap();
    let start = Instant::now();
    let mut closed_at = None;
    for &byte in &out[..out.len() - 1] {
        if p.send(&[byte]).is_err() {
            closed_at = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(40));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let _ = p.read_to_close();
    let el = closed_at.unwrap_or(start.elapsed());
    let counter = match t.kind {
        Kind::Stream => "handshake_timeout",
        Kind::Record => "bad_preface",
    };
    assert!(wait_for(&e, counter, Duration::from_secs(5)) >= 1);
    assert!(el < Duration::from_millis(1500), "closed after {el:?}");
    e.shutdown(Duration::from_secs(1));
}

/// A frame trickled one byte per write after the handshake: cut off by the stall timeout on a
/// stream; `Incomplete` at its first record on a record transport.
pub fn frame_trickle_is_bounded(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = p.header_encoder();
    request(&mut b, &mut enc, 1, DL, b"echo", &[7u8; 200]);
    let bytes = b.as_slice().to_vec();
    let start = Instant::now();
    for &byte in &bytes[..bytes.len() - 1] {
        if p.send(&[byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let _ = p.read_to_close();
    let counter = match t.kind {
        Kind::Stream => "stalled",
        Kind::Record => "incomplete",
    };
    assert!(wait_for(&e, counter, Duration::from_secs(5)) >= 1);
    e.shutdown(Duration::from_secs(1));
}
