//! Limits that fail one call and limits that protect the server from a peer (issue 10 items
//! 10-11, issue 11 items 19 and 21), end to end over every transport, with raw peers where the
//! peer must misbehave. Waits are bounded polls; assertions are on statuses and counters.

use std::io::Write;
use std::time::{Duration, Instant};

use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameKind, Limits};
use netron_engine::{Bytes, CoreConfig, Engine, Service, StatusCode};
use netron_tests::{RawPeer, calc, engines};

const DL: Option<Duration> = Some(Duration::from_secs(10));

fn poll(e: &Engine, what: impl Fn(&netron_engine::CoreStats) -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if what(&e.total_stats()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Items 10 and 11: a 9 MiB message is carried (the backlog cap holds two largest frames), a
/// message above the negotiated frame size fails that call only, with ResourceExhausted naming
/// the limit, and the connection's other calls go on.
#[test]
fn message_size_limits_fail_one_call_only() {
    for (e, addr) in engines(CoreConfig::default(), &[calc()], "size") {
        let ch = e.client().connect(&addr).unwrap();
        let nine = noise(9 << 20);
        assert_eq!(
            ch.call("calc@1.2.0", "echo", nine.clone(), DL).unwrap(),
            nine
        );
        for len in [(16 << 20) + 1, 17 << 20] {
            let err = ch.call("calc@1.2.0", "echo", noise(len), DL).unwrap_err();
            assert_eq!(err.code, StatusCode::ResourceExhausted, "{err:?}");
            assert!(err.message.contains("max_frame_size"), "{err:?}");
        }
        assert_eq!(
            ch.call("calc@1.2.0", "add", &[2u8, 3][..], DL).unwrap(),
            [5]
        );
        assert_eq!(e.total_stats().closed, 0, "no connection was closed");
        e.shutdown(Duration::from_secs(1));
    }
}

/// Appends the frames of one round of a flood.
type Flood = dyn Fn(&mut BatchEncoder, &mut HeaderEncoder, u32);

fn request(batch: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32, method: &[u8], p: &[u8]) {
    batch
        .request(id, None)
        .unwrap()
        .headers(
            enc,
            &[Header::service(b"calc@1.2.0"), Header::method(method)],
        )
        .unwrap()
        .payload(p)
        .finish()
        .unwrap();
}

/// Item 19: a peer that stops reading is disconnected within a bounded time (the stall
/// timeout without progress, then the closing bound), and what it sends afterwards is not read.
#[test]
fn a_peer_that_stops_reading_is_disconnected() {
    let cfg = CoreConfig::default()
        .with_stall_timeout(Duration::from_millis(300))
        .with_close_linger(Duration::from_millis(300));
    for (e, addr) in engines(cfg, &[calc()], "noread") {
        let good = e.client().connect(&addr).unwrap();
        let mut p = RawPeer::handshake(&addr);
        let small: libc::c_int = 4096;
        // SAFETY: a valid socket and a c_int of the size passed.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                p.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let mut batch = BatchEncoder::new(Limits::default().with_max_batch_bytes(64 << 20));
        let mut enc = HeaderEncoder::new(4096);
        let mb = noise(1 << 20);
        for i in 0..6u32 {
            request(&mut batch, &mut enc, 2 * i + 1, b"echo", &mb);
        }
        p.stream.write_all(batch.as_slice()).unwrap();
        assert!(
            poll(&e, |s| s.errors_of("write_stalled")
                + s.errors_of("close_linger")
                >= 1
                && s.closed >= 1),
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
}

/// Item 21: Request + Cancel pairs (HTTP/2 rapid reset) and floods of frames that do no work
/// spend the peer's budget and close its connection with ResourceExhausted; a client that
/// cancels half of its calls keeps its connection.
#[test]
fn rapid_reset_and_empty_frame_floods_are_cut_off() {
    let svc = Service::new("slow", "1.0.0")
        .unwrap()
        .unary_async("wait", |_| async {
            // Never finishes on its own: only a Cancel (or the connection's end) drops it.
            std::future::pending::<()>().await;
            Ok(Bytes::new())
        });
    for (e, host) in engines(CoreConfig::default(), &[svc], "floods") {
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
        ];
        for (n, (what, flood)) in floods.iter().enumerate() {
            let mut p = RawPeer::handshake(&host);
            let mut enc = HeaderEncoder::new(4096);
            let mut b = BatchEncoder::new(
                Limits::default()
                    .with_max_batch_frames(1 << 20)
                    .with_max_batch_bytes(64 << 20),
            );
            for i in 0..5_000 {
                flood(&mut b, &mut enc, i);
            }
            let _ = p.stream.write_all(b.as_slice());
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
}
