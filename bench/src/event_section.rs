//! Event fan-out (issue 17): 64-byte events published on one connection and delivered over
//! TCP to 1 / 16 / 256 subscriber connections spread over the two cores of the publishing
//! engine, against a floor measured in the same run: one thread writing the same 64 bytes to
//! N non-blocking sockets, read back from the N sockets by one reader thread (as the Netron
//! subscribers are read by one thread). Delivered events per second (events × subscribers),
//! and p99 publish-to-deliver latency with one event in flight and at 50 % of the measured
//! maximum rate.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::cell::RefCell;

use netron_engine::{
    Core, CoreConfig, Endpoint, Engine, IdlePolicy, ProtocolConfig, RuntimeConfig,
    SubscribeOptions, Subscription,
};

use crate::Options;
use crate::engine_section::tcp_pair;
use crate::stats::{Samples, us};
use crate::table::Table;

const SIZE: usize = 64;

/// What the reader thread reports.
#[derive(Default)]
struct Seen {
    delivered: AtomicU64,
    samples: Mutex<Samples>,
    /// Record latencies (off while measuring throughput).
    sampling: AtomicBool,
    stop: AtomicBool,
}

/// A 64-byte event stamped with the time since `base`, in nanoseconds.
fn stamped(base: Instant) -> [u8; SIZE] {
    let mut e = [0x5au8; SIZE];
    e[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
    e
}

fn latency(base: Instant, e: &[u8]) -> u64 {
    let sent = u64::from_le_bytes(e[..8].try_into().unwrap_or([0; 8]));
    (base.elapsed().as_nanos() as u64).saturating_sub(sent)
}

/// Waits until `seen` counted `n` deliveries (or `bound` passed), calling `pump` meanwhile
/// (a caller-driven core's turn; nothing for sides read by a thread of their own).
fn wait_delivered(seen: &Seen, n: u64, bound: Duration, pump: &mut dyn FnMut()) -> bool {
    let end = Instant::now() + bound;
    while seen.delivered.load(Ordering::Acquire) < n {
        if Instant::now() > end {
            return false;
        }
        pump();
        std::hint::spin_loop();
    }
    true
}

/// The three measurements for one side (Netron or the floor): `publish` sends one event to
/// every subscriber.
fn measure(
    seen: &Seen,
    subscribers: u64,
    (events, in_flight_rounds, paced_for): (u64, u64, Duration),
    base: Instant,
    mut publish: impl FnMut([u8; SIZE]),
    pump: &mut dyn FnMut(),
) -> (f64, u64, u64) {
    // Throughput: publish all, at most WINDOW events ahead of the slowest possible
    // accounting (deliveries / subscribers), so no queue overflows; wait for every delivery.
    const WINDOW: u64 = 4096;
    let before = seen.delivered.load(Ordering::Acquire);
    let t = Instant::now();
    for i in 0..events {
        while i.saturating_sub((seen.delivered.load(Ordering::Acquire) - before) / subscribers)
            > WINDOW
        {
            pump();
            std::hint::spin_loop();
        }
        publish(stamped(base));
    }
    let done = wait_delivered(
        seen,
        before + events * subscribers,
        Duration::from_secs(60),
        pump,
    );
    let rate = if done {
        (events * subscribers) as f64 / t.elapsed().as_secs_f64()
    } else {
        0.0
    };
    // One event in flight.
    *seen.samples.lock().unwrap_or_else(|p| p.into_inner()) = Samples::default();
    seen.sampling.store(true, Ordering::Release);
    for _ in 0..in_flight_rounds {
        let n = seen.delivered.load(Ordering::Acquire);
        publish(stamped(base));
        wait_delivered(seen, n + subscribers, Duration::from_secs(5), pump);
    }
    seen.sampling.store(false, Ordering::Release);
    let one = std::mem::take(&mut *seen.samples.lock().unwrap_or_else(|p| p.into_inner()))
        .percentile(99.0);
    // Paced at half the measured maximum (events per second per publisher), as an
    // application's loop would publish: every event that is due, then one turn of the
    // publisher's core (which writes them in one batch per connection). A turn follows every
    // round of publishing, so a publisher that falls behind its schedule still sends what it
    // published (an earlier loop pumped only while ahead of schedule: behind it, a whole
    // second of events waited in the core, and the p99 was that wait, ~200 ms).
    let per_event = if rate > 0.0 {
        Duration::from_secs_f64(2.0 * subscribers as f64 / rate)
    } else {
        Duration::from_millis(1)
    };
    seen.sampling.store(true, Ordering::Release);
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    let n0 = seen.delivered.load(Ordering::Acquire);
    while start.elapsed() < paced_for {
        let now = Instant::now();
        while next <= now {
            publish(stamped(base));
            sent += 1;
            next += per_event;
        }
        pump();
        std::hint::spin_loop();
    }
    wait_delivered(seen, n0 + sent * subscribers, Duration::from_secs(30), pump);
    seen.sampling.store(false, Ordering::Release);
    let half = std::mem::take(&mut *seen.samples.lock().unwrap_or_else(|p| p.into_inner()))
        .percentile(99.0);
    (rate, one, half)
}

fn record(seen: &Seen, base: Instant, e: &[u8], local: &mut Samples) {
    if seen.sampling.load(Ordering::Relaxed) {
        local.push(latency(base, e));
    }
    seen.delivered.fetch_add(1, Ordering::AcqRel);
}

/// Reads every event queued on `subs`, recording each delivery.
fn drain(subs: &[Subscription], seen: &Seen, base: Instant, local: &mut Samples) {
    let mut any = false;
    for sub in subs {
        while let Ok(Some(ev)) = sub.try_recv() {
            record(seen, base, ev.payload(), local);
            any = true;
        }
    }
    if any {
        flush_samples(seen, local);
    }
}

fn flush_samples(seen: &Seen, local: &mut Samples) {
    let s = std::mem::take(local);
    seen.samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(s);
}

/// Netron: a 2-core server engine (the publisher's peer and every subscriber's), a 2-core
/// client engine holding the publisher's and the subscribers' connections.
fn netron(n: usize, events: u64, rounds: u64, paced: Duration) -> (f64, u64, u64) {
    let server = Engine::builder()
        .cores(2)
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("netron server");
    let ep = server.endpoints()[0].to_string();
    let client = Engine::builder().cores(2).build().expect("netron client");
    let chans: Vec<_> = (0..n)
        .map(|_| client.client().connect(&ep).expect("connect"))
        .collect();
    let subs: Vec<Subscription> = chans
        .iter()
        .map(|ch| {
            ch.subscribe("bench.ev", SubscribeOptions::new().queue_depth(65_536))
                .expect("subscribe")
        })
        .collect();
    while server.total_stats().subscriptions() < n as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let publisher = client.client().connect(&ep).expect("connect");
    let base = Instant::now();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut local = Samples::default();
        while !s2.stop.load(Ordering::Relaxed) {
            drain(&subs, &s2, base, &mut local);
        }
    });
    let publish = |e: [u8; SIZE]| {
        publisher
            .publish("bench.ev", bytes::Bytes::copy_from_slice(&e))
            .expect("publish");
    };
    let r = measure(
        &seen,
        n as u64,
        (events, rounds, paced),
        base,
        publish,
        &mut || {},
    );
    seen.stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    drop((chans, publisher));
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
    r
}

/// Netron on two threads, as many as the floor: a 1-core busy-poll server engine (CPU 1) and
/// one caller-driven busy-poll client core on this thread that holds the publisher's and the
/// N subscribers' connections, publishing and reading (two hops: publisher to server to
/// subscribers, where the floor's writer reaches the readers in one). On a 2-vCPU host the
/// 2-core rows run four engine threads and two bench threads on two CPUs, so their latency
/// is the scheduler's time slices; these rows measure the engine.
fn netron_two_threads(n: usize, events: u64, rounds: u64, paced: Duration) -> (f64, u64, u64) {
    let busy = || RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    let server = Engine::builder()
        .cores(1)
        .cpus(&[1])
        .config(CoreConfig::new(busy(), ProtocolConfig::default()))
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("netron server");
    let ep: Endpoint = server.endpoints()[0].clone();
    let core = RefCell::new(Core::new(busy()).expect("client core"));
    let opts = || SubscribeOptions::new().queue_depth(65_536);
    let subs: Vec<Subscription> = (0..n)
        .map(|_| {
            let mut c = core.borrow_mut();
            let conn = c.connect(&ep, Duration::from_secs(5)).expect("connect");
            c.subscribe(conn, "bench.ev", opts()).expect("subscribe")
        })
        .collect();
    let publisher = core
        .borrow_mut()
        .connect(&ep, Duration::from_secs(5))
        .expect("connect");
    let end = Instant::now() + Duration::from_secs(10);
    while server.total_stats().subscriptions() < n as u64 && Instant::now() < end {
        let _ = core.borrow_mut().run_once();
    }
    let base = Instant::now();
    let seen = Seen::default();
    let local = RefCell::new(Samples::default());
    let mut pump = || {
        let _ = core.borrow_mut().run_once();
        drain(&subs, &seen, base, &mut local.borrow_mut());
    };
    let publish = |e: [u8; SIZE]| {
        core.borrow_mut()
            .publish(publisher, "bench.ev", &e)
            .expect("publish");
    };
    let r = measure(
        &seen,
        n as u64,
        (events, rounds, paced),
        base,
        publish,
        &mut pump,
    );
    drop(subs);
    drop(core);
    server.shutdown(Duration::from_secs(1));
    r
}

/// Netron in the floor's own shape (one hop, two threads): this thread's caller-driven
/// busy-poll core listens and publishes in-process (`Core::publish_local`) to the N
/// subscriptions that a reader thread's caller-driven busy-poll client core holds over N TCP
/// connections, as the floor's writer writes to N sockets that its reader thread reads.
fn netron_one_hop(n: usize, events: u64, rounds: u64, paced: Duration) -> (f64, u64, u64) {
    let busy = || RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll);
    let server = RefCell::new(Core::new(busy()).expect("server core"));
    let any: Endpoint = "tcp://127.0.0.1:0".parse().expect("endpoint");
    let ep = server.borrow_mut().listen(&any).expect("listen")[0].clone();
    let base = Instant::now();
    let seen = Arc::new(Seen::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (s2, r2) = (seen.clone(), ready.clone());
    let reader = std::thread::spawn(move || {
        crate::pin::pin_to_cpu(1);
        let mut core = Core::new(busy()).expect("client core");
        let opts = || SubscribeOptions::new().queue_depth(65_536);
        let subs: Vec<Subscription> = (0..n)
            .map(|_| {
                let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
                core.subscribe(conn, "bench.ev", opts()).expect("subscribe")
            })
            .collect();
        r2.store(true, Ordering::Release);
        let mut local = Samples::default();
        while !s2.stop.load(Ordering::Relaxed) {
            let _ = core.run_once();
            drain(&subs, &s2, base, &mut local);
        }
    });
    // Accept the connections and their Subscribe frames.
    let end = Instant::now() + Duration::from_secs(10);
    while (!ready.load(Ordering::Acquire) || server.borrow().stats().subscriptions() < n as u64)
        && Instant::now() < end
    {
        let _ = server.borrow_mut().run_once();
    }
    // The next pump writes (one batch per connection for every event published since).
    let publish = |e: [u8; SIZE]| {
        server
            .borrow_mut()
            .publish_local("bench.ev", &e)
            .expect("publish");
    };
    let mut pump = || {
        let _ = server.borrow_mut().run_once();
    };
    let r = measure(
        &seen,
        n as u64,
        (events, rounds, paced),
        base,
        publish,
        &mut pump,
    );
    seen.stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    r
}

/// The floor: one thread writes each event to N non-blocking TCP sockets, one reads them.
fn floor(n: usize, events: u64, rounds: u64, paced: Duration) -> (f64, u64, u64) {
    let (mut writers, readers): (Vec<TcpStream>, Vec<TcpStream>) =
        (0..n).map(|_| tcp_pair()).unzip();
    for s in writers.iter().chain(&readers) {
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.set_nodelay(true);
    }
    let base = Instant::now();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut readers = readers;
        let mut local = Samples::default();
        let mut bufs = vec![Vec::<u8>::new(); readers.len()];
        let mut chunk = [0u8; 64 << 10];
        while !s2.stop.load(Ordering::Relaxed) {
            let mut any = false;
            for (r, pending) in readers.iter_mut().zip(bufs.iter_mut()) {
                match r.read(&mut chunk) {
                    Ok(k) if k > 0 => {
                        pending.extend_from_slice(&chunk[..k]);
                        let whole = pending.len() / SIZE * SIZE;
                        for e in pending[..whole].chunks(SIZE) {
                            record(&s2, base, e, &mut local);
                        }
                        pending.drain(..whole);
                        any = true;
                    }
                    Err(e) if e.kind() != ErrorKind::WouldBlock => return,
                    _ => {}
                }
            }
            if any {
                flush_samples(&s2, &mut local);
            }
        }
    });
    let publish = |e: [u8; SIZE]| {
        for w in writers.iter_mut() {
            let mut off = 0;
            while off < SIZE {
                match w.write(&e[off..]) {
                    Ok(k) => off += k,
                    Err(x) if x.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(x) => panic!("floor write: {x}"),
                }
            }
        }
    };
    let r = measure(
        &seen,
        n as u64,
        (events, rounds, paced),
        base,
        publish,
        &mut || {},
    );
    seen.stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    r
}

/// The columns of the three tables.
const COLUMNS: [&str; 8] = [
    "subscribers",
    "floor events/s",
    "netron events/s",
    "ratio (target >= 0.7 at 16, 256)",
    "p99 1 in flight floor",
    "p99 1 in flight netron (target <= 2x)",
    "p99 at 50% floor",
    "p99 at 50% netron",
];

/// One table row: subscribers, the floor's and Netron's events/s and their ratio, and the
/// p99s (one in flight, with its ratio; at 50 %) of both. Each measure is (events/s, p99 at
/// one in flight, p99 at 50 %), in ns for the latencies.
fn row(n: usize, f: (f64, u64, u64), m: (f64, u64, u64)) -> [String; 8] {
    [
        n.to_string(),
        format!("{:.0}", f.0),
        format!("{:.0}", m.0),
        format!("{:.2}x", if f.0 > 0.0 { m.0 / f.0 } else { 0.0 }),
        us(f.1),
        format!("{} ({:.2}x)", us(m.1), m.1 as f64 / f.1.max(1) as f64),
        us(f.2),
        us(m.2),
    ]
}

/// The section: one row per subscriber count.
pub fn run(opts: &Options) -> Vec<Table> {
    let mut t = Table::new(
        "Event fan-out over TCP: 64-byte events, 2-core engine (issue 17)",
        &COLUMNS,
    );
    let mut t1 = Table::new(
        "Event fan-out over TCP in the floor's shape, one hop and two threads: a caller-driven \
         core publishing in-process to N subscriber connections of a caller-driven client core \
         on a reader thread (issue 17)",
        &COLUMNS,
    );
    let mut t2 = Table::new(
        "Event fan-out over TCP, two threads like the floor: 1-core busy-poll server, one \
         caller-driven client core publishing and reading (issue 17)",
        &COLUMNS,
    );
    let deliveries: u64 = if opts.quick { 200_000 } else { 2_000_000 };
    let paced = if opts.quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    for n in [1usize, 16, 256] {
        let events = (deliveries / n as u64).max(2_000);
        let rounds = if opts.quick { 200 } else { 2_000 };
        let f = floor(n, events, rounds, paced);
        let x = netron(n, events, rounds, paced);
        let y = netron_two_threads(n, events, rounds, paced);
        let z = netron_one_hop(n, events, rounds, paced);
        for (table, m) in [(&mut t1, z), (&mut t2, y), (&mut t, x)] {
            table.row(&row(n, f, m));
        }
    }
    t.note(
        "events/s = events delivered to all subscribers together per second; p99 over every \
         (event, subscriber) delivery",
    );
    t.note(
        "floor: one thread writes each 64-byte event to N non-blocking TCP sockets, one thread \
         reads all N (same run); netron: a Channel publishes to a 2-core engine, N Channels \
         (a 2-core client engine) subscribe, one thread reads every Subscription",
    );
    t.note("a throughput of 0 means the deliveries did not complete within 60 s");
    t2.note(
        "same floor (same run); netron: two threads like the floor, publisher to server to \
         subscribers (two hops where the floor's writer makes one); the 2-core table above \
         runs six threads on this host's CPUs, so its latencies are scheduling",
    );
    t1.note(
        "same floor (same run); netron: this thread's busy-poll core publishes with \
         Core::publish_local and writes at its next turn (the bench runs turns while it waits \
         for a delivery, and while it is 4,096 events ahead); a reader \
         thread (cpu1) runs a busy-poll client core holding the N subscriptions and reads them, \
         as the floor's reader reads its N sockets",
    );
    vec![t, t1, t2]
}
