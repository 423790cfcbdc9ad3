//! A relative timeout in the ring (`-ETIME` when it expires, `-ECANCELED` when cancelled).
//! The timespec is owned by the operation: the kernel reads it at submission.

use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::Step;
use crate::driver::Event;

/// Completes after `after`.
pub(crate) struct Timeout {
    ts: Box<types::Timespec>,
}

impl Timeout {
    pub(crate) fn new(after: Duration) -> Timeout {
        Timeout {
            ts: Box::new(
                types::Timespec::new()
                    .sec(after.as_secs())
                    .nsec(after.subsec_nanos()),
            ),
        }
    }

    pub(super) fn sqe(&mut self) -> squeue::Entry {
        opcode::Timeout::new(&*self.ts).build()
    }

    pub(super) fn complete(&mut self, ignored: bool, result: i32) -> Step {
        Step {
            event: (!ignored).then_some(Event::TimedOut { result }),
            finished: true,
            resubmit: false,
        }
    }

    pub(super) fn leak_memory(self) {
        std::mem::forget(self.ts);
    }
}
