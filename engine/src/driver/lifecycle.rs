//! The life of one operation between its submission and its final completion (after monoio's
//! `driver/uring/lifecycle.rs`).
//!
//! An operation's state sits in a slot of the driver's slab, keyed by the `user_data` of its
//! submissions: slot index in the low 32 bits, the slot's generation in the high 32. The slot
//! holds the operation's resources (descriptors, buffers) from submission to the final
//! completion, whatever its owner does meanwhile:
//!
//! ```text
//!   submit ──> Submitted ──(final CQE)──> freed, resources returned to the owner
//!                  │
//!             forget(op)                  (the owner lost interest: closed, dropped)
//!                  v
//!               Ignored  ──(final CQE)──> freed, resources dropped by the driver
//! ```
//!
//! A multishot operation (receive) stays `Submitted` across its intermediate completions
//! (`IORING_CQE_F_MORE`); a zero-copy send stays until its notification completion. When the
//! driver itself is dropped with operations still in the kernel, their resources are leaked
//! rather than freed under the kernel.

use crate::driver::token::Token;

/// `user_data` reserved for the setup probe (never a slot).
pub(crate) const PROBE: u64 = u64::MAX;

/// One operation in the driver, as its owner names it (to cancel or forget it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpId {
    pub(in crate::driver) index: u32,
    pub(in crate::driver) generation: u32,
}

impl OpId {
    pub(in crate::driver) fn user_data(self) -> u64 {
        (self.generation as u64) << 32 | self.index as u64
    }

    pub(in crate::driver) fn from_user_data(v: u64) -> OpId {
        OpId {
            index: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// Whether the owner still wants the operation's completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::driver) enum Lifecycle {
    /// In the kernel; completions go to the owner.
    Submitted,
    /// In the kernel; the owner lost interest: completions are consumed by the driver and the
    /// resources dropped at the final one.
    Ignored,
}

/// A slot of the operation slab.
pub(in crate::driver) struct Slot<O> {
    pub generation: u32,
    pub state: Lifecycle,
    /// Who gets the completions (handed back unchanged with each).
    pub tag: Token,
    pub op: O,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_never_meets_the_probe() {
        let id = OpId {
            index: 7,
            generation: 0xdead_beef,
        };
        assert_eq!(OpId::from_user_data(id.user_data()), id);
        // Slab indices never reach u32::MAX, so no slot encodes to the probe.
        let top = OpId {
            index: u32::MAX - 1,
            generation: u32::MAX,
        };
        assert_ne!(top.user_data(), PROBE);
    }
}
