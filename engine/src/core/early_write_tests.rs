//! Early writes (`RuntimeConfig::with_early_write`): a core that parks at once writes a burst
//! of pipelined calls in pieces of the threshold as they are started, instead of one batch at
//! the end of the turn, and every call still gets its own reply.

use std::time::Duration;

use super::*;
use crate::{Engine, IdlePolicy, RuntimeConfig, Service};

/// Parks as soon as there is nothing to do, as the tokio peers of docs/benchmarks.md do.
const PARKS: IdlePolicy = IdlePolicy::Adaptive {
    spin: Duration::ZERO,
};

/// Calls in one burst: about 19 KiB of requests of 64-byte payloads.
const BURST: usize = 256;

/// A one-core echo server with `server`, and a caller-driven core with `client` connected to
/// it.
fn pair_with(server: RuntimeConfig, client: RuntimeConfig) -> (Engine, Core, ConnId) {
    let echo = Service::new("early", "1.0.0")
        .expect("service")
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        });
    let server = Engine::builder()
        .cores(1)
        .config(server)
        .service(echo)
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("server");
    let mut core = Core::new(client).expect("core");
    let conn = core
        .connect(&server.endpoints()[0], Duration::from_secs(5))
        .expect("connect");
    (server, core, conn)
}

/// A one-core echo server that parks when idle, and a caller-driven core with `cfg`.
fn pair(cfg: RuntimeConfig) -> (Engine, Core, ConnId) {
    pair_with(RuntimeConfig::default().with_idle(PARKS), cfg)
}

/// The 64-byte payload of call `i`: its index in the first two bytes.
fn payload(i: usize) -> [u8; 64] {
    let mut p = [0xa5u8; 64];
    p[..2].copy_from_slice(&(i as u16).to_le_bytes());
    p
}

/// Starts `BURST` calls without a turn in between; returns the writes made by then (a turn
/// writes the rest) after checking that every call got its own payload back.
fn burst(core: &mut Core, conn: ConnId) -> (u64, u64) {
    let mut slots: Vec<CallSlot> = (0..BURST).map(|_| CallSlot::new()).collect();
    let before = *core.stats().driver();
    for (i, s) in slots.iter_mut().enumerate() {
        core.start(
            conn,
            b"early@1.0.0",
            b"echo",
            &payload(i),
            Some(Duration::from_secs(10)),
            s,
        )
        .expect("started");
    }
    let after = *core.stats().driver();
    let done = core
        .run_until(Duration::from_secs(20), |_| {
            slots.iter().all(|s| s.is_done())
        })
        .expect("turns");
    assert!(done, "every call of the burst completes");
    for (i, s) in slots.iter().enumerate() {
        assert_eq!(
            s.reply().expect("done").expect("a reply"),
            &payload(i)[..],
            "call {i}"
        );
    }
    (
        after.writes - before.writes,
        after.early_writes - before.early_writes,
    )
}

#[test]
fn a_parking_core_writes_a_burst_of_calls_in_pieces() {
    let cfg = RuntimeConfig::default().with_idle(PARKS);
    assert_eq!(cfg.early_write(), Some(crate::DEFAULT_EARLY_WRITE_BYTES));
    let (server, mut core, conn) = pair(cfg);
    for _ in 0..3 {
        let (writes, early) = burst(&mut core, conn);
        // ~19 KiB in pieces of 2 KiB: about 9 writes before the first turn.
        assert!(
            (5..=BURST as u64 / 8).contains(&writes),
            "{writes} writes while the burst was started"
        );
        assert_eq!(early, writes, "each of them an early write");
    }
    drop(core);
    server.shutdown(Duration::from_millis(100));
}

#[test]
fn without_early_writes_a_burst_is_one_batch_at_the_turn() {
    let cfg = RuntimeConfig::default()
        .with_idle(PARKS)
        .with_early_write(None);
    assert_eq!(cfg.early_write(), None);
    let (server, mut core, conn) = pair(cfg);
    let (writes, early) = burst(&mut core, conn);
    assert_eq!((writes, early), (0, 0), "nothing written before the turn");
    drop(core);
    server.shutdown(Duration::from_millis(100));
}

#[test]
fn the_default_follows_the_idle_policy_and_zero_is_refused() {
    let spins = RuntimeConfig::default();
    assert_eq!(
        spins.early_write(),
        None,
        "the default adaptive core spins: off"
    );
    assert_eq!(
        spins.clone().with_idle(IdlePolicy::BusyPoll).early_write(),
        None
    );
    // Set explicitly, it holds whatever the idle policy, set before or after it.
    assert_eq!(
        spins
            .clone()
            .with_early_write(Some(512))
            .with_idle(IdlePolicy::BusyPoll)
            .early_write(),
        Some(512)
    );
    assert_eq!(
        spins
            .clone()
            .with_early_write(None)
            .with_idle(PARKS)
            .early_write(),
        None
    );
    match Core::new(spins.with_early_write(Some(0))) {
        Err(CoreError::Config(e)) => assert_eq!(e.setting, "RuntimeConfig::early_write"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("an early write of 0 bytes is refused"),
    }
}

#[test]
fn only_the_connection_over_the_threshold_is_written_early_and_directly() {
    // Four connections with queued output: more than a flush writes directly
    // (DIRECT_SEND_MAX_CONNS), so a flush of all of them would queue SQEs that go out only at
    // the turn's io_uring_enter. An early write sends the one connection that crossed the
    // threshold, at once, and leaves the others to the turn.
    let cfg = RuntimeConfig::default().with_idle(PARKS);
    let (server, mut core, bulk) = pair(cfg);
    let ep = server.endpoints()[0].clone();
    let small: Vec<ConnId> = (0..3)
        .map(|_| core.connect(&ep, Duration::from_secs(5)).expect("connect"))
        .collect();
    for round in 0..3 {
        let mut slots: Vec<CallSlot> = (0..small.len() + BURST / 4)
            .map(|_| CallSlot::new())
            .collect();
        let before = *core.stats().driver();
        let (few, many) = slots.split_at_mut(small.len());
        for (&c, s) in small.iter().zip(few.iter_mut()) {
            core.start(c, b"early@1.0.0", b"echo", &[7; 16], None, s)
                .expect("started");
        }
        for (i, s) in many.iter_mut().enumerate() {
            core.start(bulk, b"early@1.0.0", b"echo", &payload(i), None, s)
                .expect("started");
        }
        let after = *core.stats().driver();
        let (writes, early) = (
            after.writes - before.writes,
            after.early_writes - before.early_writes,
        );
        // 64 calls of ~75 bytes: two pieces of 2 KiB went out, each a whole write.
        assert!(early >= 2, "round {round}: {early} early writes");
        assert_eq!(
            writes, early,
            "round {round}: only the bulk connection was written before the turn"
        );
        let done = core
            .run_until(Duration::from_secs(20), |_| {
                slots.iter().all(|s| s.is_done())
            })
            .expect("turns");
        assert!(done, "round {round}: every call completes");
        for (s, want) in slots[..small.len()].iter().map(|s| (s, vec![7u8; 16])) {
            assert_eq!(s.reply().expect("done").expect("a reply"), &want[..]);
        }
        for (i, s) in slots[small.len()..].iter().enumerate() {
            assert_eq!(s.reply().expect("done").expect("a reply"), &payload(i)[..]);
        }
    }
    drop(core);
    server.shutdown(Duration::from_millis(100));
}

#[test]
fn a_busy_poll_server_set_to_write_early_does_so_on_its_hot_connections() {
    // A busy-poll core reads a busy connection directly ("hot", docs/architecture.md): the
    // replies to each direct read are written early too when early writes are set.
    // A hot connection stays hot for the whole test (10 min of silence before it would go
    // back to the ring receive), so every read after the first burst is a direct one.
    let (server, mut core, conn) = pair_with(
        RuntimeConfig::default()
            .with_idle(IdlePolicy::BusyPoll)
            .with_direct_recv(Some(crate::DirectRecv::new(8, Duration::from_secs(600))))
            .with_early_write(Some(64)),
        RuntimeConfig::default().with_idle(PARKS),
    );
    // Warm-up: the connection turns hot on the server.
    burst(&mut core, conn);
    let before = server.total_stats();
    assert_eq!(before.driver().hot_promotions, 1, "the connection is hot");
    for _ in 0..3 {
        burst(&mut core, conn);
    }
    let after = server.total_stats();
    assert_eq!(after.driver().hot_promotions, 1, "and stayed hot");
    let (writes, early) = (
        after.driver().writes - before.driver().writes,
        after.driver().early_writes - before.driver().early_writes,
    );
    // How many depends on how the host slices the bursts into reads; none would mean the
    // direct reads never checked.
    assert!(
        early >= 1,
        "replies to direct reads were written early: {early} of {writes} writes"
    );
    drop(core);
    server.shutdown(Duration::from_millis(100));
}
