//! Test services beyond [`crate::calc`]: async handlers that finish later, never, or fail
//! (with a drop counter), and hostile handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use netron_engine::{Bytes, Service, Status, StatusCode};

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
/// The tests that read [`dropped`] share one counter, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lock every test that reads or resets [`dropped`] holds for its whole run.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many `async@1.0.0/never` futures were dropped (by a deadline, a Cancel or a close).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::SeqCst)
}

/// Resets [`dropped`] to 0 (hold [`serial`]).
pub fn reset_dropped() {
    DROPPED.store(0, Ordering::SeqCst);
}

struct CountDrop;
impl Drop for CountDrop {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// `async@1.0.0`: `now` (echo), `reverse` (the payload reversed by another thread after the
/// number of milliseconds in its first byte), `never` (never finishes; its drop is counted by
/// [`dropped`]), `fail` (Aborted).
pub fn async_service() -> Service {
    Service::new("async", "1.0.0")
        .unwrap()
        .unary_async("now", |req| async move { Ok(req.into_payload()) })
        .unary_async("reverse", |req| async move {
            let ms = req.payload().first().copied().unwrap_or(0) as u64;
            Ok(Bytes::from(reverse_later(req.into_payload(), ms).await))
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

/// `hostile@1.0.0`: handlers that panic, overflow their reply, answer huge errors or Ok as
/// an error.
pub fn hostile() -> Service {
    Service::new("hostile", "1.0.0")
        .unwrap()
        .unary("panic", |_, _| panic!("a handler panics"))
        .unary("panic_any", |_, _| std::panic::panic_any(42u64))
        .unary("overflow", |_, reply| {
            let chunk = vec![1u8; 1 << 20];
            for _ in 0..17 {
                reply.write(&chunk);
            }
            Ok(())
        })
        .unary("io_overflow", |_, reply| {
            // `write_all` reports the overflow; the handler ignores it and returns Ok.
            let _ = std::io::Write::write_all(reply, &vec![2u8; 17 << 20]);
            Ok(())
        })
        .unary("write_with_huge", |_, reply| {
            reply.write_with(usize::MAX, |_| unreachable!("never called"));
            Ok(())
        })
        .unary("exact_limit", |_, reply| {
            let n = reply.remaining();
            reply.write_with(n, |b| b.fill(3));
            Ok(())
        })
        .unary("huge_error", |_, _| {
            Err(Status::internal("x".repeat(1 << 20)))
        })
        .unary("ok_as_error", |_, _| {
            Err(Status::new(StatusCode::Ok, "not an error?"))
        })
        .unary_async("async_panic", |_| async {
            panic!("an async handler panics")
        })
        .unary_async("async_huge", |_| async {
            Ok(Bytes::from(vec![0u8; 17 << 20]))
        })
}
