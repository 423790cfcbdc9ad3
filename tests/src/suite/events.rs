//! Events (docs/protocol.md §24): fan-out to many subscribers across both cores of an engine,
//! each slow-subscriber policy (its counter moves and its notice arrives, other subscribers
//! lose nothing), queue groups, unsubscribe and disconnect cleanup, and bad input (an Event
//! for no subscription, oversized subjects, a subscription flood) with defined errors and
//! counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netron_codec::control::{ControlEncoder, SubscribeFields};
use netron_codec::handshake::ClientConfig;
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameKind, Limits};
use netron_engine::{
    Engine, EventConfig, ProtocolConfig, RecvError, StatusCode, SubscribeOptions, Subscription,
};

use super::util::{poll, read_frames, wait_for, within};
use crate::{RawPeer, Transport};

const WAIT: Duration = Duration::from_secs(10);

/// A server engine of `cores` cores on a fresh endpoint of `t`, with `events`.
fn server(t: &Transport, cores: usize, events: EventConfig, tag: &str) -> (Engine, String) {
    let e = crate::builder(t)
        .cores(cores)
        .protocol(ProtocolConfig::default().with_events(events))
        .listen(&(t.listen)(tag))
        .build()
        .unwrap_or_else(|e| panic!("{}: engine: {e}", t.name));
    let addr = crate::dial_of(t, &e).to_string();
    (e, addr)
}

fn client(t: &Transport) -> Engine {
    crate::builder(t).cores(1).build().unwrap()
}

/// Waits until the server's engine-wide subscription gauge is `n`.
fn wait_subscriptions(e: &Engine, n: u64) {
    assert!(
        poll(e, |s| s.subscriptions() == n),
        "subscriptions stayed at {} (want {n})",
        e.total_stats().subscriptions()
    );
}

/// Receives `n` events on `sub`, checking topics against `topic`, payloads are 0..n in order
/// (u32 LE) and nothing was lost.
fn expect_all(sub: &Subscription, n: u32, topic: &str, who: &str) {
    for i in 0..n {
        let ev = sub
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{who}: event {i} of {n}: {e}"));
        assert_eq!(ev.topic_str(), topic, "{who}");
        assert_eq!(
            ev.payload()[..],
            i.to_le_bytes(),
            "{who}: event {i} in order"
        );
        assert_eq!(ev.lost(), 0, "{who}: nothing lost");
    }
}

/// Events published on one connection reach subscribers on other connections, on both cores
/// of the server, and in-process subscribers; each gets every event once, in order.
pub fn fan_out_reaches_every_subscriber_across_both_cores(t: &Transport) {
    let (s, addr) = server(t, 2, EventConfig::default(), "ev-fanout");
    // In-process subscriptions are placed on the cores in turn: one on each core.
    let local: Vec<Subscription> = (0..2)
        .map(|_| s.subscribe("orders.>", SubscribeOptions::new()).unwrap())
        .collect();
    let c = client(t);
    let chans: Vec<_> = (0..8).map(|_| c.client().connect(&addr).unwrap()).collect();
    let subs: Vec<Subscription> = chans
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let p = if i % 2 == 0 { "orders.*" } else { "*.eu" };
            ch.subscribe(p, SubscribeOptions::new()).unwrap()
        })
        .collect();
    let other = chans[0]
        .subscribe("payments.>", SubscribeOptions::new())
        .unwrap();
    wait_subscriptions(&s, 11);
    const N: u32 = 200;
    let publisher = c.client().connect(&addr).unwrap();
    within("the fan-out", move || {
        for i in 0..N {
            publisher
                .publish("orders.eu", i.to_le_bytes().to_vec())
                .unwrap();
        }
        for (i, sub) in subs.iter().enumerate() {
            expect_all(sub, N, "orders.eu", &format!("subscriber {i}"));
        }
        for (i, sub) in local.iter().enumerate() {
            expect_all(sub, N, "orders.eu", &format!("in-process subscriber {i}"));
        }
        assert_eq!(
            other.try_recv(),
            Ok(None),
            "a non-matching pattern gets nothing"
        );
    });
    let per_core = s.stats();
    assert_eq!(per_core.len(), 2);
    for (i, st) in per_core.iter().enumerate() {
        assert!(
            st.events_out() >= u64::from(N),
            "core {i} delivered: {st:?}"
        );
    }
    let total = s.total_stats();
    assert_eq!(total.events_published_in(), u64::from(N));
    assert_eq!(total.events_dropped(), 0);
    // Engine::publish reaches the subscribers too.
    s.publish("orders.us", &b"x"[..]).unwrap();
    let ev = chans_first_event(&s);
    assert_eq!(ev, "orders.us");
}

/// Subscribes in-process and returns the topic of the next event published on `s`.
fn chans_first_event(s: &Engine) -> String {
    let sub = s.subscribe("orders.*", SubscribeOptions::new()).unwrap();
    // The subscription reaches its core before the publish does only if sent first to the
    // same core: publish until it arrives.
    for _ in 0..100 {
        s.publish("orders.us", &b"x"[..]).unwrap();
        if let Ok(ev) = sub.recv_timeout(Duration::from_millis(100)) {
            return ev.topic_str().to_owned();
        }
    }
    panic!("Engine::publish never reached an in-process subscriber");
}

/// A raw subscriber that subscribes and then reads nothing.
fn raw_subscriber(t: &Transport, addr: &str, id: u32, depth: u32, on_full: u8) -> RawPeer {
    let cfg = ClientConfig::default().with_features(netron_codec::features::EVENTS);
    let (mut p, _, _) = RawPeer::handshake_with(t, addr, cfg);
    let mut b = BatchEncoder::new(Limits::default());
    ControlEncoder::new()
        .subscribe_with(
            &mut b,
            id,
            &SubscribeFields {
                pattern: "slow.>",
                queue_depth: depth,
                datagrams: false,
                on_full,
                queue_group: "",
            },
        )
        .unwrap();
    p.send_frames(b.as_slice()).unwrap();
    p
}

/// An event no frame can carry (above the configured `max_frame_size`, 16 MiB by default)
/// is refused when it is published, on every publishing API, instead of vanishing on the
/// way; one that fits still arrives.
pub fn an_event_no_frame_can_carry_is_refused_when_published(t: &Transport) {
    let (s, addr) = server(t, 1, EventConfig::default(), "ev-huge");
    let c = client(t);
    let ch = c.client().connect(&addr).unwrap();
    let sub = ch.subscribe("big.*", SubscribeOptions::new()).unwrap();
    let local = s.subscribe("big.*", SubscribeOptions::new()).unwrap();
    wait_subscriptions(&s, 2);
    let huge = netron_engine::Bytes::from(vec![7u8; 16 << 20]);
    for r in [
        ch.publish("big.one", huge.clone()),
        s.publish("big.one", huge.clone()),
    ] {
        let e = r.expect_err("above max_frame_size");
        assert_eq!(e.code, StatusCode::ResourceExhausted);
        assert!(e.message.contains("max_frame_size"), "{}", e.message);
    }
    let mut core = crate::new_core(t, netron_engine::CoreConfig::default()).unwrap();
    let e = core
        .publish_local("big.one", &huge)
        .expect_err("above max_frame_size");
    assert_eq!(e.code, StatusCode::ResourceExhausted);
    // What fits is delivered, to the peer's subscription and the local one.
    s.publish("big.two", netron_engine::Bytes::from(vec![1u8; 1 << 20]))
        .unwrap();
    for sub in [&sub, &local] {
        let ev = sub
            .recv_timeout(Duration::from_secs(10))
            .expect("the 1 MiB event");
        assert_eq!(
            (ev.topic(), ev.payload().len(), ev.lost()),
            (&b"big.two"[..], 1 << 20, 0)
        );
    }
}

/// Both slow-subscriber policies, on raw subscribers that stop reading: drop-oldest moves
/// `events_dropped` and leaves a gap in the sequence numbers the subscriber sees (how many
/// it lost, in-band); disconnect ends that subscription with `Error(id,
/// ResourceExhausted)` and counts `slow_subscriber`; a reading subscriber of the same events
/// loses none, and the raw subscribers' connections stay open.
pub fn slow_subscribers_drop_or_are_ended_and_others_lose_nothing(t: &Transport) {
    let (s, addr) = server(t, 1, EventConfig::default(), "ev-slow");
    let mut dropper = raw_subscriber(t, &addr, 1, 4, 1);
    let mut ended = raw_subscriber(t, &addr, 1, 4, 2);
    let c = client(t);
    let ch = c.client().connect(&addr).unwrap();
    let reader = ch
        .subscribe("slow.*", SubscribeOptions::new().queue_depth(4096))
        .unwrap();
    wait_subscriptions(&s, 3);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (got, stopped) = (received.clone(), stop.clone());
    let reading = std::thread::spawn(move || {
        let mut next = 0u32;
        loop {
            match reader.recv_timeout(Duration::from_millis(50)) {
                Ok(ev) => {
                    assert_eq!(ev.lost(), 0, "the reading subscriber lost events");
                    assert_eq!(ev.payload()[..4], next.to_le_bytes(), "in order");
                    next += 1;
                    got.store(u64::from(next), Ordering::SeqCst);
                }
                Err(RecvError::Timeout) if stopped.load(Ordering::SeqCst) => return next,
                Err(RecvError::Timeout) => {}
                Err(e) => panic!("the reading subscriber: {e}"),
            }
        }
    });
    // Publish in rounds of 64 events of 1 KiB until both policies acted (the raw
    // subscribers' transport buffers fill first).
    let mut sent = 0u32;
    within("the slow subscribers", move || {
        let payload = vec![9u8; 1 << 10];
        for _ in 0..400 {
            for _ in 0..64 {
                let mut p = payload.clone();
                p[..4].copy_from_slice(&sent.to_le_bytes());
                ch.publish("slow.x", p).unwrap();
                sent += 1;
            }
            while received.load(Ordering::SeqCst) < u64::from(sent) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let st = s.total_stats();
            if st.events_dropped() > 0 && st.errors_of("slow_subscriber") > 0 {
                break;
            }
        }
        let st = s.total_stats();
        assert!(st.events_dropped() > 0, "events_dropped did not move");
        assert_eq!(st.errors_of("slow_subscriber"), 1);
        // The disconnected subscription is gone, with what was queued for it.
        assert!(poll(&s, |st| st.subscriptions() == 2));
        stop.store(true, Ordering::SeqCst);
        assert_eq!(reading.join().unwrap(), sent, "the reader got every event");
        // The drop-oldest subscriber sees a gap in its sequence numbers (the payloads carry
        // the publish index, which is the sequence number: every event matches).
        let (frames, closed) = read_frames(&mut dropper, |f| {
            let seqs: Vec<u32> = f
                .iter()
                .filter(|x| x.0 == FrameKind::Event)
                .map(|x| u32::from_le_bytes(x.2[..4].try_into().unwrap()))
                .collect();
            // The subscriber expects 0, 1, 2, ...: a number ahead of the expected one says
            // how many it lost (docs/protocol.md §24.3).
            seqs.iter().enumerate().any(|(i, &q)| q != i as u32)
        });
        assert!(
            !closed,
            "the drop-oldest subscriber's connection was closed"
        );
        assert!(frames.iter().all(|f| f.0 == FrameKind::Event && f.1 == 1));
        // The disconnect subscriber gets its subscription's final Error.
        let (frames, closed) = read_frames(&mut ended, |f| {
            f.iter().any(|x| (x.0, x.1) == (FrameKind::Error, 1))
        });
        assert!(!closed, "the disconnect subscriber's connection was closed");
        let err = frames.iter().find(|x| x.0 == FrameKind::Error).unwrap();
        assert!(
            err.2.windows(8).any(|w| w == b"too slow"),
            "the Error says why"
        );
    });
}

/// Subscriptions in a queue group share the events: each event goes to exactly one member,
/// on whichever core of the server it is, while a subscription outside the group gets them
/// all.
pub fn queue_groups_give_each_event_to_one_member(t: &Transport) {
    let (s, addr) = server(t, 2, EventConfig::default(), "ev-groups");
    let c = client(t);
    let chans: Vec<_> = (0..3).map(|_| c.client().connect(&addr).unwrap()).collect();
    let members: Vec<Subscription> = chans
        .iter()
        .map(|ch| {
            ch.subscribe("jobs.*", SubscribeOptions::new().group("workers"))
                .unwrap()
        })
        .collect();
    let all = chans[0]
        .subscribe("jobs.>", SubscribeOptions::new())
        .unwrap();
    wait_subscriptions(&s, 4);
    within("the queue group", move || {
        for i in 0..30u32 {
            chans[1]
                .publish("jobs.build", i.to_le_bytes().to_vec())
                .unwrap();
        }
        expect_all(&all, 30, "jobs.build", "the subscriber outside the group");
        let mut counts = Vec::new();
        let mut seen = Vec::new();
        for m in &members {
            let mut n = 0;
            while let Ok(ev) = m.recv_timeout(Duration::from_millis(300)) {
                seen.push(u32::from_le_bytes(ev.payload()[..4].try_into().unwrap()));
                n += 1;
            }
            counts.push(n);
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..30).collect::<Vec<_>>(),
            "each event to exactly one member: {counts:?}"
        );
    });
}

/// Dropping a subscription unsubscribes; closing the connection ends the rest; the server's
/// subscription count and queued bytes go back to zero (in-process ones too).
pub fn unsubscribe_and_disconnect_clean_up(t: &Transport) {
    let (s, addr) = server(t, 2, EventConfig::default(), "ev-cleanup");
    let c = client(t);
    let ch = c.client().connect(&addr).unwrap();
    let a = ch.subscribe("a.>", SubscribeOptions::new()).unwrap();
    let b = ch.subscribe("a.*", SubscribeOptions::new()).unwrap();
    let _c2 = ch.subscribe("b", SubscribeOptions::new()).unwrap();
    let local = s.subscribe("a.>", SubscribeOptions::new()).unwrap();
    wait_subscriptions(&s, 4);
    drop(a);
    wait_subscriptions(&s, 3);
    ch.publish("a.x", &b"1"[..]).unwrap();
    assert_eq!(b.recv_timeout(WAIT).unwrap().payload()[..], b"1"[..]);
    drop(local);
    wait_subscriptions(&s, 2);
    drop(ch);
    wait_subscriptions(&s, 0);
    assert!(poll(&s, |st| st.event_queue_bytes() == 0));
    // An in-process subscription ends when its engine stops.
    let local = s.subscribe("z", SubscribeOptions::new()).unwrap();
    wait_subscriptions(&s, 1);
    // The subscription whose connection went is told so.
    match b.recv_timeout(WAIT) {
        Err(RecvError::Ended(st)) => assert_eq!(st.code, StatusCode::Unavailable, "{st:?}"),
        other => panic!("want the end of the subscription, got {other:?}"),
    }
    s.shutdown(Duration::from_secs(1));
    match local.recv_timeout(WAIT) {
        Err(RecvError::Ended(st)) => assert_eq!(st.code, StatusCode::Unavailable, "{st:?}"),
        other => panic!("want the end of the in-process subscription, got {other:?}"),
    }
}

/// Bad input gets the protocol's answers and counters, and the connection goes on: an
/// Event for no subscription (ignored, `unknown_subscription`), an oversized pattern
/// (`Error(id, InvalidArgument)`, `bad_subject`), an oversized published topic (dropped,
/// `bad_subject`), a subscription flood (`Error(id, ResourceExhausted)` naming
/// `max_subscriptions`, `subscription_limit`).
pub fn bad_event_input_gets_defined_errors_and_counters(t: &Transport) {
    let events = EventConfig::default()
        .with_max_subscriptions(3)
        .with_max_subject_len(32);
    let (s, addr) = server(t, 1, events, "ev-bad");
    let cfg = ClientConfig::default().with_features(netron_codec::features::EVENTS);
    let (mut p, settings, _) = RawPeer::handshake_with(t, &addr, cfg);
    let mut enc = HeaderEncoder::new(settings.header_table_size);
    let mut b = BatchEncoder::new(Limits::default());
    // An Event for a subscription that does not exist (on QUIC it has no stream to travel
    // on, docs/protocol.md §27.2: `Transport::stream_per_exchange`).
    let stray = !t.stream_per_exchange();
    if stray {
        b.frame(FrameKind::Event, 7)
            .unwrap()
            .arg(0)
            .headers(&mut enc, &[Header::topic(b"a.b")])
            .unwrap()
            .payload(b"x")
            .finish()
            .unwrap();
    }
    // A published event whose topic is longer than the limit.
    let long = "t.".repeat(20) + "x";
    b.frame(FrameKind::Event, 0)
        .unwrap()
        .headers(&mut enc, &[Header::topic(long.as_bytes())])
        .unwrap()
        .finish()
        .unwrap();
    let mut ctl = ControlEncoder::new();
    ctl.subscribe(&mut b, 1, &long, 0).unwrap();
    for id in [3, 5, 7, 9, 11] {
        ctl.subscribe(&mut b, id, "ok.>", 0).unwrap();
    }
    for f in netron_codec::FrameIter::new(b.as_slice(), &Limits::default()) {
        p.send_frames(f.unwrap().as_bytes()).unwrap();
    }
    let (frames, closed) = read_frames(&mut p, |f| {
        f.iter().filter(|x| x.0 == FrameKind::Error).count() >= 3
    });
    assert!(!closed, "the connection was closed");
    let errors: Vec<u32> = frames
        .iter()
        .filter(|x| x.0 == FrameKind::Error)
        .map(|x| x.1)
        .collect();
    assert_eq!(
        errors,
        vec![1, 9, 11],
        "the long pattern, then the two over the limit"
    );
    let flood = frames.iter().find(|x| x.1 == 9).unwrap();
    assert!(flood.2.windows(17).any(|w| w == b"max_subscriptions"));
    if stray {
        assert_eq!(wait_for(&s, "unknown_subscription", WAIT), 1);
    }
    assert_eq!(wait_for(&s, "subscription_limit", WAIT), 2);
    assert_eq!(s.total_stats().errors_of("bad_subject"), 2);
    assert_eq!(s.total_stats().subscriptions(), 3);
    // The connection still works: a Ping is answered.
    let mut b = BatchEncoder::new(Limits::default());
    b.empty_frame(FrameKind::Ping, 0, 42).unwrap();
    p.send_frames(b.as_slice()).unwrap();
    let (frames, closed) = read_frames(&mut p, |f| f.iter().any(|x| x.0 == FrameKind::Pong));
    assert!(!closed && frames.iter().any(|x| x.0 == FrameKind::Pong));
    // Through the API, an invalid pattern or topic never reaches the wire.
    let c = client(t);
    let ch = c.client().connect(&addr).unwrap();
    assert_eq!(
        ch.subscribe("a..b", SubscribeOptions::new())
            .unwrap_err()
            .code,
        StatusCode::InvalidArgument
    );
    assert_eq!(
        ch.publish("a.*", &b""[..]).unwrap_err().code,
        StatusCode::InvalidArgument
    );
}

/// A handler reaches its calling peer's events both ways (`Peer::publish`,
/// `Peer::subscribe`), and a caller-driven core publishes and subscribes on its client
/// connection (`Core::publish`, `Core::subscribe`).
pub fn peers_and_caller_driven_cores_publish_and_subscribe(t: &Transport) {
    use netron_engine::{CoreConfig, Service};
    use std::sync::Mutex;

    type Kept = Arc<Mutex<Option<Subscription>>>;
    let kept: Kept = Arc::new(Mutex::new(None));
    let k = kept.clone();
    let svc = Service::new("hub", "1.0.0")
        .unwrap()
        .unary("hello", move |req, reply| {
            let peer = req.peer();
            peer.publish("note.hello", req.payload().to_vec())?;
            *k.lock().unwrap() = Some(peer.subscribe("client.>", SubscribeOptions::new())?);
            reply.write(b"ok");
            Ok(())
        });
    let (s, addr) = crate::engine(t, netron_engine::CoreConfig::default(), &[svc], "ev-peer");
    let c = client(t);
    let notes = c.subscribe("note.>", SubscribeOptions::new()).unwrap();
    // The in-process subscription reaches its core before the call does (same inbox order
    // is not guaranteed across threads): wait for it.
    assert!(poll(&c, |st| st.subscriptions() == 1));
    let ch = c.client().connect(&addr).unwrap();
    assert_eq!(
        ch.call("hub@1.0.0", "hello", &b"hi"[..], Some(WAIT))
            .unwrap(),
        b"ok"
    );
    let ev = notes.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (ev.topic_str(), &ev.payload()[..]),
        ("note.hello", &b"hi"[..])
    );
    // The handler's subscription at the client: the client engine's publish reaches it.
    assert!(poll(&c, |st| st.subscriptions() == 2));
    c.publish("client.status", &b"busy"[..]).unwrap();
    let sub = kept.lock().unwrap().take().unwrap();
    let ev = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (ev.topic_str(), &ev.payload()[..]),
        ("client.status", &b"busy"[..])
    );

    // A caller-driven core: subscribe and publish on its connection, driving it meanwhile.
    let ep = crate::dial_of(t, &s).clone();
    let mut core = crate::new_core(t, CoreConfig::default()).unwrap();
    let conn = core.connect(&ep, WAIT).unwrap();
    let mine = core
        .subscribe(conn, "core.*", SubscribeOptions::new())
        .unwrap();
    assert!(
        core.run_until(WAIT, |_| s.total_stats().subscriptions() >= 1)
            .unwrap()
    );
    core.publish(conn, "core.x", b"1").unwrap();
    assert!(core.run_until(WAIT, |_| mine.pending() == 1).unwrap());
    let ev = mine.try_recv().unwrap().unwrap();
    assert_eq!((ev.topic_str(), &ev.payload()[..]), ("core.x", &b"1"[..]));
    assert_eq!(
        core.publish(conn, "core.*", b"").unwrap_err().code,
        StatusCode::InvalidArgument
    );
}
