//! `CallSlot`: where a core delivers a call's outcome to the thread waiting for it.
//!
//! One slot serves one caller thread, one call at a time, and is reused call after call, so a
//! blocking call allocates nothing in steady state. The protocol (no locks):
//!
//! - the owner `arm`s the slot (state IDLE/DONE → PENDING) and hands a clone to a core;
//! - while PENDING only the core touches the outcome; it writes it and stores DONE (Release);
//! - the owner sees DONE (Acquire) and then owns the outcome again.
//!
//! Waiting spins for a bounded time (a cross-core wake-up costs ~25–30 µs here), then
//! announces `parked` and parks; the core unparks only if `parked` is set (SeqCst on both
//! sides, so either the core sees `parked` or the owner sees DONE before parking).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::{Status, StatusCode};

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const DONE: u8 = 2;

#[derive(Debug, Default)]
struct Outcome {
    status: Option<Status>,
    payload: Vec<u8>,
}

/// A reusable completion slot for one call at a time.
#[derive(Debug)]
pub struct CallSlot {
    state: AtomicU8,
    /// For async callers: woken on completion.
    waker: atomic_waker::AtomicWaker,
    parked: AtomicBool,
    owner: Thread,
    outcome: UnsafeCell<Outcome>,
}

// SAFETY: `outcome` is accessed by exactly one side at a time, as decided by `state`: the core
// between PENDING and its DONE store, the owner otherwise (see the module docs). All other
// fields are atomics or immutable.
unsafe impl Sync for CallSlot {}
// SAFETY: every field is Send (`Thread`, atomics, an owned `Outcome`).
unsafe impl Send for CallSlot {}

impl CallSlot {
    /// A slot owned (waited on) by the calling thread.
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            waker: atomic_waker::AtomicWaker::new(),
            parked: AtomicBool::new(false),
            owner: std::thread::current(),
            outcome: UnsafeCell::new(Outcome::default()),
        }
    }

    /// Owner: prepares the slot for a new call. Panics if a call is still pending.
    pub(crate) fn arm(&self) {
        assert_ne!(
            self.state.load(Ordering::Acquire),
            PENDING,
            "CallSlot reused while a call is pending"
        );
        // SAFETY: not PENDING, so no core holds the slot's outcome: the owner has it.
        let o = unsafe { &mut *self.outcome.get() };
        o.status = None;
        o.payload.clear();
        self.state.store(PENDING, Ordering::Release);
    }

    /// Core: delivers the outcome. Must be called exactly once per `arm`.
    pub(crate) fn complete(&self, result: Result<&[u8], Status>) {
        debug_assert_eq!(self.state.load(Ordering::Relaxed), PENDING);
        // SAFETY: the state is PENDING, during which only the core touches the outcome.
        let o = unsafe { &mut *self.outcome.get() };
        match result {
            Ok(bytes) => o.payload.extend_from_slice(bytes),
            Err(s) => o.status = Some(s),
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

    /// Async owner: registers the task to wake on completion.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Owner, after `is_done()`: the reply payload or the failure.
    pub(crate) fn result(&self) -> Result<&[u8], Status> {
        assert!(self.is_done(), "CallSlot::result before completion");
        // SAFETY: DONE was observed with Acquire: the core finished writing and no longer
        // touches the outcome until the owner arms the slot again.
        let o = unsafe { &*self.outcome.get() };
        match &o.status {
            None => Ok(&o.payload),
            Some(s) => Err(s.clone()),
        }
    }
}

impl Default for CallSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// The status a call gets when its connection goes away.
pub(crate) fn conn_lost(why: &'static str) -> Status {
    Status::new(StatusCode::Unavailable, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn delivers_across_threads_and_reuses() {
        let slot = Arc::new(CallSlot::new());
        for i in 0..200u32 {
            slot.arm();
            let s = slot.clone();
            let t = std::thread::spawn(move || {
                if i % 2 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                s.complete(Ok(&i.to_le_bytes()));
            });
            assert!(slot.wait(Duration::from_micros(if i % 3 == 0 { 0 } else { 50 }), None));
            assert_eq!(slot.result().unwrap(), &i.to_le_bytes());
            t.join().unwrap();
        }
    }

    #[test]
    fn wait_times_out_without_completion() {
        let slot = CallSlot::new();
        slot.arm();
        assert!(!slot.wait(
            Duration::ZERO,
            Some(Instant::now() + Duration::from_millis(5))
        ));
        slot.complete(Err(Status::unavailable("gone")));
        assert_eq!(slot.result().unwrap_err().code, StatusCode::Unavailable);
    }
}
