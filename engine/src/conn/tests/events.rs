//! Events on two connections back to back (conn/events.rs): no core, no sockets. The core's
//! part (the subject index and fan-out) is played by `fan_out` below: every published event
//! goes to every subscription the server serves whose pattern matches.

use std::cell::RefCell;
use std::rc::Rc;

use netron_codec::hpack::Header;
use netron_codec::subject::{Pattern, Subject};

use super::*;
use crate::conn::events::{Change, ENTRY_BYTES, EventApp, Published};
use crate::events::{EventConfig, SlowPolicy, SubscribeOptions};

#[derive(Debug, Default)]
struct Log {
    events: Vec<(u32, Vec<u8>, Vec<u8>)>,
    end: Option<Result<(), Status>>,
}

#[derive(Debug)]
struct App(Rc<RefCell<Log>>);

impl EventApp for App {
    fn deliver(&mut self, lost: u32, topic: &[u8], payload: &[u8]) {
        self.0
            .borrow_mut()
            .events
            .push((lost, topic.to_vec(), payload.to_vec()));
    }
    fn ended(&mut self, end: Result<(), Status>) {
        self.0.borrow_mut().end = Some(end);
    }
}

fn pair_with(events: EventConfig) -> Pair {
    let mut p = Pair::with(ConnConfig::new(
        &crate::ProtocolConfig::default()
            .with_keepalive(Duration::ZERO, Duration::from_secs(1))
            .with_events(events),
    ));
    p.pump(usize::MAX);
    assert!(p.client.is_open() && p.server.is_open());
    p
}

fn subscribe(p: &mut Pair, pattern: &str, opts: SubscribeOptions) -> (u32, Rc<RefCell<Log>>) {
    let log = Rc::new(RefCell::new(Log::default()));
    let id = p
        .client
        .subscribe(pattern, &opts, Box::new(App(log.clone())))
        .unwrap();
    p.pump(usize::MAX);
    (id, log)
}

/// The core's part, on the server: index changes are checked, published events are offered
/// to every matching served subscription. Returns the events offered.
fn fan_out(p: &mut Pair, extra: &[Published]) -> usize {
    let mut changes = Vec::new();
    p.server.take_event_changes(&mut changes);
    let mut published = Vec::new();
    p.server.take_published(&mut published);
    published.extend(extra.iter().map(|e| Published {
        topic: e.topic.clone(),
        payload: e.payload.clone(),
    }));
    let ids: Vec<u32> = (1..200)
        .step_by(2)
        .filter(|&i| p.server.has_served(i))
        .collect();
    let mut offered = 0;
    for ev in published {
        let ev = Rc::new(ev);
        for &id in &ids {
            // Ended meanwhile (a disconnect policy): offered nothing more.
            let Some((pat, _)) = p.server.served_pattern(id) else {
                continue;
            };
            let pat = pat.to_vec();
            if Pattern::parse(&pat)
                .unwrap()
                .matches(&Subject::parse(&ev.topic).unwrap())
            {
                p.server.enqueue_event(id, &ev, &mut p.stats);
                offered += 1;
            }
        }
    }
    offered
}

fn event(topic: &str, payload: &[u8]) -> Published {
    Published {
        topic: bytes::Bytes::copy_from_slice(topic.as_bytes()),
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

#[test]
fn published_events_reach_matching_subscriptions_in_order() {
    let mut p = pair_with(EventConfig::default());
    let (a, log_a) = subscribe(&mut p, "orders.*", SubscribeOptions::new());
    let (_b, log_b) = subscribe(&mut p, "orders.eu.>", SubscribeOptions::new());
    let mut changes = Vec::new();
    p.server.take_event_changes(&mut changes);
    assert_eq!(changes, vec![Change::Added(a), Change::Added(a + 2)]);
    for i in 0..3u8 {
        p.client.publish(b"orders.eu", &[i]).unwrap();
    }
    p.client.publish(b"orders.eu.paid", b"x").unwrap();
    p.pump(usize::MAX);
    assert_eq!(p.stats.events_published_in, 4);
    assert_eq!(fan_out(&mut p, &[]), 4);
    p.pump(usize::MAX);
    let got = &log_a.borrow().events;
    assert_eq!(got.len(), 3);
    for (i, (lost, topic, payload)) in got.iter().enumerate() {
        assert_eq!(
            (*lost, &topic[..], &payload[..]),
            (0, &b"orders.eu"[..], &[i as u8][..])
        );
    }
    assert_eq!(
        log_b.borrow().events,
        vec![(0, b"orders.eu.paid".to_vec(), b"x".to_vec())]
    );
    assert_eq!(p.stats.events_in, 4);
    assert_eq!(
        p.server.event_gauges(),
        (2, 0),
        "two served, nothing queued"
    );
}

#[test]
fn a_publish_on_a_connection_without_subscriptions_is_taken() {
    let mut p = pair_with(EventConfig::default());
    p.client.publish(b"a.b", b"x").unwrap();
    p.pump(usize::MAX);
    let mut published = Vec::new();
    p.server.take_published(&mut published);
    assert_eq!(published.len(), 1);
    assert_eq!(
        (&published[0].topic[..], &published[0].payload[..]),
        (&b"a.b"[..], &b"x"[..])
    );
}

#[test]
fn a_full_queue_drops_the_oldest_and_the_subscriber_learns_how_many() {
    let mut p = pair_with(EventConfig::default());
    let opts = SubscribeOptions::new()
        .queue_depth(2)
        .on_full(SlowPolicy::DropOldest);
    let (_, log) = subscribe(&mut p, "t", opts);
    // Five events while the subscriber's connection is not given a batch.
    let evs: Vec<Published> = (0..5u8).map(|i| event("t", &[i])).collect();
    fan_out(&mut p, &evs);
    assert_eq!(p.stats.events_dropped, 3);
    assert_eq!(
        p.server.event_gauges(),
        (1, 2 * (2 + ENTRY_BYTES)),
        "two events of 2 bytes queued, each with its entry's overhead"
    );
    p.pump(usize::MAX);
    let got = &log.borrow().events;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].0, got[0].2[0]),
        (3, 3),
        "events 0..3 lost, then event 3"
    );
    assert_eq!((got[1].0, got[1].2[0]), (0, 4));
    assert_eq!(p.server.event_gauges(), (1, 0));
}

#[test]
fn queued_bytes_are_bounded_per_connection_whatever_the_depth() {
    // Room for two events of 5 bytes ("t" + 4) and their entries; depth 1000.
    let two = 2 * (5 + ENTRY_BYTES);
    let mut p = pair_with(EventConfig::default().with_max_queued_bytes(two));
    let opts = SubscribeOptions::new()
        .queue_depth(1000)
        .on_full(SlowPolicy::DropOldest);
    let (_, log) = subscribe(&mut p, "t", opts);
    let evs: Vec<Published> = (0..6u8).map(|i| event("t", &[i, 0, 0, 0])).collect();
    fan_out(&mut p, &evs);
    assert_eq!(p.stats.events_dropped, 4, "two events of 5 bytes fit");
    assert_eq!(p.server.event_gauges(), (1, two));
    p.pump(usize::MAX);
    let got = &log.borrow().events;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].0, got[0].2[0]),
        (4, 4),
        "events 0..4 lost, then event 4"
    );
    // With the disconnect policy the subscription ends instead.
    let mut p = pair_with(EventConfig::default().with_max_queued_bytes(two));
    let opts = SubscribeOptions::new()
        .queue_depth(1000)
        .on_full(SlowPolicy::Disconnect);
    let (_, log) = subscribe(&mut p, "t", opts);
    fan_out(&mut p, &evs);
    p.pump(usize::MAX);
    let end = log.borrow().end.clone().expect("ended");
    let st = end.expect_err("ended by the policy");
    assert_eq!(st.code, StatusCode::ResourceExhausted);
    assert!(st.message.contains("max_queued_bytes"), "{}", st.message);
}

#[test]
fn empty_events_are_counted_with_their_entries() {
    // 16 Mi empty events fitted under 16 MiB when each counted its 1-byte topic only (fresh
    // user R11's finding 2): now each also counts its entry, so the bound is in real memory.
    let cap = 64 * (1 + ENTRY_BYTES);
    let mut p = pair_with(EventConfig::default().with_max_queued_bytes(cap));
    let opts = SubscribeOptions::new()
        .queue_depth(65_536)
        .on_full(SlowPolicy::DropOldest);
    let _sub = subscribe(&mut p, "t", opts);
    let evs: Vec<Published> = (0..1000).map(|_| event("t", &[])).collect();
    fan_out(&mut p, &evs);
    assert_eq!(p.server.event_gauges(), (1, cap), "64 entries, not 1000");
    assert_eq!(p.stats.events_dropped, 1000 - 64);
}

#[test]
fn a_subscription_is_in_the_ready_list_once_however_many_events_it_drops() {
    // Depth 1, nobody reads: every event empties the queue (dropping the oldest) and queues
    // itself; the subscription was pushed onto the ready list each time (fresh user R11's
    // finding 1: 4 bytes per event per subscription, 2.5 GiB in 17 s).
    let mut p = pair_with(EventConfig::default());
    let opts = SubscribeOptions::new()
        .queue_depth(1)
        .on_full(SlowPolicy::DropOldest);
    let _a = subscribe(&mut p, "t", opts.clone());
    let _b = subscribe(&mut p, "t", opts);
    let evs: Vec<Published> = (0..10_000u32)
        .map(|i| event("t", &i.to_le_bytes()))
        .collect();
    fan_out(&mut p, &evs);
    assert_eq!(p.stats.events_dropped, 2 * 9_999);
    assert_eq!(p.server.ready_len(), 2, "each subscription once");
    p.pump(usize::MAX);
    assert_eq!(p.server.ready_len(), 0);
}

#[test]
fn a_full_queue_ends_a_disconnect_subscription_only() {
    let mut p = pair_with(EventConfig::default());
    let slow = SubscribeOptions::new()
        .queue_depth(2)
        .on_full(SlowPolicy::Disconnect);
    let (id, log) = subscribe(&mut p, "t", slow);
    let (_, other) = subscribe(&mut p, "t", SubscribeOptions::new().queue_depth(16));
    let evs: Vec<Published> = (0..3u8).map(|i| event("t", &[i])).collect();
    fan_out(&mut p, &evs);
    assert_eq!(p.stats.errors_of("slow_subscriber"), 1);
    assert!(!p.server.has_served(id));
    let mut changes = Vec::new();
    p.server.take_event_changes(&mut changes);
    assert_eq!(changes, vec![Change::Removed(id)]);
    p.pump(usize::MAX);
    let l = log.borrow();
    assert_eq!(
        l.events.len(),
        0,
        "the Error went before the queued events were sent"
    );
    let st = l.end.clone().unwrap().unwrap_err();
    assert_eq!(st.code, StatusCode::ResourceExhausted);
    assert!(st.message.contains("too slow"), "{}", st.message);
    assert_eq!(
        other.borrow().events.len(),
        3,
        "the other subscription lost nothing"
    );
    assert!(p.client.is_open() && p.server.is_open());
    assert_eq!(p.server.event_gauges(), (1, 0));
}

#[test]
fn a_subscription_flood_is_refused_per_subscription() {
    let mut p = pair_with(EventConfig::default().with_max_subscriptions(2));
    let logs: Vec<_> = (0..4)
        .map(|_| subscribe(&mut p, "a.b", SubscribeOptions::new()).1)
        .collect();
    assert_eq!(p.stats.errors_of("subscription_limit"), 2);
    for l in &logs[2..] {
        let st = l.borrow().end.clone().unwrap().unwrap_err();
        assert_eq!(st.code, StatusCode::ResourceExhausted);
        assert!(st.message.contains("max_subscriptions"), "{}", st.message);
    }
    assert!(logs[0].borrow().end.is_none() && logs[1].borrow().end.is_none());
    assert_eq!(p.server.event_gauges().0, 2);
    assert!(p.server.is_open());
}

#[test]
fn oversized_and_invalid_subjects_are_refused_and_counted() {
    let mut p = pair_with(EventConfig::default().with_max_subject_len(8));
    let (_, log) = subscribe(&mut p, "abcd.efgh", SubscribeOptions::new());
    let st = log.borrow().end.clone().unwrap().unwrap_err();
    assert_eq!(st.code, StatusCode::InvalidArgument);
    assert!(st.message.contains("max_subject_len"), "{}", st.message);
    // A published topic longer than the limit is dropped and counted (not an error).
    p.client.publish(b"abcd.efgh", b"x").unwrap();
    // So is an invalid one, sent raw (the API refuses it before the wire).
    p.client
        .queue(|c, b| {
            b.frame(FrameKind::Event, 0)?
                .headers(&mut c.enc, &[Header::topic(b"a..b")])?
                .finish()
                .map(drop)
        })
        .unwrap();
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("bad_subject"), 3);
    assert_eq!(p.stats.events_published_in, 0);
    assert!(p.server.is_open() && p.client.is_open());
    assert!(
        p.client
            .subscribe("a..b", &SubscribeOptions::new(), Box::new(App(log.clone())))
            .is_err()
    );
}

#[test]
fn an_event_for_no_subscription_is_ignored_and_counted() {
    let mut p = pair_with(EventConfig::default());
    p.server
        .queue(|c, b| {
            b.frame(FrameKind::Event, 7)?
                .arg(0)
                .headers(&mut c.enc, &[Header::topic(b"a")])?
                .payload(b"x")
                .finish()
                .map(drop)
        })
        .unwrap();
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("unknown_subscription"), 1);
    assert_eq!(p.stats.events_in, 0);
    assert!(p.client.is_open());
}

#[test]
fn unsubscribe_and_connection_loss_clean_up() {
    let mut p = pair_with(EventConfig::default());
    let (id, log) = subscribe(&mut p, "t.>", SubscribeOptions::new());
    let (_, log2) = subscribe(&mut p, "t.*", SubscribeOptions::new());
    fan_out(&mut p, &[event("t.a", b"1")]);
    assert_eq!(p.server.event_gauges(), (2, 2 * (4 + ENTRY_BYTES)));
    p.client.unsubscribe(id);
    p.pump(usize::MAX);
    assert!(!p.server.has_served(id));
    assert!(
        !p.client.has_mine(id),
        "the publisher's final frame freed the id"
    );
    assert!(
        log.borrow().end.is_none(),
        "an own unsubscribe is not reported to the app"
    );
    assert_eq!(p.server.event_gauges().0, 1);
    // The connection ends with an event still queued: everything goes.
    fan_out(&mut p, &[event("t.b", b"2")]);
    p.server.handle_closed("test");
    p.client.handle_closed("test");
    assert_eq!(p.server.event_gauges(), (0, 0));
    let st = log2.borrow().end.clone().unwrap().unwrap_err();
    assert_eq!(st.code, StatusCode::Unavailable);
    let mut changes = Vec::new();
    p.server.take_event_changes(&mut changes);
    assert!(changes.contains(&Change::Removed(id + 2)));
}

#[test]
fn events_not_in_force_are_refused_per_exchange() {
    let cfg =
        crate::ProtocolConfig::default().with_keepalive(Duration::ZERO, Duration::from_secs(1));
    let mut server_cfg = cfg.clone();
    let mut offer = netron_codec::handshake::ServerConfig::default();
    offer.features = 0;
    server_cfg = server_cfg.with_server(offer);
    server_cfg.server.features &= !netron_codec::features::EVENTS;
    let now = Instant::now();
    let mut p = Pair {
        server: Connection::new(Role::Server, &Rc::new(ConnConfig::new(&server_cfg)), now),
        client: Connection::new(Role::Client, &Rc::new(ConnConfig::new(&cfg)), now),
        registry: registry(),
        stats: CoreStats::default(),
        now,
        direct: false,
    };
    p.pump(usize::MAX);
    let log = Rc::new(RefCell::new(Log::default()));
    let err = p
        .client
        .subscribe("a", &SubscribeOptions::new(), Box::new(App(log)))
        .unwrap_err();
    assert_eq!(err.code, StatusCode::Unimplemented);
    assert_eq!(
        p.client.publish(b"a", b"").unwrap_err().code,
        StatusCode::Unimplemented
    );
}
