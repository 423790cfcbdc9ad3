//! loom models of the ring indices and of the sleep/doorbell protocol.
//!
//! Run with (a separate target dir keeps the normal build cache intact):
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p netron-shm --release --test loom
//! ```
//! The ring's atomics and the in-process doorbell come from loom under `--cfg loom`, and every
//! access to the ring's data area is reported to loom (one tracked cell per 8-byte word), so a
//! missing acquire/release edge shows up as a causality violation, a lost wake-up as a
//! deadlock, and a record seen twice or lost as a failed assertion.
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use netron_shm::channel;

/// Payload of record `i`: its length varies so records wrap the 64-byte ring.
fn record(i: u8) -> Vec<u8> {
    vec![i; [20, 12, 28, 4][usize::from(i) % 4]]
}

/// Explores every interleaving (`bound: None`), or those with at most `bound` preemptions
/// (for models whose polling loops make the full space too large to finish in seconds).
fn model(bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = bound;
    b.check(f);
}

/// Indices only: the consumer polls (no sleeping). Bounded to 3 preemptions: with the polling
/// loops, the unbounded space takes over a minute. Three records through a 64-byte ring force
/// a wrap with a padding record and reuse of released space; each arrives once, in order, and
/// intact, and no write to a slot happens-before-unrelated to the read of it.
#[test]
fn indices_deliver_each_record_once_in_order() {
    model(Some(3), || {
        let (mut p, mut c) = channel(64, Duration::ZERO).unwrap();
        let t = thread::spawn(move || {
            for i in 0..3u8 {
                let data = record(i);
                loop {
                    match p.reserve(data.len()) {
                        Ok(mut r) => {
                            r.copy_from_slice(&data);
                            r.commit();
                            break;
                        }
                        Err(netron_shm::Error::Full) => thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                p.publish().unwrap();
            }
            // Keep the producer alive until the consumer is done (dropping it closes).
            p
        });
        let mut next = 0u8;
        while next < 3 {
            let mut got = 0;
            while let Some(r) = c.read().unwrap() {
                assert_eq!(r, &record(next)[..]);
                next += 1;
                got += 1;
            }
            c.release();
            if got == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(c.read().unwrap(), None);
        drop(t.join().unwrap());
    });
}

/// Sleep protocol: the consumer waits with no spin, so it always announces sleep, re-checks and
/// blocks on the doorbell; the producer publishes two batches and rings only if it saw the
/// announcement. A lost wake-up leaves the consumer blocked forever, which loom reports as a
/// deadlock.
#[test]
fn sleeping_consumer_is_always_woken() {
    model(None, || {
        let (mut p, mut c) = channel(64, Duration::ZERO).unwrap();
        let t = thread::spawn(move || {
            p.send(&[1; 8]).unwrap();
            p.publish().unwrap();
            p.send(&[2; 8]).unwrap();
            p.publish().unwrap();
            p
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            c.wait(None).unwrap();
            while let Some(r) = c.read().unwrap() {
                seen.push(r[0]);
            }
            c.release();
        }
        assert_eq!(seen, [1, 2]);
        drop(t.join().unwrap());
    });
}

/// A batch of records published with one store wakes the sleeping consumer once and all of
/// them are visible after the wake-up.
#[test]
fn batched_publication_is_seen_whole() {
    model(None, || {
        let (mut p, c) = channel(64, Duration::ZERO).unwrap();
        let t = thread::spawn(move || {
            for i in 0..3u8 {
                p.send(&[i; 4]).unwrap();
            }
            p.publish().unwrap();
            p
        });
        c.wait(None).unwrap();
        for i in 0..3u8 {
            assert_eq!(c.read().unwrap(), Some(&[i; 4][..]));
        }
        drop(t.join().unwrap());
    });
}
