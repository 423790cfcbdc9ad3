//! Readiness of a descriptor (`PollAdd`, one-shot): for descriptors io_uring cannot read
//! directly, and the building block of a readiness-style transport.

use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use io_uring::{cqueue, opcode, squeue, types};

use super::Step;
use crate::driver::Event;

/// Waits until `fd` (kept open until the completion) has one of `events` (`POLLIN`, ...).
pub(crate) struct Poll {
    fd: Rc<OwnedFd>,
    events: u32,
}

impl Poll {
    pub(crate) fn new(fd: Rc<OwnedFd>, events: u32) -> Poll {
        Poll { fd, events }
    }

    pub(super) fn sqe(&mut self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd.as_raw_fd()), self.events).build()
    }

    pub(super) fn complete(&mut self, ignored: bool, result: i32, flags: u32) -> Step {
        let more = cqueue::more(flags);
        Step {
            event: (!ignored).then_some(Event::Polled { result, more }),
            finished: !more,
            resubmit: false,
        }
    }
}
