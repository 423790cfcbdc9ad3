//! Waiting for a driver from outside the core's loop: the descriptor to watch and how long a
//! wait on it may last (see `core/wait.rs`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::Driver;

impl Driver {
    /// The descriptor that becomes readable when this driver has completions to run: on
    /// io_uring the eventfd in `registered` (created and registered with the ring on first
    /// use), on epoll the epoll descriptor.
    pub(crate) fn wait_fd(&mut self, registered: &mut Option<OwnedFd>) -> io::Result<RawFd> {
        match self {
            Driver::Uring(u) => {
                if let Some(fd) = registered {
                    return Ok(fd.as_raw_fd());
                }
                let fd = rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
                )?;
                u.register_wait_eventfd(fd.as_raw_fd())?;
                Ok(registered.insert(fd).as_raw_fd())
            }
            Driver::Epoll(e, _) => Ok(e.epoll_fd()),
        }
    }

    /// The longest a wait on [`Driver::wait_fd`] may last for this driver's sake: zero when
    /// work is already waiting, the next user-space timeout on epoll; `None`: no limit.
    pub(crate) fn wait_bound(&mut self, now: Instant) -> Option<Duration> {
        match self {
            Driver::Uring(u) => u.has_pending().then_some(Duration::ZERO),
            Driver::Epoll(e, _) => e.wait_bound(now),
        }
    }
}

/// Empties the eventfd `fd` (non-blocking; nothing to read is fine).
pub(crate) fn clear_eventfd(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}
