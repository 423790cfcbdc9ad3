//! Connection liveness: the Unix socket left open after the rendezvous, and the local
//! open / peer-gone / closed state shared by a connection's producer, consumer and doorbells.
//!
//! Nothing is ever sent on the socket after the rendezvous, so the socket becoming readable
//! (EOF, `POLLHUP`, `POLLRDHUP`, or stray bytes) means the peer is gone or misbehaving. The
//! kernel closes a dead process's sockets, so this works for `kill -9` too.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::error::{Error, Result};

const OPEN: u8 = 0;
const PEER_GONE: u8 = 1;
const CLOSED: u8 = 2;

/// Shared state of one connection (or of one in-process channel).
#[derive(Debug)]
pub(crate) struct Link {
    state: AtomicU8,
    sock: Option<UnixStream>,
}

/// The poll flags that mean "the peer is gone" on the liveness socket.
pub(crate) fn gone_flags() -> PollFlags {
    PollFlags::IN | PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR
}

/// A poll timeout, `None` meaning forever.
pub(crate) fn timespec(d: Option<Duration>) -> Option<Timespec> {
    d.map(|d| Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    })
}

impl Link {
    /// A link with no socket (in-process channel: the peer is "gone" when its half drops).
    pub(crate) fn local() -> Self {
        Self {
            state: AtomicU8::new(OPEN),
            sock: None,
        }
    }

    /// A link watching the rendezvous socket.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn with_socket(sock: UnixStream) -> Self {
        Self {
            state: AtomicU8::new(OPEN),
            sock: Some(sock),
        }
    }

    /// `true` for in-process channels.
    pub(crate) fn is_local(&self) -> bool {
        self.sock.is_none()
    }

    /// The liveness socket's fd, for an event loop to watch (readable = peer gone).
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }

    /// Errors if the connection is known to be unusable (peer gone or closed).
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        // Acquire pairs with the Release of `peer_gone`: an in-process producer publishes its
        // last records before marking itself gone, so whoever sees it gone also sees them.
        match self.state.load(Ordering::Acquire) {
            OPEN => Ok(()),
            PEER_GONE => Err(Error::PeerGone),
            _ => Err(Error::Closed),
        }
    }

    /// Errors only if the connection was closed locally (corruption or `close()`); a gone peer
    /// still lets the consumer drain what was published.
    #[inline]
    pub(crate) fn check_local(&self) -> Result<()> {
        if self.state.load(Ordering::Relaxed) == CLOSED {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Records that the peer is gone and returns the error to report.
    pub(crate) fn peer_gone(&self) -> Error {
        let _ = self
            .state
            .compare_exchange(OPEN, PEER_GONE, Ordering::Release, Ordering::Relaxed);
        self.check().err().unwrap_or(Error::PeerGone)
    }

    /// Closes the connection (the peer sees its liveness socket close) and returns `Corrupt`.
    pub(crate) fn corrupt(&self, what: &'static str) -> Error {
        self.close();
        Error::Corrupt { what }
    }

    /// Closes the connection locally: every later operation fails with `Closed`, and the peer's
    /// liveness socket reports us gone.
    pub(crate) fn close(&self) {
        self.state.store(CLOSED, Ordering::Relaxed);
        if let Some(s) = &self.sock {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Polls the liveness socket for up to `timeout` (`Some(ZERO)` = just look); errors if the
    /// peer is gone. Without a socket, sleeps for `timeout` and reports the local state.
    pub(crate) fn poll_peer(&self, timeout: Duration) -> Result<()> {
        self.check()?;
        let Some(sock) = &self.sock else {
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            if !timeout.is_zero() {
                std::thread::sleep(timeout);
            }
            return self.check();
        };
        let mut fds = [PollFd::new(sock, gone_flags())];
        let ts = timespec(Some(timeout));
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::io("poll on the liveness socket", e)),
        }
        if !fds[0].revents().is_empty() {
            return Err(self.peer_gone());
        }
        Ok(())
    }
}
