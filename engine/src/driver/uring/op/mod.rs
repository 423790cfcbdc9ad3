//! The typed operations, one per file (after monoio's `driver/op/`). Each owns what the kernel
//! reads or writes (descriptors, buffers) for as long as it is in the driver's slab, builds its
//! own submission from that, and turns each of its completions into an [`Event`].
//!
//! Building an entry is safe; pushing it is the one unsafe step, in [`super::Uring`], which
//! pushes only entries built here from resources the slab keeps until the final completion.

mod accept;
mod cancel;
mod eventfd;
mod poll;
mod recv;
mod send;
mod timeout;

use io_uring::squeue;

pub(crate) use accept::Accept;
pub(crate) use cancel::Cancel;
pub(crate) use eventfd::EventfdRead;
pub(crate) use poll::Poll;
pub(crate) use recv::RecvMulti;
pub(crate) use send::Send;
pub(crate) use timeout::Timeout;

use crate::driver::Event;
use crate::driver::lifecycle::Lifecycle;

/// An operation and its resources.
pub(crate) enum Op {
    Accept(Accept),
    RecvMulti(RecvMulti),
    Send(Send),
    EventfdRead(EventfdRead),
    Poll(Poll),
    Timeout(Timeout),
    Cancel(Cancel),
}

/// What one completion did to an operation.
pub(super) struct Step {
    /// What to tell the owner (`None`: nothing, e.g. an ignored operation's completion).
    pub event: Option<Event>,
    /// The operation is over: its slot may go.
    pub finished: bool,
    /// The operation submits again (a send writing the rest of its buffer).
    pub resubmit: bool,
}

impl Op {
    /// The submission for this operation's current state (`bgid`: the provided-buffer group).
    pub(super) fn sqe(&mut self, bgid: u16) -> squeue::Entry {
        match self {
            Op::Accept(o) => o.sqe(),
            Op::RecvMulti(o) => o.sqe(bgid),
            Op::Send(o) => o.sqe(),
            Op::EventfdRead(o) => o.sqe(),
            Op::Poll(o) => o.sqe(),
            Op::Timeout(o) => o.sqe(),
            Op::Cancel(o) => o.sqe(),
        }
    }

    /// Handles one completion. Resources handed back to the owner leave the operation only
    /// when it is `finished` (the kernel is done with them).
    pub(super) fn complete(&mut self, state: Lifecycle, result: i32, flags: u32) -> Step {
        let ignored = state == Lifecycle::Ignored;
        match self {
            Op::Accept(o) => o.complete(ignored, result, flags),
            Op::RecvMulti(o) => o.complete(ignored, result, flags),
            Op::Send(o) => o.complete(ignored, result, flags),
            Op::EventfdRead(o) => o.complete(ignored, result),
            Op::Poll(o) => o.complete(ignored, result, flags),
            Op::Timeout(o) => o.complete(ignored, result),
            Op::Cancel(_) => Step {
                event: None,
                finished: true,
                resubmit: false,
            },
        }
    }

    /// The driver goes away with this operation still in the kernel: leak the memory the
    /// kernel may still touch (descriptors are closed: the kernel holds its own reference to
    /// the file of an operation in flight).
    pub(super) fn leak_memory(self) {
        match self {
            Op::Send(o) => o.leak_memory(),
            Op::EventfdRead(o) => o.leak_memory(),
            Op::Timeout(o) => o.leak_memory(),
            Op::Accept(_) | Op::RecvMulti(_) | Op::Poll(_) | Op::Cancel(_) => {}
        }
    }
}
