//! What a caller's own event loop needs to wait for this ring (see `core/wait.rs`).

use std::io;
use std::os::fd::RawFd;

use super::Uring;

impl Uring {
    /// Registers `eventfd` with the ring: the kernel signals it when completions are posted
    /// and, with DEFER_TASKRUN, when completion work is queued for this thread (which a poll
    /// of the ring's own descriptor does not report). Costs an eventfd signal per batch of
    /// completions from then on, so it is done only for a core that is waited on this way.
    pub(crate) fn register_wait_eventfd(&self, eventfd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(eventfd)
    }

    /// Whether completions or completion work wait already (a wait would not sleep).
    pub(crate) fn has_pending(&mut self) -> bool {
        !self.ring.completion().is_empty() || self.kernel_has_work()
    }
}
