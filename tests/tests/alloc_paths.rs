//! Allocations per call on the paths other than the caller-driven sync call (tests/alloc.rs):
//! the cross-thread `Channel` against adaptive (parking) cores, and async handlers. Each path
//! has a stated budget (docs/architecture.md, "Hot paths"), asserted here with a counting
//! allocator.
//!
//! One test per binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netron_engine::{Bytes, CoreConfig, Engine, IdlePolicy};
use netron_tests::calc;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to `System`, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CALLS: u64 = 3_100;

#[test]
fn channel_and_async_paths_stay_within_their_allocation_budgets() {
    let svc = calc().unary_async("async_echo", |req| async move { Ok(req.payload) });
    // Adaptive (parking) cores: busy-poll cores are covered by tests/alloc.rs, and two
    // busy-polling engines plus a caller thread would oversubscribe a 2-CPU machine.
    {
        let idle = IdlePolicy::default();
        let server = Engine::builder()
            .cores(1)
            .config(CoreConfig::default().with_idle(idle))
            .service(svc.clone())
            .listen("tcp://127.0.0.1:0")
            .build()
            .unwrap();
        let client = Engine::builder()
            .cores(1)
            .config(CoreConfig::default().with_idle(idle))
            .build()
            .unwrap();
        let ch = client
            .client()
            .connect(&server.endpoints()[0].to_string())
            .unwrap();
        let sync = ch.method("calc@1.2.0", "echo");
        let asynch = ch.method("calc@1.2.0", "async_echo");
        let payload = Bytes::from_static(&[7u8; 64]);
        let mut out = Vec::with_capacity(64);
        let deadline = Some(Duration::from_secs(5));
        let mut measure = |m: &netron_engine::Method| {
            for _ in 0..500 {
                out.clear();
                m.call_into(payload.clone(), deadline, &mut out).unwrap();
            }
            let before = ALLOCS.load(Ordering::SeqCst);
            for _ in 0..CALLS {
                out.clear();
                m.call_into(payload.clone(), deadline, &mut out).unwrap();
                assert_eq!(out.len(), 64);
            }
            ALLOCS.load(Ordering::SeqCst) - before
        };
        let n_sync = measure(&sync);
        let n_async = measure(&asynch);
        eprintln!("{idle:?}: channel sync {n_sync}, channel async {n_async} in {CALLS} calls");
        // The blocking Channel: the inbox queue (crossbeam SegQueue) allocates one block per
        // 31 commands; nothing else allocates.
        assert!(
            n_sync <= CALLS / 31 + 16,
            "{idle:?}: {n_sync} allocations for sync calls"
        );
        // Async handlers: the owned request (payload copy, headers), the future and its
        // waker, on top of the Channel's share.
        assert!(
            n_async <= 6 * CALLS + CALLS / 31 + 16,
            "{idle:?}: {n_async} allocations for async calls"
        );
        client.shutdown(Duration::from_secs(1));
        server.shutdown(Duration::from_secs(1));
    }
}
