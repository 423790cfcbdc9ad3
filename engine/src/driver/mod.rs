//! The I/O driver. `uring/` is everything that touches `io_uring` (typed operations that own
//! their buffers and descriptors until the kernel's completion); `token.rs` names who an
//! operation's completions are for. A readiness (epoll) backend would sit beside `uring/`
//! with the same operations and completions.

pub(crate) mod token;
pub(crate) mod uring;
