//! Async handlers: owned requests, futures on the core's executor woken from other threads,
//! server-side deadlines and cancellation (a dropped future).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use netron_engine::{
    Bytes, CallSlot, Core, CoreConfig, Engine, IdlePolicy, Service, Status, StatusCode,
};

/// A value delivered by another thread: the smallest cross-thread future.
#[derive(Default)]
struct Shared {
    value: Option<Vec<u8>>,
    waker: Option<Waker>,
}

struct Later(Arc<Mutex<Shared>>);

impl Future for Later {
    type Output = Vec<u8>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<u8>> {
        let mut s = self.0.lock().unwrap();
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Computes `payload` reversed on a worker thread after `ms` milliseconds.
fn reverse_later(payload: Bytes, ms: u64) -> Later {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let s2 = shared.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        let mut s = s2.lock().unwrap();
        s.value = Some(payload.iter().rev().copied().collect());
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    });
    Later(shared)
}

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The tests share `DROPPED`, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct CountDrop;
impl Drop for CountDrop {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

fn service() -> Service {
    Service::new("async", "1.0.0")
        .unwrap()
        .unary_async("now", |req| async move { Ok(req.payload) })
        .unary_async("reverse", |req| async move {
            let ms = req.payload.first().copied().unwrap_or(0) as u64;
            Ok(Bytes::from(reverse_later(req.payload, ms).await))
        })
        .unary_async("never", |_req| async move {
            let _guard = CountDrop;
            std::future::pending::<()>().await;
            Ok(Bytes::new())
        })
        .unary_async("fail", |_req| async move {
            Err(Status::new(StatusCode::Aborted, "no"))
        })
}

#[test]
fn async_handlers_answer_fail_expire_and_cancel() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for idle in [
        IdlePolicy::BusyPoll,
        IdlePolicy::Adaptive {
            spin: Duration::ZERO,
        },
    ] {
        DROPPED.store(0, Ordering::SeqCst);
        let server = Engine::builder()
            .cores(1)
            .config(CoreConfig::default().with_idle(idle))
            .service(service())
            .listen("tcp://127.0.0.1:0")
            .build()
            .unwrap();
        let ep = server.endpoints()[0].to_string();
        let ch = Engine::builder().cores(1).build().unwrap();
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
                .code,
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
        assert_eq!(e.code, StatusCode::DeadlineExceeded);
        // The drop happens on the server's core: wait for it, with a bound.
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while DROPPED.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            DROPPED.load(Ordering::SeqCst),
            1,
            "the server dropped the expired future"
        );
        // Whichever came first, the server's own deadline or the client's Cancel, dropped it.
        let st = server.total_stats();
        assert!(st.deadline_exceeded + st.cancels_in >= 1, "{st:?}");

        // Cancel from a caller-driven core: the server drops the future.
        let mut core = Core::new(CoreConfig::default()).unwrap();
        let conn = core
            .connect(&server.endpoints()[0], Duration::from_secs(5))
            .unwrap();
        let mut slot = CallSlot::new();
        let calls_before = server.total_stats().calls_in;
        let id = core
            .start(conn, b"async@1.0.0", b"never", b"", None, &mut slot)
            .unwrap();
        // Cancel once the server has the call (polled with a bound, not a fixed time).
        core.run_until(Duration::from_secs(5), |_| {
            server.total_stats().calls_in > calls_before
        })
        .unwrap();
        assert!(server.total_stats().calls_in > calls_before);
        core.cancel(conn, id);
        assert!(slot.is_done());
        core.run_until(Duration::from_secs(5), |_| {
            DROPPED.load(Ordering::SeqCst) == 2
        })
        .unwrap();
        assert_eq!(
            DROPPED.load(Ordering::SeqCst),
            2,
            "Cancel dropped the running future"
        );
        drop(core);
        ch.shutdown(Duration::from_secs(1));
        server.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn async_calls_resolve_and_dropping_one_cancels_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use netron_tests::block_on;
    let server = Engine::builder()
        .cores(1)
        .service(service())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let client_engine = Engine::builder().cores(1).build().unwrap();
    let chan = client_engine
        .client()
        .connect(&server.endpoints()[0].to_string())
        .unwrap();
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
    let before = DROPPED.load(Ordering::SeqCst);
    let calls_before = server.total_stats().calls_in;
    let never = chan
        .method("async@1.0.0", "never")
        .call_async(&b""[..], None);
    // Drop it once the server has it (polled with a bound, not a fixed sleep).
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while server.total_stats().calls_in == calls_before && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        server.total_stats().calls_in > calls_before,
        "the call reached the server"
    );
    drop(never);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while DROPPED.load(Ordering::SeqCst) == before && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        DROPPED.load(Ordering::SeqCst),
        before + 1,
        "the server dropped the cancelled call's future"
    );
    assert!(server.total_stats().cancels_in >= 1);
    // The channel is still fine.
    assert_eq!(block_on(now.call_async(&b"ok"[..], dl)).unwrap(), b"ok");
    client_engine.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_handler_calls_another_service_on_its_own_core() {
    use std::sync::OnceLock;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
            async move {
                add.call_async(req.payload, Some(Duration::from_secs(5)))
                    .await
                    .map(Bytes::from)
            }
        })
        .unary_async("blocking", move |req| {
            // A blocking call here would wait for this very core: refused, not a deadlock.
            let r =
                u2.get()
                    .expect("upstream connected")
                    .call("calc@1.2.0", "add", req.payload, None);
            async move { r.map(Bytes::from) }
        });
    let server = Engine::builder()
        .cores(1)
        .service(netron_tests::calc())
        .service(proxy)
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let ep = server.endpoints()[0].to_string();
    upstream.set(server.client().connect(&ep).unwrap()).unwrap();
    let client_engine = Engine::builder().cores(1).build().unwrap();
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
    assert_eq!(e.code, StatusCode::FailedPrecondition, "{e}");
    client_engine.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

/// Sends one Request (id `id`, relative `deadline`) from a raw peer, which never sends Cancel.
fn raw_request(
    p: &mut netron_tests::RawPeer,
    enc: &mut netron_codec::hpack::HeaderEncoder,
    id: u32,
    service: &[u8],
    method: &[u8],
    payload: &[u8],
    deadline: Option<Duration>,
) {
    use netron_codec::hpack::Header;
    use std::io::Write;
    let mut batch = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
    batch
        .request(id, deadline)
        .unwrap()
        .headers(enc, &[Header::service(service), Header::method(method)])
        .unwrap()
        .payload(payload)
        .finish()
        .unwrap();
    p.stream.write_all(batch.as_slice()).unwrap();
}

/// Reads frames until the reply to `id` (a Response or an Error) arrives. Returns `Ok(payload)`
/// for a Response and `Err(status)` for an Error. Fails after the peer's read timeout.
fn raw_reply(
    p: &mut netron_tests::RawPeer,
    buf: &mut Vec<u8>,
    id: u32,
) -> Result<Vec<u8>, StatusCode> {
    use netron_codec::{FrameIter, FrameKind, Limits, control};
    use std::io::Read;
    loop {
        let limits = Limits::default();
        let mut it = FrameIter::new(buf, &limits);
        let mut found = None;
        for f in it.by_ref() {
            let f = f.expect("a valid frame from the server");
            if f.id() != id {
                continue;
            }
            found = Some(match f.kind() {
                FrameKind::Response => Ok(f.payload().to_vec()),
                FrameKind::Error => {
                    let body = control::read_error(&f).expect("a valid ErrorBody");
                    Err(control::status(body.status()))
                }
                k => panic!("unexpected {k:?} for call {id}"),
            });
            break;
        }
        let consumed = it.consumed();
        buf.drain(..consumed);
        if let Some(r) = found {
            return r;
        }
        let mut chunk = [0u8; 4096];
        let n = p
            .stream
            .read(&mut chunk)
            .expect("a reply before the read timeout");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The server enforces a Request's deadline on its own: a raw peer sends no Cancel, so only
/// the server's deadline can turn these calls into DeadlineExceeded.
#[test]
fn the_server_enforces_deadlines_without_help_from_the_caller() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Engine::builder()
        .cores(1)
        .service(service())
        .service(netron_tests::calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let addr = server.endpoints()[0].to_string();
    let addr = addr.strip_prefix("tcp://").unwrap_or(&addr).to_owned();
    let mut p = netron_tests::RawPeer::handshake(&addr);
    let mut enc = netron_codec::hpack::HeaderEncoder::new(4096);
    let mut buf = Vec::new();
    let ms = Some(Duration::from_millis(1));

    // Control: without a deadline the async handler answers (after ~30 ms).
    raw_request(
        &mut p,
        &mut enc,
        1,
        b"async@1.0.0",
        b"reverse",
        &[30, 1],
        None,
    );
    assert_eq!(raw_reply(&mut p, &mut buf, 1), Ok(vec![1, 30]));

    // An async handler that takes ~30 ms against a 1 ms deadline: DeadlineExceeded, not the
    // reply it would have produced.
    raw_request(
        &mut p,
        &mut enc,
        3,
        b"async@1.0.0",
        b"reverse",
        &[30, 1],
        ms,
    );
    assert_eq!(
        raw_reply(&mut p, &mut buf, 3),
        Err(StatusCode::DeadlineExceeded)
    );

    // A handler that never finishes: only the server's deadline timer can answer it, and it
    // drops the future.
    let before = DROPPED.load(Ordering::SeqCst);
    raw_request(&mut p, &mut enc, 5, b"async@1.0.0", b"never", &[], ms);
    assert_eq!(
        raw_reply(&mut p, &mut buf, 5),
        Err(StatusCode::DeadlineExceeded)
    );
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while DROPPED.load(Ordering::SeqCst) == before && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(DROPPED.load(Ordering::SeqCst), before + 1);

    // A sync handler (blocks 1 ms) against a 1 µs deadline: DeadlineExceeded, whether it
    // expired before the handler started or while it ran.
    raw_request(
        &mut p,
        &mut enc,
        7,
        b"calc@1.2.0",
        b"sleep",
        &[1],
        Some(Duration::from_micros(1)),
    );
    assert_eq!(
        raw_reply(&mut p, &mut buf, 7),
        Err(StatusCode::DeadlineExceeded)
    );
    // The same call with room to finish is answered.
    raw_request(
        &mut p,
        &mut enc,
        9,
        b"calc@1.2.0",
        b"sleep",
        &[1],
        Some(Duration::from_secs(5)),
    );
    assert_eq!(raw_reply(&mut p, &mut buf, 9), Ok(b"slept".to_vec()));

    let st = server.total_stats();
    assert!(st.deadline_exceeded >= 3, "{st:?}");
    assert_eq!(st.cancels_in, 0, "a raw peer sends no Cancel: {st:?}");
    server.shutdown(Duration::from_secs(1));
}
