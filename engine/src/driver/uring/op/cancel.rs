//! Cancellation of another operation by its `user_data` (`AsyncCancel`). The target's final
//! completion (`-ECANCELED`, or its natural end if it won the race) still arrives and releases
//! its resources; the cancellation's own completion is consumed by the driver.

use io_uring::{opcode, squeue};

/// Cancels the operation whose `user_data` is `target`.
pub(crate) struct Cancel {
    target: u64,
}

impl Cancel {
    pub(crate) fn new(target: u64) -> Cancel {
        Cancel { target }
    }

    pub(super) fn sqe(&mut self) -> squeue::Entry {
        opcode::AsyncCancel::new(self.target).build()
    }
}
