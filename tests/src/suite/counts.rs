//! System-call and write counts per call, the deterministic half of the engine's "must not
//! regress" rule (issues 13 and 14: counted per call, before and after a change, they must be
//! equal). Both sides park (`IdlePolicy::Adaptive { spin: 0 }`), so every count is fixed by
//! the design, not by how fast the host is: a busy-poll core's empty polls would vary.
//!
//! The conformance macro runs these `isolated` (alone, in a child process), so no other test's
//! cores share the machine while counting.

use std::time::Duration;

use netron_engine::{CallSlot, Core, CoreStats, IdlePolicy, RuntimeConfig};

use crate::{Kind, Transport, calc};

const CALLS: u64 = 2_000;

/// Per-call counts of `after - before` over `calls`.
fn per_call(after: &CoreStats, before: &CoreStats, calls: u64) -> [f64; 4] {
    let d = |a: u64, b: u64| (a - b) as f64 / calls as f64;
    [
        d(after.driver().submits, before.driver().submits),
        d(after.driver().writes, before.driver().writes),
        d(after.frames_out(), before.frames_out()),
        d(after.bytes_out(), before.bytes_out()),
    ]
}

/// A server engine (the `calc` service) and a caller-driven client core connected to it,
/// both parking as soon as they are idle (`IdlePolicy::Adaptive { spin: 0 }`).
fn parked_pair(t: &Transport, tag: &str) -> (netron_engine::Engine, Core, netron_engine::ConnId) {
    let park = RuntimeConfig::default().with_idle(IdlePolicy::Adaptive {
        spin: Duration::ZERO,
    });
    let (server, _) = crate::engine(t, park.clone(), &[calc()], tag);
    let mut core = crate::new_core(t, park).unwrap();
    let conn = core
        .connect(&crate::dial_of(t, &server), Duration::from_secs(5))
        .unwrap();
    (server, core, conn)
}

/// One steady-state unary call (64-byte request and reply, a deadline, a caller-driven client
/// core, a server engine core, both parking) costs exactly, per side: one batch written with
/// one frame, a constant number of bytes, and a fixed number of `io_uring_enter` calls (see
/// the comment at the assertion).
pub fn a_parked_sync_call_costs_fixed_writes_frames_and_enters(t: &Transport) {
    let (server, mut core, conn) = parked_pair(t, "counts");
    let mut slot = CallSlot::new();
    let payload = [7u8; 64];
    let deadline = Some(Duration::from_secs(5));
    let mut call = |core: &mut Core| {
        let r = core
            .call(conn, b"calc@1.2.0", b"echo", &payload, deadline, &mut slot)
            .unwrap();
        assert_eq!(r.len(), 64);
    };
    // Warm-up: header tables reach their steady state (names indexed after the first call).
    for _ in 0..200 {
        call(&mut core);
    }
    let (c0, s0) = (core.stats(), server.total_stats());
    for _ in 0..CALLS {
        call(&mut core);
    }
    let (c1, s1) = (core.stats(), server.total_stats());
    let client = per_call(&c1, &c0, CALLS);
    let srv = per_call(&s1, &s0, CALLS);
    eprintln!(
        "{}: per call [submits, writes, frames, bytes out]: client {client:?}, server {srv:?}",
        t.name
    );
    let [c_submits, c_writes, c_frames, c_bytes] = client;
    let [s_submits, s_writes, s_frames, s_bytes] = srv;
    assert_eq!((c_writes, c_frames), (1.0, 1.0), "{}: client", t.name);
    assert_eq!((s_writes, s_frames), (1.0, 1.0), "{}: server", t.name);
    // Small batches are copied into a ring, not encoded in place (docs/protocol.md §26.6:
    // only after a bulk batch does a link lend ring space; in place costs small batches).
    let in_place = |a: &CoreStats, b: &CoreStats| {
        (a.driver().in_place_writes - b.driver().in_place_writes) as f64 / CALLS as f64
    };
    assert_eq!(
        (in_place(&c1, &c0), in_place(&s1, &s0)),
        (0.0, 0.0),
        "{}: batches written in place per call (client, server)",
        t.name
    );
    // The request carries the indexed names, the deadline and 64 bytes; the reply 64 bytes.
    assert!(
        c_bytes.fract() == 0.0 && s_bytes.fract() == 0.0 && c_bytes > 64.0 && s_bytes > 64.0,
        "{}: bytes per call {c_bytes} / {s_bytes} are not constant",
        t.name
    );
    // Sockets: the client enters once to submit its write and once to wait for the reply
    // (2), the server once to wait for the request and once to submit the reply (2). Record
    // links write the ring and ring the peer's doorbell without io_uring: the client's only
    // enter is its wait; the server's second one re-arms its doorbell read. Timing can save
    // enters (a request already there when a core would park: a few in 1,000 on a loaded
    // host) or add one (a parked core's wait times out after 5 ms without work, so a host
    // that stalls the test adds one per stall). Fewer is never a regression (a loaded host
    // saves up to half of the server's on a record link); a design change that adds work moves
    // the count by a whole enter per call or a large fraction of one, so more than 1 % above
    // the expected count fails.
    // On the epoll driver (docs/architecture.md, "The epoll driver") a send is its own
    // send(2) and an enter is an epoll_wait, taken only when a core has to wait: that count
    // follows the timing, so only the io_uring driver's is fixed.
    if core.driver().kind == netron_engine::DriverKind::Epoll {
        core.close(conn);
        server.shutdown(Duration::from_secs(1));
        return;
    }
    let (c_expected, s_expected) = match t.kind {
        Kind::Stream => (2.0, 2.0),
        Kind::Record => (1.0, 2.0),
    };
    for (side, submits, expected) in [
        ("client", c_submits, c_expected),
        ("server", s_submits, s_expected),
    ] {
        assert!(
            submits <= expected * 1.01,
            "{}: the {side} makes {submits} io_uring_enter calls per call ({expected} expected)",
            t.name
        );
    }
    core.close(conn);
    server.shutdown(Duration::from_secs(1));
}

/// Early writes (`RuntimeConfig::with_early_write`, on by default for cores that park at
/// once): a burst of 256 pipelined calls (~19 KiB of requests) started on a parking core is
/// written in pieces of ~2 KiB while it is started, not as one batch at the next turn, and
/// every call still gets its own reply, in order of nothing but its id.
pub fn a_parked_burst_is_written_in_pieces_and_every_call_answered(t: &Transport) {
    let (server, mut core, conn) = parked_pair(t, "burst");
    const BURST: usize = 256;
    let payload = |i: usize| {
        let mut p = [0x3cu8; 64];
        p[..2].copy_from_slice(&(i as u16).to_le_bytes());
        p
    };
    let mut slots: Vec<CallSlot> = (0..BURST).map(|_| CallSlot::new()).collect();
    for round in 0..4 {
        let before = core.stats();
        for (i, s) in slots.iter_mut().enumerate() {
            let started = core.start(
                conn,
                b"calc@1.2.0",
                b"echo",
                &payload(i),
                Some(Duration::from_secs(10)),
                s,
            );
            assert!(started.is_some(), "{}: call {i} started", t.name);
        }
        let early = core.stats().driver().early_writes - before.driver().early_writes;
        let done = core
            .run_until(Duration::from_secs(20), |_| {
                slots.iter().all(|s| s.is_done())
            })
            .unwrap();
        assert!(done, "{}: round {round}: every call completes", t.name);
        for (i, s) in slots.iter().enumerate() {
            assert_eq!(
                s.reply().expect("done").expect("a reply"),
                &payload(i)[..],
                "{}: round {round}, call {i}",
                t.name
            );
        }
        // ~19 KiB of requests in pieces of 2 KiB: about nine before the first turn (fewer
        // where a write is still in flight when the next piece is due).
        assert!(
            early >= 2,
            "{}: round {round}: {early} early writes while the burst was started",
            t.name
        );
    }
    core.close(conn);
    server.shutdown(Duration::from_secs(1));
}
