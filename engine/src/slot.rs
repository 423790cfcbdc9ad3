//! Where a core delivers a call's outcome to the thread waiting for it.
//!
//! [`Completion`] (crate-private) is the shared cell: one caller, one call at a time, reused
//! call after call, so a blocking call allocates nothing in steady state. [`CallSlot`] is the
//! public, caller-owned handle of a caller-driven core ([`crate::Core::call`]): it is neither
//! `Send` nor `Sync`, and a reply lent from it borrows it, so the type system forbids reusing
//! the slot while a reply is alive or sharing it between threads. The protocol (no locks):
//!
//! - the owner `arm`s the slot (state IDLE/DONE → PENDING) and hands a clone to a core;
//! - while PENDING only the core touches the outcome; it writes it and stores DONE (Release);
//! - the owner sees DONE (Acquire) and then owns the outcome again.
//!
//! Waiting spins for a bounded time (a cross-core wake-up costs ~25–30 µs here), then
//! announces `parked` and parks; the core unparks only if `parked` is set (SeqCst on both
//! sides, so either the core sees `parked` or the owner sees DONE before parking).

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::Status;

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const DONE: u8 = 2;

#[derive(Debug, Default)]
struct Outcome {
    status: Option<Status>,
    payload: Vec<u8>,
    /// The reply's header block (response metadata); kept empty when there is none.
    metadata: netron_codec::hpack::HeaderList,
}

/// A reusable completion slot for one call at a time.
#[derive(Debug)]
pub struct Completion {
    state: AtomicU8,
    /// For async callers: woken on completion.
    waker: atomic_waker::AtomicWaker,
    parked: AtomicBool,
    /// The waiter gave up (a connect that timed out): a core that completes the slot with a
    /// connection afterwards closes that connection instead of leaking it.
    abandoned: AtomicBool,
    owner: Thread,
    outcome: UnsafeCell<Outcome>,
}

// SAFETY: `outcome` is accessed by exactly one side at a time, as decided by `state`: the core
// between PENDING and its DONE store, the owner otherwise (see the module docs). All other
// fields are atomics or immutable.
unsafe impl Sync for Completion {}
// SAFETY: every field is Send (`Thread`, atomics, an owned `Outcome`).
unsafe impl Send for Completion {}

impl Completion {
    /// A slot owned (waited on) by the calling thread.
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            waker: atomic_waker::AtomicWaker::new(),
            parked: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            owner: std::thread::current(),
            outcome: UnsafeCell::new(Outcome::default()),
        }
    }

    /// Owner: prepares the slot for a new call. Returns `false` (and changes nothing) if a
    /// call is still pending: a core may still write the outcome, so the owner must take a
    /// fresh slot instead (see [`Completion::rearm`]).
    #[must_use]
    pub(crate) fn arm(&self) -> bool {
        if self.state.load(Ordering::Acquire) == PENDING {
            return false;
        }
        // SAFETY: not PENDING, so no core holds the slot's outcome: the owner has it. Only the
        // owner arms, and the owner is one thread (the slot is reached through a thread-local,
        // a `CallSlot` that is neither Send nor Sync, or a `CallFuture` that arms it once).
        let o = unsafe { &mut *self.outcome.get() };
        o.status = None;
        o.payload.clear();
        o.metadata.clear();
        self.state.store(PENDING, Ordering::Release);
        true
    }

    /// Arms `slot`, replacing it with a fresh one if a core still owns it (a caller gave up on
    /// its previous call; the core completes the old slot later and nobody reads it).
    pub(crate) fn rearm(slot: &mut Arc<Completion>) {
        if !slot.arm() {
            *slot = Arc::new(Completion::new());
            let armed = slot.arm();
            debug_assert!(armed, "a fresh slot is idle");
        }
    }

    /// Owner: gives up waiting. Returns whether the outcome was delivered anyway (then the
    /// owner still owns it). SeqCst with [`Completion::was_abandoned`]: of the owner and a
    /// core completing at the same time, at least one sees the other.
    pub(crate) fn abandon(&self) -> bool {
        self.abandoned.store(true, Ordering::SeqCst);
        self.state.load(Ordering::SeqCst) == DONE
    }

    /// Core, after `complete`: whether the owner gave up before it could see the outcome.
    pub(crate) fn was_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Whether a call is pending (a core owns the outcome).
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    /// Core: delivers the outcome. Called at most once per `arm` (a second call is ignored).
    pub(crate) fn complete(&self, result: Result<&[u8], Status>) {
        self.complete_with(result, None);
    }

    /// Core: delivers the outcome with the reply's response metadata (copied only when
    /// there is some).
    pub(crate) fn complete_with(
        &self,
        result: Result<&[u8], Status>,
        metadata: Option<&netron_codec::hpack::HeaderList>,
    ) {
        if self.state.load(Ordering::Acquire) != PENDING {
            debug_assert!(false, "Completion completed twice");
            return;
        }
        // SAFETY: the state is PENDING, during which only the core touches the outcome.
        let o = unsafe { &mut *self.outcome.get() };
        match result {
            Ok(bytes) => o.payload.extend_from_slice(bytes),
            Err(s) => o.status = Some(s),
        }
        if let Some(m) = metadata.filter(|m| !m.is_empty()) {
            for (n, v) in m.iter() {
                o.metadata.push(n, v);
            }
        }
        self.state.store(DONE, Ordering::SeqCst);
        self.waker.wake();
        if self.parked.load(Ordering::SeqCst) {
            self.owner.unpark();
        }
    }

    /// Whether the outcome has been delivered.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Owner: spins up to `spin`, then parks until the outcome is delivered or `deadline`
    /// passes. Returns `false` on timeout (the call is still pending).
    pub(crate) fn wait(&self, spin: Duration, deadline: Option<Instant>) -> bool {
        let spin_until = Instant::now() + spin;
        loop {
            if self.is_done() {
                return true;
            }
            if Instant::now() >= spin_until {
                break;
            }
            std::hint::spin_loop();
        }
        self.parked.store(true, Ordering::SeqCst);
        let done = loop {
            if self.state.load(Ordering::SeqCst) == DONE {
                break true;
            }
            match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break false;
                    }
                    std::thread::park_timeout(d - now);
                }
                None => std::thread::park(),
            }
        };
        self.parked.store(false, Ordering::SeqCst);
        done
    }

    /// Owner: the response metadata of the delivered outcome (`None` while pending).
    pub(crate) fn metadata(&self) -> Option<&netron_codec::hpack::HeaderList> {
        if !self.is_done() {
            return None;
        }
        // SAFETY: as in `result`: DONE was observed, the core no longer touches the outcome.
        let o = unsafe { &*self.outcome.get() };
        Some(&o.metadata)
    }

    /// Async owner: registers the task to wake on completion.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Owner: the reply payload or the failure, once delivered (`None` while pending or
    /// never armed).
    pub(crate) fn result(&self) -> Option<Result<&[u8], Status>> {
        if !self.is_done() {
            return None;
        }
        // SAFETY: DONE was observed with Acquire: the core finished writing and no longer
        // touches the outcome until the owner arms the slot again, which needs the owner's
        // `&mut` access (CallSlot) or happens on the owner's thread after this borrow ended.
        let o = unsafe { &*self.outcome.get() };
        Some(match &o.status {
            None => Ok(&o.payload),
            Some(s) => Err(s.clone()),
        })
    }
}

impl crate::conn::Caller for Arc<Completion> {
    #[inline]
    fn complete(self, result: Result<&[u8], Status>) {
        Completion::complete(&self, result);
    }
    #[inline]
    fn complete_with(
        self,
        result: Result<&[u8], Status>,
        metadata: &netron_codec::hpack::HeaderList,
    ) {
        Completion::complete_with(&self, result, Some(metadata));
    }
    #[inline]
    fn is(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

/// A caller-owned, reusable slot that receives the outcome of calls made on a caller-driven
/// [`crate::Core`] ([`crate::Core::call`], [`crate::Core::start`]).
///
/// A reply lent by [`crate::Core::call`] or [`CallSlot::reply`] borrows the slot, so the slot
/// cannot start another call while the reply is alive: the reply never changes under its
/// reader. A slot belongs to the thread that created it (it is neither `Send` nor `Sync`).
/// Reusing one slot call after call allocates nothing in steady state.
///
/// Why it is public: the caller-driven core's calls allocate nothing per call, so the reply
/// cannot be a fresh `Vec` and the outcome cell cannot be created per call; the caller owns
/// that cell and lends it to each call. It has no public fields and only [`CallSlot::new`],
/// [`CallSlot::is_done`] and [`CallSlot::reply`]: its insides (a completion shared with the
/// core) may change without notice (docs/architecture.md, "Public surface").
///
/// Using a reply after the next call does not compile:
///
/// ```compile_fail
/// # use netron_engine::{CallSlot, ConnId, Core};
/// fn two_calls(core: &mut Core, conn: ConnId, slot: &mut CallSlot) {
///     let a = core.call(conn, b"calc@1.2.0", b"echo", b"AAAA", None, slot).unwrap();
///     let _b = core.call(conn, b"calc@1.2.0", b"echo", b"BBBB", None, slot);
///     assert_eq!(a, b"AAAA");
/// }
/// ```
///
/// Sharing a slot between threads does not compile:
///
/// ```compile_fail
/// # use netron_engine::CallSlot;
/// let slot = CallSlot::new();
/// std::thread::scope(|s| {
///     s.spawn(|| slot.is_done());
/// });
/// ```
///
/// Nor does moving one to another thread:
///
/// ```compile_fail
/// # use netron_engine::CallSlot;
/// let slot = CallSlot::new();
/// std::thread::spawn(move || slot.is_done());
/// ```
#[derive(Debug)]
pub struct CallSlot {
    pub(crate) inner: Arc<Completion>,
    /// The call this slot was last armed for (to cancel it if the slot is reused while it is
    /// still pending).
    pub(crate) last: Option<(crate::inbox::ConnRef, u32)>,
    /// Neither Send nor Sync: the completion parks/unparks the creating thread, and arming
    /// must never race with reading.
    _local: std::marker::PhantomData<*const ()>,
}

impl CallSlot {
    /// An idle slot owned by the calling thread.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Completion::new()),
            last: None,
            _local: std::marker::PhantomData,
        }
    }

    /// Whether the last call's outcome has been delivered.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.inner.is_done()
    }

    /// The last call's reply payload or failure, once delivered; `None` while it is pending
    /// (or before the first call). The failures are those of [`crate::Core::call`].
    pub fn reply(&self) -> Option<Result<&[u8], crate::CallError>> {
        self.inner
            .result()
            .map(|r| r.map_err(crate::CallError::from_status))
    }

    /// The last call's response metadata, once delivered (empty if the callee sent none);
    /// `None` while it is pending.
    pub fn metadata(&self) -> Option<&netron_codec::hpack::HeaderList> {
        self.inner.metadata()
    }
}

impl Default for CallSlot {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatusCode;

    #[test]
    fn delivers_across_threads_and_reuses() {
        let slot = Arc::new(Completion::new());
        for i in 0..200u32 {
            assert!(slot.arm());
            let s = slot.clone();
            let t = std::thread::spawn(move || {
                if i % 2 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                s.complete(Ok(&i.to_le_bytes()));
            });
            assert!(slot.wait(Duration::from_micros(if i % 3 == 0 { 0 } else { 50 }), None));
            assert_eq!(slot.result().unwrap().unwrap(), &i.to_le_bytes());
            t.join().unwrap();
        }
    }

    #[test]
    fn wait_times_out_without_completion() {
        let slot = Completion::new();
        assert!(slot.arm());
        assert!(!slot.arm(), "a pending slot cannot be re-armed");
        assert!(!slot.wait(
            Duration::ZERO,
            Some(Instant::now() + Duration::from_millis(5))
        ));
        slot.complete(Err(Status::unavailable("gone")));
        assert_eq!(
            slot.result().unwrap().unwrap_err().code,
            StatusCode::Unavailable
        );
    }

    #[test]
    fn rearm_replaces_a_slot_a_core_still_owns() {
        let mut slot = Arc::new(Completion::new());
        Completion::rearm(&mut slot);
        let held_by_core = slot.clone();
        Completion::rearm(&mut slot);
        assert!(!Arc::ptr_eq(&slot, &held_by_core));
        held_by_core.complete(Err(Status::unavailable("late")));
        assert!(slot.is_pending(), "the late outcome went to the old slot");
    }
}
