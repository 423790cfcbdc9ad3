//! Ring unit tests over heap rings: behaviour, corruption handling, and a proptest model.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::record::{TAG_DATA, encode};
use super::*;
use crate::error::Error;

fn pair(cap: usize) -> (Producer, Consumer) {
    channel(cap, Duration::ZERO).unwrap()
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

#[test]
fn records_arrive_in_order_and_in_one_piece() {
    let (mut p, mut c) = pair(256);
    for round in 0..50u64 {
        for k in 0..3 {
            let len = ((round * 7 + k * 13) % 60) as usize;
            p.send(&payload(round * 3 + k, len)).unwrap();
        }
        assert_eq!(c.read().unwrap(), None, "visible before publish");
        p.publish().unwrap();
        for k in 0..3 {
            let len = ((round * 7 + k * 13) % 60) as usize;
            assert_eq!(c.read().unwrap().unwrap(), &payload(round * 3 + k, len)[..]);
        }
        assert_eq!(c.read().unwrap(), None);
        c.release();
    }
}

#[test]
fn full_ring_and_too_large() {
    let (mut p, mut c) = pair(128);
    assert!(matches!(
        p.reserve(113),
        Err(Error::TooLarge { len: 113, max: 112 })
    ));
    p.send(&[1; 112]).unwrap(); // the whole ring but the 8-byte zero word after it
    assert!(matches!(p.reserve(0), Err(Error::Full)));
    // `Full` published what was pending.
    assert_eq!(c.read().unwrap().unwrap().len(), 112);
    assert!(matches!(p.reserve(0), Err(Error::Full)), "not released yet");
    c.release();
    p.send(&[2; 10]).unwrap();
    p.publish().unwrap();
    assert_eq!(c.read().unwrap().unwrap(), &[2; 10]);
}

#[test]
fn wrap_writes_padding_and_reader_gets_contiguous_records() {
    let (mut p, mut c) = pair(128);
    p.send(&[1; 72]).unwrap(); // 80 bytes
    p.publish().unwrap();
    assert_eq!(c.read().unwrap().unwrap().len(), 72);
    c.release();
    // 48 bytes left before the end; a 56-byte record must wrap behind a 48-byte pad.
    p.send(&[2; 48]).unwrap();
    p.publish().unwrap();
    assert_eq!(c.read().unwrap().unwrap(), &[2; 48]);
    c.release();
    assert_eq!(
        p.mem().ctrl().head.0.load(crate::sync::Ordering::Relaxed),
        128 + 56
    );
}

#[test]
fn full_record_behind_padding_makes_progress() {
    let (mut p, mut c) = pair(128);
    p.send(&[1; 8]).unwrap();
    p.publish().unwrap();
    assert!(c.read().unwrap().is_some());
    c.release();
    // Ring empty at offset 16: a whole-ring record needs the pad consumed first.
    assert!(matches!(p.reserve(112), Err(Error::Full)));
    assert_eq!(c.read().unwrap(), None, "the pad is skipped and released");
    p.send(&[3; 112]).unwrap();
    p.publish().unwrap();
    assert_eq!(c.read().unwrap().unwrap(), &[3; 112]);
}

#[test]
fn lent_space_is_committed_with_its_final_length() {
    let (mut p, mut c) = pair(256);
    p.send(&[7; 100]).unwrap();
    let space = p.lend(16).unwrap();
    // 256 - 112 used by the first record - 8 skipped (so the payload starts at offset 128, on
    // a cache line) - 8 for the lent record's header - 8 of slack.
    assert_eq!(space.len(), 120);
    assert_eq!(space.as_ptr().as_ptr() as usize % 64, 0);
    assert!(matches!(p.reserve(1), Err(Error::Lent)));
    assert!(matches!(p.lend(1), Err(Error::Lent)));
    // SAFETY: five bytes of the lent space, which nobody else writes until the commit.
    unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), space.as_ptr().as_ptr(), 5) };
    p.publish().unwrap();
    assert_eq!(
        c.read().unwrap().unwrap(),
        &[7; 100],
        "published before the lend"
    );
    assert_eq!(c.read().unwrap(), None, "the lent record is not visible");
    assert!(matches!(
        p.commit_lent(121),
        Err(Error::TooLarge { len: 121, max: 120 })
    ));
    p.commit_lent(5).unwrap();
    assert!(
        matches!(p.commit_lent(5), Err(Error::NotLent)),
        "nothing lent any more"
    );
    p.publish().unwrap();
    assert_eq!(c.read().unwrap().unwrap(), b"hello");
    c.release();
    // Fewer than `min` bytes before the end: the lend wraps to the start, as a reserve does.
    let space = p.lend(120).unwrap();
    assert!(space.len() >= 120);
    p.cancel_lent();
    p.send(b"after").unwrap();
    p.publish().unwrap();
    assert_eq!(
        c.read().unwrap().unwrap(),
        b"after",
        "a cancelled lend commits nothing"
    );
}

#[test]
fn a_lend_goes_on_record_after_record() {
    let (mut p, c) = pair(256);
    let space = p.lend(8).unwrap();
    // 56 bytes skipped, so the payload starts on a cache line; then the record's header, and
    // 8 bytes of slack.
    let total = space.len();
    assert_eq!(total, 256 - 56 - 8 - 8);
    let base = space.as_ptr().as_ptr();
    assert_eq!(base as usize % 64, 0);
    let mut at = 0;
    for (i, word) in [&b"one"[..], b"second record"].iter().enumerate() {
        // SAFETY: inside the lent space (checked against what `commit_lent_part` left),
        // written by nobody else until committed.
        let dst = base.wrapping_add(at);
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(word.as_ptr(), dst, word.len()) };
        let left = p.commit_lent_part(word.len()).unwrap();
        at += lent_span(word.len());
        assert_eq!(
            base.wrapping_add(at) as usize % 64,
            0,
            "record {i}: on a line"
        );
        assert_eq!(left, Some(total - at), "record {i}");
    }
    assert!(p.is_lent());
    assert!(matches!(p.reserve(1), Err(Error::Lent)));
    // The rest: exactly what is left, after which no room for another header remains.
    let rest = total - at;
    assert_eq!(p.commit_lent_part(rest).unwrap(), None);
    assert!(!p.is_lent());
    p.publish().unwrap();
    for want in [&b"one"[..], b"second record"] {
        assert_eq!(c.read().unwrap().unwrap(), want);
    }
    assert_eq!(c.read().unwrap().unwrap().len(), rest);
    assert_eq!(c.read().unwrap(), None);
}

#[test]
fn abandoned_reservation_publishes_nothing() {
    let (mut p, c) = pair(128);
    {
        let mut r = p.reserve(10).unwrap();
        r.fill(9);
    }
    p.publish().unwrap();
    assert_eq!(c.read().unwrap(), None);
    let mut r = p.reserve(40).unwrap();
    r[..3].copy_from_slice(b"abc");
    r.commit_len(3);
    p.publish().unwrap();
    assert_eq!(c.read().unwrap().unwrap(), b"abc");
}

#[test]
fn records_iterator_and_bulk_release() {
    let (mut p, mut c) = pair(1024);
    for i in 0..10u8 {
        p.send(&[i; 5]).unwrap();
    }
    p.publish().unwrap();
    let all: Vec<&[u8]> = c.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[9], &[9; 5]);
    c.release();
    assert_eq!(
        p.mem().ctrl().head.0.load(crate::sync::Ordering::Relaxed),
        160
    );
}

#[test]
fn record_past_the_released_space_is_detected_and_closes() {
    // The consumer holds a 56-byte record at 0 (unreleased) and polls 56: an honest producer
    // can have written at most 128 - 56 - 8 = 64 bytes there, so a 72-byte record is a lie
    // even though it would fit before the end of the ring.
    let (mut p, c) = pair(128);
    p.send(&[1; 48]).unwrap();
    p.publish().unwrap();
    assert!(c.read().unwrap().is_some());
    p.mem().store_header(56, encode(TAG_DATA, 64));
    assert!(matches!(c.read(), Err(Error::Corrupt { .. })));
    assert!(matches!(c.read(), Err(Error::Closed)));
    // The same record is fine once the space is released (control: the bound is exact).
    let (mut p, mut c) = pair(128);
    p.send(&[1; 48]).unwrap();
    p.publish().unwrap();
    assert!(c.read().unwrap().is_some());
    c.release();
    p.mem().store_header(56, encode(TAG_DATA, 64));
    assert_eq!(c.read().unwrap().map(<[u8]>::len), Some(64));
}

#[test]
fn nothing_is_read_before_the_first_header_is_published() {
    // Records after the first of a batch are in place before `publish`; the consumer must
    // not see any of them (it stops at the first, still zero, header).
    let (mut p, c) = pair(256);
    p.send(&[1; 8]).unwrap();
    p.send(&[2; 8]).unwrap();
    assert_eq!(p.mem().load_header(0), 0);
    assert_ne!(p.mem().load_header(16), 0);
    assert_eq!(c.read().unwrap(), None);
    p.publish().unwrap();
    assert_eq!(c.read().unwrap(), Some(&[1; 8][..]));
    assert_eq!(c.read().unwrap(), Some(&[2; 8][..]));
    assert_eq!(c.read().unwrap(), None);
}

#[test]
fn corrupt_record_headers_are_detected() {
    let words = [
        u64::MAX,
        encode(TAG_DATA, 200),
        encode(TAG_DATA, 113), // 128 bytes: leaves no room for the closing zero word
        encode(super::record::TAG_PAD, 0),
        1,
    ];
    for w in words {
        let (mut p, c) = pair(128);
        p.send(&[0; 8]).unwrap();
        p.publish().unwrap();
        p.mem().store_header(0, w);
        assert!(
            matches!(c.read(), Err(Error::Corrupt { .. })),
            "header {w:#x}"
        );
    }
}

#[test]
fn corrupt_head_is_detected_by_the_producer() {
    for bad in [u64::MAX, 8, 3] {
        let (mut p, c) = pair(128);
        c.mem()
            .ctrl()
            .head
            .0
            .store(bad, crate::sync::Ordering::Relaxed);
        p.send(&[0; 100]).unwrap();
        assert!(
            matches!(p.reserve(100), Err(Error::Corrupt { .. })),
            "head {bad}"
        );
        assert!(matches!(p.reserve(1), Err(Error::Closed)));
    }
}

#[test]
fn wait_times_out_and_sees_a_dropped_producer() {
    let (p, c) = channel(128, Duration::from_micros(50)).unwrap();
    let t = Instant::now();
    assert!(matches!(
        c.wait(Some(Instant::now() + Duration::from_millis(20))),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(20));
    drop(p);
    assert!(matches!(c.wait(None), Err(Error::PeerGone)));
}

#[test]
fn threads_exchange_records_with_sleeping_consumer() {
    let (mut p, mut c) = channel(256, Duration::ZERO).unwrap();
    const N: u64 = if cfg!(miri) { 200 } else { 20_000 };
    let t = std::thread::spawn(move || {
        for i in 0..N {
            let len = (i % 50) as usize;
            p.send_wait(
                &payload(i, len),
                Some(Instant::now() + Duration::from_secs(20)),
            )
            .unwrap();
            if i % 7 == 0 {
                p.publish().unwrap();
            }
        }
        p.publish().unwrap();
    });
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while i < N {
        c.wait(Some(deadline)).unwrap();
        while let Some(r) = c.read().unwrap() {
            assert_eq!(r, &payload(i, (i % 50) as usize)[..]);
            i += 1;
        }
        c.release();
    }
    t.join().unwrap();
    assert!(matches!(c.wait(None), Err(Error::PeerGone)));
}

#[derive(Debug, Clone)]
enum Op {
    Send {
        len: usize,
        keep: Option<usize>,
    },
    Abandon {
        len: usize,
    },
    /// `lend(min)`, write `len` bytes (at most what was lent), then commit or cancel.
    Lend {
        min: usize,
        len: usize,
        cancel: bool,
    },
    Publish,
    Read {
        n: usize,
    },
    Release,
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..=max, proptest::option::of(0..=max)).prop_map(|(len, keep)| Op::Send {
            len,
            keep: keep.map(|k| k.min(len)),
        }),
        1 => (0..=max).prop_map(|len| Op::Abandon { len }),
        3 => (0..=max, 0..=2 * max, proptest::bool::weighted(0.2))
            .prop_map(|(min, len, cancel)| Op::Lend { min, len, cancel }),
        3 => Just(Op::Publish),
        3 => (0usize..6).prop_map(|n| Op::Read { n }),
        2 => Just(Op::Release),
    ]
}

proptest! {
    // Under miri: a few cases, and no failure file (miri's isolation has no `getcwd`).
    #![proptest_config(if cfg!(miri) {
        ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::default()
    })]

    /// Random reserves, commits, abandons, publishes, reads and releases against a `VecDeque`
    /// model: every record comes out once, in order, byte for byte; reads see exactly what was
    /// published; `Full` only when the ring is plausibly full; a drained ring always makes room.
    #[test]
    fn ring_matches_vecdeque_model(
        cap_log in 6u32..10,
        ops in proptest::collection::vec(op(1100), 1..200),
    ) {
        let cap = 1usize << cap_log;
        let max = cap - 16;
        let (mut p, mut c) = pair(cap);
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut unread: VecDeque<Vec<u8>> = VecDeque::new();
        let mut lent_bytes = 0usize;
        // Lends since the ring was last drained: each may have left a skip record of up to
        // 56 bytes (lent payloads start on a cache line), which the model does not see.
        let mut skips = 0usize;
        let mut seq = 0u64;
        let mut biggest = 0usize;
        for op in ops {
            match op {
                Op::Send { len, .. } | Op::Abandon { len } if len > max => {
                    let too_large = matches!(p.reserve(len), Err(Error::TooLarge { .. }));
                    prop_assert!(too_large);
                }
                Op::Send { len, keep } => {
                    let used: usize = pending.iter().chain(unread.iter())
                        .map(|r| record_footprint(r.len())).sum::<usize>() + lent_bytes;
                    let size = record_footprint(len);
                    biggest = biggest.max(size);
                    match p.reserve(len) {
                        Ok(mut r) => {
                            let data = payload(seq, len);
                            r.copy_from_slice(&data);
                            let keep = keep.unwrap_or(len);
                            r.commit_len(keep);
                            pending.push(data[..keep].to_vec());
                            seq += 1;
                        }
                        Err(Error::Full) => {
                            // Full flushes what was pending.
                            unread.extend(pending.drain(..));
                            // Room needed: the record, the 8-byte closing zero word, at most
                            // one wrap pad (< size) and at most one unreleased pad (< the
                            // biggest reservation tried).
                            prop_assert!(used + 2 * size + biggest + 8 + 56 * skips > cap,
                                "Full with {used} of {cap} bytes used for {size}");
                            // Draining everything must make room within one more try.
                            let mut tries = 0;
                            loop {
                                while let Some(r) = c.read().unwrap() {
                                    prop_assert_eq!(Some(r.to_vec()), unread.pop_front());
                                }
                                prop_assert!(unread.is_empty());
                                c.release();
                                lent_bytes = 0;
                                if pending.is_empty() {
                                    skips = 0;
                                }
                                match p.reserve(len) {
                                    Ok(_) => break,
                                    Err(Error::Full) if tries == 0 => {
                                        tries += 1;
                                        unread.extend(pending.drain(..));
                                    }
                                    Err(e) => prop_assert!(false, "drained ring refused {len}: {e}"),
                                }
                            }
                        }
                        Err(e) => prop_assert!(false, "unexpected error {e}"),
                    }
                }
                Op::Abandon { len } => {
                    biggest = biggest.max(record_footprint(len));
                    if let Ok(mut r) = p.reserve(len) {
                        r.fill(0xEE);
                    } else {
                        unread.extend(pending.drain(..));
                    }
                }
                Op::Lend { min, .. } if min > max => {
                    let too_large = matches!(p.lend(min), Err(Error::TooLarge { .. }));
                    prop_assert!(too_large);
                }
                Op::Lend { min, len, cancel } => {
                    biggest = biggest.max(record_footprint(min));
                    match p.lend(min) {
                        Ok(space) => {
                            skips += 1;
                            prop_assert!(space.len() >= min && space.len() <= max);
                            let lent_again = matches!(p.reserve(0), Err(Error::Lent));
                            prop_assert!(lent_again);
                            let n = len.min(space.len());
                            let data = payload(seq, n);
                            // SAFETY: `lend` lent `space.len() >= n` bytes at `as_ptr`, written
                            // by nobody else until the commit or cancel below.
                            unsafe {
                                std::ptr::copy_nonoverlapping(data.as_ptr(), space.as_ptr().as_ptr(), n);
                            }
                            if cancel {
                                p.cancel_lent();
                            } else {
                                let refused = matches!(
                                    p.commit_lent(space.len() + 1),
                                    Err(Error::TooLarge { .. })
                                );
                                prop_assert!(refused);
                                p.commit_lent(n).unwrap();
                                pending.push(data);
                                seq += 1;
                            }
                            prop_assert!(!p.is_lent());
                        }
                        Err(Error::Full) => unread.extend(pending.drain(..)),
                        Err(e) => prop_assert!(false, "unexpected error {e}"),
                    }
                }
                Op::Publish => {
                    p.publish().unwrap();
                    unread.extend(pending.drain(..));
                }
                Op::Read { n } => {
                    for _ in 0..n {
                        let got = c.read().unwrap().map(<[u8]>::to_vec);
                        let want = unread.pop_front();
                        if let Some(w) = &want {
                            lent_bytes += record_footprint(w.len());
                        }
                        prop_assert_eq!(got, want);
                    }
                }
                Op::Release => {
                    c.release();
                    lent_bytes = 0;
                    if unread.is_empty() && pending.is_empty() {
                        skips = 0;
                    }
                }
            }
        }
        p.publish().unwrap();
        unread.extend(pending.drain(..));
        while let Some(r) = c.read().unwrap() {
            prop_assert_eq!(Some(r.to_vec()), unread.pop_front());
        }
        prop_assert!(unread.is_empty());
    }
}

/// `true` if `fd` is readable within `ms` milliseconds.
fn readable(fd: std::os::fd::BorrowedFd<'_>, ms: i32) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    };
    rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 1
}

fn drain(fd: std::os::fd::BorrowedFd<'_>) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

#[test]
#[cfg_attr(miri, ignore = "poll(2) on the eventfd is not supported by miri")]
fn doorbell_channel_wakes_an_event_loop_once_per_announcement() {
    let (mut p, mut c) = channel_with_doorbell(256, Duration::ZERO).unwrap();
    use std::os::fd::AsFd;
    let bell = c
        .doorbell_fd()
        .expect("an eventfd doorbell")
        .try_clone_to_owned()
        .unwrap();
    // Nobody sleeps: publishing does not touch the eventfd.
    p.send(b"one").unwrap();
    p.publish().unwrap();
    assert!(!readable(bell.as_fd(), 0), "rang without a sleeper");
    assert_eq!(c.read().unwrap(), Some(&b"one"[..]));
    c.release();
    // The loop announces sleep and waits on the fd: the next publish rings once.
    assert!(c.announce_sleep().unwrap());
    p.send(b"two").unwrap();
    p.publish().unwrap();
    p.send(b"three").unwrap();
    p.publish().unwrap();
    assert!(
        readable(bell.as_fd(), 1000),
        "publish after an announcement rings"
    );
    let mut n = [0u8; 8];
    rustix::io::read(&bell, &mut n).unwrap();
    assert_eq!(u64::from_ne_bytes(n), 1, "one ring per announcement");
    c.cancel_sleep();
    assert_eq!(c.read().unwrap(), Some(&b"two"[..]));
    assert_eq!(c.read().unwrap(), Some(&b"three"[..]));
    c.release();
    // A record that arrives between the last read and the announcement is seen by the
    // announcement's re-check: nothing to sleep on.
    p.send(b"four").unwrap();
    p.publish().unwrap();
    assert!(!c.announce_sleep().unwrap());
    assert_eq!(c.read().unwrap(), Some(&b"four"[..]));
    c.release();
}

#[test]
#[cfg_attr(miri, ignore = "poll(2) on the eventfd is not supported by miri")]
fn doorbell_channel_reports_a_dropped_producer_after_its_last_records() {
    use std::os::fd::AsFd;
    let (mut p, c) = channel_with_doorbell(256, Duration::ZERO).unwrap();
    let bell = c.doorbell_fd().unwrap().try_clone_to_owned().unwrap();
    assert!(c.announce_sleep().unwrap());
    p.send(b"last").unwrap(); // committed, never published by hand
    drop(p);
    assert!(readable(bell.as_fd(), 1000), "the dropped producer rang");
    drain(bell.as_fd());
    c.cancel_sleep();
    assert_eq!(c.read().unwrap(), Some(&b"last"[..]));
    assert!(matches!(c.read(), Ok(None) | Err(Error::PeerGone)));
    assert!(matches!(c.announce_sleep(), Err(Error::PeerGone)));
    // A thread blocked in `wait` wakes with PeerGone too (no liveness socket to poll).
    let (p2, c2) = channel_with_doorbell(256, Duration::ZERO).unwrap();
    let t = std::thread::spawn(move || c2.wait(Some(Instant::now() + Duration::from_secs(10))));
    std::thread::sleep(Duration::from_millis(20));
    drop(p2);
    assert!(matches!(t.join().unwrap(), Err(Error::PeerGone)));
}
