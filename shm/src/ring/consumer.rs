//! The consuming half of a ring: borrow records in place, release them in bulk, wait.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mem::RingMem;
use super::record::{self, HEADER, Record};
use crate::doorbell::Bell;
use crate::error::{Error, Result};
use crate::liveness::Link;
use crate::sync::{Ordering, fence, spin_step};

/// The reading half of one ring.
///
/// [`read`](Self::read) lends each record's payload as one `&[u8]` in place; the slices stay
/// valid until [`release`](Self::release) (which needs `&mut self`, so the borrow checker ends
/// them first) hands all the space back with one index store.
///
/// There is no tail index to read: the consumer polls the record header at its read position
/// (zero until the producer publishes there), so the record's first line is the only line that
/// moves between cores before it can be read. Every header is validated before use.
pub struct Consumer {
    mem: RingMem,
    mask: u64,
    cap: u64,
    /// Position of the next record to read.
    read: Cell<u64>,
    /// Value last stored to `head`.
    released: Cell<u64>,
    /// Our sleep word: odd while announced; each announcement gets a new value.
    sleep_seq: Cell<u64>,
    bell: Arc<dyn Bell>,
    link: Arc<Link>,
    spin: Duration,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.cap)
            .field("read", &self.read.get())
            .field("released", &self.released.get())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(mem: RingMem, bell: Arc<dyn Bell>, link: Arc<Link>, spin: Duration) -> Self {
        let cap = mem.capacity() as u64;
        Self {
            mem,
            mask: cap - 1,
            cap,
            read: Cell::new(0),
            released: Cell::new(0),
            sleep_seq: Cell::new(0),
            bell,
            link,
            spin,
        }
    }

    /// Capacity of the ring's data area in bytes.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Bytes of ring moved past so far (records and padding): the next header polled is at
    /// `read_position() % capacity()`.
    pub fn read_position(&self) -> u64 {
        self.read.get()
    }

    /// The next record's payload, or `None` if none is published yet.
    ///
    /// The slice points into shared memory and stays valid until [`release`](Self::release).
    /// A record that breaks the ring's rules closes the connection and returns `Corrupt`.
    ///
    /// `read` never makes a system call, so across processes it cannot tell "nothing yet"
    /// from "the peer died": a reader that never [`wait`](Self::wait)s learns of a dead peer
    /// from [`check_peer`](Self::check_peer) or by watching
    /// [`liveness_fd`](Self::liveness_fd) (the producer half's `reserve` looks by itself once
    /// its ring is full).
    pub fn read(&self) -> Result<Option<&[u8]>> {
        match self.next(true)? {
            Some((pos, len)) => Ok(Some(self.mem.bytes(pos + HEADER, len))),
            None => Ok(None),
        }
    }

    /// An iterator over the records published so far (each item as [`read`](Self::read)).
    pub fn records(&self) -> Records<'_> {
        Records { consumer: self }
    }

    /// `true` if a record can be read now.
    pub fn ready(&self) -> Result<bool> {
        Ok(self.next(false)?.is_some())
    }

    /// Whether the producer is known to be gone (its process died, or, in process, its half
    /// was dropped) or this side closed the connection. Records the producer published
    /// before going can still be read (unless this side closed): an event loop
    /// reads until [`read`](Self::read) gives `None`, then checks this to tell "nothing yet"
    /// from "nothing ever again".
    pub fn peer_gone(&self) -> bool {
        self.link.check().is_err()
    }

    /// Hands every record read so far back to the producer: one release store of `head`.
    pub fn release(&mut self) {
        let r = self.read.get();
        if r != self.released.get() {
            self.mem.ctrl().head.0.store(r, Ordering::Release);
            self.released.set(r);
        }
    }

    /// Waits until a record is ready, the deadline passes (`Timeout`), or the peer is gone
    /// (`PeerGone`, only once everything it published has been read).
    ///
    /// Spins for the configured spin time first; then announces sleep in shared memory,
    /// re-checks the ring, and blocks on the doorbell together with the liveness socket.
    pub fn wait(&self, deadline: Option<Instant>) -> Result<()> {
        if self.ready()? {
            return Ok(());
        }
        if !self.spin.is_zero() {
            let start = Instant::now();
            loop {
                for _ in 0..64 {
                    spin_step();
                    if self.ready()? {
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
        loop {
            self.link.check()?;
            if !self.announce_sleep()? {
                return Ok(());
            }
            let slept = self.bell.sleep(&self.link, deadline);
            self.cancel_sleep();
            if self.ready()? {
                return Ok(());
            }
            slept?;
        }
    }

    /// Finds the next data record, skipping (and, when nothing is lent, releasing) padding.
    /// With `consume`, moves the read position past it. Returns `(offset, payload_len)`.
    fn next(&self, consume: bool) -> Result<Option<(usize, usize)>> {
        self.link.check_local()?;
        loop {
            let r = self.read.get();
            let pos = (r & self.mask) as usize;
            let word = self.mem.load_header(pos);
            if word == 0 {
                return Ok(None);
            }
            // What the producer may have written from `r` on: up to a ring past what we
            // released, less its 8 bytes of slack. `r - released <= cap - 8` holds because every
            // record we moved past was checked against this same bound.
            let avail = self.released.get() + self.cap - HEADER as u64 - r;
            match record::decode(word, pos, avail, self.cap as usize) {
                Ok(Record::Data { len, size }) => {
                    if consume {
                        self.read.set(r + size as u64);
                    }
                    return Ok(Some((pos, len)));
                }
                Ok(Record::Skip { size }) => {
                    // Passed over; handed back with the next release.
                    self.read.set(r + size as u64);
                }
                Ok(Record::Pad { size }) => {
                    let next = r + size as u64;
                    self.read.set(next);
                    if self.released.get() == r {
                        // Nothing is lent: give the padding back right away so a producer
                        // waiting to wrap is not stuck behind it.
                        self.mem.ctrl().head.0.store(next, Ordering::Release);
                        self.released.set(next);
                    }
                }
                Err(what) => return Err(self.link.corrupt(what)),
            }
        }
    }

    /// The doorbell eventfd this consumer sleeps on (`None` for in-process channels).
    ///
    /// An event loop can watch it for readability instead of calling [`wait`](Self::wait):
    /// store a non-zero value to the sleep flag first with [`announce_sleep`](Self::announce_sleep).
    pub fn doorbell_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.bell.fd()
    }

    /// The liveness socket's fd (readable = peer gone; `None` for in-process channels).
    pub fn liveness_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.link.fd()
    }

    /// Looks at the liveness socket without blocking (one `poll` system call) and records
    /// the peer as gone if it is: afterwards [`peer_gone`](Self::peer_gone) is `true`, and
    /// the producer half of the connection fails its writes with `PeerGone`. For event loops
    /// that watch [`liveness_fd`](Self::liveness_fd) themselves and saw it readable.
    ///
    /// # Errors
    /// `PeerGone` if the peer is gone, `Closed` if this side closed; the OS error of `poll`.
    pub fn check_peer(&self) -> Result<()> {
        self.link.poll_peer(std::time::Duration::ZERO)
    }

    /// For event loops that wait on [`doorbell_fd`](Self::doorbell_fd) themselves: announces
    /// sleep and re-checks the ring. Returns `Ok(true)` if it is safe to block now (the
    /// producer will ring), `Ok(false)` if a record arrived meanwhile (the announcement is
    /// withdrawn). After waking, call [`cancel_sleep`](Self::cancel_sleep) and drain the eventfd.
    pub fn announce_sleep(&self) -> Result<bool> {
        self.link.check()?;
        let seq = self.sleep_seq.get();
        let seq = if seq & 1 == 1 { seq } else { seq + 1 };
        self.sleep_seq.set(seq);
        self.mem.ctrl().sleeping.0.store(seq, Ordering::Relaxed);
        // Pairs with the fence in `Producer::publish`: either our re-check below sees its
        // published header, or its look at the sleep word sees this announcement (docs/shm.md,
        // "Wakeups").
        fence(Ordering::SeqCst);
        if self.ready()? {
            self.cancel_sleep();
            return Ok(false);
        }
        Ok(true)
    }

    /// Withdraws a sleep announcement (see [`announce_sleep`](Self::announce_sleep)).
    pub fn cancel_sleep(&self) {
        let seq = self.sleep_seq.get();
        if seq & 1 == 1 {
            self.sleep_seq.set(seq + 1);
            self.mem.ctrl().sleeping.0.store(seq + 1, Ordering::Relaxed);
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn mem(&self) -> &RingMem {
        &self.mem
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.link.is_local() {
            let _ = self.link.peer_gone();
        }
    }
}

/// Iterator over published records; see [`Consumer::records`].
#[derive(Debug)]
pub struct Records<'a> {
    consumer: &'a Consumer,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8]>;
    fn next(&mut self) -> Option<Self::Item> {
        self.consumer.read().transpose()
    }
}
