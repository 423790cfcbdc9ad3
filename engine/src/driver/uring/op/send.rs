//! Send of one batch buffer, plain or zero-copy (`SendZc`), until all of it is written: a
//! short write is resubmitted for the rest by the operation itself. The buffer stays with the
//! operation until the kernel no longer reads it: after the last write's completion, and for
//! zero-copy after every notification completion too.

use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use io_uring::{cqueue, opcode, squeue, types};

use super::Step;
use crate::driver::Event;

/// Writes `buf[off..]` to `fd` (kept open until the final completion).
pub(crate) struct Send {
    fd: Rc<OwnedFd>,
    buf: Vec<u8>,
    off: usize,
    zero_copy: bool,
    /// A send of this operation is in the kernel.
    in_flight: bool,
    /// Zero-copy notifications still to come: the kernel may read `buf` until they arrive.
    notifs: u32,
    failed: bool,
}

impl Send {
    pub(crate) fn new(fd: Rc<OwnedFd>, buf: Vec<u8>, off: usize, zero_copy: bool) -> Send {
        Send {
            fd,
            buf,
            off,
            zero_copy,
            in_flight: false,
            notifs: 0,
            failed: false,
        }
    }

    pub(super) fn sqe(&mut self) -> squeue::Entry {
        self.in_flight = true;
        let rest = &self.buf[self.off.min(self.buf.len())..];
        let fd = types::Fd(self.fd.as_raw_fd());
        if self.zero_copy {
            opcode::SendZc::new(fd, rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
    }

    pub(super) fn complete(&mut self, ignored: bool, result: i32, flags: u32) -> Step {
        let mut wrote = None;
        let mut resubmit = false;
        if self.zero_copy && cqueue::notif(flags) {
            // The kernel no longer reads the buffer for one earlier zero-copy send.
            self.notifs = self.notifs.saturating_sub(1);
        } else {
            self.in_flight = false;
            if self.zero_copy && cqueue::more(flags) {
                self.notifs += 1;
            }
            if result < 0 {
                self.failed = true;
            } else {
                self.off += result as usize;
            }
            wrote = Some(result);
            // A short write (the peer's window is full): send the rest, unless nobody wants it.
            resubmit = !self.failed && !ignored && self.off < self.buf.len();
        }
        let finished = !resubmit
            && !self.in_flight
            && self.notifs == 0
            && (ignored || self.failed || self.off >= self.buf.len());
        let done = finished.then(|| std::mem::take(&mut self.buf));
        let event = (!ignored && (wrote.is_some() || done.is_some())).then_some(Event::Sent {
            wrote,
            more: resubmit,
            done,
        });
        Step {
            event,
            finished,
            resubmit,
        }
    }

    pub(super) fn leak_memory(self) {
        std::mem::forget(self.buf);
    }
}
