//! The loom shim: the ring's shared atomics and the in-process doorbell go through here, so
//! `RUSTFLAGS="--cfg loom"` swaps them for loom's model-checked versions (as in the `bytes`
//! crate's `src/loom.rs`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex};

/// One busy-wait step: a CPU pause hint (a scheduling point under loom).
#[inline]
pub(crate) fn spin_step() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
