//! What both backends hand the layers above: a [`Completion`] per finished step of an
//! operation, carrying the owner's token and a typed [`Event`]; and the opaque [`Cqe`] a
//! backend drains in bulk and turns into completions one at a time.

use std::os::fd::OwnedFd;

use super::lifecycle::OpId;
use super::token::Token;

/// What a completion means to the operation's owner.
#[derive(Debug)]
pub(crate) enum Event {
    /// An accept finished: the new connection or `errno`; `more`: the accept stays armed.
    Accepted {
        fd: Result<OwnedFd, i32>,
        more: bool,
    },
    /// A multishot receive delivered bytes (`result > 0`, in buffer `buf`: read it with
    /// [`super::Driver::recv_data`], give it back with [`super::Driver::recycle`]), EOF (`0`) or `-errno`;
    /// `more`: the receive stays armed.
    Received {
        result: i32,
        buf: Option<u16>,
        more: bool,
    },
    /// A send progressed. `wrote`: bytes written by one completed submission (or `-errno`),
    /// `None` for a zero-copy notification; `more`: a short write, the rest was resubmitted;
    /// `done`: the operation is over and the buffer is the owner's again.
    Sent {
        wrote: Option<i32>,
        more: bool,
        done: Option<Vec<u8>>,
    },
    /// An eventfd read finished (`result`: bytes read or `-errno`); the buffer comes back.
    EventfdRead { result: i32, buf: Box<[u8; 8]> },
    /// A poll fired (`result`: the ready events or `-errno`).
    #[cfg_attr(not(test), allow(dead_code))] // the shm doorbells and the epoll bridge use it
    Polled { result: i32, more: bool },
    /// A timeout expired (`-ETIME`) or was cancelled.
    TimedOut {
        #[cfg_attr(not(test), allow(dead_code))] // an expiry and a cancel end a retry alike
        result: i32,
    },
}

/// One completion for its owner.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The token the operation was started with.
    pub tag: Token,
    /// The operation (still valid until its final completion).
    #[cfg_attr(not(test), allow(dead_code))] // owners keep their own `OpId`s
    pub op: OpId,
    pub event: Event,
}

/// A raw completion queue entry, copied out of the ring (opaque to the layers above).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cqe {
    pub(in crate::driver) user_data: u64,
    pub(in crate::driver) result: i32,
    /// io_uring's CQE flags (`IORING_CQE_F_MORE`, `IORING_CQE_F_BUFFER` and the buffer id in
    /// the upper 16 bits); the epoll backend produces the same encoding.
    pub(in crate::driver) flags: u32,
}
