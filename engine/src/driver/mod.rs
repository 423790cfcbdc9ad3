//! The I/O driver: everything that touches `io_uring`.

pub(crate) mod buf_ring;
pub(crate) mod ring;
pub(crate) mod sock;
pub(crate) mod token;
