//! An 8-byte read of an eventfd (the core's inbox doorbell; later shm doorbells). The counter
//! buffer goes back to the owner with the completion, to be re-armed without allocating.

use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use io_uring::{opcode, squeue, types};

use super::Step;
use crate::driver::Event;

/// Reads the counter of the eventfd `fd` (kept open until the completion) into `buf`.
pub(crate) struct EventfdRead {
    fd: Rc<OwnedFd>,
    buf: Option<Box<[u8; 8]>>,
}

impl EventfdRead {
    pub(crate) fn new(fd: Rc<OwnedFd>, buf: Box<[u8; 8]>) -> EventfdRead {
        EventfdRead { fd, buf: Some(buf) }
    }

    pub(super) fn sqe(&mut self) -> squeue::Entry {
        let ptr = self
            .buf
            .as_mut()
            .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr());
        opcode::Read::new(types::Fd(self.fd.as_raw_fd()), ptr, 8).build()
    }

    pub(super) fn complete(&mut self, ignored: bool, result: i32) -> Step {
        let buf = self.buf.take();
        Step {
            event: buf
                .filter(|_| !ignored)
                .map(|buf| Event::EventfdRead { result, buf }),
            finished: true,
            resubmit: false,
        }
    }

    pub(super) fn leak_memory(self) {
        if let Some(b) = self.buf {
            std::mem::forget(b);
        }
    }
}
