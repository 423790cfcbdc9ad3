//! `ntr_core_call` and `ntr_core_call_prepared` allocate nothing per call in steady state
//! (docs/ffi.md, "Costs per call"): a C caller through a caller-driven core costs what the
//! Rust caller-driven core costs, 0 allocations, client and server together. One test in this
//! binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netron::*;
use netron_engine::{Engine, IdlePolicy, RuntimeConfig, Service};

struct CountingAlloc;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to `System` unchanged, only counting.
unsafe impl GlobalAlloc for CountingAlloc {
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
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn core_call_allocates_nothing_per_call() {
    let busy = RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    let echo = Service::new("calc", "1.2.0")
        .unwrap()
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        });
    let server = Engine::builder()
        .cores(1)
        .config(busy)
        .service(echo)
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let ep = std::ffi::CString::new(server.endpoints()[0].to_string()).unwrap();
    let mut core = ntr_core { id: 0 };
    let mut conn = ntr_conn { id: 0 };
    let mut reply = ntr_buf {
        data: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
    let payload = [7u8; 64];
    // SAFETY: a valid out-pointer to a local.
    assert_eq!(unsafe { ntr_core_new(&mut core) }, NTR_OK);
    // SAFETY: a NUL-terminated endpoint and a valid out-pointer to a local.
    let st = unsafe { ntr_core_connect(core, ep.as_ptr(), 5000, &mut conn) };
    assert_eq!(st, NTR_OK);
    let call = |reply: &mut ntr_buf| {
        // SAFETY: live locals, static NUL-terminated names, a reply buffer zeroed or filled
        // by the library; on the thread that created the core.
        unsafe {
            ntr_core_call(
                core,
                conn,
                c"calc@1.2.0".as_ptr(),
                c"echo".as_ptr(),
                payload.as_ptr(),
                payload.len(),
                5000,
                reply,
            )
        }
    };
    for _ in 0..2_000 {
        assert_eq!(call(&mut reply), NTR_OK);
    }
    const N: u64 = 10_000;
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..N {
        assert_eq!(call(&mut reply), NTR_OK);
        assert_eq!(reply.len, 64);
    }
    let n = ALLOCS.load(Ordering::SeqCst) - before;
    assert_eq!(
        n, 0,
        "{n} allocations in {N} ntr_core_call calls (client + server)"
    );
    // The same through a prepared call (`ntr_core_prepare_call` allocates the names' copies
    // once, before the count).
    let mut prepared = ntr_core_prepared_call { id: 0 };
    // SAFETY: static NUL-terminated names and a valid out-pointer to a local.
    let st = unsafe {
        ntr_core_prepare_call(
            core,
            conn,
            c"calc@1.2.0".as_ptr(),
            c"echo".as_ptr(),
            &mut prepared,
        )
    };
    assert_eq!(st, NTR_OK);
    let call_prepared = |reply: &mut ntr_buf| {
        // SAFETY: a live local request and a reply buffer zeroed or filled by the library;
        // on the thread that created the core.
        unsafe { ntr_core_call_prepared(prepared, payload.as_ptr(), payload.len(), 5000, reply) }
    };
    for _ in 0..2_000 {
        assert_eq!(call_prepared(&mut reply), NTR_OK);
    }
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..N {
        assert_eq!(call_prepared(&mut reply), NTR_OK);
        assert_eq!(reply.len, 64);
    }
    let n = ALLOCS.load(Ordering::SeqCst) - before;
    assert_eq!(
        n, 0,
        "{n} allocations in {N} ntr_core_call_prepared calls (client + server)"
    );
    assert_eq!(ntr_core_prepared_call_free(prepared), NTR_OK);
    // The counter does count: a failing call allocates its error text.
    let before = ALLOCS.load(Ordering::SeqCst);
    // SAFETY: as for `call`; NULL data with length 0 is allowed.
    let s = unsafe {
        ntr_core_call(
            core,
            conn,
            c"calc@1.2.0".as_ptr(),
            c"nope".as_ptr(),
            std::ptr::null(),
            0,
            5000,
            &mut reply,
        )
    };
    assert_eq!(s, NTR_UNIMPLEMENTED);
    assert!(
        ALLOCS.load(Ordering::SeqCst) > before,
        "the global allocator is not counting"
    );
    // SAFETY: filled by the library, unchanged since.
    assert_eq!(unsafe { ntr_buf_free(&mut reply) }, NTR_OK);
    assert_eq!(ntr_core_close(core, conn), NTR_OK);
    assert_eq!(ntr_core_free(core), NTR_OK);
    server.shutdown(Duration::from_secs(1));
}
