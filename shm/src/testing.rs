//! A ring with a third handle that writes what a corrupt or malicious peer could, for tests and
//! fuzz targets of code that must survive one (`fuzz/fuzz_targets/shm_ring.rs` uses it).
//!
//! [`TamperedChannel`] holds an in-process ring's [`Producer`] and [`Consumer`] and, beside
//! them, raw access to the ring's shared words: any word or byte of the data area (what a peer
//! producer writes: headers, payloads, padding) and the consumer's control words (`head`,
//! `sleeping`: what a peer consumer writes). The real halves validate all of it exactly as they
//! do over a shared segment.
//!
//! Tampering takes `&mut self`, and the halves are reached through `&mut self` too, so no lent
//! payload slice or open reservation can be alive while the raw handle writes: everything here
//! is safe code with no aliasing to break. (Between processes the peer can write at any time;
//! docs/shm.md, "What is validated", says what that can and cannot do.)

use std::time::Duration;

use crate::error::Result;
use crate::ring::mem::RingMem;
use crate::ring::{Consumer, Producer, heap_channel};
use crate::sync::Ordering;

/// An in-process ring plus raw write access to everything its peer could write.
pub struct TamperedChannel {
    raw: RingMem,
    producer: Producer,
    consumer: Consumer,
}

impl std::fmt::Debug for TamperedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TamperedChannel")
            .field("producer", &self.producer)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl TamperedChannel {
    /// A ring of `capacity` bytes (a power of two, 64 B to 1 GiB) whose halves never spin.
    pub fn new(capacity: usize) -> Result<Self> {
        let (raw, producer, consumer) = heap_channel(capacity, Duration::ZERO)?;
        Ok(Self {
            raw,
            producer,
            consumer,
        })
    }

    /// Capacity of the data area in bytes.
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// The producing half.
    pub fn producer(&mut self) -> &mut Producer {
        &mut self.producer
    }

    /// The consuming half.
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// Stores `word` at byte `pos` of the data area (rounded down to a multiple of 8 and
    /// wrapped into the ring) with release ordering: a peer producer publishing a header,
    /// honest or not.
    pub fn store_data_word(&mut self, pos: usize, word: u64) {
        let pos = (pos & (self.capacity() - 1)) & !7;
        self.raw.publish_header(pos, word);
    }

    /// Stores `word` where the consumer polls next (its read position), with release
    /// ordering: a peer producer publishing the next record's header, honest or not.
    pub fn store_next_header(&mut self, word: u64) {
        let pos = self.consumer.read_position() as usize;
        self.store_data_word(pos, word);
    }

    /// Copies `bytes` into the data area from byte `pos` on (wrapped into the ring), going
    /// around the end of the ring as often as needed.
    pub fn write_data(&mut self, pos: usize, bytes: &[u8]) {
        let cap = self.capacity();
        let mut pos = pos & (cap - 1);
        for chunk in bytes.chunks(cap) {
            let first = chunk.len().min(cap - pos);
            self.raw
                .bytes_mut(pos, first)
                .copy_from_slice(&chunk[..first]);
            let rest = &chunk[first..];
            self.raw.bytes_mut(0, rest.len()).copy_from_slice(rest);
            pos = (pos + chunk.len()) & (cap - 1);
        }
    }

    /// The ring's `head` index as it is now (the consumer's last release, or a forged value).
    pub fn head(&self) -> u64 {
        self.raw.ctrl().head.0.load(Ordering::Acquire)
    }

    /// Stores `value` to the ring's `head` index: a peer consumer releasing space, honest or
    /// not.
    pub fn store_head(&mut self, value: u64) {
        self.raw.ctrl().head.0.store(value, Ordering::Release);
    }

    /// Stores `value` to the consumer's sleep word (odd: "asleep, ring the doorbell").
    pub fn store_sleeping(&mut self, value: u64) {
        self.raw.ctrl().sleeping.0.store(value, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn honest_traffic_passes_untouched() {
        let mut t = TamperedChannel::new(256).unwrap();
        for i in 0..40u8 {
            t.producer().send(&[i; 20]).unwrap();
            t.producer().publish().unwrap();
            assert_eq!(t.consumer().read().unwrap(), Some(&[i; 20][..]));
            t.consumer().release();
        }
    }

    #[test]
    fn a_forged_header_closes_both_halves() {
        let mut t = TamperedChannel::new(256).unwrap();
        t.producer().send(b"fine").unwrap();
        t.producer().publish().unwrap();
        assert_eq!(t.consumer().read().unwrap(), Some(&b"fine"[..]));
        // The next header claims a record longer than the ring.
        t.store_next_header((u64::from(u32::from_le_bytes(*b"DATA")) << 32) | 4096);
        assert!(matches!(t.consumer().read(), Err(Error::Corrupt { .. })));
        assert!(matches!(t.consumer().read(), Err(Error::Closed)));
        assert!(matches!(t.producer().reserve(1), Err(Error::Closed)));
    }

    #[test]
    fn writes_wrap_around_the_ring() {
        let mut t = TamperedChannel::new(64).unwrap();
        t.write_data(60, &[0xAB; 8]);
        // Bytes 60..64 and 0..4: a forged header at 0 with an unknown tag.
        assert!(matches!(t.consumer().read(), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn a_head_past_what_was_published_is_caught_by_the_producer() {
        let mut t = TamperedChannel::new(64).unwrap();
        t.producer().send(&[1; 40]).unwrap(); // 48 of 64 bytes: the next reserve must look at head
        t.producer().publish().unwrap();
        t.store_head(4096);
        assert!(matches!(
            t.producer().reserve(16),
            Err(Error::Corrupt { .. })
        ));
    }
}
