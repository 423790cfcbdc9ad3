//! A netron-shm ring driven by honest producer and consumer calls and by a peer that writes
//! anything into the shared words (`netron_shm::testing::TamperedChannel`).
//!
//! No panic, whatever the peer writes. While nobody tampers, every record comes out once, in
//! order, byte for byte, and `Full` only publishes. Once the peer has tampered, a record may
//! come out wrong (the peer owns those bytes), but never longer than `capacity - 16`; errors
//! are `Corrupt` (then `Closed` for every later call on either half), never anything else.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use netron_fuzz::{ShmOp, ShmRing};
use netron_shm::Error;
use netron_shm::testing::TamperedChannel;

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// What an honest run must see, and whether the run can still be checked against it.
struct Model {
    pending: Vec<Vec<u8>>,
    published: VecDeque<Vec<u8>>,
    tampered: bool,
    failed: bool,
}

impl Model {
    /// The producer refused a record of `len` bytes in a ring whose largest is `max`: `Full`
    /// (which published what was pending) or `TooLarge` (only past `max`) on a working ring;
    /// anything else is [`Model::error`].
    fn refused(&mut self, e: Error, len: usize, max: usize) {
        match e {
            Error::Full => {
                assert!(!self.failed, "Full on a failed ring");
                let pending = std::mem::take(&mut self.pending);
                self.published.extend(pending);
            }
            Error::TooLarge { len: l, max: x } => {
                assert!(!self.failed, "TooLarge on a failed ring");
                assert_eq!((l, x), (len, max));
                assert!(len > max);
            }
            e => self.error(e),
        }
    }

    /// A half reported an error: only `Corrupt` (first) and `Closed` (after) are allowed, and
    /// only after tampering.
    fn error(&mut self, e: Error) {
        assert!(self.tampered, "honest traffic failed: {e}");
        match e {
            Error::Corrupt { .. } => self.failed = true,
            Error::Closed => assert!(self.failed, "Closed before any Corrupt"),
            other => panic!("unexpected error {other}"),
        }
    }
}

fuzz_target!(|input: ShmRing| {
    let cap = input.capacity();
    let max = cap - 16;
    let mut t = TamperedChannel::new(cap).expect("valid capacity");
    let mut m = Model {
        pending: Vec::new(),
        published: VecDeque::new(),
        tampered: false,
        failed: false,
    };
    let mut seq = 0u64;
    for op in input.ops {
        match op {
            ShmOp::Send { len, publish } => {
                let len = len as usize % (cap + 64);
                let data = payload(seq, len);
                match t.producer().send(&data) {
                    Ok(()) => {
                        assert!(!m.failed, "send succeeded on a failed ring");
                        m.pending.push(data);
                        seq += 1;
                    }
                    Err(e) => m.refused(e, len, max),
                }
                if publish {
                    t.producer()
                        .publish()
                        .expect("publish on an in-process ring");
                    let pending = std::mem::take(&mut m.pending);
                    m.published.extend(pending);
                }
            }
            ShmOp::Lend {
                min,
                len,
                part,
                cancel,
            } => {
                let min = min as usize % (cap + 64);
                match t.producer().lend(min) {
                    Ok(space) => {
                        assert!(!m.failed, "lend succeeded on a failed ring");
                        assert!(space.len() >= min && space.len() <= max);
                        let n = len as usize % (space.len() + 1);
                        let data = payload(seq, n);
                        // SAFETY: `n <= space.len()` bytes of the lent space, which nobody in
                        // this process writes until the commit or cancel below (the fuzzer's
                        // tampering writes only between operations).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                data.as_ptr(),
                                space.as_ptr().as_ptr(),
                                n,
                            );
                        }
                        let p = t.producer();
                        if cancel {
                            p.cancel_lent();
                        } else {
                            let r = if part {
                                p.commit_lent_part(n).map(|_| p.cancel_lent())
                            } else {
                                p.commit_lent(n)
                            };
                            match r {
                                Ok(()) => {
                                    m.pending.push(data);
                                    seq += 1;
                                }
                                Err(e) => m.error(e),
                            }
                        }
                        assert!(!t.producer().is_lent());
                    }
                    Err(e) => m.refused(e, min, max),
                }
            }
            ShmOp::Publish => {
                t.producer()
                    .publish()
                    .expect("publish on an in-process ring");
                let pending = std::mem::take(&mut m.pending);
                m.published.extend(pending);
            }
            ShmOp::Read { n } => {
                for _ in 0..n % 8 {
                    match t.consumer().read().map(|r| r.map(<[u8]>::to_vec)) {
                        Ok(got) => {
                            assert!(!m.failed, "read succeeded on a failed ring");
                            if let Some(r) = &got {
                                assert!(r.len() <= max, "a record longer than the ring allows");
                            }
                            if !m.tampered {
                                assert_eq!(got, m.published.pop_front());
                            }
                            if got.is_none() {
                                break;
                            }
                        }
                        Err(e) => m.error(e),
                    }
                }
            }
            ShmOp::Release => t.consumer().release(),
            ShmOp::Ready => match t.consumer().ready() {
                Ok(ready) => {
                    assert!(!m.failed, "ready succeeded on a failed ring");
                    if !m.tampered {
                        assert_eq!(ready, !m.published.is_empty());
                    }
                }
                Err(e) => m.error(e),
            },
            ShmOp::Header { pos, tag, len } => {
                m.tampered = true;
                let len = len.value(cap);
                t.store_data_word(pos.into(), (u64::from(tag.value()) << 32) | u64::from(len));
            }
            ShmOp::NextHeader { tag, len } => {
                m.tampered = true;
                let len = len.value(cap);
                t.store_next_header((u64::from(tag.value()) << 32) | u64::from(len));
            }
            ShmOp::Word { pos, word } => {
                m.tampered = true;
                t.store_data_word(pos.into(), word);
            }
            ShmOp::Bytes { pos, bytes } => {
                m.tampered = true;
                t.write_data(pos.into(), &bytes[..bytes.len().min(512)]);
            }
            ShmOp::HeadBy { delta } => {
                m.tampered = true;
                let head = t.head();
                t.store_head(head.wrapping_add_signed(i64::from(delta) * 8));
            }
            ShmOp::Head { value } => {
                m.tampered = true;
                t.store_head(value);
            }
            ShmOp::Sleeping { value } => {
                m.tampered = true;
                t.store_sleeping(value);
            }
        }
    }
    if !m.tampered {
        // Everything committed comes out, in order.
        t.producer()
            .publish()
            .expect("publish on an in-process ring");
        let pending = std::mem::take(&mut m.pending);
        m.published.extend(pending);
        while let Some(r) = t
            .consumer()
            .read()
            .expect("honest ring")
            .map(<[u8]>::to_vec)
        {
            assert_eq!(Some(r), m.published.pop_front());
        }
        assert!(m.published.is_empty(), "published records never came out");
    }
});
