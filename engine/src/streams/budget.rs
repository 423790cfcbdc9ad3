//! The bound on what one connection's stream writers may queue, all streams together.
//!
//! Each stream's credit already bounds what its writer queues to one stream window plus one
//! message (docs/protocol.md §23.3). Without a bound per connection, a peer that opens many
//! streams and reads none of them would make this side queue a stream window for each: 1,024
//! streams × 256 KiB is 256 MiB. A [`SendBudget`] is shared by every stream of a connection;
//! a message is queued only while the budget has bytes free, so a connection's writers queue
//! at most its limit plus one message (see [`SendBudget::try_take`]). The limit is the
//! connection's send window (16 stream windows, 4 MiB by default,
//! `netron_codec::stream::initial_connection_window`): more than that could not be in flight
//! anyway before the peer reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::task::Waker;

/// Distinct waiting tasks kept before all are woken at once (they poll again and re-register
/// if still blocked): bounds the waiter list whatever the writers do.
const MAX_WAITERS: usize = 1024;

/// Bytes the writers of one connection's streams may still queue; see the module docs.
#[derive(Debug)]
pub(crate) struct SendBudget {
    /// The limit minus the bytes queued; negative after a message larger than what was free.
    free: AtomicI64,
    /// Whether `waiters` may hold wakers (checked without the lock on every release).
    waiting: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl SendBudget {
    /// A budget of `limit` bytes (at least 1).
    pub(crate) fn new(limit: u32) -> SendBudget {
        let limit = i64::from(limit.max(1));
        SendBudget {
            free: AtomicI64::new(limit),
            waiting: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Whether a message may be queued now (some bytes are free).
    pub(crate) fn has_room(&self) -> bool {
        self.free.load(SeqCst) > 0
    }

    /// Takes `len` bytes if some are free (the same rule as a window: a message goes while
    /// the budget is positive, so queued bytes stay below the limit plus one message).
    pub(crate) fn try_take(&self, len: usize) -> bool {
        let len = len as i64;
        self.free
            .fetch_update(SeqCst, SeqCst, |free| (free > 0).then(|| free - len))
            .is_ok()
    }

    /// Takes `len` bytes whatever is free: for a message whose writer was told there was
    /// room ([`SendBudget::has_room`]) and lost it to another stream in between.
    pub(crate) fn take(&self, len: usize) {
        self.free.fetch_sub(len as i64, SeqCst);
    }

    /// Gives `len` bytes back (the connection took a message, or a queue was dropped) and
    /// wakes the writers that waited for room.
    pub(crate) fn give(&self, len: usize) {
        if len == 0 {
            return;
        }
        self.free.fetch_add(len as i64, SeqCst);
        if self.waiting.load(SeqCst) {
            let woken = {
                let mut w = self.lock();
                self.waiting.store(false, SeqCst);
                std::mem::take(&mut *w)
            };
            woken.into_iter().for_each(Waker::wake);
        }
    }

    /// Registers `waker` to be woken when bytes are given back. Returns whether there is room
    /// now (checked after registering, so a release in between is never missed).
    pub(crate) fn wait(&self, waker: &Waker) -> bool {
        let overflow = {
            let mut w = self.lock();
            if !w.iter().any(|x| x.will_wake(waker)) {
                w.push(waker.clone());
            }
            self.waiting.store(true, SeqCst);
            if w.len() > MAX_WAITERS {
                std::mem::take(&mut *w)
            } else {
                Vec::new()
            }
        };
        overflow.into_iter().for_each(Waker::wake);
        self.has_room()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // Wakers only: a panic while holding the lock leaves nothing inconsistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_message_goes_while_bytes_are_free_then_writers_wait() {
        let b = SendBudget::new(100);
        assert!(b.try_take(60));
        assert!(
            b.try_take(60),
            "40 bytes free: a message goes (window rule)"
        );
        assert_eq!(b.free.load(SeqCst), -20);
        assert!(!b.try_take(1), "nothing free");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(!b.wait(&waker));
        assert!(!b.wait(&waker), "a second registration of the same task");
        b.give(10);
        assert_eq!(count.0.load(SeqCst), 1, "woken once");
        assert!(!b.has_room(), "-10 free: still no room");
        b.give(110);
        assert_eq!(b.free.load(SeqCst), 100);
        assert!(b.has_room());
        assert_eq!(count.0.load(SeqCst), 1, "no waiter left to wake");
    }

    #[test]
    fn the_waiter_list_stays_bounded() {
        let b = SendBudget::new(1);
        b.take(1);
        let counts: Vec<_> = (0..MAX_WAITERS + 1)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        for c in &counts {
            b.wait(&Waker::from(c.clone()));
        }
        assert!(
            b.lock().is_empty(),
            "an overflowing list is woken and emptied"
        );
        assert!(counts.iter().all(|c| c.0.load(SeqCst) == 1));
    }
}
