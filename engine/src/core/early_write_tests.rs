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

/// A one-core echo server that parks when idle, and a caller-driven core with `cfg`.
fn pair(cfg: RuntimeConfig) -> (Engine, Core, ConnId) {
    let echo = Service::new("early", "1.0.0")
        .expect("service")
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        });
    let server = Engine::builder()
        .cores(1)
        .idle(PARKS)
        .service(echo)
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("server");
    let mut core = Core::new(cfg).expect("core");
    let conn = core
        .connect(&server.endpoints()[0], Duration::from_secs(5))
        .expect("connect");
    (server, core, conn)
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
