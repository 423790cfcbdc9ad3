//! The dispatcher (docs/architecture.md, "Dispatch"): interceptors around every call (order,
//! rejection, timing, metadata both ways), response metadata, and deferred replies answered
//! from other threads, dropped, late, or after their engine is gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netron_engine::{
    After, Before, Bytes, CallOptions, CallSlot, Core, CoreConfig, DeferredReply, Engine,
    Interceptor, Service, Status, StatusCode,
};

use super::util::{poll, within};
use crate::{Transport, block_on};

const DL: Option<Duration> = Some(Duration::from_secs(5));

type Log = Arc<Mutex<Vec<String>>>;

/// Logs its hooks as `<name>.before` / `<name>.after:<outcome>`.
struct Logger {
    name: &'static str,
    log: Log,
}

impl Interceptor for Logger {
    fn before(&self, _call: &mut Before<'_>) -> Result<(), Status> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.before", self.name));
        Ok(())
    }
    fn after(&self, call: &mut After<'_>) {
        let outcome = match call.outcome() {
            Ok(()) => "ok".to_owned(),
            Err(s) => format!("{:?}", s.code),
        };
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.after:{outcome}", self.name));
    }
}

/// Rejects calls that carry a `deny` metadata field.
struct Deny;

impl Interceptor for Deny {
    fn before(&self, call: &mut Before<'_>) -> Result<(), Status> {
        match call.metadata("deny") {
            Some(why) => Err(Status::new(
                StatusCode::PermissionDenied,
                format!("denied: {}", String::from_utf8_lossy(why)),
            )),
            None => Ok(()),
        }
    }
}

/// Adds `x-auth: ok` to requests, `x-elapsed-us` to replies; fails replies of calls that
/// carry `fail-after`; records the largest elapsed time seen.
struct Stamp {
    max_us: Arc<AtomicU64>,
}

impl Interceptor for Stamp {
    fn before(&self, call: &mut Before<'_>) -> Result<(), Status> {
        call.insert("x-auth", b"ok");
        Ok(())
    }
    fn after(&self, call: &mut After<'_>) {
        let us = call.elapsed_us();
        self.max_us.fetch_max(us, Ordering::SeqCst);
        call.insert("x-elapsed-us", us.to_string().as_bytes());
        if call
            .request_headers()
            .is_some_and(|h| h.get(b"fail-after").is_some())
        {
            call.fail(Status::new(StatusCode::Aborted, "failed by an interceptor"));
        }
    }
}

/// A one-core engine serving `services` with `interceptors`, in this order.
fn serve(
    t: &Transport,
    tag: &str,
    services: Vec<Service>,
    interceptors: Vec<
        Box<dyn FnOnce(netron_engine::EngineBuilder) -> netron_engine::EngineBuilder>,
    >,
) -> (Engine, String) {
    let mut b = crate::builder(t).cores(1).listen(&(t.listen)(tag));
    for s in services {
        b = b.service(s);
    }
    for i in interceptors {
        b = i(b);
    }
    let e = b
        .build()
        .unwrap_or_else(|e| panic!("{}: engine: {e}", t.name));
    let ep = crate::dial_of(t, &e).to_string();
    (e, ep)
}

fn logged(
    log: &Log,
    name: &'static str,
) -> Box<dyn FnOnce(netron_engine::EngineBuilder) -> netron_engine::EngineBuilder> {
    let log = log.clone();
    Box::new(move |b| b.interceptor(Logger { name, log }))
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// `before` hooks run in installation order, `after` hooks in reverse, around sync, async
/// and deferred handlers alike; each sees the outcome.
pub fn interceptors_run_in_order_then_in_reverse(t: &Transport) {
    let log: Log = Arc::default();
    let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
    let svc = Service::new("order", "1.0.0")
        .unwrap()
        .unary("sync", move |_, reply| {
            l1.lock().unwrap().push("handler".into());
            reply.write(b"s");
            Ok(())
        })
        .unary_async("async", move |_| {
            l2.lock().unwrap().push("handler".into());
            async { Ok(Bytes::from_static(b"a")) }
        })
        .unary_deferred("deferred", move |_, reply| {
            l3.lock().unwrap().push("handler".into());
            std::thread::spawn(move || reply.send(&b"d"[..]));
        })
        .unary("fail", |_, _| Err(Status::invalid_argument("no")))
        .unary_deferred("slow", move |_, reply| {
            l4.lock().unwrap().push("handler".into());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                reply.send(&b"late"[..]);
            });
        });
    let (e, ep) = serve(
        t,
        "order",
        vec![svc],
        vec![logged(&log, "A"), logged(&log, "B")],
    );
    let ch = e.client().connect(&ep).expect("connect");
    for (method, reply) in [("sync", b"s"), ("async", b"a"), ("deferred", b"d")] {
        assert_eq!(ch.call("order@1.0.0", method, &b""[..], DL).unwrap(), reply);
        assert_eq!(
            take(&log),
            [
                "A.before",
                "B.before",
                "handler",
                "B.after:ok",
                "A.after:ok"
            ],
            "{method}"
        );
    }
    let err = ch.call("order@1.0.0", "fail", &b""[..], DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::InvalidArgument);
    assert_eq!(
        take(&log),
        [
            "A.before",
            "B.before",
            "B.after:InvalidArgument",
            "A.after:InvalidArgument"
        ]
    );
    // A call ended by its deadline (or the caller's Cancel) runs the after hooks too.
    let err = ch
        .call(
            "order@1.0.0",
            "slow",
            &b""[..],
            Some(Duration::from_millis(20)),
        )
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::DeadlineExceeded);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while log.lock().unwrap().len() < 5 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = take(&log);
    let code = seen
        .last()
        .and_then(|l| l.strip_prefix("A.after:"))
        .unwrap_or("none")
        .to_owned();
    assert!(
        ["DeadlineExceeded", "Cancelled"].contains(&code.as_str()),
        "{seen:?}"
    );
    assert_eq!(
        seen,
        [
            "A.before".to_owned(),
            "B.before".to_owned(),
            "handler".to_owned(),
            format!("B.after:{code}"),
            format!("A.after:{code}"),
        ]
    );
    e.shutdown(Duration::from_secs(1));
}

/// A `before` hook that rejects stops the call: the handler and the later interceptors do
/// not run, the earlier ones see the rejection, the caller gets the status, and the core
/// counts it.
pub fn a_rejecting_interceptor_stops_the_call(t: &Transport) {
    let log: Log = Arc::default();
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let svc = Service::new("guarded", "1.0.0")
        .unwrap()
        .unary("go", move |_, reply| {
            r.fetch_add(1, Ordering::SeqCst);
            reply.write(b"went");
            Ok(())
        });
    let (e, ep) = serve(
        t,
        "reject",
        vec![svc],
        vec![
            logged(&log, "outer"),
            Box::new(|b| b.interceptor(Deny)),
            logged(&log, "inner"),
        ],
    );
    let ch = e.client().connect(&ep).expect("connect");
    let denied = ch.call_with(
        "guarded@1.0.0",
        "go",
        &b""[..],
        &CallOptions::new()
            .deadline(Duration::from_secs(5))
            .metadata("deny", b"no ticket"),
    );
    let status = denied.result().unwrap_err();
    assert_eq!(status.code(), StatusCode::PermissionDenied);
    assert_eq!(status.status().message, "denied: no ticket");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler must not run");
    assert_eq!(take(&log), ["outer.before", "outer.after:PermissionDenied"]);
    assert_eq!(e.total_stats().errors_of("rejected_by_interceptor"), 1);
    // Without the field the call goes through every layer.
    assert_eq!(
        ch.call("guarded@1.0.0", "go", &b""[..], DL).unwrap(),
        b"went"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        take(&log),
        [
            "outer.before",
            "inner.before",
            "inner.after:ok",
            "outer.after:ok"
        ]
    );
    e.shutdown(Duration::from_secs(1));
}

fn metadata_service() -> Service {
    Service::new("meta", "1.0.0")
        .unwrap()
        .unary("show", |req, reply| {
            // Caller's metadata and what the interceptor added, both visible here.
            let tenant = req.metadata("tenant").unwrap_or(b"-");
            let auth = req.metadata("x-auth").unwrap_or(b"-");
            reply.write(tenant);
            reply.write(b"/");
            reply.write(auth);
            reply.metadata("served-by", b"show");
            Ok(())
        })
        .unary("sleep", |req, reply| {
            std::thread::sleep(Duration::from_millis(
                req.payload().first().copied().unwrap_or(0).into(),
            ));
            reply.write(b"slept");
            Ok(())
        })
}

/// Request metadata from the caller and from interceptors reaches the handler; response
/// metadata from the handler and from interceptors reaches the caller (Channel and
/// caller-driven Core); an interceptor can replace a success by a status; reserved names
/// are refused before anything is sent.
pub fn metadata_travels_both_ways(t: &Transport) {
    let max_us = Arc::new(AtomicU64::new(0));
    let m = max_us.clone();
    let (e, ep) = serve(
        t,
        "meta",
        vec![metadata_service()],
        vec![Box::new(move |b| b.interceptor(Stamp { max_us: m }))],
    );
    let ch = e.client().connect(&ep).expect("connect");
    let opts = CallOptions::new()
        .deadline(Duration::from_secs(5))
        .metadata("tenant", b"blue");
    for _ in 0..3 {
        let r = ch.call_with("meta@1.0.0", "show", &b""[..], &opts);
        assert_eq!(r.result().unwrap(), b"blue/ok");
        assert_eq!(r.get("served-by"), Some(&b"show"[..]));
        let us: u64 = std::str::from_utf8(r.get("x-elapsed-us").expect("x-elapsed-us"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(us <= max_us.load(Ordering::SeqCst));
    }
    // A caller cannot forge what an interceptor vouches for: the interceptor's field wins.
    let forged = ch.call_with(
        "meta@1.0.0",
        "show",
        &b""[..],
        &opts.clone().metadata("x-auth", b"forged"),
    );
    assert_eq!(forged.result().unwrap(), b"blue/ok");
    // The plain API still works, and sees no metadata.
    assert_eq!(
        ch.call("meta@1.0.0", "show", &b""[..], DL).unwrap(),
        b"-/ok"
    );
    // An interceptor replaces the success.
    let failed = ch.call_with(
        "meta@1.0.0",
        "show",
        &b""[..],
        &opts.clone().metadata("fail-after", b"1"),
    );
    assert_eq!(failed.result().unwrap_err().code(), StatusCode::Aborted);
    assert!(
        failed.metadata().is_empty(),
        "Error frames carry no metadata"
    );
    // Reserved names are refused by the caller.
    let bad = ch.call_with(
        "meta@1.0.0",
        "show",
        &b""[..],
        &opts.clone().metadata(":method", b"x"),
    );
    assert_eq!(
        bad.result().unwrap_err().code(),
        StatusCode::InvalidArgument
    );
    // A caller-driven core: the metadata is read from the slot with the reply.
    let mut core = crate::new_core(t, CoreConfig::default()).unwrap();
    let conn = core
        .connect(&crate::dial_of(t, &e), Duration::from_secs(5))
        .unwrap();
    let mut slot = CallSlot::new();
    let reply = core
        .call_with(conn, b"meta@1.0.0", b"show", b"", &opts, &mut slot)
        .unwrap();
    assert_eq!(reply, b"blue/ok");
    assert_eq!(
        slot.metadata().unwrap().get(b"served-by"),
        Some(&b"show"[..])
    );
    core.close(conn);
    e.shutdown(Duration::from_secs(1));
}

/// W3C `traceparent` values reach the handler and come back in the reply exactly as sent,
/// whether the connection packs them (canonical values, within one trace or starting a new
/// one: docs/protocol.md §9.10) or sends them literally (anything else).
pub fn traceparents_arrive_exactly_as_sent(t: &Transport) {
    let svc = Service::new("trace", "1.0.0")
        .unwrap()
        .unary("echo", |req, reply| {
            let tp = req.metadata("traceparent").unwrap_or(b"-");
            reply.write(tp);
            reply.metadata("traceparent", tp);
            Ok(())
        });
    let (e, ep) = serve(t, "trace", vec![svc], vec![]);
    let ch = e.client().connect(&ep).expect("connect");
    let mut core = crate::new_core(t, CoreConfig::default()).unwrap();
    let conn = core
        .connect(&crate::dial_of(t, &e), Duration::from_secs(5))
        .unwrap();
    let mut slot = CallSlot::new();
    let trace = |t: &str, span: u64| format!("00-{t}-{span:016x}-01");
    let (a, b) = (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "0af7651916cd43dd8448eb211c80319c",
    );
    let values = [
        trace(a, 1),
        trace(a, 2),
        trace(b, 3),
        trace(b, 0xffff_ffff_ffff_fffe),
        trace(a, 5).to_uppercase(),
        trace(a, 6)[..54].to_owned(),
        format!("{}-extra", trace(a, 7)),
        trace(a, 8),
    ];
    for v in &values {
        let opts = CallOptions::new()
            .deadline(Duration::from_secs(5))
            .metadata("traceparent", v.as_bytes());
        let r = ch.call_with("trace@1.0.0", "echo", &b""[..], &opts);
        assert_eq!(r.result().unwrap(), v.as_bytes(), "Channel request");
        assert_eq!(r.get("traceparent"), Some(v.as_bytes()), "Channel reply");
        let reply = core
            .call_with(conn, b"trace@1.0.0", b"echo", b"", &opts, &mut slot)
            .unwrap();
        assert_eq!(reply, v.as_bytes(), "Core request");
        assert_eq!(
            slot.metadata().unwrap().get(b"traceparent"),
            Some(v.as_bytes()),
            "Core reply"
        );
    }
    core.close(conn);
    e.shutdown(Duration::from_secs(1));
}

/// An interceptor times the call: the elapsed time it sees covers the handler.
pub fn an_interceptor_times_the_call(t: &Transport) {
    let max_us = Arc::new(AtomicU64::new(0));
    let m = max_us.clone();
    let (e, ep) = serve(
        t,
        "timing",
        vec![metadata_service()],
        vec![Box::new(move |b| b.interceptor(Stamp { max_us: m }))],
    );
    let ch = e.client().connect(&ep).expect("connect");
    let r = ch.call_with(
        "meta@1.0.0",
        "sleep",
        &[30u8][..],
        &CallOptions::new().deadline(Duration::from_secs(5)),
    );
    assert_eq!(r.result().unwrap(), b"slept");
    let us: u64 = std::str::from_utf8(r.get("x-elapsed-us").unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        us >= 30_000,
        "the handler slept 30 ms, the interceptor saw {us} µs"
    );
    e.shutdown(Duration::from_secs(1));
}

/// A service whose deferred handlers answer from other threads, fail, drop their handle,
/// panic, or hand it to the test (`keep`).
fn deferred_service(kept: Arc<Mutex<Vec<DeferredReply>>>) -> Service {
    Service::new("later", "1.0.0")
        .unwrap()
        .unary_deferred("reverse", |req, reply| {
            let mut v = req.payload().to_vec();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                v.reverse();
                reply.send(v);
            });
        })
        .unary_deferred("fail", |_, reply| {
            std::thread::spawn(move || reply.fail(Status::new(StatusCode::Aborted, "later, no")));
        })
        .unary_deferred("tagged", |_, reply| {
            std::thread::spawn(move || {
                let mut m = netron_engine::HeaderList::default();
                m.push(b"answered-by", b"another thread");
                reply.send_with_metadata(&b"tagged"[..], m);
            });
        })
        .unary_deferred("drop", |_, reply| drop(reply))
        .unary_deferred("panic", |_, _reply| panic!("deferred handler panicked"))
        .unary_deferred("keep", move |_, reply| kept.lock().unwrap().push(reply))
}

/// Deferred replies answered from other threads reach their callers, many at once.
pub fn deferred_replies_answer_from_other_threads(t: &Transport) {
    let (e, ep) = serve(
        t,
        "deferred",
        vec![deferred_service(Arc::default())],
        vec![],
    );
    let ch = e.client().connect(&ep).expect("connect");
    let threads: Vec<_> = (0..4u8)
        .map(|i| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                for j in 0..20u8 {
                    let r = ch
                        .call("later@1.0.0", "reverse", vec![i, j, 9], DL)
                        .unwrap();
                    assert_eq!(r, [9, j, i]);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let r = ch.call_with("later@1.0.0", "tagged", &b""[..], &CallOptions::new());
    assert_eq!(r.result().unwrap(), b"tagged");
    assert_eq!(r.get("answered-by"), Some(&b"another thread"[..]));
    let err = ch.call("later@1.0.0", "fail", &b""[..], DL).unwrap_err();
    assert_eq!(
        (err.code(), &*err.status().message),
        (StatusCode::Aborted, "later, no")
    );
    e.shutdown(Duration::from_secs(1));
}

/// A dropped handle answers Internal (also when its handler panicked): the caller never hangs.
pub fn dropped_deferred_replies_answer_the_caller(t: &Transport) {
    let (e, ep) = serve(t, "dropped", vec![deferred_service(Arc::default())], vec![]);
    let ch = e.client().connect(&ep).expect("connect");
    for method in ["drop", "panic"] {
        let ch = ch.clone();
        let err = within(method, move || {
            ch.call("later@1.0.0", method, &b""[..], None).unwrap_err()
        });
        assert_eq!(err.code(), StatusCode::Internal, "{method}");
        assert!(
            err.status().message.contains("DeferredReply"),
            "{method}: {}",
            err.status().message
        );
    }
    assert_eq!(
        ch.call("later@1.0.0", "reverse", &[1u8, 2][..], DL)
            .unwrap(),
        [2, 1]
    );
    e.shutdown(Duration::from_secs(1));
}

/// The caller's deadline holds for a deferred call: the callee answers DeadlineExceeded when
/// it passes, and the late answer is dropped and counted, not delivered to a later call that
/// reuses the id.
pub fn a_deferred_answer_after_the_deadline_is_dropped(t: &Transport) {
    let kept: Arc<Mutex<Vec<DeferredReply>>> = Arc::default();
    let (e, ep) = serve(t, "late", vec![deferred_service(kept.clone())], vec![]);
    // A client on an engine of its own, so the server's counters are the server's.
    let client = crate::builder(t).cores(1).build().unwrap();
    let ch = client.client().connect(&ep).expect("connect");
    let err = ch
        .call(
            "later@1.0.0",
            "keep",
            &b""[..],
            Some(Duration::from_millis(50)),
        )
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::DeadlineExceeded);
    // The callee ended the call: its own deadline passed, or the caller's Cancel came first.
    assert!(
        poll(&e, |s| s.deadline_exceeded() + s.cancels_in() >= 1),
        "the callee ends the call"
    );
    let late = kept
        .lock()
        .unwrap()
        .pop()
        .expect("the handler kept its reply");
    late.send(&b"too late"[..]);
    assert!(
        poll(&e, |s| s.errors_of("late_deferred_reply") == 1),
        "{:?}",
        e.total_stats()
    );
    assert_eq!(
        e.total_stats().calls_ok(),
        0,
        "the late answer was not sent"
    );
    // The connection and its ids are fine.
    for _ in 0..3 {
        assert_eq!(
            ch.call("later@1.0.0", "reverse", &[1u8, 2][..], DL)
                .unwrap(),
            [2, 1]
        );
    }
    client.shutdown(Duration::from_secs(1));
    e.shutdown(Duration::from_secs(1));
}

/// A handle that outlives its connection, then its engine, answers harmlessly; the caller
/// got its failure when the connection ended.
pub fn a_deferred_reply_outliving_its_engine_is_harmless(t: &Transport) {
    let kept: Arc<Mutex<Vec<DeferredReply>>> = Arc::default();
    let (e, ep) = serve(t, "outlive", vec![deferred_service(kept.clone())], vec![]);
    let client = crate::builder(t).cores(1).build().unwrap();
    let ch = client.client().connect(&ep).expect("connect");
    let c2 = ch.clone();
    let call = std::thread::spawn(move || c2.call("later@1.0.0", "keep", &b""[..], None));
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while kept.lock().unwrap().len() < 2 && std::time::Instant::now() < end {
        if kept.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        // A second call, whose handle will be dropped after the engine is gone.
        let c3 = ch.clone();
        std::thread::spawn(move || c3.call("later@1.0.0", "keep", &b""[..], None));
        while kept.lock().unwrap().len() < 2 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(kept.lock().unwrap().len(), 2, "both handlers ran");
    e.shutdown(Duration::from_millis(100));
    let r = within("the call whose server shut down", move || {
        call.join().unwrap()
    });
    assert!(
        r.is_err(),
        "the call failed when its server went away: {r:?}"
    );
    let mut handles = std::mem::take(&mut *kept.lock().unwrap());
    handles.pop().unwrap().send(&b"nobody listens"[..]);
    drop(handles); // answers Internal to a core that is gone
    client.shutdown(Duration::from_secs(1));
}

/// Two caller-driven cores driven by one thread, both connected to a server that calls each
/// back (a deferred method of the same name on each): X answers its callback inside its
/// handler, Y keeps its own pending. X's answer reaches the server's call to X, never Y's
/// (before, a core's directly-queued commands could be taken by the next core run on the
/// thread: X's answer completed the server's call to Y and X's call timed out).
pub fn a_deferred_answer_reaches_only_its_own_core(t: &Transport) {
    use std::sync::mpsc;
    let (tx, rx) = mpsc::channel::<(String, Result<Vec<u8>, netron_engine::CallError>)>();
    let tx = std::sync::Mutex::new(tx);
    let trigger = Service::new("t", "1.0.0")
        .unwrap()
        .unary("trigger", move |req, reply| {
            let who = String::from_utf8_lossy(req.payload()).into_owned();
            let fut = req
                .peer()
                .call_async("x@1.0.0", "d", &b""[..], Some(Duration::from_secs(3)));
            let tx = tx.lock().unwrap().clone();
            std::thread::spawn(move || {
                let _ = tx.send((who, block_on(fut)));
            });
            reply.write(b"triggered");
            Ok(())
        });
    let (server, ep) = crate::engine(t, CoreConfig::default(), &[trigger], "dispatch-two-cores");
    let kept: Arc<Mutex<Vec<DeferredReply>>> = Arc::default();
    let held = kept.clone();
    let xsvc = Service::new("x", "1.0.0")
        .unwrap()
        .unary_deferred("d", |_, d| d.send(&b"from X"[..]));
    let ysvc = Service::new("x", "1.0.0")
        .unwrap()
        .unary_deferred("d", move |_, d| held.lock().unwrap().push(d));
    let mut x = Core::with_services((t.configure_core)(CoreConfig::default()), vec![xsvc]).unwrap();
    let mut y = Core::with_services((t.configure_core)(CoreConfig::default()), vec![ysvc]).unwrap();
    let ep: netron_engine::Endpoint = ep.parse().unwrap();
    let cx = x.connect(&ep, Duration::from_secs(5)).unwrap();
    let cy = y.connect(&ep, Duration::from_secs(5)).unwrap();
    let mut slot = CallSlot::new();
    let dl = Some(Duration::from_secs(5));
    y.call(cy, b"t@1.0.0", b"trigger", b"Y", dl, &mut slot)
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while kept.lock().unwrap().is_empty() && std::time::Instant::now() < until {
        y.run_once().unwrap();
    }
    assert_eq!(
        kept.lock().unwrap().len(),
        1,
        "{}: Y holds the server's call",
        t.name
    );
    x.call(cx, b"t@1.0.0", b"trigger", b"X", dl, &mut slot)
        .unwrap();
    // Only Y runs now, then both: X's answer must still go to X's connection.
    let until = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < until {
        y.run_once().unwrap();
    }
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let (who, r) = loop {
        x.run_once().unwrap();
        y.run_once().unwrap();
        if let Ok(got) = rx.try_recv() {
            break got;
        }
        assert!(
            std::time::Instant::now() < until,
            "{}: no callback answered",
            t.name
        );
    };
    assert_eq!(who, "X", "{}: the first answered call", t.name);
    assert_eq!(r.unwrap(), b"from X", "{}", t.name);
    assert_eq!(y.stats().errors_of("late_deferred_reply"), 0, "{}", t.name);
    kept.lock().unwrap().clear();
    server.shutdown(Duration::from_secs(1));
}
