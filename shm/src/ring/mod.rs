//! Single-producer single-consumer byte rings of length-prefixed, contiguous records.
//!
//! The index logic here does not care where the memory is: [`channel`] puts a ring on the heap
//! (for threads, tests and loom models), `ShmConnection` puts two in a shared segment.

mod consumer;
pub(crate) mod mem;
mod producer;
pub(crate) mod record;

use std::sync::Arc;
use std::time::Duration;

pub use consumer::{Consumer, Records};
pub use producer::{LentSpace, Producer, Reservation};

use crate::doorbell::{Bell, ThreadBell};
use crate::error::Result;
use crate::layout::check_capacity;
use crate::liveness::Link;
use mem::RingMem;

/// Bytes of ring a record with a `len`-byte payload occupies (8-byte header, 8-byte aligned).
pub fn record_footprint(len: usize) -> usize {
    record::size_for(len).unwrap_or(usize::MAX)
}

/// In space lent by [`Producer::lend`]: how far after a committed record's payload the next
/// one starts when [`Producer::commit_lent_part`] goes on (`len` bytes committed): the
/// record's footprint rounded up to a 64-byte cache line (a skip record fills the gap), so
/// every lent payload starts on a fresh line.
pub fn lent_span(len: usize) -> usize {
    record_footprint(len).saturating_add(producer::LINE - 1) & !(producer::LINE - 1)
}

/// An in-process ring of `capacity` bytes (a power of two, 64 B to 1 GiB) between two threads.
///
/// Same code and rules as the shared-memory rings; the doorbell is a condvar, and dropping one
/// half makes the other's waits return `PeerGone`. `spin` is how long `wait` busy-polls before
/// sleeping.
pub fn channel(capacity: usize, spin: Duration) -> Result<(Producer, Consumer)> {
    let (_, producer, consumer) = heap_channel(capacity, spin)?;
    Ok((producer, consumer))
}

/// [`channel`] with an eventfd doorbell instead of a condvar, for consumers driven by an event
/// loop (io_uring, epoll) rather than a thread blocked in [`Consumer::wait`].
///
/// The loop reads until [`Consumer::read`] gives `None`, calls [`Consumer::announce_sleep`]
/// (which re-checks the ring), waits for [`Consumer::doorbell_fd`] to become readable, then
/// drains the eventfd (an 8-byte read) and calls [`Consumer::cancel_sleep`]: the same
/// announce/recheck protocol as shared-memory connections (docs/shm.md, "Wakeups"), so the
/// producer makes at most one `write(2)` per sleep announcement. Dropping the [`Producer`]
/// publishes what it committed, marks the peer gone and rings the doorbell, so a sleeping
/// loop wakes up, reads the last records and then gets [`crate::Error::PeerGone`].
/// [`Consumer::wait`] works too (it polls the eventfd).
///
/// # Errors
/// [`crate::Error::Config`] if `capacity` is not a power of two from 64 B to 1 GiB;
/// [`crate::Error::Io`] if the eventfd cannot be created (`EMFILE`, `ENFILE`).
#[cfg(not(loom))]
pub fn channel_with_doorbell(capacity: usize, spin: Duration) -> Result<(Producer, Consumer)> {
    check_capacity(capacity)?;
    let mem = mem::heap_ring(capacity);
    let bell: Arc<dyn Bell> = Arc::new(crate::doorbell::EventBell::new()?);
    let link = Arc::new(Link::local());
    let consumer = Consumer::new(mem.share(), Arc::clone(&bell), Arc::clone(&link), spin);
    let producer = Producer::new(mem, bell, link, spin);
    Ok((producer, consumer))
}

/// [`channel`], plus a third handle on the ring's memory (for `testing::TamperedChannel`).
pub(crate) fn heap_channel(
    capacity: usize,
    spin: Duration,
) -> Result<(RingMem, Producer, Consumer)> {
    check_capacity(capacity)?;
    let mem = mem::heap_ring(capacity);
    let bell: Arc<dyn Bell> = Arc::new(ThreadBell::default());
    let link = Arc::new(Link::local());
    let consumer = Consumer::new(mem.share(), Arc::clone(&bell), Arc::clone(&link), spin);
    let producer = Producer::new(mem.share(), bell, link, spin);
    Ok((mem, producer, consumer))
}

#[cfg(all(test, not(loom)))]
mod tests;
