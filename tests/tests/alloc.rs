//! A counting allocator shows zero heap allocations per call on the steady-state sync path,
//! client and server together: a server core on its own thread and a client core driven by the
//! test thread, over TCP and over a Unix socket.
//!
//! One test per binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netron_engine::{CallSlot, Core, CoreConfig, Engine, IdlePolicy};
use netron_tests::{calc, unix_path};

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

#[test]
fn steady_state_sync_calls_allocate_nothing() {
    let path = unix_path("alloc");
    let server = Engine::builder()
        .cores(1)
        .config(CoreConfig::default().with_idle(IdlePolicy::BusyPoll))
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .listen(&format!("unix://{path}"))
        .build()
        .unwrap();
    for ep in server.endpoints().to_vec() {
        let mut core = Core::new(CoreConfig::default().with_idle(IdlePolicy::BusyPoll)).unwrap();
        let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
        let mut slot = CallSlot::new();
        let payload = [7u8; 64];
        let deadline = Some(Duration::from_secs(5));
        // Warm-up: tables, buffers and maps reach their steady size.
        for _ in 0..2_000 {
            core.call(conn, b"calc@1.2.0", b"echo", &payload, deadline, &mut slot)
                .unwrap();
        }
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..10_000 {
            let r = core
                .call(conn, b"calc@1.2.0", b"echo", &payload, deadline, &mut slot)
                .unwrap();
            assert_eq!(r.len(), 64);
        }
        let n = ALLOCS.load(Ordering::SeqCst) - before;
        assert_eq!(
            n, 0,
            "{ep}: {n} allocations in 10,000 calls (client + server)"
        );
        // The counter does count: a failing call allocates its error message.
        let before = ALLOCS.load(Ordering::SeqCst);
        assert!(
            core.call(conn, b"calc@1.2.0", b"fail", &payload, deadline, &mut slot)
                .is_err()
        );
        assert!(ALLOCS.load(Ordering::SeqCst) > before);
        core.close(conn);
    }
    server.shutdown(Duration::from_secs(1));
}
