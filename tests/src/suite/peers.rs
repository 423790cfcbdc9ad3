//! Symmetric peers (SPEC §4): the side that connected serves services and the side that
//! accepted calls them over the same connection, during a call (an async handler awaiting its
//! peer) and after it (a kept [`Peer`]); a sync handler's blocking callback is an error, not a
//! deadlock; both directions at once never collide; the peer's services vanish with the
//! connection (`Unavailable`, nothing hangs); a request with the wrong id parity is cut off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netron_codec::{BatchEncoder, Limits};
use netron_engine::{
    Bytes, CallSlot, Channel, Core, CoreConfig, Engine, Peer, Service, Status, StatusCode,
};

use super::util::{poll, request, wait_for, within};
use crate::{RawPeer, Transport, block_on, calc};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// Counters that would show ids of the two directions colliding or a reply going astray.
const ID_TROUBLE: [&str; 4] = [
    "wrong_id_parity",
    "duplicate_id",
    "unknown_id",
    "late_reply",
];

/// The connecting side's service: `ring` answers `phone:` + the payload (sync), `stall` never
/// answers (async), `count` answers how many calls `ring` served so far.
fn phone() -> Service {
    let rung = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r2 = rung.clone();
    Service::new("phone", "1.0.0")
        .unwrap()
        .unary("ring", move |req, reply| {
            rung.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            reply.write(b"phone:");
            reply.write(req.payload());
            Ok(())
        })
        .unary("count", move |_, reply| {
            let n = r2.load(std::sync::atomic::Ordering::Relaxed);
            reply.write(&n.to_le_bytes());
            Ok(())
        })
        .unary_async("stall", |_| std::future::pending::<Result<Bytes, Status>>())
}

/// The accepting side's service: `ask` calls the caller's `phone/ring` back while its own call
/// is open (async) and answers `desk:` + that reply; `keep` stores the caller's [`Peer`];
/// `block` makes a blocking call to its peer from a sync handler; `echo` answers its payload.
fn desk(kept: Arc<Mutex<Option<Peer>>>) -> Service {
    Service::new("desk", "1.0.0")
        .unwrap()
        .unary_async("ask", |req| {
            let peer = req.peer();
            async move {
                let r = peer
                    .call_async("phone@1.0.0", "ring", req.into_payload(), DL)
                    .await?;
                let mut out = b"desk:".to_vec();
                out.extend_from_slice(&r);
                Ok(Bytes::from(out))
            }
        })
        .unary("keep", move |req, _| {
            *kept.lock().unwrap() = Some(req.peer());
            Ok(())
        })
        .unary("block", |req, reply| {
            // Waits on its own core for a reply only this core could read: refused at once.
            let r = req.peer().call("phone@1.0.0", "ring", &b"x"[..], DL)?;
            reply.write(&r);
            Ok(())
        })
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        })
}

/// A one-core server serving `desk` on `t` and a one-core client engine serving `phone`,
/// connected: (server, its kept-peer cell, client engine, channel to the server).
fn pair(t: &Transport, tag: &str) -> (Engine, Arc<Mutex<Option<Peer>>>, Engine, Channel) {
    let kept = Arc::new(Mutex::new(None));
    let (server, ep) = crate::engine(t, CoreConfig::default(), &[desk(kept.clone())], tag);
    let client = crate::builder(t).cores(1).service(phone()).build().unwrap();
    let ch = client.client().connect(&ep).expect("connect");
    (server, kept, client, ch)
}

fn kept_peer(ch: &Channel, kept: &Mutex<Option<Peer>>) -> Peer {
    ch.call("desk@1.0.0", "keep", Bytes::new(), DL).unwrap();
    kept.lock()
        .unwrap()
        .clone()
        .expect("the handler kept its peer")
}

fn assert_no_id_trouble(engines: &[&Engine]) {
    for e in engines {
        let s = e.total_stats();
        for c in ID_TROUBLE {
            assert_eq!(s.errors_of(c), 0, "counter {c}: {s:?}");
        }
    }
}

/// The server's async handler calls back into the client's service while the client's call is
/// still open, and a `Peer` kept by a handler calls the client later, blocking and async,
/// from another thread; the same with a caller-driven core serving the callback.
pub fn a_server_calls_back_into_the_clients_services_mid_call_and_after(t: &Transport) {
    let (server, kept, client, ch) = pair(t, "peers-mid");
    for i in 0..20u8 {
        let r = ch.call("desk@1.0.0", "ask", vec![i], DL).unwrap();
        assert_eq!(r, [&b"desk:phone:"[..], &[i]].concat());
    }
    let peer = kept_peer(&ch, &kept);
    assert!(peer.same_connection(&peer.clone()));
    // After the call, from this thread: blocking and async.
    assert_eq!(
        peer.call("phone@1.0.0", "ring", &b"later"[..], DL).unwrap(),
        b"phone:later"
    );
    let r = block_on(peer.call_async("phone@1.0.0", "ring", &b"async"[..], DL)).unwrap();
    assert_eq!(r, b"phone:async");
    // The peer's statuses come back as they are.
    let e = peer
        .call("phone@1.0.0", "nope", Bytes::new(), DL)
        .unwrap_err();
    assert_eq!(e.code(), StatusCode::Unimplemented, "{e}");
    let e = peer
        .call("nobody@1.0.0", "ring", Bytes::new(), DL)
        .unwrap_err();
    assert_eq!(e.code(), StatusCode::NotFound, "{e}");
    // The client's core served them all: 20 callbacks and 2 later calls.
    let count = peer.call("phone@1.0.0", "count", Bytes::new(), DL).unwrap();
    assert_eq!(u64::from_le_bytes(count.try_into().unwrap()), 22);
    assert!(client.total_stats().calls_in() >= 23);
    assert_no_id_trouble(&[&server, &client]);

    // A caller-driven core serving `phone`: it serves the callback while it waits for its call.
    let ep = crate::dial_of(t, &server).clone();
    let mut core =
        Core::with_services((t.configure_core)(CoreConfig::default()), [phone()]).unwrap();
    let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
    let mut slot = CallSlot::new();
    for i in 0..5u8 {
        let r = core
            .call(conn, b"desk@1.0.0", b"ask", &[i], DL, &mut slot)
            .unwrap();
        assert_eq!(r, [&b"desk:phone:"[..], &[i]].concat());
    }
    assert_eq!(core.stats().calls_in(), 5);
    drop(core);
    drop(ch);
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

/// A sync handler that blocks on its peer gets `FailedPrecondition` at once, naming why; the
/// connection goes on. A sync handler may still start an async call and hand it to another
/// thread.
pub fn a_sync_handlers_blocking_callback_is_an_error_not_a_deadlock(t: &Transport) {
    let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<u8>, netron_engine::CallError>>();
    let tx = Mutex::new(tx);
    let handoff = Service::new("handoff", "1.0.0")
        .unwrap()
        .unary("start", move |req, _| {
            let fut = req
                .peer()
                .call_async("phone@1.0.0", "ring", &b"handed"[..], DL);
            let tx = tx.lock().unwrap().clone();
            std::thread::spawn(move || {
                let _ = tx.send(block_on(fut));
            });
            Ok(())
        });
    // Blocking on the future instead, in the sync handler: the future fails at once with
    // WouldDeadlock (before, the core stopped for good: it could never read the reply).
    let wait = Service::new("wait", "1.0.0")
        .unwrap()
        .unary("on_future", |req, reply| {
            let fut = req.peer().call_async("phone@1.0.0", "ring", &b"w"[..], DL);
            let e = block_on(fut).expect_err("a blocked sync handler cannot get the reply");
            reply.write(format!("{:?}", e.code()).as_bytes());
            Ok(())
        });
    let kept = Arc::new(Mutex::new(None));
    let (server, ep) = crate::engine(
        t,
        CoreConfig::default(),
        &[desk(kept.clone()), handoff, wait],
        "peers-block",
    );
    let client = crate::builder(t).cores(1).service(phone()).build().unwrap();
    let ch = client.client().connect(&ep).expect("connect");
    let ch2 = ch.clone();
    let e = within("a sync handler's blocking callback", move || {
        ch2.call("desk@1.0.0", "block", Bytes::new(), DL)
    })
    .unwrap_err();
    assert_eq!(e.code(), StatusCode::FailedPrecondition, "{e}");
    assert!(e.status().message.contains("deadlock"), "{e}");
    assert!(e.status().message.contains("call_async"), "{e}");
    let ch3 = ch.clone();
    let r = within("a sync handler blocking on a call future", move || {
        ch3.call("wait@1.0.0", "on_future", Bytes::new(), DL)
    })
    .unwrap();
    assert_eq!(r, b"FailedPrecondition");
    // The connection goes on, and the handed-off call is answered.
    assert_eq!(
        ch.call("desk@1.0.0", "echo", &b"on"[..], DL).unwrap(),
        b"on"
    );
    ch.call("handoff@1.0.0", "start", Bytes::new(), DL).unwrap();
    let r = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("handed-off call resolves");
    assert_eq!(r.unwrap(), b"phone:handed");
    drop(ch);
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

/// Both sides call each other at once on one connection, many calls each way, blocking and
/// async, with callbacks nested in calls: every call gets its own answer, and no counter shows
/// ids of the two directions colliding.
///
/// Then the same with both ends of the connection on one core (an engine serving both
/// services connected to itself): both roles are served by that core in the same turns.
pub fn both_sides_call_each_other_at_once(t: &Transport) {
    let (server, kept, client, ch) = pair(t, "peers-both");
    let peer = kept_peer(&ch, &kept);
    both_ways(&ch, &peer);
    assert_no_id_trouble(&[&server, &client]);
    drop(ch);
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));

    let kept = Arc::new(Mutex::new(None));
    let (one, ep) = crate::engine(
        t,
        CoreConfig::default(),
        &[desk(kept.clone()), phone()],
        "peers-one-core",
    );
    let ch = one.client().connect(&ep).expect("connect");
    let peer = kept_peer(&ch, &kept);
    both_ways(&ch, &peer);
    assert_no_id_trouble(&[&one]);
    drop(ch);
    one.shutdown(Duration::from_secs(1));
}

/// Calls both ways on `ch`'s connection at once: from `ch`'s side (`echo`, and `ask`, which
/// calls back) and from the other side through `peer`, blocking and async, on several threads.
fn both_ways(ch: &Channel, peer: &Peer) {
    const THREADS: usize = 3;
    const CALLS: u32 = 40;
    let mut hs = Vec::new();
    for th in 0..THREADS {
        // Client to server: plain calls and calls that call back.
        let ch = ch.clone();
        hs.push(std::thread::spawn(move || {
            for i in 0..CALLS {
                let p = format!("c{th}-{i}");
                let m = if i % 2 == 0 { "echo" } else { "ask" };
                let r = ch
                    .call("desk@1.0.0", m, p.clone().into_bytes(), DL)
                    .unwrap();
                let want = if m == "echo" {
                    p.clone().into_bytes()
                } else {
                    format!("desk:phone:{p}").into_bytes()
                };
                assert_eq!(r, want, "{m} {p}");
            }
        }));
        // Server to client through the kept peer.
        let peer = peer.clone();
        hs.push(std::thread::spawn(move || {
            for i in 0..CALLS {
                let p = format!("s{th}-{i}");
                let r = if i % 2 == 0 {
                    peer.call("phone@1.0.0", "ring", p.clone().into_bytes(), DL)
                } else {
                    block_on(peer.call_async("phone@1.0.0", "ring", p.clone().into_bytes(), DL))
                };
                assert_eq!(r.unwrap(), format!("phone:{p}").into_bytes());
            }
        }));
    }
    // Async calls in flight in both directions at the same time.
    let mine: Vec<_> = (0..20u8)
        .map(|i| ch.method("desk@1.0.0", "ask").call_async(vec![i], DL))
        .collect();
    let theirs: Vec<_> = (0..20u8)
        .map(|i| peer.call_async("phone@1.0.0", "ring", vec![i], DL))
        .collect();
    for (i, (a, b)) in mine.into_iter().zip(theirs).enumerate() {
        let i = i as u8;
        assert_eq!(block_on(a).unwrap(), [&b"desk:phone:"[..], &[i]].concat());
        assert_eq!(block_on(b).unwrap(), [&b"phone:"[..], &[i]].concat());
    }
    for h in hs {
        within("a thread calling both ways", move || h.join()).expect("no thread failed");
    }
    // Every `ring` ran once: the server threads' calls, the client threads' `ask`s (half of
    // their calls), and the 20 async calls each way.
    let want = (u64::from(CALLS) + u64::from(CALLS / 2)) * THREADS as u64 + 40;
    let n = peer.call("phone@1.0.0", "count", Bytes::new(), DL).unwrap();
    assert_eq!(u64::from_le_bytes(n.try_into().unwrap()), want);
}

/// The peer's services vanish with its connection: a callback pending when the client closes
/// fails with `Unavailable`, and so do later calls through a kept `Peer` (blocking and
/// async), at once; the server's connection is gone (nothing kept).
pub fn peer_services_vanish_with_the_connection(t: &Transport) {
    let (server, kept, client, ch) = pair(t, "peers-vanish");
    let peer = kept_peer(&ch, &kept);
    let pending = peer.call_async("phone@1.0.0", "stall", Bytes::new(), None);
    let blocked = {
        let peer = peer.clone();
        std::thread::spawn(move || peer.call("phone@1.0.0", "stall", Bytes::new(), None))
    };
    // Both calls reached the client before it goes.
    assert!(poll(&client, |s| s.calls_in() >= 2), "the stalls arrived");
    drop(ch);
    // Local causes, named as such (not the peer's status): CallError::Closed.
    let e = within("a pending callback whose connection closed", move || {
        block_on(pending)
    })
    .unwrap_err();
    assert_eq!(e.code(), StatusCode::Unavailable, "{e}");
    assert!(matches!(e, netron_engine::CallError::Closed(_)), "{e:?}");
    let e = within("a blocked callback whose connection closed", move || {
        blocked.join().unwrap()
    })
    .unwrap_err();
    assert_eq!(e.code(), StatusCode::Unavailable, "{e}");
    assert!(matches!(e, netron_engine::CallError::Closed(_)), "{e:?}");
    assert!(poll(&server, |s| s.closed() >= 1), "the server closed it");
    let p2 = peer.clone();
    let e = within("a call through a peer whose connection closed", move || {
        p2.call("phone@1.0.0", "ring", Bytes::new(), DL)
    })
    .unwrap_err();
    assert_eq!(e.code(), StatusCode::Unavailable, "{e}");
    assert!(e.status().message.contains("closed"), "{e}");
    let e = block_on(peer.call_async("phone@1.0.0", "ring", Bytes::new(), DL)).unwrap_err();
    assert_eq!(e.code(), StatusCode::Unavailable, "{e}");
    assert!(e.status().message.contains("closed"), "{e}");
    // The engine stops: a kept peer's calls fail at once too.
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
    let e = within("a call through a peer of a stopped engine", move || {
        peer.call("phone@1.0.0", "ring", Bytes::new(), DL)
    })
    .unwrap_err();
    assert_eq!(e.code(), StatusCode::Unavailable, "{e}");
}

/// A raw client that opens a call with an even id (the acceptor's parity) is cut off with the
/// counter `wrong_id_parity`: the directions' ids are kept apart by the receiver too.
pub fn a_request_with_the_wrong_id_parity_is_cut_off(t: &Transport) {
    let (e, addr) = crate::engine(t, CoreConfig::default(), &[calc()], "peers-parity");
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = p.header_encoder();
    request(&mut b, &mut enc, 1, DL, b"add", &[1, 2]);
    request(&mut b, &mut enc, 2, DL, b"add", &[1, 2]);
    p.send_frames(b.as_slice()).unwrap();
    let _ = p.read_to_close();
    // On QUIC the Request opens a stream of its own, whose first frame must carry the
    // opener's parity: docs/protocol.md §27.2 rule 2 names this error.
    let counter = if t.stream_per_exchange() {
        "quic_unexpected_frame"
    } else {
        "wrong_id_parity"
    };
    assert!(wait_for(&e, counter, Duration::from_secs(5)) >= 1);
    e.shutdown(Duration::from_secs(1));
}

/// A sync handler that blocks on a stream into its own peer (either half) gets an error at
/// once instead of stopping its core for good (the core could never move the stream while
/// the handler waits), and the connection goes on.
pub fn a_sync_handlers_blocking_stream_is_an_error_not_a_deadlock(t: &Transport) {
    let opts = || netron_engine::CallOptions::new().deadline(Duration::from_secs(1));
    let wait = Service::new("wait", "1.0.0")
        .unwrap()
        .unary("on_stream", move |req, reply| {
            let mut rx = req
                .peer()
                .open_server_stream("tick@1.0.0", "tick", Bytes::new(), &opts());
            let got = block_on(rx.recv())
                .expect("an item")
                .expect_err("no chunk can come");
            let (mut tx, _rx) = req.peer().open_bidi("tick@1.0.0", "tick", &opts());
            let sent = block_on(tx.send(Bytes::from_static(b"x"))).expect_err("no credit");
            reply.write(format!("{:?} {:?}", got.code, sent.code).as_bytes());
            Ok(())
        });
    let tick = Service::new("tick", "1.0.0")
        .unwrap()
        .server_stream("tick", |_, _, mut tx| async move {
            tx.send(Bytes::from_static(b"tick")).await
        });
    let (server, ep) = crate::engine(
        t,
        CoreConfig::default(),
        &[wait, calc()],
        "peers-block-stream",
    );
    let client = crate::builder(t).cores(1).service(tick).build().unwrap();
    let ch = client.client().connect(&ep).expect("connect");
    let ch2 = ch.clone();
    let r = within("a sync handler blocking on a stream", move || {
        ch2.call("wait@1.0.0", "on_stream", Bytes::new(), DL)
    })
    .unwrap();
    assert_eq!(
        std::str::from_utf8(&r).unwrap(),
        "FailedPrecondition FailedPrecondition"
    );
    // The core still serves.
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
        [3]
    );
    drop(ch);
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}
