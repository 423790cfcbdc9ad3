//! Criterion benchmarks of netron-shm: round trip, throughput and wake-up, each next to its
//! floor, with the two sides on threads pinned to cpu0 and cpu1 (the same real shared-memory
//! connection as between processes; `netron-bench shm` measures the two-process version).
//!
//! ```text
//! cargo bench -p netron-bench --bench shm
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netron_shm::{Config, Consumer, Error, Producer, ShmConnection, ShmListener};

const PATIENCE: Duration = Duration::from_secs(20);

fn pin(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < 2 < CPU_SETSIZE; CPU_SET writes only inside `set`.
    unsafe { libc::CPU_SET(cpu % 2, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is initialised and its size is exact.
    let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

fn deadline() -> Option<Instant> {
    Some(Instant::now() + PATIENCE)
}

/// A connected pair inside this process: (this side, the peer's side).
fn pair(name: &str, peer_spin: Duration) -> (ShmConnection, ShmConnection) {
    let name = format!("criterion-{}-{name}", std::process::id());
    let mut cfg = Config::default();
    cfg.spin(Duration::from_secs(1));
    let listener = ShmListener::bind_with(&name, cfg).unwrap();
    let mut peer_cfg = Config::default();
    peer_cfg.spin(peer_spin);
    let t = std::thread::spawn(move || ShmConnection::connect_with(&name, &peer_cfg).unwrap());
    let server = listener.accept_timeout(deadline()).unwrap();
    (server, t.join().unwrap())
}

/// Echoes records on cpu1 until the other side drops.
fn echo(peer: ShmConnection) -> JoinHandle<()> {
    std::thread::spawn(move || {
        pin(1);
        let (mut p, mut c) = peer.split();
        loop {
            // Read the clock before the record arrives, not on the echo's critical path.
            let end = deadline();
            match c.wait(end) {
                Ok(()) => {}
                Err(Error::PeerGone) => return,
                Err(e) => panic!("{e}"),
            }
            while let Some(r) = c.read().unwrap() {
                p.send_wait(r, end).unwrap();
            }
            p.publish().unwrap();
            c.release();
        }
    })
}

fn round_trip(p: &mut Producer, c: &mut Consumer) {
    let mut r = p.reserve(64).unwrap();
    r.fill(0x5A);
    r.commit();
    p.publish().unwrap();
    c.wait(None).unwrap();
    black_box(c.read().unwrap());
    c.release();
}

fn bench_round_trip(cr: &mut Criterion) {
    pin(0);
    let mut g = cr.benchmark_group("shm_round_trip_64B");
    g.measurement_time(Duration::from_secs(3));

    // Floor: a raw spinning atomic ping-pong on two cache lines.
    let lines = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let stop = Arc::new(AtomicBool::new(false));
    let ponger = {
        let (lines, stop) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            pin(1);
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let v = lines[0].load(Ordering::Acquire);
                if v != last {
                    lines[1].store(v, Ordering::Release);
                    last = v;
                }
                std::hint::spin_loop();
            }
        })
    };
    let mut seq = 0u64;
    g.bench_function("spin_floor", |b| {
        b.iter(|| {
            seq += 1;
            lines[0].store(seq, Ordering::Release);
            while lines[1].load(Ordering::Acquire) != seq {
                std::hint::spin_loop();
            }
        })
    });
    stop.store(true, Ordering::Relaxed);
    ponger.join().unwrap();

    let (conn, peer) = pair("rtt", Duration::from_secs(1));
    let echoer = echo(peer);
    let (mut p, mut c) = conn.split();
    g.bench_function("netron_shm_spinning", |b| {
        b.iter(|| round_trip(&mut p, &mut c))
    });
    drop((p, c));
    echoer.join().unwrap();
    g.finish();
}

fn bench_wakeup(cr: &mut Criterion) {
    pin(0);
    let mut g = cr.benchmark_group("shm_wakeup_64B");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    // The peer never spins: each record finds it asleep on the eventfd doorbell.
    let (conn, peer) = pair("wake", Duration::ZERO);
    let echoer = echo(peer);
    let (mut p, mut c) = conn.split();
    g.bench_function("consumer_asleep_round_trip", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_micros(300));
                let t = Instant::now();
                round_trip(&mut p, &mut c);
                total += t.elapsed();
            }
            total
        })
    });
    drop((p, c));
    echoer.join().unwrap();
    g.finish();
}

fn bench_throughput(cr: &mut Criterion) {
    pin(0);
    let mut g = cr.benchmark_group("shm_throughput");
    g.measurement_time(Duration::from_secs(3));
    for size in [64usize, 4096] {
        g.throughput(Throughput::Bytes(size as u64));
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();

        // Floor: one thread copying records into a 1 MiB buffer.
        let mut dst = vec![0u8; 1 << 20];
        let slots = dst.len() / size;
        let mut i = 0;
        g.bench_function(format!("memcpy_floor_{size}B"), |b| {
            b.iter(|| {
                let at = (i % slots) * size;
                dst[at..at + size].copy_from_slice(black_box(&src));
                i += 1;
            })
        });

        // netron-shm: producer here, consumer copying out on cpu1; publish every 32 small
        // records or every 4 records of 4 KiB (as `netron-bench shm`).
        let batch: u64 = if size <= 256 { 32 } else { 4 };
        let (conn, peer) = pair(&format!("tp{size}"), Duration::from_secs(1));
        let consumed = Arc::new(AtomicU64::new(0));
        let sink = {
            let consumed = consumed.clone();
            std::thread::spawn(move || {
                pin(1);
                let (_p, mut c) = peer.split();
                let mut local = vec![0u8; size];
                loop {
                    match c.wait(deadline()) {
                        Ok(()) => {}
                        Err(Error::PeerGone) => return,
                        Err(e) => panic!("{e}"),
                    }
                    let mut n = 0;
                    while let Some(r) = c.read().unwrap() {
                        local.copy_from_slice(r);
                        black_box(&local);
                        n += 1;
                    }
                    c.release();
                    consumed.fetch_add(n, Ordering::Release);
                }
            })
        };
        let (mut p, c) = conn.split();
        let mut sent = 0u64;
        g.bench_function(format!("netron_shm_{size}B_batch{batch}"), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for k in 0..iters {
                    let mut r = p.reserve_wait(size, deadline()).unwrap();
                    r.copy_from_slice(&src);
                    r.commit();
                    if k % batch == batch - 1 {
                        p.publish().unwrap();
                    }
                }
                p.publish().unwrap();
                sent += iters;
                while consumed.load(Ordering::Acquire) < sent {
                    std::hint::spin_loop();
                }
                t.elapsed()
            })
        });
        drop((p, c));
        sink.join().unwrap();
    }
    g.finish();
}

mod group {
    // `criterion_group!` generates an undocumented public fn.
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench_round_trip, bench_throughput, bench_wakeup);
}
criterion_main!(group::benches);
