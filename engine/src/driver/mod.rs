//! The I/O driver. `uring/` is everything that touches `io_uring` (typed operations that own
//! their buffers and descriptors until the kernel's completion); `sock.rs` is plain socket
//! setup (listen, connect, options) and the direct non-blocking I/O of hot connections;
//! `token.rs` names who an operation's completions are for.

pub(crate) mod sock;
pub(crate) mod token;
pub(crate) mod uring;
