//! netron-shm: shared-memory duplex rings (work in progress).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
