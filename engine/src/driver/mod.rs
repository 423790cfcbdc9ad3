//! The I/O driver: typed operations that own their buffers and descriptors until their final
//! completion, and the completions they produce. Two backends offer the same operations:
//! `uring/` (everything that touches `io_uring`) and `epoll/` (readiness, for hosts where
//! io_uring is blocked). [`Driver`] is the one the layers above hold; they name only
//! [`Driver`], [`Completion`], [`Event`] and [`OpId`]. `token.rs` names who an operation's
//! completions are for; `lifecycle.rs` is the operation slot both backends keep.

pub(crate) mod completion;
pub(crate) mod epoll;
pub(crate) mod lifecycle;
pub(crate) mod token;
pub(crate) mod uring;
mod wait;

pub(crate) use wait::clear_eventfd;

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

pub(crate) use completion::{Completion, Cqe, Event};
pub(crate) use lifecycle::OpId;
use token::Token;

/// The environment variable that picks the driver of cores configured with
/// [`DriverChoice::Auto`]: `io_uring`, `epoll` or `auto`.
pub const DRIVER_ENV: &str = "NETRON_DRIVER";

/// Which I/O backend a core runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriverKind {
    /// `io_uring`: completions, one `io_uring_enter` per turn for all of a turn's I/O.
    IoUring,
    /// epoll readiness plus one non-blocking system call per operation step.
    Epoll,
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        })
    }
}

/// Which I/O backend a core should run (`RuntimeConfig::with_driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DriverChoice {
    /// [`DRIVER_ENV`] if set, else io_uring, falling back to epoll when io_uring cannot be set
    /// up or used (a seccomp filter, `kernel.io_uring_disabled`, an old kernel); the core
    /// reports the fallback and its reason ([`crate::Core::driver`]).
    #[default]
    Auto,
    /// io_uring only: a core that cannot set it up fails to start, saying why.
    IoUring,
    /// epoll only.
    Epoll,
}

impl DriverChoice {
    /// Parses [`DRIVER_ENV`]'s value: `auto`, `io_uring` (or `uring`), `epoll`.
    pub fn parse(s: &str) -> Option<DriverChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(DriverChoice::Auto),
            "io_uring" | "uring" | "io-uring" => Some(DriverChoice::IoUring),
            "epoll" => Some(DriverChoice::Epoll),
            _ => None,
        }
    }
}

/// The backend a core runs and, if it fell back to epoll, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// The backend.
    pub kind: DriverKind,
    /// Why io_uring was not used although the choice allowed it (`Auto`), e.g. "io_uring is
    /// not available: io_uring_setup is refused (permission denied) ...".
    pub fallback: Option<String>,
}

/// The driver could not be set up.
#[derive(Debug)]
pub(crate) enum SetupError {
    /// The ring itself.
    Ring(uring::RingError),
    /// The receive buffer ring, or the epoll instance.
    Io(io::Error),
    /// [`DRIVER_ENV`] holds a value that names no driver.
    Env(String),
}

/// One core's I/O backend.
#[derive(Debug)]
pub(crate) enum Driver {
    Uring(uring::Uring),
    Epoll(epoll::Epoll, Option<String>),
}

/// Runs `$e` with `$d` bound to whichever backend `$self` is.
macro_rules! backend {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Driver::Uring($d) => $e,
            Driver::Epoll($d, _) => $e,
        }
    };
}

impl Driver {
    /// The backend `choice` names (resolving `Auto` through [`DRIVER_ENV`] and then by trying
    /// io_uring first), with `entries` submission entries (io_uring) and `recv_buffers`
    /// receive buffers of `recv_buffer_size` bytes.
    pub(crate) fn new(
        choice: DriverChoice,
        entries: u32,
        recv_buffers: u16,
        recv_buffer_size: usize,
    ) -> Result<Driver, SetupError> {
        let choice = match choice {
            DriverChoice::Auto => match std::env::var(DRIVER_ENV) {
                Ok(v) => DriverChoice::parse(&v).ok_or_else(|| {
                    SetupError::Env(format!(
                        "{DRIVER_ENV}={v:?} names no driver (use io_uring, epoll or auto)"
                    ))
                })?,
                Err(_) => DriverChoice::Auto,
            },
            c => c,
        };
        let epoll = |fallback| {
            epoll::Epoll::new(recv_buffers, recv_buffer_size)
                .map(|e| Driver::Epoll(e, fallback))
                .map_err(SetupError::Io)
        };
        match choice {
            DriverChoice::IoUring => {
                uring::Uring::new(entries, recv_buffers, recv_buffer_size).map(Driver::Uring)
            }
            DriverChoice::Epoll => epoll(None),
            DriverChoice::Auto => {
                match uring::Uring::new(entries, recv_buffers, recv_buffer_size) {
                    Ok(u) => Ok(Driver::Uring(u)),
                    Err(SetupError::Ring(e)) => epoll(Some(e.to_string())),
                    Err(SetupError::Io(e)) => epoll(Some(format!(
                        "io_uring's receive buffer ring could not be registered: {e}"
                    ))),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Which backend this is and why, if it is a fallback.
    pub(crate) fn info(&self) -> DriverInfo {
        match self {
            Driver::Uring(_) => DriverInfo {
                kind: DriverKind::IoUring,
                fallback: None,
            },
            Driver::Epoll(_, why) => DriverInfo {
                kind: DriverKind::Epoll,
                fallback: why.clone(),
            },
        }
    }

    /// Operations not finished yet (including ignored ones).
    #[allow(dead_code)] // the backends' own tests use theirs
    pub(crate) fn in_flight(&self) -> usize {
        backend!(self, d => d.in_flight())
    }

    /// Enters made because the submission queue was full (io_uring; 0 on epoll).
    pub(crate) fn full_submits(&self) -> u64 {
        match self {
            Driver::Uring(u) => u.full_submits(),
            Driver::Epoll(..) => 0,
        }
    }

    /// Accepts one connection on `listener`.
    pub(crate) fn accept(&mut self, listener: &Rc<OwnedFd>, tag: Token) -> OpId {
        backend!(self, d => d.accept(listener, tag))
    }

    /// Receives on `fd` into the receive buffers until cancelled, failed or at EOF.
    pub(crate) fn recv_multi(&mut self, fd: &Rc<OwnedFd>, tag: Token) -> OpId {
        backend!(self, d => d.recv_multi(fd, tag))
    }

    /// Writes `buf[off..]` (not empty) to `fd`, with `SendZc` if `zero_copy` (io_uring only);
    /// the buffer comes back in the final [`Event::Sent`].
    pub(crate) fn send(
        &mut self,
        fd: &Rc<OwnedFd>,
        buf: Vec<u8>,
        off: usize,
        zero_copy: bool,
        tag: Token,
    ) -> OpId {
        match self {
            Driver::Uring(u) => u.send(fd, buf, off, zero_copy, tag),
            Driver::Epoll(e, _) => e.send(fd, buf, off, tag),
        }
    }

    /// Reads the counter of the eventfd `fd` into `buf` (returned in [`Event::EventfdRead`]).
    pub(crate) fn eventfd_read(&mut self, fd: &Rc<OwnedFd>, buf: Box<[u8; 8]>, tag: Token) -> OpId {
        backend!(self, d => d.eventfd_read(fd, buf, tag))
    }

    /// Waits (once) for one of `events` (`libc::POLLIN`, ...) on `fd`.
    #[allow(dead_code)] // the shm doorbells and the epoll bridge use it
    pub(crate) fn poll(&mut self, fd: &Rc<OwnedFd>, events: u32, tag: Token) -> OpId {
        backend!(self, d => d.poll(fd, events, tag))
    }

    /// Completes after `after` (with `-ETIME`).
    pub(crate) fn timeout(&mut self, after: Duration, tag: Token) -> OpId {
        backend!(self, d => d.timeout(after, tag))
    }

    /// Cancels `op` (a no-op if it already finished); its final completion still arrives.
    pub(crate) fn cancel(&mut self, op: OpId) {
        backend!(self, d => d.cancel(op))
    }

    /// The owner lost interest in `op`: its completions are consumed by the driver.
    #[allow(dead_code)] // closes wait for their operations for now
    pub(crate) fn forget(&mut self, op: OpId) {
        backend!(self, d => d.forget(op))
    }

    /// The first `len` bytes of receive buffer `bid`, lent by an [`Event::Received`].
    pub(crate) fn recv_data(&self, bid: u16, len: usize) -> Option<&[u8]> {
        backend!(self, d => d.recv_data(bid, len))
    }

    /// Gives receive buffer `bid` back.
    pub(crate) fn recycle(&mut self, bid: u16) {
        backend!(self, d => d.recycle(bid))
    }

    /// Moves every pending completion into `out` (cleared first).
    pub(crate) fn drain(&mut self, out: &mut Vec<Cqe>) {
        backend!(self, d => d.drain(out))
    }

    /// Applies one drained completion: `Some` with what to tell the owner.
    pub(crate) fn complete(&mut self, c: Cqe) -> Option<Completion> {
        backend!(self, d => d.complete(c))
    }

    /// Submissions queued and not yet handed to the kernel (io_uring; 0 on epoll, whose
    /// operations start at once).
    pub(crate) fn queued(&mut self) -> u32 {
        match self {
            Driver::Uring(u) => u.queued(),
            Driver::Epoll(..) => 0,
        }
    }

    /// Whether a polling core must enter even with nothing to submit: io_uring says so in
    /// shared memory; readiness can only be learnt from `epoll_wait`, so on epoll always,
    /// except that a turn that already read hot connections directly (`hot`) lets the waits
    /// back off while they find nothing ([`epoll::Epoll::should_poll`]).
    pub(crate) fn kernel_has_work(&mut self, hot: bool) -> bool {
        match self {
            Driver::Uring(u) => u.kernel_has_work(),
            Driver::Epoll(e, _) => !hot || e.should_poll(),
        }
    }

    /// Submits what is queued and runs completions, without waiting (one system call).
    pub(crate) fn submit_nowait(&mut self, to_submit: u32) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.submit_nowait(to_submit),
            Driver::Epoll(e, _) => e.wait(Duration::ZERO),
        }
    }

    /// Submits what is queued and waits up to `timeout` for a completion.
    pub(crate) fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.submit_and_wait(timeout),
            Driver::Epoll(e, _) => e.wait(timeout),
        }
    }
}
