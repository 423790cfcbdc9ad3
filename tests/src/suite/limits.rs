//! Limits that fail one call and limits that protect the server from a peer (issue 10 items
//! 10-11 and 17, issue 11 items 19 and 21), with raw peers where the peer must misbehave.
//! Waits are bounded polls; assertions are on statuses and counters.

use std::time::{Duration, Instant};

use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameKind, Limits};
use netron_engine::{
    Bytes, CoreConfig, FrameBudget, IdlePolicy, ProtocolConfig, RuntimeConfig, Service, StatusCode,
};

use super::util::{noise, poll, read_frames, request, wait_for};
use crate::{RawPeer, Transport, calc};

const DL: Option<Duration> = Some(Duration::from_secs(10));

/// Items 10 and 11: a 9 MiB message is carried (the backlog cap holds two largest frames), a
/// message above the negotiated frame size fails that call only, with ResourceExhausted naming
/// the limit, and the connection's other calls go on.
pub fn message_size_limits_fail_one_call_only(t: &Transport) {
    let (e, addr) = crate::engine(t, CoreConfig::default(), &[calc()], "size");
    let ch = e.client().connect(&addr).unwrap();
    let nine = noise(9 << 20);
    assert_eq!(
        ch.call("calc@1.2.0", "echo", nine.clone(), DL).unwrap(),
        nine
    );
    for len in [(16 << 20) + 1, 17 << 20] {
        let err = ch.call("calc@1.2.0", "echo", noise(len), DL).unwrap_err();
        assert_eq!(err.code(), StatusCode::ResourceExhausted, "{err:?}");
        assert!(err.status().message.contains("max_frame_size"), "{err:?}");
    }
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[2u8, 3][..], DL).unwrap(),
        [5]
    );
    assert_eq!(e.total_stats().closed(), 0, "no connection was closed");
    e.shutdown(Duration::from_secs(1));
}

/// Metadata whose header list would decode above max_header_list_size (16 KiB by default, a
/// receiver's connection error, protocol.md §9.7) fails that one call, stream or reply on the
/// side that sends it, naming the limit: request metadata (one large field, or many small
/// ones), a stream's metadata, and a handler's response metadata. The connection goes on.
pub fn metadata_above_the_header_list_limit_fails_one_call_only(t: &Transport) {
    let svc = Service::new("meta", "1.0.0")
        .unwrap()
        .unary("big", |_, reply| {
            reply.metadata("r", &[b'z'; 20_000]);
            reply.write(b"dropped");
            Ok(())
        })
        .bidi_stream("s", |_, _rx, _tx| async move { Ok(()) });
    let (e, addr) = crate::engine(t, CoreConfig::default(), &[calc(), svc], "hlist");
    let ch = e.client().connect(&addr).unwrap();
    let opts = || netron_engine::CallOptions::new().deadline(Duration::from_secs(10));
    let mut many = opts();
    for i in 0..1000 {
        many = many.metadata(&format!("h{i}"), b"v");
    }
    let big = opts().metadata("x", &[b'a'; 16 << 10]);
    for (what, o) in [("one large field", &big), ("1000 small fields", &many)] {
        let r = ch.call_with("calc@1.2.0", "add", &[1u8, 2][..], o);
        let err = r.into_result().unwrap_err();
        assert_eq!(err.code(), StatusCode::ResourceExhausted, "{what}: {err:?}");
        assert!(
            err.status().message.contains("max_header_list_size"),
            "{what}: {err}"
        );
    }
    let (_tx, mut rx) = ch.open_bidi("meta@1.0.0", "s", &big);
    let err = crate::block_on(rx.recv()).unwrap().unwrap_err();
    assert_eq!(err.code, StatusCode::ResourceExhausted, "{err:?}");
    assert!(err.message.contains("max_header_list_size"), "{err:?}");
    // The handler's reply metadata: its call fails (the reply is not sent), not the connection.
    let err = ch.call("meta@1.0.0", "big", Bytes::new(), DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::ResourceExhausted, "{err:?}");
    assert!(
        err.status().message.contains("max_header_list_size"),
        "{err}"
    );
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[2u8, 3][..], DL).unwrap(),
        [5]
    );
    assert_eq!(e.total_stats().closed(), 0, "no connection was closed");
    e.shutdown(Duration::from_secs(1));
}

/// Item 19: a peer that stops reading is disconnected within a bounded time (the stall
/// timeout without progress, then the closing bound), and what it sends afterwards is not read.
pub fn a_peer_that_stops_reading_is_disconnected(t: &Transport) {
    let cfg = ProtocolConfig::default()
        .with_stall_timeout(Duration::from_millis(300))
        .with_close_linger(Duration::from_millis(300));
    let (e, addr) = crate::engine(t, cfg, &[calc()], "noread");
    let good = e.client().connect(&addr).unwrap();
    let mut p = RawPeer::handshake(t, &addr);
    p.link.set_recv_buffer(4096).unwrap();
    let mut batch = BatchEncoder::new(Limits::default().with_max_batch_bytes(64 << 20));
    let mut enc = p.header_encoder();
    let mb = noise(1 << 20);
    for i in 0..6u32 {
        request(&mut batch, &mut enc, 2 * i + 1, None, b"echo", &mb);
    }
    // The server may cut the connection before all 6 MiB are written (its stall timeout runs
    // while this peer still writes on a loaded host): a reset write is that outcome, which
    // the counters below check.
    let _ = p.send_frames(batch.as_slice());
    assert!(
        poll(&e, |s| s.errors_of("write_stalled")
            + s.errors_of("close_linger")
            >= 1
            && s.closed() >= 1),
        "the server still holds the connection: {:?}",
        e.total_stats()
    );
    // Other clients lost nothing.
    assert_eq!(
        good.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
        [3]
    );
    e.shutdown(Duration::from_secs(1));
}

/// Appends the frames of one round of a flood.
type Flood = dyn Fn(&mut BatchEncoder, &mut HeaderEncoder, u32);

/// A StreamOpen of `slow@1.0.0/hang` (a bidirectional stream that reads nothing) with `id`.
fn stream_open(b: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32) {
    b.frame(FrameKind::StreamOpen, id)
        .unwrap()
        .headers(
            enc,
            &[Header::service(b"slow@1.0.0"), Header::method(b"hang")],
        )
        .unwrap()
        .finish()
        .unwrap();
}

/// Item 21: Request + Cancel pairs (HTTP/2 rapid reset) and floods of frames that do no work
/// spend the peer's budget and close its connection with ResourceExhausted. The same for the
/// other exchanges (fresh user R11's findings 4 and 5, free before): StreamOpen + Cancel,
/// Subscribe + Unsubscribe, and late frames for a stream that ended (past the few that may
/// cross its end).
pub fn rapid_reset_and_empty_frame_floods_are_cut_off(t: &Transport) {
    let svc = Service::new("slow", "1.0.0")
        .unwrap()
        .unary_async("wait", |_| async {
            // Never finishes on its own: only a Cancel (or the connection's end) drops it.
            std::future::pending::<()>().await;
            Ok(Bytes::new())
        })
        .bidi_stream("hang", |_, rx, tx| async move {
            let _halves = (rx, tx);
            std::future::pending::<()>().await;
            Ok(())
        });
    let (e, host) = crate::engine(t, CoreConfig::default(), &[svc], "floods");
    let floods: Vec<(&str, Box<Flood>)> = vec![
        (
            "rapid reset",
            Box::new(|b, enc, i| {
                let id = 2 * i + 1;
                b.request(id, None)
                    .unwrap()
                    .headers(
                        enc,
                        &[Header::service(b"slow@1.0.0"), Header::method(b"wait")],
                    )
                    .unwrap()
                    .finish()
                    .unwrap();
                b.empty_frame(FrameKind::Cancel, id, 0).unwrap();
            }),
        ),
        (
            "ping flood",
            Box::new(|b, _, i| b.empty_frame(FrameKind::Ping, 0, i).unwrap()),
        ),
        (
            "pong flood",
            Box::new(|b, _, i| b.empty_frame(FrameKind::Pong, 0, i).unwrap()),
        ),
        (
            "window updates",
            Box::new(|b, _, i| {
                b.empty_frame(FrameKind::WindowUpdate, 2 * i + 1, 1)
                    .unwrap()
            }),
        ),
        (
            "stream rapid reset",
            Box::new(|b, enc, i| {
                let id = 2 * i + 1;
                stream_open(b, enc, id);
                b.empty_frame(FrameKind::Cancel, id, 0).unwrap();
            }),
        ),
        (
            "late stream frames",
            Box::new(|b, enc, i| {
                if i == 0 {
                    stream_open(b, enc, 1);
                    b.empty_frame(FrameKind::Cancel, 1, 0).unwrap();
                } else {
                    b.empty_frame(FrameKind::WindowUpdate, 1, 1).unwrap();
                }
            }),
        ),
        (
            "subscribe churn",
            Box::new(|b, _, i| {
                let id = 2 * i + 1;
                netron_codec::control::ControlEncoder::new()
                    .subscribe(b, id, "churn.x", 16)
                    .unwrap();
                b.empty_frame(FrameKind::Unsubscribe, id, 0).unwrap();
            }),
        ),
    ];
    let features = netron_codec::features::STREAMS | netron_codec::features::EVENTS;
    for (n, (what, flood)) in floods.iter().enumerate() {
        let cfg = netron_codec::handshake::ClientConfig::default().with_features(features);
        let (mut p, _, _) = RawPeer::handshake_with(t, &host, cfg);
        let mut enc = p.header_encoder();
        let mut b = BatchEncoder::new(
            Limits::default()
                .with_max_batch_frames(1 << 20)
                .with_max_batch_bytes(64 << 20),
        );
        for i in 0..5_000 {
            flood(&mut b, &mut enc, i);
        }
        let _ = p.send_frames(b.as_slice());
        let got = p.read_to_close().unwrap_or_default();
        assert!(
            poll(&e, |s| s.errors_of("idle_frame_budget") > n as u64),
            "{what}: not cut off"
        );
        // The close came with an Error(0) saying why.
        let errors: Vec<_> = netron_codec::FrameIter::new(&got, &Limits::default())
            .filter_map(Result::ok)
            .filter(|f| f.kind() == FrameKind::Error && f.id() == 0)
            .map(|f| {
                netron_codec::control::read_error(&f)
                    .map(|b| b.status())
                    .ok()
            })
            .collect();
        assert_eq!(
            errors
                .last()
                .copied()
                .flatten()
                .map(netron_codec::control::status),
            Some(StatusCode::ResourceExhausted),
            "{what}"
        );
    }
    e.shutdown(Duration::from_secs(1));
}

/// A header list above max_header_list_size: a connection error that does not echo it.
pub fn huge_metadata_is_refused_without_echo(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let big = vec![b'Q'; 60_000];
    b.request(1, Some(Duration::from_secs(5)))
        .unwrap()
        .headers(
            &mut enc,
            &[
                Header::service(b"calc@1.2.0"),
                Header::method(b"add"),
                Header::new(b"x-big", &big),
            ],
        )
        .unwrap()
        .finish()
        .unwrap();
    p.send(b.as_slice()).unwrap();
    let got = p.read_to_close().unwrap();
    assert!(got.len() < 2048, "server sent {} bytes", got.len());
    assert!(!got.windows(64).any(|w| w.iter().all(|&c| c == b'Q')));
    assert!(wait_for(&e, "header_list_too_large", Duration::from_secs(5)) >= 1);
    e.shutdown(Duration::from_secs(1));
}

/// Pings just under the budget rate for 3 s keep the connection.
///
/// The peer sends 8 Pings every 10 ms (at most 800 a second against a budget of 1000 a
/// second with a burst of 100) and waits for their 8 Pongs before the next batch, so a stall
/// in the link or a loaded machine cannot bunch more than 8 frames into one arrival: the
/// engine sees the rate the test claims. (The open-loop version failed once in CI, over
/// `quic://` on the epoll driver with the whole suite running on 2 cores: a delivery stall
/// of over 125 ms lets more than 100 queued Pings arrive together, which the budget rightly
/// refuses.)
pub fn ping_rate_just_below_budget_keeps_connection(t: &Transport) {
    let cfg = CoreConfig::new(
        RuntimeConfig::default().with_idle(IdlePolicy::Adaptive {
            spin: Duration::from_micros(20),
        }),
        ProtocolConfig::default().with_idle_frame_budget(FrameBudget::new(100, 1000)),
    );
    let (e, addr) = super::review_engine(t, cfg, calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    for _ in 0..8 {
        b.empty_frame(FrameKind::Ping, 0, 0).unwrap();
    }
    let start = Instant::now();
    let mut batches = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        p.send(b.as_slice()).unwrap();
        let pongs = |f: &[(FrameKind, u32, Vec<u8>)]| {
            f.iter().filter(|x| x.0 == FrameKind::Pong).count() >= 8
        };
        let (got, closed) = read_frames(&mut p, pongs);
        assert!(
            !closed && pongs(&got),
            "batch {batches}: closed after {:?}; idle_frame_budget errors: {}",
            got.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
            e.total_stats().errors_of("idle_frame_budget")
        );
        batches += 1;
        std::thread::sleep(Duration::from_millis(10).saturating_sub(sent.elapsed()));
    }
    assert!(batches > 0);
    assert_eq!(e.total_stats().errors_of("idle_frame_budget"), 0);
    let _ = p.link.close();
    e.shutdown(Duration::from_secs(1));
}

/// A ping flood from a peer that never reads the Pongs: closed (budget) rather than growing
/// output forever.
pub fn ping_flood_without_reading_is_closed(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    for _ in 0..100 {
        b.empty_frame(FrameKind::Ping, 0, 7).unwrap();
    }
    let start = Instant::now();
    for _ in 0..50 {
        if p.send(b.as_slice()).is_err() {
            break;
        }
    }
    assert!(wait_for(&e, "idle_frame_budget", Duration::from_secs(5)) >= 1);
    assert!(start.elapsed() < Duration::from_secs(3));
    e.shutdown(Duration::from_secs(1));
}

/// `max_connections`: a connection past the limit is closed at once and counted as refused.
pub fn connection_limit_refuses_extra_connections(t: &Transport) {
    let cfg = RuntimeConfig::default().with_max_connections(2);
    let (e, addr) = crate::engine(t, cfg, &[calc()], "max-conns");
    let _a = RawPeer::handshake(t, &addr);
    let _b = RawPeer::handshake(t, &addr);
    let mut c = (t.connect)(&addr).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        c.recv(&mut buf, Some(Duration::from_secs(5))).unwrap_or(0),
        0,
        "third connection closed at once"
    );
    assert_eq!(e.total_stats().refused(), 1);
    e.shutdown(Duration::from_secs(1));
}

/// Item 17: builder and configuration values are validated into errors that name the setting;
/// durations at the far end are accepted and never panic a core.
pub fn bad_settings_are_refused_by_name(t: &Transport) {
    let cases: Vec<(&str, netron_engine::EngineBuilder)> = vec![
        ("EngineBuilder::cpus", crate::builder(t).cpus(&[])),
        ("EngineBuilder::cpus", crate::builder(t).cpus(&[1 << 20])),
        ("EngineBuilder::cores", crate::builder(t).cores(0)),
        (
            "RuntimeConfig::recv_buffers",
            crate::builder(t).config(RuntimeConfig::default().with_recv_buffers(3, 4096)),
        ),
        (
            "ProtocolConfig::stall_timeout",
            crate::builder(t).config(ProtocolConfig::default().with_stall_timeout(Duration::ZERO)),
        ),
        (
            "ProtocolConfig::max_backlog_bytes",
            crate::builder(t).config(ProtocolConfig::default().with_max_backlog_bytes(1 << 20)),
        ),
        (
            "RuntimeConfig::max_connections",
            crate::builder(t).config(RuntimeConfig::default().with_max_connections(0)),
        ),
    ];
    for (setting, b) in cases {
        let e = b.build().unwrap_err();
        assert!(e.to_string().contains(setting), "{setting}: {e}");
    }
    // Durations at the far end are accepted and never panic a core.
    let (e, ep) = crate::engine(
        t,
        ProtocolConfig::default()
            .with_keepalive(Duration::MAX, Duration::MAX)
            .with_stall_timeout(Duration::MAX)
            .with_close_linger(Duration::MAX),
        &[calc()],
        "far",
    );
    let ch = e.client().connect(&ep).unwrap();
    for d in [
        Some(Duration::MAX),
        Some(Duration::ZERO),
        Some(Duration::from_nanos(1)),
        None,
    ] {
        let r = ch.call("calc@1.2.0", "add", &[1u8, 2][..], d);
        assert!(
            matches!(&r, Ok(v) if v == &[3]) || r.is_err(),
            "{d:?}: {r:?}"
        );
    }
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 2][..], None).unwrap(),
        [3]
    );
    assert!(e.health().is_ok());
    e.shutdown(Duration::from_secs(1));
}
