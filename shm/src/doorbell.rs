//! Doorbells: how a producer wakes a consumer that announced it sleeps.
//!
//! The announce/recheck protocol itself lives in the consumer (`Consumer::wait`) and the
//! producer (`Producer::publish`); see docs/shm.md, "Wakeups". A `Bell` is only the primitive
//! to block on and to ring: an eventfd for shared-memory connections (so an engine can wait on
//! it inside io_uring), a mutex + condvar for in-process channels and loom models.

use std::os::fd::BorrowedFd;
use std::time::Instant;

#[cfg(not(loom))]
use crate::error::Error;
use crate::error::Result;
use crate::liveness::Link;

/// A wake-up primitive shared by one ring's producer and consumer.
pub(crate) trait Bell: Send + Sync {
    /// Wakes the consumer (if it sleeps in `sleep`, or the next time it does).
    fn ring(&self) -> Result<()>;
    /// Blocks until rung, the deadline passes (`Timeout`) or the peer is gone (`PeerGone`).
    /// May return `Ok` spuriously: the caller rechecks the ring.
    fn sleep(&self, link: &Link, deadline: Option<Instant>) -> Result<()>;
    /// The fd to watch, if the bell is an eventfd.
    fn fd(&self) -> Option<BorrowedFd<'_>>;
}

/// The in-process doorbell: a flag under a mutex and a condvar.
#[derive(Debug, Default)]
pub(crate) struct ThreadBell {
    rung: crate::sync::Mutex<bool>,
    cond: crate::sync::Condvar,
}

impl Bell for ThreadBell {
    fn ring(&self) -> Result<()> {
        let mut rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        *rung = true;
        drop(rung);
        self.cond.notify_one();
        Ok(())
    }

    fn sleep(&self, link: &Link, deadline: Option<Instant>) -> Result<()> {
        let mut rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        while !*rung {
            link.check()?;
            match deadline {
                #[cfg(not(loom))]
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout);
                    }
                    rung = self
                        .cond
                        .wait_timeout(rung, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                _ => rung = self.cond.wait(rung).unwrap_or_else(|e| e.into_inner()),
            }
        }
        *rung = false;
        Ok(())
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

#[cfg(not(loom))]
pub(crate) use eventfd::EventBell;

#[cfg(not(loom))]
mod eventfd {
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::time::Instant;

    use rustix::event::{PollFd, PollFlags};
    use rustix::io::Errno;

    use super::Bell;
    use crate::error::{Error, Result};
    use crate::liveness::{Link, gone_flags, timespec};

    /// The shared-memory doorbell: a non-blocking eventfd, polled together with the liveness
    /// socket so a sleeping consumer wakes up when the peer dies.
    #[derive(Debug)]
    pub(crate) struct EventBell {
        fd: OwnedFd,
    }

    impl EventBell {
        /// A new eventfd (close-on-exec, non-blocking).
        pub(crate) fn new() -> Result<Self> {
            use rustix::event::{EventfdFlags, eventfd};
            let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(|e| Error::io("eventfd", e))?;
            Ok(Self { fd })
        }

        /// Wraps an fd received from the peer, forcing it non-blocking so a hostile fd (a full
        /// pipe, say) can never block `ring`.
        pub(crate) fn from_peer(fd: OwnedFd) -> Result<Self> {
            use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
            let fl = fcntl_getfl(&fd).map_err(|e| Error::io("fcntl(F_GETFL) on a doorbell", e))?;
            fcntl_setfl(&fd, fl | OFlags::NONBLOCK)
                .map_err(|e| Error::io("fcntl(F_SETFL) on a doorbell", e))?;
            if let Ok(target) = std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            )) {
                if target.as_os_str() != "anon_inode:[eventfd]" {
                    return Err(Error::Handshake {
                        what: "the peer sent a doorbell that is not an eventfd",
                    });
                }
            }
            Ok(Self { fd })
        }

        /// Borrowed fd (to send it with `SCM_RIGHTS`).
        pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }

        fn drain(&self) -> Result<()> {
            let mut buf = [0u8; 8];
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(()),
                Err(e) => Err(Error::io("read from the doorbell eventfd", e)),
            }
        }
    }

    impl Bell for EventBell {
        fn ring(&self) -> Result<()> {
            match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
                // AGAIN: the counter is saturated, so the consumer is woken anyway.
                Ok(_) | Err(Errno::AGAIN) => Ok(()),
                Err(e) => Err(Error::io("write to the doorbell eventfd", e)),
            }
        }

        fn sleep(&self, link: &Link, deadline: Option<Instant>) -> Result<()> {
            link.check()?;
            let timeout = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout);
                    }
                    Some(left)
                }
                None => None,
            };
            let ts = timespec(timeout);
            let Some(sock) = link.fd() else {
                // An in-process channel (`channel_with_doorbell`): no liveness socket; a
                // dropped producer rings this bell after marking the link, so polling the
                // eventfd alone cannot miss the peer going away.
                let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
                match rustix::event::poll(&mut fds, ts.as_ref()) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => return Err(Error::io("poll on the doorbell", e)),
                }
                if !fds[0].revents().is_empty() {
                    self.drain()?;
                }
                return link.check();
            };
            let mut fds = [
                PollFd::new(&self.fd, PollFlags::IN),
                PollFd::new(&sock, gone_flags()),
            ];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(Error::io("poll on the doorbell", e)),
            }
            if !fds[1].revents().is_empty() {
                return Err(link.peer_gone());
            }
            if !fds[0].revents().is_empty() {
                self.drain()?;
            }
            Ok(())
        }

        fn fd(&self) -> Option<BorrowedFd<'_>> {
            Some(self.fd.as_fd())
        }
    }
}
