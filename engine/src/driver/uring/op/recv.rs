//! Multishot receive into the provided-buffer ring: one submission, a completion per chunk of
//! bytes, each naming the buffer the kernel picked.

use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use io_uring::{cqueue, opcode, squeue, types};

use super::Step;
use crate::driver::Event;

/// Receives on `fd` (kept open until the final completion) into the driver's buffer ring.
pub(crate) struct RecvMulti {
    fd: Rc<OwnedFd>,
}

impl RecvMulti {
    pub(crate) fn new(fd: Rc<OwnedFd>) -> RecvMulti {
        RecvMulti { fd }
    }

    pub(super) fn sqe(&mut self, bgid: u16) -> squeue::Entry {
        opcode::RecvMulti::new(types::Fd(self.fd.as_raw_fd()), bgid).build()
    }

    pub(super) fn complete(&mut self, ignored: bool, result: i32, flags: u32) -> Step {
        let more = cqueue::more(flags);
        // An ignored receive's buffer is recycled by the driver (`Uring::complete`).
        Step {
            event: Some(Event::Received {
                result,
                buf: cqueue::buffer_select(flags),
                more,
            })
            .filter(|_| !ignored),
            finished: !more,
            resubmit: false,
        }
    }
}
