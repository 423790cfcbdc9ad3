//! libnetron: the C ABI of the Netron engine, declared in `include/netron.h`.
//!
//! C and C++ programs serve and call Netron services through this library without writing
//! Rust. Everything here is `extern "C"` with the `ntr_` prefix; docs/ffi.md shows the API by
//! example and states the threading, ownership and versioning rules. The header is generated
//! from this crate by cbindgen (`tests/header.rs` regenerates it and fails when the committed
//! copy drifts).
//!
//! Conventions (those of rustls-ffi):
//! - every function returns an [`ntr_status`](status::ntr_status) (0 is `NTR_OK`), except
//!   `ntr_last_error` and `ntr_status_str`, which return text; out-parameters are written only
//!   on success;
//! - objects are opaque handles (a struct holding a 64-bit id, passed by value) looked up in
//!   generation-checked tables: a NULL pointer, a zeroed handle, a freed handle or a handle
//!   freed twice gives `NTR_NULL_ARGUMENT` or `NTR_INVALID_HANDLE`, never a crash;
//! - no Rust panic crosses the boundary: each entry point runs inside `catch_unwind` and a
//!   panic becomes `NTR_PANIC`;
//! - the text of the last failure on the calling thread is `ntr_last_error()`.
//!
//! What is not in the surface yet is listed in docs/ffi.md, "Gaps".
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// The C names are the API: `ntr_engine`, not `NtrEngine`.
#![allow(non_camel_case_types)]

mod buf;
mod client;
mod core;
mod core_prepared;
mod core_stream;
mod engine;
mod events;
mod guard;
mod handles;
mod idle;
mod server;
mod status;
mod stream_handlers;
mod streams;

pub use buf::*;
pub use client::*;
pub use core::*;
pub use core_prepared::*;
pub use core_stream::*;
pub use engine::*;
pub use events::*;
pub use idle::*;
pub use server::*;
pub use status::*;
pub use stream_handlers::*;
pub use streams::*;
