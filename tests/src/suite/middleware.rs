//! Middleware (docs/architecture.md, "Middleware"): the order of engine-wide and per-service
//! interceptors, client-side interceptors (metadata both ways, a local refusal, timing),
//! async interceptors that await before the handler (sync, async and deferred handlers
//! behind them), and the ready interceptors (`auth`, `rate_limit`, `trace`) on real calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netron_engine::middleware::{Auth, RateLimit, Trace};
use netron_engine::{
    After, AsyncInterceptor, AsyncRequest, Before, Bytes, CallError, CallOptions,
    ClientInterceptor, InterceptFuture, Interceptor, Outgoing, Returned, Service, Status,
    StatusCode,
};

use crate::Transport;

const DL: Option<Duration> = Some(Duration::from_secs(5));

type Log = Arc<Mutex<Vec<String>>>;

/// Logs `<name>.before` / `<name>.after`.
struct Logger(&'static str, Log);

impl Interceptor for Logger {
    fn before(&self, _: &mut Before<'_>) -> Result<(), Status> {
        self.1.lock().unwrap().push(format!("{}.before", self.0));
        Ok(())
    }
    fn after(&self, _: &mut After<'_>) {
        self.1.lock().unwrap().push(format!("{}.after", self.0));
    }
}

/// Rejects every call with `PermissionDenied`.
struct DenyAll;

impl Interceptor for DenyAll {
    fn before(&self, _: &mut Before<'_>) -> Result<(), Status> {
        Err(Status::new(StatusCode::PermissionDenied, "guarded"))
    }
}

/// Logs `<name>.async`, and adds `x-<name>: yes` after an await point.
struct AsyncLogger(&'static str, Log);

impl AsyncInterceptor for AsyncLogger {
    fn before(&self, mut req: AsyncRequest) -> InterceptFuture {
        let (name, log) = (self.0, self.1.clone());
        Box::pin(async move {
            // A real await: yields to the core's executor once.
            Yield(false).await;
            log.lock().unwrap().push(format!("{name}.async"));
            if req.metadata("deny-async").is_some() {
                return Err(Status::new(
                    StatusCode::PermissionDenied,
                    format!("{name} says no"),
                ));
            }
            req.insert_metadata(&format!("x-{name}"), b"yes");
            Ok(req)
        })
    }
}

/// Pending once, then ready (wakes itself).
struct Yield(bool);

impl std::future::Future for Yield {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn svc(log: &Log) -> Service {
    let l = log.clone();
    Service::new("calc", "1.0.0")
        .unwrap()
        .unary("who", move |req, reply| {
            l.lock().unwrap().push("handler".into());
            for name in ["x-outer", "x-inner", "x-client"] {
                if let Some(v) = req.metadata(name) {
                    reply.write(name.as_bytes());
                    reply.write(b"=");
                    reply.write(v);
                    reply.write(b";");
                }
            }
            reply.metadata("x-served-by", b"calc");
            Ok(())
        })
        .interceptor(Logger("svc1", log.clone()))
        .interceptor(Logger("svc2", log.clone()))
}

/// Engine-wide interceptors run outside the service's, `before` in installation order,
/// `after` in reverse; another service sees only the engine's.
pub fn engine_wide_then_per_service_in_a_defined_order(t: &Transport) {
    let log: Log = Arc::default();
    let other = Service::new("other", "1.0.0")
        .unwrap()
        .unary("ok", |_, _| Ok(()));
    let guarded = Service::new("guarded", "1.0.0")
        .unwrap()
        .unary("ok", |_, _| Ok(()))
        .interceptor(Logger("guard", log.clone()))
        .interceptor(DenyAll);
    let e = crate::builder(t)
        .cores(1)
        .interceptor(Logger("engine1", log.clone()))
        .interceptor(Logger("engine2", log.clone()))
        .service(svc(&log))
        .service(other)
        .service(guarded)
        .listen(&(t.listen)("mw-order"))
        .build()
        .unwrap();
    let ch = e
        .client()
        .connect(&crate::dial_of(t, &e).to_string())
        .unwrap();
    ch.call("calc@1.0.0", "who", Bytes::new(), DL).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "engine1.before",
            "engine2.before",
            "svc1.before",
            "svc2.before",
            "handler",
            "svc2.after",
            "svc1.after",
            "engine2.after",
            "engine1.after",
        ],
        "{}",
        t.name
    );
    log.lock().unwrap().clear();
    ch.call("other@1.0.0", "ok", Bytes::new(), DL).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "engine1.before",
            "engine2.before",
            "engine2.after",
            "engine1.after"
        ]
    );
    // A per-service interceptor that rejects: the handler does not run, the `after` hooks
    // of those that ran before it do (inside out), the caller gets the status.
    log.lock().unwrap().clear();
    let err = ch
        .call("guarded@1.0.0", "ok", Bytes::new(), DL)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::PermissionDenied, "{err}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "engine1.before",
            "engine2.before",
            "guard.before",
            "guard.after",
            "engine2.after",
            "engine1.after"
        ]
    );
    drop(ch);
    e.shutdown(Duration::from_secs(1));
}

/// Adds `x-client`, refuses calls to method `forbidden` locally, records what it saw after.
struct ClientSide {
    seen: Arc<Mutex<Vec<String>>>,
}

impl ClientInterceptor for ClientSide {
    fn before(&self, call: &mut Outgoing<'_>) -> Result<(), Status> {
        if call.method() == "forbidden" {
            return Err(Status::new(
                StatusCode::PermissionDenied,
                "not from this client",
            ));
        }
        call.insert("x-client", b"c1");
        Ok(())
    }
    fn after(&self, call: &mut Returned<'_>) {
        let outcome = match call.outcome() {
            Ok(r) => String::from_utf8_lossy(r).into_owned(),
            Err(e) => format!("{:?}", e.code()),
        };
        let served = call
            .metadata("x-served-by")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        self.seen.lock().unwrap().push(format!(
            "{}/{} -> {outcome} (served by {served:?})",
            call.service(),
            call.method()
        ));
        // The hook can time the call (`elapsed_us`); a duration is not asserted in a test.
        let _ = call.elapsed_us();
        if call.method() == "who" && call.metadata("x-served-by").is_none() {
            call.fail(Status::internal("no x-served-by"));
        }
    }
}

/// Client-side interceptors: request metadata added before sending reaches the handler,
/// response metadata is read after, a refusal is local (nothing sent), and requirement
/// resolution goes through them too.
pub fn client_interceptors_see_both_ways_and_refuse_locally(t: &Transport) {
    let log: Log = Arc::default();
    let e = crate::builder(t)
        .cores(1)
        .service(svc(&log))
        .listen(&(t.listen)("mw-client"))
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = e
        .client()
        .with_interceptor(ClientSide { seen: seen.clone() });
    let ch = client.connect(&crate::dial_of(t, &e).to_string()).unwrap();
    let r = ch.call("calc@^1", "who", Bytes::new(), DL).unwrap();
    assert_eq!(r, b"x-client=c1;", "{}", t.name);
    let calls_in = e.total_stats().calls_in();
    let err = ch
        .call("calc@1.0.0", "forbidden", Bytes::new(), DL)
        .unwrap_err();
    assert!(matches!(err, CallError::Refused(_)), "{err}");
    assert_eq!(err.code(), StatusCode::PermissionDenied);
    assert_eq!(
        e.total_stats().calls_in(),
        calls_in,
        "a refused call is not sent"
    );
    // call_with: the caller's own metadata and the interceptor's both arrive.
    let resp = ch.call_with(
        "calc@1.0.0",
        "who",
        Bytes::new(),
        &CallOptions::new()
            .deadline(Duration::from_secs(5))
            .metadata("x-outer", b"o"),
    );
    assert_eq!(resp.result().unwrap(), b"x-outer=o;x-client=c1;");
    assert_eq!(resp.get("x-served-by"), Some(&b"calc"[..]));
    // call_async: `before` at the call, `after` when the future resolves.
    let r = crate::block_on(ch.method("calc@1.0.0", "who").call_async(Bytes::new(), DL)).unwrap();
    assert_eq!(r, b"x-client=c1;");
    let err = crate::block_on(
        ch.method("calc@1.0.0", "forbidden")
            .call_async(Bytes::new(), DL),
    )
    .unwrap_err();
    assert!(matches!(err, CallError::Refused(_)), "{err}");
    assert_eq!(
        e.total_stats().calls_in(),
        calls_in + 2,
        "a refused call is not sent"
    );
    let seen = seen.lock().unwrap().clone();
    // The `$sys.list` of the resolution first; the refused call ran no `after` hook of its
    // own (only those of interceptors installed before the refusing one would run).
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[0].starts_with("$sys@1.0.0/list -> "), "{}", seen[0]);
    assert_eq!(
        seen[1..],
        [
            "calc@1.0.0/who -> x-client=c1; (served by Some(\"calc\"))",
            "calc@1.0.0/who -> x-outer=o;x-client=c1; (served by Some(\"calc\"))",
            "calc@1.0.0/who -> x-client=c1; (served by Some(\"calc\"))",
        ]
    );
    // A client without the interceptor is unaffected.
    let plain = e
        .client()
        .connect(&crate::dial_of(t, &e).to_string())
        .unwrap();
    assert_eq!(
        plain.call("calc@1.0.0", "who", Bytes::new(), DL).unwrap(),
        b""
    );
    drop((ch, plain));
    e.shutdown(Duration::from_secs(1));
}

/// Async interceptors await before the handler, after the sync ones, engine's before the
/// service's; they add metadata the handler reads, or reject; sync, async and deferred
/// handlers behind them all answer.
pub fn async_interceptors_await_before_any_handler(t: &Transport) {
    let log: Log = Arc::default();
    let l = log.clone();
    let service = Service::new("calc", "1.0.0")
        .unwrap()
        .unary("sync", |req, reply| {
            reply.write(req.metadata("x-outer").unwrap_or(b"-"));
            reply.write(req.metadata("x-inner").unwrap_or(b"-"));
            Ok(())
        })
        .unary_async("async", |req| async move {
            let mut v = req.metadata("x-outer").unwrap_or(b"-").to_vec();
            v.extend_from_slice(req.metadata("x-inner").unwrap_or(b"-"));
            Ok(Bytes::from(v))
        })
        .unary_deferred("deferred", |req, reply| {
            let mut v = req.metadata("x-outer").unwrap_or(b"-").to_vec();
            v.extend_from_slice(req.metadata("x-inner").unwrap_or(b"-"));
            std::thread::spawn(move || reply.send(v));
        })
        .unary("fail", |_, _| Err(Status::invalid_argument("bad")))
        // A stream: the async hooks run before its handler too.
        .server_stream("stream", |req, _, mut tx| {
            let mut v = req.metadata("x-outer").unwrap_or(b"-").to_vec();
            v.extend_from_slice(req.metadata("x-inner").unwrap_or(b"-"));
            async move {
                tx.send(Bytes::from(v)).await?;
                Ok(())
            }
        })
        .interceptor(Logger("svc", l.clone()))
        .async_interceptor(AsyncLogger("inner", l.clone()));
    let e = crate::builder(t)
        .cores(1)
        .interceptor(Logger("engine", log.clone()))
        .async_interceptor(AsyncLogger("outer", log.clone()))
        .service(service)
        .listen(&(t.listen)("mw-async"))
        .build()
        .unwrap();
    let ch = e
        .client()
        .connect(&crate::dial_of(t, &e).to_string())
        .unwrap();
    for m in ["sync", "async", "deferred"] {
        log.lock().unwrap().clear();
        let r = ch.call("calc@1.0.0", m, Bytes::new(), DL).unwrap();
        assert_eq!(r, b"yesyes", "{}: {m}", t.name);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "engine.before",
                "svc.before",
                "outer.async",
                "inner.async",
                "svc.after",
                "engine.after"
            ],
            "{m}"
        );
    }
    // A handler's failure and an async rejection both reach the caller; the sync `after`
    // hooks run for the rejection too.
    let err = ch.call("calc@1.0.0", "fail", Bytes::new(), DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::InvalidArgument);
    log.lock().unwrap().clear();
    let resp = ch.call_with(
        "calc@1.0.0",
        "sync",
        Bytes::new(),
        &CallOptions::new()
            .deadline(Duration::from_secs(5))
            .metadata("deny-async", b"1"),
    );
    let err = resp.into_result().unwrap_err();
    assert_eq!(err.code(), StatusCode::PermissionDenied);
    assert!(err.status().message.contains("outer says no"), "{err}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "engine.before",
            "svc.before",
            "outer.async",
            "svc.after",
            "engine.after"
        ]
    );
    // A stream: served after the async hooks, which see (and add to) its metadata...
    log.lock().unwrap().clear();
    let o = CallOptions::new().deadline(Duration::from_secs(5));
    let mut rx = ch.open_server_stream("calc@1.0.0", "stream", Bytes::new(), &o);
    assert_eq!(&crate::block_on(rx.recv()).unwrap().unwrap()[..], b"yesyes");
    assert!(crate::block_on(rx.recv()).is_none());
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        seen[..4],
        ["engine.before", "svc.before", "outer.async", "inner.async"]
    );
    // ...or refuse it: its handler never runs and the opener gets the status.
    let o = o.metadata("deny-async", b"1");
    let mut rx = ch.open_server_stream("calc@1.0.0", "stream", Bytes::new(), &o);
    let err = crate::block_on(rx.recv()).unwrap().unwrap_err();
    assert_eq!(err.code, StatusCode::PermissionDenied, "{err:?}");
    // `$sys` is behind the engine's async interceptor too, and answers.
    assert_eq!(ch.resolve("calc@1", DL).unwrap(), "calc@1.0.0");
    drop(ch);
    e.shutdown(Duration::from_secs(1));
}

/// A caller-driven core's client interceptors: metadata added before sending, the response
/// metadata read after, a local refusal.
pub fn a_caller_driven_core_runs_client_interceptors(t: &Transport) {
    let log: Log = Arc::default();
    let e = crate::builder(t)
        .cores(1)
        .service(svc(&log))
        .listen(&(t.listen)("mw-core"))
        .build()
        .unwrap();
    let mut core = crate::new_core(t, netron_engine::CoreConfig::default()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    core.client_interceptor(ClientSide { seen: seen.clone() });
    let conn = core
        .connect(&crate::dial_of(t, &e), Duration::from_secs(5))
        .unwrap();
    let mut slot = netron_engine::CallSlot::new();
    let r = core
        .call(conn, b"calc@1.0.0", b"who", &[], DL, &mut slot)
        .unwrap();
    assert_eq!(r, b"x-client=c1;", "{}", t.name);
    let err = core
        .call(conn, b"calc@1.0.0", b"forbidden", &[], DL, &mut slot)
        .unwrap_err();
    assert!(matches!(err, CallError::Refused(_)), "{err}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["calc@1.0.0/who -> x-client=c1; (served by Some(\"calc\"))"]
    );
    core.close(conn);
    e.shutdown(Duration::from_secs(1));
}

/// Adds `authorization: Bearer <token>` to every call.
struct Token(&'static str);

impl ClientInterceptor for Token {
    fn before(&self, call: &mut Outgoing<'_>) -> Result<(), Status> {
        call.insert("authorization", format!("Bearer {}", self.0).as_bytes());
        Ok(())
    }
}

fn whoami() -> Service {
    Service::new("calc", "1.0.0")
        .unwrap()
        .unary("whoami", |req, reply| {
            reply.write(req.metadata(Auth::IDENTITY).unwrap_or(b"nobody"));
            Ok(())
        })
        .unary("add", |req, reply| {
            reply.write(&[req.payload().iter().fold(0u8, |a, b| a.wrapping_add(*b))]);
            Ok(())
        })
        .server_stream("who_stream", |req, _, mut tx| async move {
            let who = req.metadata(Auth::IDENTITY).unwrap_or(b"nobody").to_vec();
            tx.send(who).await
        })
}

/// `Auth` on real calls: a valid token's identity reaches the handler (and a forged identity
/// field does not), a missing or unknown token is `Unauthenticated`, `$sys` is let through
/// when allowed.
pub fn auth_checks_tokens_and_hands_the_identity_to_the_handler(t: &Transport) {
    let auth = Auth::new(|token: &[u8]| match token {
        b"tok-alice" => Some("alice"),
        b"tok-bob" => Some("bob"),
        _ => None,
    })
    .allow("$sys");
    let e = crate::builder(t)
        .cores(1)
        .interceptor(auth)
        .service(whoami())
        .listen(&(t.listen)("mw-auth"))
        .build()
        .unwrap();
    let ep = crate::dial_of(t, &e).to_string();
    let alice = e
        .client()
        .with_interceptor(Token("tok-alice"))
        .connect(&ep)
        .unwrap();
    // Resolution through `$sys` needs no token; the call does.
    assert_eq!(
        alice.call("calc@^1", "whoami", Bytes::new(), DL).unwrap(),
        b"alice"
    );
    assert_eq!(whoami_as_root(&alice), b"alice", "{}", t.name);
    // A stream opened on the same channel goes through its client interceptors too.
    let opts = CallOptions::new().deadline(Duration::from_secs(5));
    let mut rx = alice.open_server_stream("calc@1.0.0", "who_stream", Bytes::new(), &opts);
    assert_eq!(
        &crate::block_on(rx.recv()).unwrap().unwrap()[..],
        b"alice",
        "{}",
        t.name
    );
    let bare = e.client().connect(&ep).unwrap();
    let err = bare
        .call("calc@1.0.0", "whoami", Bytes::new(), DL)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::Unauthenticated);
    assert!(err.status().message.contains("authorization"), "{err}");
    assert_eq!(bare.resolve("calc@1", DL).unwrap(), "calc@1.0.0");
    let mallory = e
        .client()
        .with_interceptor(Token("tok-mallory"))
        .connect(&ep)
        .unwrap();
    let err = mallory
        .call("calc@1.0.0", "whoami", Bytes::new(), DL)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::Unauthenticated);
    assert!(err.status().message.contains("not accepted"), "{err}");
    assert!(e.total_stats().errors_of("rejected_by_interceptor") >= 2);
    drop((alice, bare, mallory));
    e.shutdown(Duration::from_secs(1));
    // A service let through without a token gets no identity, even one the caller sends.
    let open = crate::builder(t)
        .cores(1)
        .interceptor(Auth::new(|_: &[u8]| Some("x")).allow("calc"))
        .service(whoami())
        .listen(&(t.listen)("mw-auth-open"))
        .build()
        .unwrap();
    let anon = open
        .client()
        .connect(&crate::dial_of(t, &open).to_string())
        .unwrap();
    assert_eq!(whoami_as_root(&anon), b"nobody", "{}", t.name);
    drop(anon);
    open.shutdown(Duration::from_secs(1));
}

/// Calls `whoami` claiming to be `root` in the identity metadata field: the identity the
/// handler sees.
fn whoami_as_root(ch: &netron_engine::Channel) -> Vec<u8> {
    let opts = CallOptions::new()
        .deadline(Duration::from_secs(5))
        .metadata(Auth::IDENTITY, b"root");
    let forged = ch.call_with("calc@1.0.0", "whoami", Bytes::new(), &opts);
    forged.result().unwrap().to_vec()
}

/// `RateLimit` on real calls: a burst per connection and method, then `ResourceExhausted`
/// naming the limit; another method and another connection have their own buckets.
pub fn rate_limit_rejects_over_the_burst_per_peer_and_method(t: &Transport) {
    // No refill (0 per second): exactly the burst gets through, whatever the timing.
    let e = crate::builder(t)
        .cores(1)
        .interceptor(RateLimit::new(0.0, 3).method("whoami", 0.0, 1))
        .service(whoami())
        .listen(&(t.listen)("mw-rate"))
        .build()
        .unwrap();
    let ep = crate::dial_of(t, &e).to_string();
    let a = e.client().connect(&ep).unwrap();
    for _ in 0..3 {
        assert_eq!(a.call("calc@1.0.0", "add", &[1u8, 2][..], DL).unwrap(), [3]);
    }
    let err = a.call("calc@1.0.0", "add", &[1u8][..], DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::ResourceExhausted, "{}", t.name);
    let msg = &err.status().message;
    assert!(
        msg.contains("rate limit") && msg.contains("method add") && msg.contains("bursts of 3"),
        "{msg}"
    );
    // Another method: its own (smaller) bucket.
    assert!(a.call("calc@1.0.0", "whoami", Bytes::new(), DL).is_ok());
    let err = a
        .call("calc@1.0.0", "whoami", Bytes::new(), DL)
        .unwrap_err();
    assert!(err.status().message.contains("bursts of 1"), "{err}");
    // Another connection: its own buckets.
    let b = e.client().connect(&ep).unwrap();
    assert_eq!(b.call("calc@1.0.0", "add", &[1u8, 2][..], DL).unwrap(), [3]);
    drop((a, b));
    e.shutdown(Duration::from_secs(1));
}

/// Events recorded by [`Collect`]: one line of `name=value` fields per event.
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A `tracing` subscriber that records every event's fields into [`EVENTS`].
struct Collect;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

impl tracing::Subscriber for Collect {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(format!(
            "target={} level={} ",
            event.metadata().target(),
            event.metadata().level()
        ));
        event.record(&mut f);
        EVENTS.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// `Trace` on real calls: one event per call with service, method, latency and outcome
/// (sync and async handlers, successes and failures).
pub fn trace_logs_every_call_with_its_latency(t: &Transport) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Collect);
    });
    // A service name of this transport's own: other tests' events are told apart.
    let name = format!("traced-{}", t.name);
    let service = Service::new(&name, "1.0.0")
        .unwrap()
        .unary("ok", |_, _| Ok(()))
        .unary("bad", |_, _| Err(Status::invalid_argument("nope")))
        .unary_async("later", |_| async { Ok(Bytes::from_static(b"x")) });
    let e = crate::builder(t)
        .cores(1)
        .interceptor(Trace::new())
        .service(service)
        .listen(&(t.listen)("mw-trace"))
        .build()
        .unwrap();
    let ch = e
        .client()
        .connect(&crate::dial_of(t, &e).to_string())
        .unwrap();
    let svc = format!("{name}@1.0.0");
    ch.call(&svc, "ok", Bytes::new(), DL).unwrap();
    ch.call(&svc, "bad", Bytes::new(), DL).unwrap_err();
    ch.call(&svc, "later", Bytes::new(), DL).unwrap();
    drop(ch);
    e.shutdown(Duration::from_secs(1));
    let mine: Vec<String> = EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&format!("service={svc} ")))
        .cloned()
        .collect();
    assert_eq!(mine.len(), 3, "{}: {mine:#?}", t.name);
    for (line, method, level, code) in [
        (&mine[0], "ok", "INFO", "code=OK"),
        (&mine[1], "bad", "WARN", "code=InvalidArgument"),
        (&mine[2], "later", "INFO", "code=OK"),
    ] {
        assert!(line.contains("target=netron::call"), "{line}");
        assert!(line.contains(&format!("level={level} ")), "{line}");
        assert!(line.contains(&format!("method={method} ")), "{line}");
        assert!(line.contains(code), "{line}");
        assert!(line.contains("latency_us="), "{line}");
    }
    assert!(mine[1].contains("message=nope"), "{}", mine[1]);
}
