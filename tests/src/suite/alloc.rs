//! Allocation counts per call, asserted with [`crate::CountingAlloc`] (the test binary must
//! declare it as its global allocator; each test checks that the counter does count). The
//! conformance macro runs these `isolated`: each in a child process of its own, so no other
//! test's allocations are counted.

use std::time::{Duration, Instant};

use netron_engine::{Bytes, CallSlot, Core, IdlePolicy, RuntimeConfig};

use crate::{Transport, allocations, calc};

/// Zero heap allocations per call on the steady-state sync path, client and server together:
/// a busy-poll server core on its own thread and a client core driven by the test thread.
pub fn steady_state_sync_calls_allocate_nothing(t: &Transport) {
    let busy = RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    let (server, _) = crate::engine(t, busy.clone(), &[calc()], "alloc");
    let (mut core, conn, mut slot) = count_steady_calls(t, &server, busy);
    let (payload, deadline) = ([7u8; 64], Some(Duration::from_secs(5)));
    // The counter does count: a failing call allocates its error message.
    let before = allocations();
    assert!(
        core.call(conn, b"calc@1.2.0", b"fail", &payload, deadline, &mut slot)
            .is_err()
    );
    assert!(
        allocations() > before,
        "the global allocator is not CountingAlloc"
    );
    core.close(conn);
    server.shutdown(Duration::from_secs(1));
}

const CALLS: u64 = 3_100;

/// The paths other than the caller-driven sync call: the cross-thread `Channel` against
/// adaptive (parking) cores, and async handlers. Each path has a stated budget
/// (docs/architecture.md, "Hot paths").
pub fn channel_and_async_paths_stay_within_their_allocation_budgets(t: &Transport) {
    let svc = calc().unary_async("async_echo", |req| async move { Ok(req.into_payload()) });
    // Adaptive (parking) cores: busy-poll cores are covered by the test above, and two
    // busy-polling engines plus a caller thread would oversubscribe a 2-CPU machine.
    let idle = IdlePolicy::default();
    let (server, ep) = crate::engine(t, RuntimeConfig::default().with_idle(idle), &[svc], "alloc");
    let client = crate::builder(t)
        .cores(1)
        .config(RuntimeConfig::default().with_idle(idle))
        .build()
        .unwrap();
    let ch = client.client().connect(&ep).unwrap();
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

/// Passes every call through, adding nothing.
struct PassThrough;
impl netron_engine::Interceptor for PassThrough {}

/// Adds one request and one response metadata field to every call (fixed values).
struct Tagging;
impl netron_engine::Interceptor for Tagging {
    fn before(&self, call: &mut netron_engine::Before<'_>) -> Result<(), netron_engine::Status> {
        call.insert("x-tenant", b"blue");
        Ok(())
    }
    fn after(&self, call: &mut netron_engine::After<'_>) {
        call.insert("x-served", b"1");
    }
}

/// The sync path with one interceptor installed (docs/architecture.md, "Dispatch"): a
/// pass-through interceptor costs no allocation per call (two clock reads); one that adds a
/// request and a response metadata field costs none either in steady state (the request
/// field goes into the connection's reused header buffer, the reply is copied into a reused
/// buffer to put its header block first, up to 8 fields are lent to the HPACK encoder from
/// the stack, and the caller's slot reuses its metadata buffer).
pub fn one_interceptor_costs_what_the_docs_say(t: &Transport) {
    let busy = RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    for (name, tagging) in [("pass-through", false), ("tagging", true)] {
        let mut b = crate::builder(t)
            .cores(1)
            .config(busy.clone())
            .service(calc())
            .listen(&(t.listen)("alloc-ic"));
        b = if tagging {
            b.interceptor(Tagging)
        } else {
            b.interceptor(PassThrough)
        };
        let server = b.build().unwrap();
        let ep = crate::dial_of(t, &server);
        let mut core = crate::new_core(t, busy.clone()).unwrap();
        let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
        let mut slot = CallSlot::new();
        let payload = [7u8; 64];
        let deadline = Some(Duration::from_secs(5));
        for _ in 0..2_000 {
            core.call(conn, b"calc@1.2.0", b"echo", &payload, deadline, &mut slot)
                .unwrap();
        }
        const N: u64 = 10_000;
        let before = allocations();
        for _ in 0..N {
            let r = core
                .call(conn, b"calc@1.2.0", b"echo", &payload, deadline, &mut slot)
                .unwrap();
            assert_eq!(r.len(), 64);
        }
        let n = allocations() - before;
        eprintln!("{name}: {n} allocations in {N} calls (client + server)");
        assert_eq!(
            slot.metadata().unwrap().get(b"x-served").is_some(),
            tagging,
            "{name}: response metadata"
        );
        assert_eq!(n, 0, "{ep} {name}: {n} allocations in {N} calls");
        core.close(conn);
        server.shutdown(Duration::from_secs(1));
    }
}

/// No middleware installed (no interceptor of any kind, no client interceptor), and the
/// engine's services changed at run time (its cores swapped their registry): the steady-state
/// sync path still allocates nothing, client and server together.
pub fn no_middleware_installed_costs_nothing(t: &Transport) {
    let busy = RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    let (server, _) = crate::engine(t, busy.clone(), &[calc()], "alloc-none");
    let extra = netron_engine::Service::new("extra", "1.0.0").unwrap();
    server.add_service(extra).unwrap();
    server.remove_service("extra@1.0.0").unwrap();
    let (mut core, conn, _) = count_steady_calls(t, &server, busy);
    let deadline = Some(Duration::from_secs(5));
    // The counter does count: resolving a requirement allocates.
    let before = allocations();
    assert_eq!(
        core.resolve(conn, "calc@^1", deadline).unwrap(),
        "calc@1.2.0"
    );
    assert!(
        allocations() > before,
        "the global allocator is not CountingAlloc"
    );
    core.close(conn);
    server.shutdown(Duration::from_secs(1));
}

/// Zero heap allocations per stream chunk in steady state, client and server together: a
/// caller-driven client core reads a server stream of 64-byte chunks borrowed in place
/// ([`Core::recv_chunk`]), from a busy-poll server whose handler sends shared `Bytes`.
pub fn steady_state_stream_chunks_allocate_nothing(t: &Transport) {
    const CHUNKS: u32 = 150_000;
    let svc = netron_engine::Service::new("st", "1.0.0")
        .unwrap()
        .server_stream("flood64", |_, req, mut tx| async move {
            let n = req
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
            let chunk = Bytes::from_static(&[9u8; 64]);
            for _ in 0..n {
                tx.send(chunk.clone()).await?;
            }
            Ok(())
        });
    let busy = RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    let (server, _) = crate::engine(t, busy.clone(), &[svc], "alloc-stream");
    let ep = crate::dial_of(t, &server);
    let mut core = crate::new_core(t, busy).unwrap();
    let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
    let stream = core
        .open_stream(
            conn,
            b"st@1.0.0",
            b"flood64",
            Some(&CHUNKS.to_le_bytes()),
            true,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
    let read = |core: &mut Core, stream: &netron_engine::CoreStream, n: u32| {
        for _ in 0..n {
            let len = core.recv_chunk(stream, |c| c.len()).unwrap();
            assert_eq!(len, Some(64));
        }
    };
    // Warm-up: buffers, queues and windows reach their steady size.
    read(&mut core, &stream, 30_000);
    let before = allocations();
    read(&mut core, &stream, 100_000);
    let n = allocations() - before;
    eprintln!("{ep}: {n} allocations in 100,000 stream chunks (client + server)");
    // The writer wakes once per WindowUpdate (every 128 KiB, 2048 chunks) through the
    // executor's ready ring, which allocates nothing (a `SegQueue` allocated a block every 31
    // wakes: 1-6 per 100,000 chunks before). What may remain is per batch, not per chunk: on
    // tcp a backed-up socket can hold more batches in flight than a connection keeps spare
    // buffers for (2), seen as 0 or 7 allocations per 100,000 chunks; unix and inproc show 0.
    assert!(n <= 8, "{ep}: {n} allocations in 100,000 stream chunks");
    read(&mut core, &stream, 20_000);
    assert_eq!(core.recv_chunk(&stream, |c| c.len()).unwrap(), None);

    // A reader that falls behind by a whole window, on a fresh stream past its first chunk:
    // the core runs without it until the server has sent a window ahead and waits for credit,
    // so the stream's receive buffer holds the most it ever will. That buffer is sized when
    // the stream opens: filling it allocates nothing (it grew by doublings as the reader fell
    // behind before: 64-byte chunks into a 256 KiB window took a dozen reallocations, a
    // pause in the middle of a stream as many; seen as 9+ in the count above on a slow host).
    let second = core
        .open_stream(
            conn,
            b"st@1.0.0",
            b"flood64",
            Some(&20_000u32.to_le_bytes()),
            true,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
    read(&mut core, &second, 1);
    let before = allocations();
    let behind = Instant::now() + Duration::from_millis(300);
    while Instant::now() < behind {
        core.poll_once().unwrap();
    }
    read(&mut core, &second, 19_999);
    let n = allocations() - before;
    eprintln!("{ep}: {n} allocations while a reader fell a window behind and caught up");
    assert!(
        n <= 2,
        "{ep}: {n} allocations while a reader fell a window behind and caught up"
    );
    assert_eq!(core.recv_chunk(&second, |c| c.len()).unwrap(), None);
    core.close(conn);
    server.shutdown(Duration::from_secs(1));
}

/// Connects a caller-driven core with `cfg` to `server`, warms up with 2,000 echo calls of
/// 64 bytes (tables, buffers and maps reach their steady size), then asserts that 10,000 more
/// allocate nothing, client and server together.
fn count_steady_calls(
    t: &Transport,
    server: &netron_engine::Engine,
    cfg: RuntimeConfig,
) -> (Core, netron_engine::ConnId, CallSlot) {
    let ep = crate::dial_of(t, server);
    let mut core = netron_engine::Core::new(cfg).unwrap();
    let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
    let mut slot = CallSlot::new();
    let payload = [7u8; 64];
    let deadline = Some(Duration::from_secs(5));
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
    (core, conn, slot)
}
