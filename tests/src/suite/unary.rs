//! Unary calls end to end: answers, large payloads, statuses of calls that fail, many threads
//! and connections, batching, caller-driven cores, a handler calling its own core, and a raw
//! peer that negotiates a 0-size header table.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use netron_codec::handshake::ClientConfig;
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits};
use netron_engine::{
    Bytes, CallSlot, CoreConfig, Engine, IdlePolicy, RuntimeConfig, Service, StatusCode,
};

use super::util::{read_frames, request};
use crate::{RawPeer, Transport, calc, calc_server, services};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// A two-core engine serving `calc` on a fresh endpoint of `t`.
fn two_cores(t: &Transport, tag: &str) -> Engine {
    crate::builder(t)
        .cores(2)
        .service(calc())
        .listen(&(t.listen)(tag))
        .build()
        .expect("engine")
}

/// Answers, a large payload, and the statuses of a failing handler, an unknown service and an
/// unknown method; the channel is still usable after errors.
pub fn calls_answer_fail_and_go_on(t: &Transport) {
    let e = two_cores(t, "unary");
    let client = e.client();
    let ep = crate::dial_of(t, &e).to_string();
    let ch = client.connect(&ep).expect("connect");
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[2u8, 3, 4][..], DL).unwrap(),
        [9]
    );
    let big = vec![7u8; 200_000];
    assert_eq!(
        ch.call("calc@1.2.0", "echo", big.clone(), DL).unwrap(),
        big,
        "{ep}: large payload"
    );
    assert_eq!(
        ch.call("calc@1.2.0", "fail", &b""[..], DL)
            .unwrap_err()
            .code(),
        StatusCode::InvalidArgument
    );
    assert_eq!(
        ch.call("calc@9.0.0", "add", &b""[..], DL)
            .unwrap_err()
            .code(),
        StatusCode::NotFound
    );
    assert_eq!(
        ch.call("calc@1.2.0", "nope", &b""[..], DL)
            .unwrap_err()
            .code(),
        StatusCode::Unimplemented
    );
    // Still usable after errors.
    assert_eq!(ch.call("calc@1.2.0", "add", &[1u8][..], DL).unwrap(), [1]);
    let t = e.total_stats();
    // One connection: its client side and its server side each count a handshake.
    assert!(t.handshakes() >= 2, "{t:?}");
    assert_eq!(t.errors_of("unknown_service"), 1);
    assert_eq!(t.errors_of("unknown_method"), 1);
    e.shutdown(Duration::from_secs(1));
}

/// Eight threads, each with its own connection and a shared one, on a two-core engine.
pub fn many_threads_many_connections(t: &Transport) {
    let e = two_cores(t, "threads");
    let ep = crate::dial_of(t, &e).to_string();
    let client = e.client();
    let shared = client.connect(&ep).unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let (client, ep, shared) = (client.clone(), ep.clone(), shared.clone());
            std::thread::spawn(move || {
                let own = client.connect(&ep).unwrap();
                let add = own.method("calc@1.2.0", "add");
                for i in 0..300u32 {
                    let x = (i % 200) as u8;
                    assert_eq!(add.call(vec![x, t], DL).unwrap(), [x.wrapping_add(t)]);
                    assert_eq!(
                        shared.call("calc@1.2.0", "echo", vec![t; 3], DL).unwrap(),
                        [t; 3]
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = e.stats();
    assert_eq!(stats.len(), 2);
    // Connections were spread over both cores (9 server connections + 9 client ones).
    assert!(
        stats.iter().all(|s| s.accepted() + s.handshakes() > 0),
        "{stats:?}"
    );
    let t = e.total_stats();
    assert_eq!(t.calls_in(), 8 * 300 * 2);
    // Every call is one Request out (client side) and one Response out (server side).
    assert!(t.frames_out() >= 2 * t.calls_in(), "{t:?}");
    e.shutdown(Duration::from_secs(1));
}

/// Frames that arrive together are answered together: 10 requests in one write (one record)
/// get their 10 replies in fewer than 10 writes.
pub fn requests_that_arrive_together_are_answered_in_one_batch(t: &Transport) {
    const N: u32 = 10;
    let (e, ep) = calc_server(t);
    let mut p = RawPeer::handshake(t, &ep);
    // The handshake's own write is complete once the Welcome arrived; wait for its count.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while e.total_stats().driver().writes == 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = e.total_stats();
    let mut batch = BatchEncoder::new(Limits::default());
    let mut enc = p.header_encoder();
    let mut wire = Vec::new();
    for i in 0..N {
        batch.clear();
        batch
            .request(2 * i + 1, DL)
            .unwrap()
            .headers(
                &mut enc,
                &[Header::service(b"calc@1.2.0"), Header::method(b"add")],
            )
            .unwrap()
            .payload(&[i as u8, 1])
            .finish()
            .unwrap();
        wire.extend_from_slice(batch.as_slice());
    }
    p.send(&wire).unwrap();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    while replies.len() < N as usize {
        let mut chunk = [0u8; 4096];
        let n = p.recv(&mut chunk).expect("replies before the timeout");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let limits = Limits::default();
        let mut it = FrameIter::new(&buf, &limits);
        for f in it.by_ref() {
            let f = f.unwrap();
            assert_eq!(f.kind(), FrameKind::Response);
            replies.push((f.id(), f.payload().to_vec()));
        }
        let used = it.consumed();
        buf.drain(..used);
    }
    replies.sort();
    let want: Vec<_> = (0..N).map(|i| (2 * i + 1, vec![i as u8 + 1])).collect();
    assert_eq!(replies, want);
    // Writes are counted when they complete: wait (bounded) for all 10 frames to be counted.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut after = e.total_stats();
    while after.frames_out() - before.frames_out() < N as u64 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
        after = e.total_stats();
    }
    let (frames, writes) = (
        after.frames_out() - before.frames_out(),
        after.driver().writes - before.driver().writes,
    );
    assert_eq!(frames, N as u64, "{after:?}");
    assert!(
        writes < N as u64,
        "{frames} replies took {writes} writes: not batched"
    );
    e.shutdown(Duration::from_secs(1));
}

/// A busy-poll core driven by the test thread makes 1000 calls.
pub fn a_caller_driven_core_makes_calls(t: &Transport) {
    let e = two_cores(t, "embedded");
    let ep = &crate::dial_of(t, &e);
    let mut core =
        crate::new_core(t, RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll)).expect("core");
    let conn = core.connect(ep, Duration::from_secs(5)).expect("connect");
    let mut slot = CallSlot::new();
    for i in 0..1000u32 {
        let p = i.to_le_bytes();
        assert_eq!(
            core.call(conn, b"calc@1.2.0", b"echo", &p, DL, &mut slot)
                .unwrap(),
            &p
        );
    }
    assert!(core.stats().driver().writes >= 1000);
    e.shutdown(Duration::from_secs(1));
}

/// A handler calls another service through a channel on its own (only) core: async calls go
/// straight to the core's own connection, a blocking call is refused, not a deadlock.
pub fn a_handler_calls_another_service_on_its_own_core(t: &Transport) {
    let _serial = services::serial();
    // The proxy's outgoing channel lives on the same (only) core as the proxy's handler.
    let upstream: Arc<OnceLock<netron_engine::Channel>> = Arc::new(OnceLock::new());
    let (u1, u2) = (upstream.clone(), upstream.clone());
    let proxy = Service::new("proxy", "1.0.0")
        .unwrap()
        .unary_async("forward", move |req| {
            let add = u1
                .get()
                .expect("upstream connected")
                .method("calc@1.2.0", "add");
            // Sent directly to this core's own connection: no cross-thread queue.
            // A failed call becomes the handler's status (`From<CallError> for Status`).
            async move {
                let sum = add
                    .call_async(req.into_payload(), Some(Duration::from_secs(5)))
                    .await?;
                Ok(Bytes::from(sum))
            }
        })
        .unary_async("blocking", move |req| {
            // A blocking call here would wait for this very core: refused, not a deadlock.
            let r = u2.get().expect("upstream connected").call(
                "calc@1.2.0",
                "add",
                req.into_payload(),
                None,
            );
            async move { Ok(Bytes::from(r?)) }
        });
    let (server, ep) = crate::engine(t, CoreConfig::default(), &[calc(), proxy], "proxy");
    upstream.set(server.client().connect(&ep).unwrap()).unwrap();
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let chan = client_engine.client().connect(&ep).unwrap();
    for i in 0..50u8 {
        assert_eq!(
            chan.call(
                "proxy@1.0.0",
                "forward",
                vec![i, 1],
                Some(Duration::from_secs(5))
            )
            .unwrap(),
            [i + 1]
        );
    }
    let e = chan
        .call(
            "proxy@1.0.0",
            "blocking",
            vec![1u8, 1],
            Some(Duration::from_secs(5)),
        )
        .unwrap_err();
    assert_eq!(e.code(), StatusCode::FailedPrecondition, "{e}");
    client_engine.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

/// Header table size 0 offered by a raw client: calls still work with a 0-size encoder.
pub fn header_table_size_zero(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut cfg = ClientConfig::default();
    cfg.header_table_size = 0;
    let (mut p, settings, after_welcome) = RawPeer::handshake_with(t, &addr, cfg);
    assert_eq!(settings.header_table_size, 0);
    assert_eq!(after_welcome, 0, "bytes after the Welcome");
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(0);
    for id in [1u32, 3, 5] {
        request(&mut b, &mut enc, id, DL, b"add", &[1, 2]);
    }
    p.send(b.as_slice()).unwrap();
    let (f, _) = read_frames(&mut p, |f| {
        f.iter().filter(|x| x.0 == FrameKind::Response).count() == 3
    });
    assert_eq!(
        f.iter().filter(|x| x.0 == FrameKind::Response).count(),
        3,
        "{f:?}"
    );
    e.shutdown(Duration::from_secs(1));
}

/// With a zero-copy threshold, large replies (and requests) go out as zero-copy sends where
/// the transport can (TCP) and arrive intact everywhere; small calls still use plain sends.
/// Transports that cannot send zero-copy ignore the setting (before, a Unix socket failed
/// every large call with EOPNOTSUPP).
pub fn a_zero_copy_threshold_keeps_large_replies_intact(t: &Transport) {
    let cfg = RuntimeConfig::default().with_send_zc_threshold(Some(16 << 10));
    let (e, _) = crate::engine(t, cfg.clone(), &[calc()], "zc");
    let mut core = crate::new_core(t, cfg).expect("core");
    let conn = core
        .connect(&crate::dial_of(t, &e), Duration::from_secs(5))
        .expect("connect");
    let mut slot = CallSlot::new();
    for i in 0..50u32 {
        // Incompressible, so the negotiated compression leaves it large.
        let big = super::util::noise((256 << 10) + i as usize);
        assert_eq!(
            core.call(conn, b"calc@1.2.0", b"echo", &big, DL, &mut slot)
                .unwrap(),
            &big[..]
        );
        // Small calls still go through plain sends.
        assert_eq!(
            core.call(conn, b"calc@1.2.0", b"add", &[1, 2], DL, &mut slot)
                .unwrap(),
            &[3]
        );
    }
    let client = core.stats().clone();
    let server = e.total_stats();
    if t.zero_copy {
        assert!(
            client.driver().zero_copy_writes >= 50 && server.driver().zero_copy_writes >= 50,
            "{client:?} {server:?}"
        );
    } else {
        assert_eq!(
            (
                client.driver().zero_copy_writes,
                server.driver().zero_copy_writes
            ),
            (0, 0),
            "{client:?} {server:?}"
        );
        assert!(
            client.errors().is_empty() && server.errors().is_empty(),
            "{client:?} {server:?}"
        );
    }
    assert!(client.driver().writes > client.driver().zero_copy_writes);
    e.shutdown(Duration::from_secs(1));
}

/// Batches a record link encodes in place, in ring space it lent to the encoder
/// (docs/protocol.md §26.6), in every shape they take: a burst of 256 pipelined calls, more
/// than a record group in a turn (the lent batch fills and the rest goes out on the heap,
/// after it); replies larger than the lent space (the encoder moves its batch to the heap in
/// the middle of a frame); frames larger than the ring (fragments). Every reply comes back
/// intact, in every round; then sequential 64 KiB echoes are written in place on both sides
/// of a ring transport (`DriverStats::in_place_writes`), and none on a byte stream.
pub fn pipelined_bursts_and_large_replies_stay_intact_around_in_place_batches(t: &Transport) {
    let busy = RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    let (server, _) = crate::engine(t, busy.clone(), &[calc()], "inplace");
    let mut core = crate::new_core(t, busy).unwrap();
    let conn = core
        .connect(&crate::dial_of(t, &server), Duration::from_secs(5))
        .unwrap();
    let large = [3_000usize, 200_000, 700_000, 1_500_000];
    let mut slots: Vec<CallSlot> = (0..256).map(|_| CallSlot::new()).collect();
    for round in 0..8usize {
        let payloads: Vec<Vec<u8>> = (0..256usize)
            .map(|i| {
                let len = if i % 64 == 63 {
                    large[(round + i / 64) % large.len()]
                } else {
                    64
                };
                (0..len).map(|k| (round * 7 + i * 31 + k) as u8).collect()
            })
            .collect();
        for (slot, p) in slots.iter_mut().zip(&payloads) {
            core.start(conn, b"calc@1.2.0", b"echo", p, DL, slot);
        }
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        while !slots.iter().all(CallSlot::is_done) {
            core.run_once().unwrap();
            assert!(
                std::time::Instant::now() < give_up,
                "{}: round {round} did not finish",
                t.name
            );
        }
        for (i, (slot, p)) in slots.iter().zip(&payloads).enumerate() {
            match slot.reply() {
                Some(Ok(r)) => assert!(
                    r == &p[..],
                    "{}: round {round}, call {i}: the reply differs",
                    t.name
                ),
                other => panic!("{}: round {round}, call {i}: {other:?}", t.name),
            }
        }
    }
    // Bulk: sequential 64 KiB echoes. After the first, each side's batches are encoded in
    // place (a link lends after a batch of 16 KiB or more), but where a frame does not fit
    // before the ring's end; on a byte stream none is.
    let (c0, s0) = (core.stats(), server.total_stats());
    for i in 0..100usize {
        // Incompressible (xorshift), so both directions carry 64 KiB batches.
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
        let p: Vec<u8> = (0..65_536usize)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let r = core
            .call(conn, b"calc@1.2.0", b"echo", &p, DL, &mut slots[0])
            .unwrap();
        assert!(r == &p[..], "{}: bulk call {i}: the reply differs", t.name);
    }
    let (c1, s1) = (core.stats(), server.total_stats());
    for (side, a, b) in [("client", &c1, &c0), ("server", &s1, &s0)] {
        let writes = a.driver().writes - b.driver().writes;
        let in_place = a.driver().in_place_writes - b.driver().in_place_writes;
        eprintln!(
            "{}: {side}: {writes} bulk writes, {in_place} in place",
            t.name
        );
        if t.kind == crate::Kind::Record {
            assert!(
                // All but the batch at each lap's wrap (a 1 MiB ring holds 16 of them: the
                // space left before its end is then too small, and that batch is copied).
                in_place >= 80 && in_place <= writes,
                "{}: {side}: {in_place} of {writes} bulk writes in place",
                t.name
            );
        } else {
            assert_eq!(in_place, 0, "{}: {side}", t.name);
        }
    }
    core.close(conn);
    server.shutdown(Duration::from_secs(1));
}
