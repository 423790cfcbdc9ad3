//! What a caller's own event loop needs to wait for this driver (see `core/wait.rs`).

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::Epoll;

impl Epoll {
    /// The epoll descriptor: readable when a registered descriptor is ready.
    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    /// The longest a wait on [`Epoll::epoll_fd`] may last: zero when outcomes wait in user
    /// space already, else until the next timeout operation (kept in user space, so the
    /// descriptor does not report it); `None` without either.
    pub(crate) fn wait_bound(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        self.timers
            .peek()
            .map(|std::cmp::Reverse((at, _))| at.saturating_duration_since(now))
    }
}
