//! Two real processes: each test re-executes the test binary, running only itself
//! (`--exact <its name>`) with `NETRON_SHM_CHILD=<role>`, and in that child the test's first
//! line, [`as_child`], plays the client and exits. No test exists only to be the child, so
//! every test reported as passed checked something. Covers bulk transfer with checksums, `kill -9` of the peer in every wait,
//! and a peer that scribbles garbage over the segment.
//!
//! Every wait has a deadline and every child is killed when its guard drops, so a failure
//! never hangs the suite. The only time bounds are generous "returned an error rather than
//! hanging" ones.

#![cfg(not(loom))]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netron_shm::{Config, Error, ShmConnection, ShmListener};

const ROLE_VAR: &str = "NETRON_SHM_CHILD";
const NAME_VAR: &str = "NETRON_SHM_NAME";
/// Generous bound for "the survivor noticed instead of hanging".
const NOTICE: Duration = Duration::from_secs(10);

fn deadline(d: Duration) -> Option<Instant> {
    Some(Instant::now() + d)
}

fn unique_name(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

/// Kills (SIGKILL) and reaps the child when dropped.
struct ChildGuard(Child);

impl ChildGuard {
    /// Re-executes this test binary to run only the calling test, as the child `role`.
    fn spawn(role: &str, name: &str) -> Self {
        assert!(
            std::env::var_os(ROLE_VAR).is_none(),
            "a child process must not spawn children: the test is missing its as_child() call"
        );
        // libtest runs each test on a thread named after it.
        let thread = std::thread::current();
        let test = thread
            .name()
            .filter(|n| *n != "main")
            .expect("called from a test thread (named after the test)");
        let child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .env(NAME_VAR, name)
            .stdout(Stdio::null())
            .spawn()
            .expect("re-exec the test binary");
        Self(child)
    }

    fn kill9(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (so it cannot have been
        // reused) and a valid signal number; it touches no memory of ours.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 failed");
    }

    /// Waits for the exit status, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < end, "child did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn small_rings() -> Config {
    let mut cfg = Config::default();
    cfg.ring_capacities(64 << 10, 64 << 10);
    cfg
}

fn accept(listener: &ShmListener) -> ShmConnection {
    listener
        .accept_timeout(deadline(NOTICE))
        .expect("child connected")
}

// ---------------------------------------------------------------------------------------
// Child roles.

/// First line of every test that spawns a child: in the re-executed child process (the
/// environment names a role), plays that role and exits with its code, so the test body never
/// runs there; in the test run itself, returns at once.
fn as_child() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let name = std::env::var(NAME_VAR).unwrap();
    let code = match role.as_str() {
        "bulk" => child_bulk(&name),
        "flood" => child_flood(&name),
        "idle" => child_idle(&name),
        "garbage" => child_garbage(&name),
        "bad_record" => child_bad_record(&name),
        "head_jump" => child_head_jump(&name),
        other => panic!("unknown child role {other}"),
    };
    std::process::exit(code);
}

/// xorshift64*: deterministic sizes and contents on both sides.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn fill(seq: u64, buf: &mut [u8]) {
    let mut s = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        let v = next(&mut s).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01B3);
    }
}

const BULK_RECORDS: u64 = 200_000;
const BULK_SEED: u64 = 0x5EED;

fn child_bulk(name: &str) -> i32 {
    let mut conn = ShmConnection::connect_with(name, &small_rings()).unwrap();
    let mut sizes = BULK_SEED;
    let mut sum = 0xCBF2_9CE4_8422_2325u64;
    let end = deadline(Duration::from_secs(60));
    for seq in 0..BULK_RECORDS {
        let len = 8 + (next(&mut sizes) % 3000) as usize;
        let p = conn.producer();
        let mut r = p.reserve_wait(len, end).unwrap();
        r[..8].copy_from_slice(&seq.to_le_bytes());
        fill(seq, &mut r[8..]);
        fnv(&mut sum, &r);
        r.commit();
        if seq % 16 == 15 {
            p.publish().unwrap();
        }
    }
    let p = conn.producer();
    p.send_wait(&u64::MAX.to_le_bytes(), end).unwrap();
    p.send_wait(&sum.to_le_bytes(), end).unwrap();
    p.publish().unwrap();
    // The parent answers with the checksum it computed.
    let c = conn.consumer();
    c.wait(end).unwrap();
    let reply = c.read().unwrap().unwrap();
    if reply == sum.to_le_bytes() { 0 } else { 3 }
}

fn child_flood(name: &str) -> i32 {
    let mut conn = ShmConnection::connect_with(name, &small_rings()).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let mut seq = 0u64;
    while Instant::now() < end {
        let p = conn.producer();
        if p.send_wait(&[seq as u8; 256], Some(end)).is_err() {
            return 4;
        }
        p.publish().unwrap();
        seq += 1;
    }
    5
}

fn child_idle(name: &str) -> i32 {
    let conn = ShmConnection::connect_with(name, &small_rings()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(conn);
    6
}

/// The shared word at byte `off` of the connection's segment.
fn word(conn: &ShmConnection, off: usize) -> &AtomicU64 {
    let (base, len) = conn.raw_segment();
    assert!(off % 8 == 0 && off + 8 <= len);
    // SAFETY: `off + 8 <= len` and the mapping is page-aligned, so the word is inside the live
    // mapping (which outlives `conn`'s borrow) and 8-aligned; the parent only ever accesses
    // shared words atomically, so writing it is no data race.
    unsafe { AtomicU64::from_ptr(base.wrapping_add(off).cast()) }
}

/// Overwrites every word of the segment with pseudo-random garbage, rings the parent's
/// doorbell, then waits to be disconnected.
fn child_garbage(name: &str) -> i32 {
    let mut conn = ShmConnection::connect_with(name, &small_rings()).unwrap();
    conn.producer().send(b"valid first").unwrap();
    conn.producer().publish().unwrap();
    let len = conn.raw_segment().1;
    let mut s = 0xBAD_5EED_u64;
    for _ in 0..3 {
        for off in (0..len).step_by(8) {
            word(&conn, off).store(next(&mut s), Ordering::Relaxed);
        }
    }
    ring_parent(&mut conn);
    wait_until_dropped(conn)
}

/// Publishes a record whose header says it is longer than the ring allows, the way a
/// malicious producer would: by storing the header word itself.
fn child_bad_record(name: &str) -> i32 {
    let mut conn = ShmConnection::connect_with(name, &small_rings()).unwrap();
    // Ring 0's data area starts at offset 4096 (docs/shm.md); its first record header is there.
    let at = netron_shm::layout::DATA_START;
    word(&conn, at).store(
        u64::from_le_bytes(*b"\x00\x00\x01\x00DATA"), // 64 KiB: more than the 64 KiB ring can hold
        Ordering::Release,
    );
    ring_parent(&mut conn);
    wait_until_dropped(conn)
}

/// Moves the head of the ring we consume (server -> client) past anything published.
fn child_head_jump(name: &str) -> i32 {
    let conn = ShmConnection::connect_with(name, &small_rings()).unwrap();
    // Ring 1's control block follows the header and ring 0's control block (docs/shm.md).
    use netron_shm::layout::{CTRL_LEN, HEAD_OFFSET, HEADER_LEN};
    word(&conn, HEADER_LEN + CTRL_LEN + HEAD_OFFSET).store(1 << 40, Ordering::Relaxed);
    wait_until_dropped(conn)
}

/// Rings the doorbell the parent's consumer sleeps on, so it looks at the ring now.
fn ring_parent(conn: &mut ShmConnection) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&conn.producer().doorbell_fd().unwrap());
    let one = 1u64.to_ne_bytes();
    // SAFETY: `fd` is an open eventfd of ours and `one` is 8 readable bytes.
    let _ = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
}

/// The child stays until the parent closes the connection (it must, after the corruption),
/// and reports 0 if it saw that as `PeerGone`.
fn wait_until_dropped(mut conn: ShmConnection) -> i32 {
    match conn.consumer().wait(deadline(Duration::from_secs(30))) {
        Err(Error::PeerGone) => 0,
        Err(Error::Corrupt { .. }) | Err(Error::Closed) => 0,
        other => {
            eprintln!("child: unexpected {other:?}");
            7
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parent-side tests.

#[test]
fn bulk_transfer_between_processes_with_checksums() {
    as_child();
    let name = unique_name("bulk");
    let listener = ShmListener::bind_with(&name, small_rings()).unwrap();
    let mut child = ChildGuard::spawn("bulk", &name);
    let mut conn = accept(&listener);
    let end = deadline(Duration::from_secs(60));
    let mut sizes = BULK_SEED;
    let mut sum = 0xCBF2_9CE4_8422_2325u64;
    let mut expect = vec![0u8; 4096];
    let mut seq = 0u64;
    let theirs = 'outer: loop {
        let c = conn.consumer();
        c.wait(end).expect("records keep coming");
        let mut trailer = None;
        while let Some(r) = c.read().unwrap() {
            if seq == BULK_RECORDS {
                match trailer {
                    None => {
                        assert_eq!(r, u64::MAX.to_le_bytes(), "end marker");
                        trailer = Some(0);
                    }
                    Some(_) => break 'outer u64::from_le_bytes(r.try_into().unwrap()),
                }
                continue;
            }
            let len = 8 + (next(&mut sizes) % 3000) as usize;
            assert_eq!(r.len(), len, "record {seq} length");
            assert_eq!(r[..8], seq.to_le_bytes(), "record order");
            fill(seq, &mut expect[..len - 8]);
            assert!(r[8..] == expect[..len - 8], "record {seq} content");
            fnv(&mut sum, r);
            seq += 1;
        }
        c.release();
    };
    assert_eq!(theirs, sum, "checksums differ");
    conn.producer().send(&sum.to_le_bytes()).unwrap();
    conn.producer().publish().unwrap();
    assert!(
        child.wait_exit(NOTICE).success(),
        "child saw a different checksum"
    );
}

#[test]
fn kill_9_wakes_a_sleeping_consumer_with_peer_gone() {
    as_child();
    let name = unique_name("kill_sleeper");
    let listener = ShmListener::bind_with(&name, small_rings()).unwrap();
    let mut child = ChildGuard::spawn("idle", &name);
    let mut conn = accept(&listener);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        child.kill9();
        child
    });
    let t = Instant::now();
    let r = conn.consumer().wait(deadline(NOTICE));
    assert!(matches!(r, Err(Error::PeerGone)), "got {r:?}");
    assert!(t.elapsed() < NOTICE);
    // Every later wait fails at once too.
    assert!(matches!(conn.consumer().wait(None), Err(Error::PeerGone)));
    assert!(matches!(conn.producer().reserve(8), Err(Error::PeerGone)));
    drop(killer.join().unwrap());
}

#[test]
fn kill_9_mid_transfer_makes_the_consumer_return_peer_gone() {
    as_child();
    let name = unique_name("kill_flood");
    let listener = ShmListener::bind_with(&name, small_rings()).unwrap();
    let mut child = ChildGuard::spawn("flood", &name);
    let mut conn = accept(&listener);
    let mut got = 0u64;
    let end = Instant::now() + NOTICE;
    while got < 1000 {
        let c = conn.consumer();
        c.wait(Some(end)).expect("flood records");
        while c.read().unwrap().is_some() {
            got += 1;
        }
        c.release();
    }
    child.kill9();
    let killed = Instant::now();
    let outcome = loop {
        let c = conn.consumer();
        match c.wait(Some(killed + NOTICE)) {
            Ok(()) => {
                while c.read().unwrap().is_some() {}
                c.release();
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(outcome, Error::PeerGone), "got {outcome:?}");
    assert!(killed.elapsed() < NOTICE);
}

#[test]
fn kill_9_while_producer_waits_for_room_returns_peer_gone() {
    as_child();
    let name = unique_name("kill_full");
    let listener = ShmListener::bind_with(&name, small_rings()).unwrap();
    let mut child = ChildGuard::spawn("idle", &name);
    let mut conn = accept(&listener);
    let p = conn.producer();
    // The idle child never reads: fill the ring.
    loop {
        match p.send(&[1; 1000]) {
            Ok(()) => {}
            Err(Error::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        child.kill9();
        child
    });
    let t = Instant::now();
    let r = p.reserve_wait(1000, deadline(NOTICE)).map(|_| ());
    assert!(matches!(r, Err(Error::PeerGone)), "got {r:?}");
    assert!(t.elapsed() < NOTICE);
    drop(killer.join().unwrap());
}

/// Runs a scribbling child and checks the parent gets `Corrupt` (or `Closed` after it), never
/// a crash, a hang or garbage data, and that the child then sees the connection closed.
fn scribbler(role: &str, parent_produces: bool) {
    let name = unique_name(role);
    let listener = ShmListener::bind_with(&name, small_rings()).unwrap();
    let mut child = ChildGuard::spawn(role, &name);
    let mut conn = accept(&listener);
    let end = Instant::now() + NOTICE;
    let err = if parent_produces {
        loop {
            assert!(Instant::now() < end, "no error in time");
            match conn.producer().send(&[9; 1000]) {
                Ok(()) | Err(Error::Full) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => break e,
            }
        }
    } else {
        loop {
            let c = conn.consumer();
            if let Err(e) = c.wait(Some(end)) {
                break e;
            }
            if let Err(e) = drain_honest(c) {
                break e;
            }
            c.release();
        }
    };
    assert!(
        matches!(err, Error::Corrupt { .. } | Error::Closed),
        "{role}: expected Corrupt, got {err:?}"
    );
    // The connection is closed for good, and the child saw it go.
    assert!(matches!(conn.consumer().read(), Err(Error::Closed)));
    assert!(matches!(conn.producer().reserve(1), Err(Error::Closed)));
    assert!(
        child.wait_exit(NOTICE).success(),
        "{role}: child did not see the close"
    );
}

/// Reads what is published; only the child's honest first record may come through.
fn drain_honest(c: &netron_shm::Consumer) -> Result<(), Error> {
    while let Some(r) = c.read()? {
        assert_eq!(r, b"valid first");
    }
    Ok(())
}

#[test]
fn peer_scribbling_garbage_over_the_segment_is_an_error() {
    as_child();
    scribbler("garbage", false);
}

#[test]
fn peer_publishing_a_lying_record_header_is_an_error() {
    as_child();
    scribbler("bad_record", false);
}

#[test]
fn peer_moving_its_head_past_the_tail_is_an_error() {
    as_child();
    scribbler("head_jump", true);
}
