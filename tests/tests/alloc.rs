//! A counting allocator shows zero heap allocations per call on the steady-state sync path,
//! client and server together: a server core on its own thread and a client core driven by the
//! test thread, over TCP and over a Unix socket.
//!
//! One test per binary, so no other test's allocations are counted.

use std::time::Duration;

use netron_engine::{CallSlot, Core, CoreConfig, Engine, IdlePolicy};
use netron_tests::{CountingAlloc, allocations, calc, unix_path};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

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
        let before = allocations();
        for _ in 0..10_000 {
            let r = core
                .call(conn, b"calc@1.2.0", b"echo", &payload, deadline, &mut slot)
                .unwrap();
            assert_eq!(r.len(), 64);
        }
        let n = allocations() - before;
        assert_eq!(
            n, 0,
            "{ep}: {n} allocations in 10,000 calls (client + server)"
        );
        // The counter does count: a failing call allocates its error message.
        let before = allocations();
        assert!(
            core.call(conn, b"calc@1.2.0", b"fail", &payload, deadline, &mut slot)
                .is_err()
        );
        assert!(allocations() > before);
        core.close(conn);
    }
    server.shutdown(Duration::from_secs(1));
}
