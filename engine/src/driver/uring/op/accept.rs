//! Accept on a listening socket (one-shot; the completion handling also fits a multishot one).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use io_uring::{cqueue, opcode, squeue, types};

use super::Step;
use crate::driver::Event;

/// Accepts one connection on `listener`, which it keeps open until its final completion.
pub(crate) struct Accept {
    listener: Rc<OwnedFd>,
}

impl Accept {
    pub(crate) fn new(listener: Rc<OwnedFd>) -> Accept {
        Accept { listener }
    }

    pub(super) fn sqe(&mut self) -> squeue::Entry {
        opcode::Accept::new(
            types::Fd(self.listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
    }

    pub(super) fn complete(&mut self, ignored: bool, result: i32, flags: u32) -> Step {
        let more = cqueue::more(flags);
        let fd = if result >= 0 {
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(result) })
        } else {
            Err(-result)
        };
        Step {
            // An ignored accept's connection is closed here (`fd` drops), not leaked.
            event: (!ignored).then_some(Event::Accepted { fd, more }),
            finished: !more,
            resubmit: false,
        }
    }
}
