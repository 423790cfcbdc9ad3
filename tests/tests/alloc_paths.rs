//! Allocations per call on the paths other than the caller-driven sync call (tests/alloc.rs):
//! the cross-thread `Channel` against adaptive (parking) cores, and async handlers. Each path
//! has a stated budget (docs/architecture.md, "Hot paths"), asserted here with a counting
//! allocator.
//!
//! One test per binary, so no other test's allocations are counted.

use std::time::Duration;

use netron_engine::{Bytes, CoreConfig, Engine, IdlePolicy};
use netron_tests::{CountingAlloc, allocations, calc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

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
            let before = allocations();
            for _ in 0..CALLS {
                out.clear();
                m.call_into(payload.clone(), deadline, &mut out).unwrap();
                assert_eq!(out.len(), 64);
            }
            allocations() - before
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
