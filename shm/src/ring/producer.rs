//! The producing half of a ring: reserve space, write in place, commit, publish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mem::RingMem;
use super::record::{self, HEADER, TAG_DATA, TAG_PAD, TAG_SKIP};
use crate::doorbell::Bell;
use crate::error::{Error, Result};
use crate::liveness::Link;
use crate::sync::{Ordering, fence, spin_step};

/// The writing half of one ring.
///
/// Records are written in place: [`reserve`](Self::reserve) lends the space, the caller fills
/// it, [`Reservation::commit`] adds it to the pending batch, and [`publish`](Self::publish)
/// makes every pending record visible with one release store (and at most one doorbell ring).
///
/// There is no tail index: a batch is published by storing the header of its first record
/// last. Every other header of the batch, and the zero word that ends it, are written before
/// that store, so a consumer polling the header at its read position sees the whole batch at
/// once, with one cache-line transfer for the header instead of two (index, then record).
///
/// Indices the consumer writes are re-read only when the cached copy says the ring is full,
/// and are validated every time (they come from an untrusted peer).
pub struct Producer {
    mem: RingMem,
    mask: u64,
    cap: u64,
    /// Bytes committed locally (published or not).
    committed: u64,
    /// Bytes made visible to the consumer.
    published: u64,
    /// Header word of the first pending record (stored last, by `publish`); 0 when none.
    first_header: u64,
    /// Last validated value of the consumer's `head`.
    head_cache: u64,
    /// The consumer's sleep announcement we last rang for.
    last_rung: u64,
    bell: Arc<dyn Bell>,
    link: Arc<Link>,
    spin: Duration,
    /// When a full ring last made [`reserve`](Producer::reserve) look at the liveness socket
    /// (`None`: never): at most one look per [`LOOK_EVERY`].
    last_look: Option<Instant>,
    /// A record lent by [`lend`](Producer::lend): its position and largest payload.
    lent: Option<(usize, usize)>,
}

/// Free ring space lent as raw memory for one record's payload ([`Producer::lend`]).
///
/// Holding it keeps the ring's memory mapped (it owns a reference to the mapping), so the
/// pointer stays valid even if the producer is dropped; what may be written there, and when,
/// is [`Producer::lend`]'s contract.
pub struct LentSpace {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    keep: super::mem::Owner,
}

impl std::fmt::Debug for LentSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LentSpace")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl LentSpace {
    /// The first payload byte.
    pub fn as_ptr(&self) -> std::ptr::NonNull<u8> {
        self.ptr
    }

    /// The largest payload, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte was lent (never: `lend` lends at least its `min`, which may be 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What keeps the memory mapped (a mapping or a heap ring), to hold while writing.
    pub fn keepalive(&self) -> std::sync::Arc<dyn std::any::Any + Send + Sync> {
        std::sync::Arc::clone(&self.keep)
    }
}

/// Cache line size the lent payloads are aligned to ([`Producer::lend`]): 64 bytes on x86-64
/// and most aarch64 parts.
pub(crate) const LINE: usize = 64;

/// How often, at most, a `reserve` that finds the ring full looks at the liveness socket (one
/// `poll` system call): a producer retrying on `Full` learns of a dead peer within this long
/// of its first retry after the death, and a busy-polling one pays one system call per 1 ms.
const LOOK_EVERY: Duration = Duration::from_millis(1);

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.cap)
            .field("committed", &self.committed)
            .field("published", &self.published)
            .field("head_cache", &self.head_cache)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub(crate) fn new(mem: RingMem, bell: Arc<dyn Bell>, link: Arc<Link>, spin: Duration) -> Self {
        let cap = mem.capacity() as u64;
        Self {
            mem,
            mask: cap - 1,
            cap,
            committed: 0,
            published: 0,
            first_header: 0,
            head_cache: 0,
            last_rung: 0,
            bell,
            link,
            spin,
            last_look: None,
            lent: None,
        }
    }

    /// Capacity of the ring's data area in bytes.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The largest payload a single record can carry (`capacity - 16`: its own 8-byte header,
    /// and the 8-byte zero word that always follows the last published record).
    pub fn max_record_len(&self) -> usize {
        self.cap as usize - 2 * HEADER
    }

    /// Bytes committed but not yet published.
    pub fn pending(&self) -> usize {
        (self.committed - self.published) as usize
    }

    /// Reserves room for a `len`-byte record, without waiting.
    ///
    /// # Errors
    /// `Full` if the consumer has not released enough space yet (pending commits are then
    /// published, so the consumer can make progress); `TooLarge` if the record can never fit;
    /// `PeerGone`/`Closed`/`Corrupt` if the connection is unusable. A full ring is where a
    /// dead peer shows (it stopped releasing space): across processes, a `reserve` that finds
    /// the ring full looks at the liveness socket (one `poll`, at most once per millisecond),
    /// so a caller retrying on `Full` gets `PeerGone` within about 1 ms of the peer's death
    /// instead of `Full` forever. While the ring has room, records go into it as into a
    /// socket's send buffer, peer or no peer.
    pub fn reserve(&mut self, len: usize) -> Result<Reservation<'_>> {
        if self.lent.is_some() {
            return Err(Error::Lent);
        }
        if !self.make_room(len)? {
            self.look_at_peer()?;
            return Err(Error::Full);
        }
        Ok(self.reservation(len))
    }

    /// After `make_room` found the ring full: looks at the liveness socket without blocking,
    /// unless it looked less than [`LOOK_EVERY`] ago (in-process channels learn of a gone peer
    /// from its drop, with no system call).
    fn look_at_peer(&mut self) -> Result<()> {
        if self.link.is_local() {
            return Ok(());
        }
        let now = Instant::now();
        if self
            .last_look
            .is_some_and(|t| now.saturating_duration_since(t) < LOOK_EVERY)
        {
            return Ok(());
        }
        self.last_look = Some(now);
        self.link.poll_peer(Duration::ZERO)
    }

    /// Looks at the liveness socket without blocking (one `poll` system call) and records the
    /// peer as gone if it is (the consumer half then reports it too). For event loops that
    /// watch [`liveness_fd`](Self::liveness_fd) themselves and saw it readable.
    ///
    /// # Errors
    /// `PeerGone` if the peer is gone, `Closed` if this side closed; the OS error of `poll`.
    pub fn check_peer(&self) -> Result<()> {
        self.link.poll_peer(Duration::ZERO)
    }

    /// The reservation at the write position, once `make_room(len)` said yes.
    fn reservation(&mut self, len: usize) -> Reservation<'_> {
        let pos = (self.committed & self.mask) as usize;
        let size = record::size_for(len).unwrap_or(usize::MAX);
        Reservation {
            producer: self,
            pos,
            len,
            size,
        }
    }

    /// Reserves room for a `len`-byte record, waiting until `deadline` (`None`: no deadline).
    ///
    /// Spins for the configured spin time, then naps on the liveness socket with growing naps
    /// (20 µs up to 1 ms), so a dead peer is noticed while waiting. Returns `Timeout` at the
    /// deadline and `PeerGone` if the peer dies.
    pub fn reserve_wait(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Reservation<'_>> {
        if self.lent.is_some() {
            return Err(Error::Lent);
        }
        self.wait_room(len, deadline)?;
        Ok(self.reservation(len))
    }

    /// Lends the free space at the write position for one record whose payload is written
    /// over time and whose length is known only at the end (an encoder writing a batch in
    /// place): at least `min` payload bytes, and as many more as the ring has free in one
    /// piece (wrapping first, as `reserve` does, if fewer than `min` are left before the
    /// end). [`commit_lent`](Self::commit_lent) then adds the record to the pending batch
    /// with its final length, or [`cancel_lent`](Self::cancel_lent) gives the space back;
    /// until then `reserve` and `lend` fail with [`Error::Lent`]. `publish` may run
    /// meanwhile (it publishes what was committed before).
    ///
    /// The space is the consumer's to read only once committed and published: until then
    /// this side alone may write it, through [`LentSpace::as_ptr`], for `len()` bytes, and
    /// must stop writing before committing or cancelling.
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve): `Full` (fewer than `min` bytes free), `TooLarge`
    /// (`min` can never fit), `PeerGone` / `Closed` / `Corrupt`; `Lent` if a lent record is
    /// outstanding.
    #[cfg(not(loom))]
    pub fn lend(&mut self, min: usize) -> Result<LentSpace> {
        if self.lent.is_some() {
            return Err(Error::Lent);
        }
        if !self.make_room(min)? {
            self.look_at_peer()?;
            return Err(Error::Full);
        }
        // A skip record first, when there is room for it, so the lent payload starts on a
        // fresh cache line: the reader polls the header at the write position while the lent
        // space is being written, and stores into that line over the whole encode would take
        // it back from the reader again and again (docs/shm.md "Records"). The header then
        // sits in the line's last word; up to 56 bytes of ring are skipped. (Without room, as
        // in a nearly full ring, the lend is unaligned: `Full` means what it means for
        // `reserve(min)`.)
        let pos = self.committed & self.mask;
        let skip = (LINE - HEADER).wrapping_sub((pos % LINE as u64) as usize) % LINE;
        let need = (skip + record::size_for(min).unwrap_or(usize::MAX)) as u64;
        let skip = if need <= self.cap - pos && need + HEADER as u64 <= self.free() {
            skip
        } else {
            0
        };
        if skip > 0 {
            self.write_skip(pos as usize, skip);
        }
        // `make_room` left `min` contiguous (after any padding); take what else is known free
        // in the same piece (the cached head: re-reading the consumer's would cost a cache
        // line transfer per lend), up to the end of the data area, keeping the 8-byte slack.
        let pos = (self.committed & self.mask) as usize;
        let contiguous = self.cap - pos as u64;
        let space = contiguous.min(self.free() - HEADER as u64) as usize;
        let len = space - HEADER;
        debug_assert!(len >= min && len <= self.max_record_len());
        let (ptr, keep) = self.mem.raw(pos + HEADER);
        self.lent = Some((pos, len));
        Ok(LentSpace { ptr, len, keep })
    }

    /// Commits the record lent by [`lend`](Self::lend) with a payload of `len` bytes (those
    /// written at the start of the lent space); [`publish`](Self::publish) makes it visible.
    ///
    /// # Errors
    /// `TooLarge` if `len` is more than was lent, `NotLent` if nothing is lent (both usage
    /// errors of this side; nothing is committed).
    pub fn commit_lent(&mut self, len: usize) -> Result<()> {
        let Some((pos, max)) = self.lent else {
            return Err(Error::NotLent);
        };
        if len > max {
            return Err(Error::TooLarge { len, max });
        }
        self.lent = None;
        let size = record::size_for(len).unwrap_or(usize::MAX);
        // len <= max < capacity <= 1 GiB, so the length fits in u32.
        self.put_header(pos, record::encode(TAG_DATA, len as u32));
        self.committed += size as u64;
        Ok(())
    }

    /// Commits the first `len` bytes of the lent space as a record, like
    /// [`commit_lent`](Self::commit_lent), and keeps lending the rest: the next record's
    /// payload starts [`lent_span(len)`](super::lent_span) bytes after this one's (on a
    /// fresh cache line: a skip record fills the gap), and may hold the returned number of
    /// bytes (`None`: no room is left for another record, and nothing stays lent). A writer
    /// that filled one record goes on in the next without a new `lend`.
    ///
    /// # Errors
    /// As [`commit_lent`](Self::commit_lent).
    pub fn commit_lent_part(&mut self, len: usize) -> Result<Option<usize>> {
        let Some((pos, max)) = self.lent else {
            return Err(Error::NotLent);
        };
        self.commit_lent(len)?;
        let size = record::size_for(len).unwrap_or(usize::MAX);
        let span = super::lent_span(len);
        // The lent space was `max + HEADER` bytes from `pos`; the next record's header goes
        // `span` after this one's, its payload right after.
        let Some(rest) = max.checked_sub(span) else {
            self.lent = None;
            return Ok(None);
        };
        if span > size {
            // The gap: a skip record (at least a header: both are multiples of 8).
            self.write_skip(pos + size, span - size);
        }
        self.lent = Some((pos + span, rest));
        Ok(Some(rest))
    }

    /// Gives the space lent by [`lend`](Self::lend) back, committing nothing (no effect if
    /// nothing is lent).
    pub fn cancel_lent(&mut self) {
        self.lent = None;
    }

    /// Whether a record lent by [`lend`](Self::lend) is outstanding.
    pub fn is_lent(&self) -> bool {
        self.lent.is_some()
    }

    /// Copies `data` into a new record and commits it (not yet published).
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        let mut r = self.reserve(data.len())?;
        r.copy_from_slice(data);
        r.commit();
        Ok(())
    }

    /// Like [`send`](Self::send), waiting for room until `deadline`.
    pub fn send_wait(&mut self, data: &[u8], deadline: Option<Instant>) -> Result<()> {
        let mut r = self.reserve_wait(data.len(), deadline)?;
        r.copy_from_slice(data);
        r.commit();
        Ok(())
    }

    /// Makes every committed record visible to the consumer: a zero word after the last one,
    /// then one release store of the first one's header; then (after a `SeqCst` fence) a look
    /// at the consumer's sleep word, and a doorbell ring only if it announced sleep (once per
    /// announcement). Does nothing if nothing is pending.
    pub fn publish(&mut self) -> Result<()> {
        if self.committed == self.published {
            return Ok(());
        }
        // The slack rule (`make_room`) keeps the word at `committed` free: the consumer stops
        // there until the next batch's first header replaces the zero.
        self.mem
            .store_header((self.committed & self.mask) as usize, 0);
        self.mem
            .publish_header((self.published & self.mask) as usize, self.first_header);
        self.published = self.committed;
        self.first_header = 0;
        let ctrl = self.mem.ctrl();
        // Pairs with the fence in `Consumer::announce_sleep`: either the consumer's re-check
        // after announcing sleep sees this header, or this load sees its announcement.
        fence(Ordering::SeqCst);
        // An odd value is a sleep announcement; each one has a new value, so ringing once per
        // value is enough (the eventfd keeps the count until the consumer drains it). The
        // producer never writes this word: every word of the control block has one writer.
        let announced = ctrl.sleeping.0.load(Ordering::Relaxed);
        if announced & 1 == 1 && announced != self.last_rung {
            self.last_rung = announced;
            self.bell.ring()?;
        }
        Ok(())
    }

    /// Waits until a `len`-byte record fits (see [`reserve_wait`](Self::reserve_wait)).
    pub fn wait_room(&mut self, len: usize, deadline: Option<Instant>) -> Result<()> {
        if self.make_room(len)? {
            return Ok(());
        }
        if !self.spin.is_zero() {
            let start = Instant::now();
            loop {
                for _ in 0..32 {
                    spin_step();
                    if self.make_room(len)? {
                        return Ok(());
                    }
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(Error::Timeout);
                }
                if now.duration_since(start) >= self.spin {
                    break;
                }
            }
        }
        let mut nap = Duration::from_micros(20);
        loop {
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout);
                    }
                    left
                }
                None => Duration::MAX,
            };
            self.link.poll_peer(nap.min(left))?;
            if self.make_room(len)? {
                return Ok(());
            }
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Makes room for a `len`-byte record at the write position if the ring allows it now
    /// (keeping 8 bytes of slack for the zero word that ends a batch); writes a padding record
    /// first when the record must wrap. Returns `false` when the ring is full (after publishing
    /// pending records so the consumer can drain them).
    fn make_room(&mut self, len: usize) -> Result<bool> {
        self.link.check()?;
        let max = self.max_record_len();
        let size = match record::size_for(len) {
            Some(s) if len <= max => s as u64,
            _ => return Err(Error::TooLarge { len, max }),
        };
        let pos = self.committed & self.mask;
        let contiguous = self.cap - pos;
        let pad = if size > contiguous { contiguous } else { 0 };
        let slack = HEADER as u64;
        if self.free() < pad + size + slack {
            self.refresh_head()?;
        }
        let free = self.free();
        if free >= pad + size + slack {
            if pad != 0 {
                self.write_pad(pos, pad);
            }
            return Ok(true);
        }
        if pad != 0 && free >= pad + slack {
            // Wrap now, so the consumer can skip to the start while we wait.
            self.write_pad(pos, pad);
        }
        self.publish()?;
        Ok(false)
    }

    /// Commits a skip record of `bytes` (a multiple of 8, at least a header) at the write
    /// position `pos`.
    fn write_skip(&mut self, pos: usize, bytes: usize) {
        // bytes < capacity <= 1 GiB, so the length fits in u32.
        self.put_header(pos, record::encode(TAG_SKIP, (bytes - HEADER) as u32));
        self.committed += bytes as u64;
    }

    fn write_pad(&mut self, pos: u64, pad: u64) {
        // pad <= cap <= 1 GiB, so the length fits in u32.
        let hdr = record::encode(TAG_PAD, (pad - HEADER as u64) as u32);
        self.put_header(pos as usize, hdr);
        self.committed += pad;
    }

    /// Writes the header of the record at the write position `pos`: kept back for `publish`
    /// if it opens the pending batch, stored now (relaxed) otherwise.
    #[inline]
    fn put_header(&mut self, pos: usize, word: u64) {
        if self.committed == self.published {
            self.first_header = word;
        } else {
            self.mem.store_header(pos, word);
        }
    }

    #[inline]
    fn free(&self) -> u64 {
        self.cap - (self.committed - self.head_cache)
    }

    /// Re-reads the consumer's head and validates it.
    fn refresh_head(&mut self) -> Result<()> {
        let head = self.mem.ctrl().head.0.load(Ordering::Acquire);
        if head < self.head_cache || head > self.published || head % 8 != 0 {
            return Err(self.link.corrupt(
                "the consumer's head index went backwards, past what was published, or off 8-byte alignment",
            ));
        }
        self.head_cache = head;
        Ok(())
    }

    /// The doorbell fd this producer rings (`None` for in-process channels).
    pub fn doorbell_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.bell.fd()
    }

    /// The liveness socket's fd (readable = peer gone; `None` for in-process channels).
    pub fn liveness_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.link.fd()
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn mem(&self) -> &RingMem {
        &self.mem
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.link.is_local() {
            // In-process channel: publish what was committed, then tell the consumer we are gone.
            let _ = self.publish();
            let _ = self.link.peer_gone();
            let _ = self.bell.ring();
        }
    }
}

/// Space reserved in the ring for one record; derefs to the payload bytes.
///
/// Dropping it without [`commit`](Self::commit) abandons the record (nothing is published).
pub struct Reservation<'a> {
    producer: &'a mut Producer,
    pos: usize,
    len: usize,
    size: usize,
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Reservation<'_> {
    /// Adds the record to the pending batch; [`Producer::publish`] makes it visible.
    pub fn commit(self) {
        let len = self.len;
        self.commit_len(len);
    }

    /// Commits only the first `len` bytes (for encoders that reserve a maximum).
    ///
    /// # Panics
    /// If `len` is larger than the reserved length.
    pub fn commit_len(self, len: usize) {
        assert!(len <= self.len, "commit_len past the reservation");
        let size = record::size_for(len).unwrap_or(self.size).min(self.size);
        let p = self.producer;
        p.put_header(self.pos, record::encode(TAG_DATA, len as u32));
        p.committed += size as u64;
    }
}

impl std::ops::Deref for Reservation<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.producer.mem.bytes(self.pos + HEADER, self.len)
    }
}

impl std::ops::DerefMut for Reservation<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.producer.mem.bytes_mut(self.pos + HEADER, self.len)
    }
}
