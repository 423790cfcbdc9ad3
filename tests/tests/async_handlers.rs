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
        std::thread::sleep(Duration::from_millis(50));
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
        let id = core
            .start(conn, b"async@1.0.0", b"never", b"", None, &mut slot)
            .unwrap();
        core.run_until(Duration::from_millis(50), |_| false)
            .unwrap();
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
    let never = chan
        .method("async@1.0.0", "never")
        .call_async(&b""[..], None);
    std::thread::sleep(Duration::from_millis(50));
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
