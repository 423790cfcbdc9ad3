//! The floors of the shm section, measured between the same two processes as netron-shm
//! (this process on cpu0, a re-executed child on cpu1) or, for memcpy, on one core:
//!
//! - spin floor: two words ping-ponged through a shared memfd (the cheapest round trip);
//! - records floor: 64-byte records at advancing offsets, no ring bookkeeping (what moving a
//!   record to fresh cache lines costs);
//! - memcpy floor: one thread copying records into a 1 MiB buffer.

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{BenchResult, COUNT, FD, PATIENCE, env_u64, spawn};
use crate::stats::Samples;

// ---------------------------------------------------------------------------------------
// The spin floor: two cache lines in a memfd shared with the child.

/// Two 128-byte-separated words in a shared mapping.
struct PingPong {
    base: *mut u8,
    len: usize,
}

impl PingPong {
    const LEN: usize = 4096;

    fn map(fd: &OwnedFd) -> BenchResult<Self> {
        Self::map_len(fd, Self::LEN)
    }

    fn map_len(fd: &OwnedFd, len: usize) -> BenchResult<Self> {
        // SAFETY: mapping a fresh region (null hint) of an fd we own, shared and read/write;
        // the kernel checks the fd and the length. We touch no memory here.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                // Populated: no page faults inside the timed loops (netron-shm maps its
                // segments the same way).
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Self {
            base: p.cast(),
            len,
        })
    }

    /// The word at byte `off` (8-aligned, inside the mapping).
    fn word_at(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "word outside the mapping"
        );
        let p = self.base.wrapping_add(off).cast::<u64>();
        // SAFETY: in bounds and 8-aligned as just checked (the mapping is page-aligned); the
        // mapping lives as long as `self`; both processes only access it atomically.
        unsafe { AtomicU64::from_ptr(p) }
    }

    /// Word 0 (ping, written by the parent) or word 1 (pong, by the child).
    fn word(&self, i: usize) -> &AtomicU64 {
        self.word_at(i * 128)
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `map` created; no references into it outlive
        // `self` (word() borrows self).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

pub(super) fn child_floor() -> BenchResult<()> {
    let fd = env_u64(FD)? as i32;
    // SAFETY: the parent left this fd open for us (no CLOEXEC) and nothing else in this
    // process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let pp = PingPong::map(&fd)?;
    let (ping, pong) = (pp.word(0), pp.word(1));
    let mut last = 0;
    let mut idle_since = Instant::now();
    let mut spins = 0u32;
    loop {
        let v = ping.load(Ordering::Acquire);
        if v != last {
            if v == u64::MAX {
                return Ok(());
            }
            pong.store(v, Ordering::Release);
            last = v;
            spins = 0;
            continue;
        }
        std::hint::spin_loop();
        spins += 1;
        if spins == 1 << 20 {
            spins = 0;
            if idle_since.elapsed() > PATIENCE {
                return Err("parent went quiet".into());
            }
        } else if spins == 1 {
            idle_since = Instant::now();
        }
    }
}

pub(crate) fn spin_floor(n: usize, budget: Duration) -> BenchResult<(Samples, usize)> {
    // SAFETY: memfd_create with a NUL-terminated name and no CLOEXEC (the child inherits it).
    let raw = unsafe { libc::memfd_create(c"netron-bench-floor".as_ptr(), 0) };
    if raw < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own fd with a positive length.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), PingPong::LEN as libc::off_t) } != 0 {
        return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
    }
    let pp = PingPong::map(&fd)?;
    let _child = spawn("floor", &[(FD, raw.to_string())])?;
    let (ping, pong) = (pp.word(0), pp.word(1));
    let mut samples = Samples::with_capacity(n);
    let warmup = (n / 10).max(1000);
    let mut got = 0;
    let started = Instant::now();
    let give_up = started + PATIENCE;
    for i in 1..=(warmup + n) as u64 {
        if i % 1024 == 0 && started.elapsed() > budget {
            break;
        }
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        let mut spins = 0u32;
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins == 0 && Instant::now() > give_up {
                return Err("floor child stopped answering".into());
            }
        }
        if i > warmup as u64 {
            samples.push(t.elapsed().as_nanos() as u64);
            got += 1;
        }
    }
    ping.store(u64::MAX, Ordering::Release);
    Ok((samples, got))
}

// ---------------------------------------------------------------------------------------
// The records floor: what moving a 64-byte record to fresh memory costs with no ring at all.

/// Bytes of each direction's area in the records floor (as big as a default ring).
const RECORDS_AREA: usize = 1 << 20;
/// One record of the records floor: an 8-byte header word, then 64 payload bytes (as a
/// netron-shm record of 64 bytes).
const RECORD: usize = 8 + 64;

/// Writes record `seq` at byte `at` of the area starting at `area`: payload words first
/// (relaxed), then the header word (release), as a ring producer does.
fn put_record(m: &PingPong, area: usize, at: usize, seq: u64) {
    for w in 1..RECORD / 8 {
        m.word_at(area + at + 8 * w).store(seq, Ordering::Relaxed);
    }
    m.word_at(area + at).store(seq, Ordering::Release);
}

/// Spins until record `seq` is at byte `at`, then reads its payload; `false` if it never came.
fn get_record(m: &PingPong, area: usize, at: usize, seq: u64, give_up: Instant) -> bool {
    let mut spins = 0u32;
    while m.word_at(area + at).load(Ordering::Acquire) != seq {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins == 0 && Instant::now() > give_up {
            return false;
        }
    }
    let mut sum = 0u64;
    for w in 1..RECORD / 8 {
        sum = sum.wrapping_add(m.word_at(area + at + 8 * w).load(Ordering::Relaxed));
    }
    black_box(sum);
    true
}

/// The next record position: records are packed back to back (8-aligned, like ring records)
/// and start over at the beginning of the area.
fn next_at(at: usize) -> usize {
    let next = at + RECORD;
    if next + RECORD > RECORDS_AREA {
        0
    } else {
        next
    }
}

pub(super) fn child_records_floor() -> BenchResult<()> {
    let fd = env_u64(FD)? as i32;
    let n = env_u64(COUNT)?;
    // SAFETY: the parent left this fd open for us (no CLOEXEC) and nothing else in this
    // process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let m = PingPong::map_len(&fd, 2 * RECORDS_AREA)?;
    let mut at = 0;
    for seq in 1..=n {
        if !get_record(&m, 0, at, seq, Instant::now() + PATIENCE) {
            return Err("parent went quiet".into());
        }
        put_record(&m, RECORDS_AREA, at, seq);
        at = next_at(at);
    }
    Ok(())
}

/// Round trips of a 64-byte record written at advancing positions of two 1 MiB areas of a
/// shared memfd (header word last, release; the reader spins on the header): the data
/// movement of a ring round trip with none of its bookkeeping.
pub(super) fn records_floor(n: usize, budget: Duration) -> BenchResult<(Samples, usize)> {
    // SAFETY: memfd_create with a NUL-terminated name and no CLOEXEC (the child inherits it).
    let raw = unsafe { libc::memfd_create(c"netron-bench-records".as_ptr(), 0) };
    if raw < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own fd with a positive length.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), (2 * RECORDS_AREA) as libc::off_t) } != 0 {
        return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
    }
    let m = PingPong::map_len(&fd, 2 * RECORDS_AREA)?;
    let warmup = (n / 10).max(1000);
    let total = warmup + n;
    let _child = spawn(
        "records_floor",
        &[(FD, raw.to_string()), (COUNT, total.to_string())],
    )?;
    let mut samples = Samples::with_capacity(n);
    let (mut got, mut at) = (0, 0);
    let started = Instant::now();
    for seq in 1..=total as u64 {
        let t = Instant::now();
        put_record(&m, 0, at, seq);
        if !get_record(&m, RECORDS_AREA, at, seq, started + PATIENCE) {
            return Err("records floor child stopped answering".into());
        }
        if seq > warmup as u64 {
            samples.push(t.elapsed().as_nanos() as u64);
            got += 1;
        }
        at = next_at(at);
        if seq % 1024 == 0 && started.elapsed() > budget {
            // The child waits for records that never come; dropping `_child` kills it.
            break;
        }
    }
    Ok((samples, got))
}

/// Records per second for one thread copying `size`-byte records into a 1 MiB buffer.
pub(super) fn memcpy_floor(size: usize, n: u64) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; 1 << 20];
    let slots = dst.len() / size;
    let t = Instant::now();
    for i in 0..n as usize {
        let at = (i % slots) * size;
        dst[at..at + size].copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    n as f64 / t.elapsed().as_secs_f64()
}
