//! The I/O driver. `uring/` is everything that touches `io_uring` (typed operations that own
//! their buffers and descriptors until the kernel's completion); `token.rs` names who an
//! operation's completions are for. A readiness (epoll) backend would sit beside `uring/`
//! with the same operations and completions.

pub(crate) mod token;
pub(crate) mod uring;

/// The completion-based backend every layer above uses: they name only [`Driver`],
/// [`Completion`], [`Event`] and [`OpId`], so a readiness (epoll) backend offering the same
/// operations can take its place without touching them.
pub(crate) use uring::{Completion, Cqe, Event, OpId, Uring as Driver};
