//! Cancellation: async handlers whose futures are dropped by a deadline, a Cancel frame or a
//! dropped `call_async`; racing cancels on one connection; clients that cancel half of what
//! they pipeline keep their connection (docs/protocol.md §17.1).

use std::future::Future;
use std::time::{Duration, Instant};

use netron_codec::hpack::HeaderEncoder;
use netron_codec::{BatchEncoder, FrameKind, Limits};
use netron_engine::{CallSlot, CoreConfig, IdlePolicy, RuntimeConfig, StatusCode};

use super::util::request;
use crate::{RawPeer, Transport, block_on, calc, services};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// Async handlers answer, fail, expire (the server drops the future) and are cancelled from a
/// caller-driven core, on a busy-poll and on a parking server core.
pub fn async_handlers_answer_fail_expire_and_cancel(t: &Transport) {
    let _serial = services::serial();
    for idle in [
        IdlePolicy::BusyPoll,
        IdlePolicy::Adaptive {
            spin: Duration::ZERO,
        },
    ] {
        services::reset_dropped();
        let (server, ep) = crate::engine(
            t,
            RuntimeConfig::default().with_idle(idle),
            &[services::async_service()],
            "async",
        );
        let ch = crate::builder(t).cores(1).build().unwrap();
        let chan = ch.client().connect(&ep).unwrap();
        let dl = Some(Duration::from_secs(5));
        assert_eq!(
            chan.call("async@1.0.0", "now", &b"abc"[..], dl).unwrap(),
            b"abc"
        );
        // Woken from another thread (with a parked core, through the doorbell).
        assert_eq!(
            chan.call("async@1.0.0", "reverse", &[30u8, 1, 2][..], dl)
                .unwrap(),
            [2, 1, 30]
        );
        assert_eq!(
            chan.call("async@1.0.0", "fail", &b""[..], dl)
                .unwrap_err()
                .code(),
            StatusCode::Aborted
        );
        // Many in flight at once from several threads.
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let chan = chan.clone();
                std::thread::spawn(move || {
                    for i in 0..20u8 {
                        assert_eq!(
                            chan.call("async@1.0.0", "reverse", vec![1, t, i], dl)
                                .unwrap(),
                            [i, t, 1]
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Deadline: the server drops the future and answers DeadlineExceeded; the client too.
        let e = chan
            .call(
                "async@1.0.0",
                "never",
                &b""[..],
                Some(Duration::from_millis(30)),
            )
            .unwrap_err();
        assert_eq!(e.code(), StatusCode::DeadlineExceeded);
        // The drop happens on the server's core: wait for it, with a bound.
        let end = Instant::now() + Duration::from_secs(5);
        while services::dropped() == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            services::dropped(),
            1,
            "{idle:?}: the server dropped the expired future"
        );
        // Whichever came first, the server's own deadline or the client's Cancel, dropped it.
        let st = server.total_stats();
        assert!(st.deadline_exceeded() + st.cancels_in() >= 1, "{st:?}");

        // Cancel from a caller-driven core: the server drops the future.
        let mut core = crate::new_core(t, CoreConfig::default()).unwrap();
        let conn = core
            .connect(&crate::dial_of(t, &server), Duration::from_secs(5))
            .unwrap();
        let mut slot = CallSlot::new();
        let calls_before = server.total_stats().calls_in();
        let id = core
            .start(conn, b"async@1.0.0", b"never", b"", None, &mut slot)
            .unwrap();
        // Cancel once the server has the call (polled with a bound, not a fixed time).
        core.run_until(Duration::from_secs(5), |_| {
            server.total_stats().calls_in() > calls_before
        })
        .unwrap();
        assert!(server.total_stats().calls_in() > calls_before);
        core.cancel(conn, id);
        assert!(slot.is_done());
        core.run_until(Duration::from_secs(5), |_| services::dropped() == 2)
            .unwrap();
        assert_eq!(
            services::dropped(),
            2,
            "{idle:?}: Cancel dropped the running future"
        );
        drop(core);
        ch.shutdown(Duration::from_secs(1));
        server.shutdown(Duration::from_secs(1));
    }
}

/// `call_async` futures resolve (many in flight, awaited afterwards), and dropping a pending
/// one cancels the call on the server.
pub fn async_calls_resolve_and_dropping_one_cancels_it(t: &Transport) {
    let _serial = services::serial();
    let (server, ep) = crate::engine(
        t,
        CoreConfig::default(),
        &[services::async_service()],
        "async-drop",
    );
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let chan = client_engine.client().connect(&ep).unwrap();
    let dl = Some(Duration::from_secs(5));
    let now = chan.method("async@1.0.0", "now");
    assert_eq!(block_on(now.call_async(&b"hi"[..], dl)).unwrap(), b"hi");
    // Many in flight at once, awaited afterwards.
    let reverse = chan.method("async@1.0.0", "reverse");
    let futures: Vec<_> = (0..10u8)
        .map(|i| reverse.call_async(vec![5, i], dl))
        .collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(block_on(f).unwrap(), [i as u8, 5]);
    }
    // Dropping a pending call cancels it on the server.
    let before = services::dropped();
    let calls_before = server.total_stats().calls_in();
    let never = chan
        .method("async@1.0.0", "never")
        .call_async(&b""[..], None);
    // Drop it once the server has it (polled with a bound, not a fixed sleep).
    let end = Instant::now() + Duration::from_secs(5);
    while server.total_stats().calls_in() == calls_before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        server.total_stats().calls_in() > calls_before,
        "the call reached the server"
    );
    drop(never);
    let end = Instant::now() + Duration::from_secs(5);
    while services::dropped() == before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        services::dropped(),
        before + 1,
        "the server dropped the cancelled call's future"
    );
    assert!(server.total_stats().cancels_in() >= 1);
    // The channel is still fine.
    assert_eq!(block_on(now.call_async(&b"ok"[..], dl)).unwrap(), b"ok");
    client_engine.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

/// Two threads racing blocking calls with tiny deadlines and dropped futures on one
/// connection; afterwards the thread's next call and the connection still work.
pub fn racing_calls_and_cancels_on_one_connection(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let ch = e.client().connect(&addr).unwrap();
    let hs: Vec<_> = (0..2)
        .map(|t| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                let m = ch.method("calc@1.2.0", "add");
                for i in 0..2000u32 {
                    match i % 4 {
                        0 => {
                            let _ = m
                                .call(&[1u8][..], Some(Duration::from_micros(1 + (i % 50) as u64)));
                        }
                        1 => drop(m.call_async(&[1u8][..], None)),
                        2 => {
                            let mut f = Box::pin(m.call_async(&[1u8, 2][..], DL));
                            let w = std::task::Waker::noop();
                            let _ = f.as_mut().poll(&mut std::task::Context::from_waker(w));
                            drop(f);
                        }
                        _ => assert_eq!(m.call(vec![t as u8, 2], DL).unwrap(), [t as u8 + 2]),
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[20u8, 22][..], DL).unwrap(),
        [42]
    );
    assert_eq!(e.total_stats().errors_of("idle_frame_budget"), 0);
    e.shutdown(Duration::from_secs(1));
}

/// Was a fault (fixed) (docs/protocol.md §17.1, architecture.md "Timers and budgets": "a
/// client that pipelines at full rate and cancels one call in two never runs it dry"). A client
/// that pipelines 3000 calls and then cancels half of them (hedged requests: cancel the losers
/// after the winners answered) was cut off with idle_frame_budget: the refunds of its Requests
/// were lost because the bucket was already full.
pub fn pipelined_client_cancelling_half_its_calls_keeps_connection(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut enc = p.header_encoder();
    let reader = p.read_in_background();
    let mut b = BatchEncoder::new(Limits::default());
    let n = 3000u32;
    for i in 0..n {
        if b.len() > 60_000 || b.frame_count() >= 120 {
            p.send(b.as_slice()).unwrap();
            b.clear();
        }
        request(&mut b, &mut enc, 2 * i + 1, DL, b"add", &[1]);
    }
    p.send(b.as_slice()).unwrap();
    b.clear();
    std::thread::sleep(Duration::from_millis(200));
    for i in (0..n).step_by(2) {
        if b.len() > 60_000 || b.frame_count() >= 120 {
            p.send(b.as_slice()).unwrap();
            b.clear();
        }
        b.empty_frame(FrameKind::Cancel, 2 * i + 1, 0).unwrap();
    }
    let _ = p.send(b.as_slice());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        e.total_stats().errors_of("idle_frame_budget"),
        0,
        "a client that cancelled half of its calls was cut off"
    );
    let _ = p.link.close();
    let _ = reader.join();
    e.shutdown(Duration::from_secs(1));
}

/// The interleaved pattern (R R C ...) keeps its connection.
pub fn interleaved_cancel_half_keeps_connection(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let reader = p.read_in_background();
    let mut enc = HeaderEncoder::new(4096);
    let mut b = BatchEncoder::new(Limits::default());
    for i in 0..6000u32 {
        if b.len() > 60_000 || b.frame_count() >= 120 {
            p.send(b.as_slice()).unwrap();
            b.clear();
        }
        request(&mut b, &mut enc, 2 * i + 1, DL, b"add", &[1]);
        if i % 2 == 1 {
            b.empty_frame(FrameKind::Cancel, 2 * i + 1, 0).unwrap();
        }
    }
    p.send(b.as_slice()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.total_stats().errors_of("idle_frame_budget"), 0);
    let _ = p.link.close();
    let _ = reader.join();
    e.shutdown(Duration::from_secs(1));
}
