//! netron-engine: the thread-per-core `io_uring` engine.
//!
//! Each [`Core`] owns one `io_uring`, its listeners and connections, timers and an inbox for
//! work from other threads. An [`Engine`] runs N cores on pinned threads; a latency-critical
//! program can instead drive a [`Core`] from its own loop ([`Core::run_once`]).
//!
//! ```
//! use netron_engine::{Engine, Service};
//! use std::time::Duration;
//!
//! let calc = Service::new("calc", "1.2.0")?.unary("add", |req, reply| {
//!     reply.write(&[req.payload().iter().fold(0u8, |a, b| a.wrapping_add(*b))]);
//!     Ok(())
//! });
//! // Port 0: the OS picks a free port; `endpoints()` says which.
//! let engine = Engine::builder().service(calc).listen("tcp://127.0.0.1:0").build()?;
//! let channel = engine.client().connect(&engine.endpoints()[0].to_string())?;
//! let sum = channel.call("calc@1.2.0", "add", &b"\x02\x03"[..], Some(Duration::from_secs(5)))?;
//! assert_eq!(sum, [5]);
//! engine.shutdown(Duration::from_secs(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The README's Rust examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

// So are those of docs/configuration.md.
#[cfg(doctest)]
#[doc = include_str!("../../docs/configuration.md")]
struct ConfigurationDoctests;

mod client;
mod config;
mod conn;
mod core;
mod dispatch;
mod driver;
mod endpoint;
mod engine;
mod error;
mod events;
mod executor;
mod identity;
mod inbox;
/// The in-process record transport, `inproc://name`: engines of one process connect over
/// netron-shm rings on the heap instead of sockets (docs/architecture.md, "`inproc://name`").
/// Listening and connecting go through the usual endpoint strings; this module has the raw
/// access for hand-written peers (tests, protocol tools).
pub mod inproc {
    pub use crate::transport::inproc::{RING_BYTES, RawListener, connect_raw, listen_raw};
}
pub mod middleware;
/// The shared-memory record transport, `shm://name`: engines of different processes of one
/// host connect over netron-shm segments (docs/shm.md, "In the engine"). Listening and
/// connecting go through the usual endpoint strings; this module has the raw access for
/// hand-written peers (tests, protocol tools).
pub mod shm {
    pub use crate::transport::shm::{
        HANDSHAKE_TIMEOUT, PeerCred, RawListener, connect_raw, listen_raw,
    };
}
mod peer;
mod service;
mod slot;
mod stats;
mod status;
mod streams;
mod sys;
mod timer;
mod transport;
pub mod typed;

pub use bytes::Bytes;
pub use client::{CallFuture, Channel, Client, Method};
pub use config::{
    ConfigError, CoreConfig, DEFAULT_EARLY_WRITE_BYTES, DirectRecv, FrameBudget, IdlePolicy,
    ProtocolConfig, RuntimeConfig,
};
pub use core::{ConnId, Core, CoreError, CoreStream};
pub use dispatch::{
    After, AsyncInterceptor, Before, CallOptions, ClientInterceptor, DeferredReply,
    InterceptFuture, Interceptor, Outgoing, Response, Returned,
};
pub use driver::uring::RingError;
pub use driver::{DRIVER_ENV, DriverChoice, DriverInfo, DriverKind};
pub use endpoint::{Endpoint, EndpointError, ShmOptions};
pub use engine::{CoreFailure, Engine, EngineBuilder, EngineError};
pub use error::{CallError, ConnectError};
pub use events::{Event, EventConfig, RecvError, SlowPolicy, SubscribeOptions, Subscription};
pub use identity::PeerCertificates;
/// The handshake offers ([`ProtocolConfig::with_client`], [`ProtocolConfig::with_server`]):
/// header table size, limits, compression, features (`netron_codec::handshake`).
pub use netron_codec::handshake;
/// Header fields: request and response metadata ([`Request::headers`], [`Response::metadata`]).
pub use netron_codec::hpack::HeaderList;
/// The `quic://` TLS and QUIC settings ([`ProtocolConfig::with_quic_server`],
/// [`ProtocolConfig::with_quic_client`]): the `netron-quic` crate.
pub use netron_quic as quic;
pub use peer::Peer;
pub use service::{
    AsyncHandler, AsyncRequest, DeferredHandler, HandlerFuture, Reply, Request, Service,
    ServiceError, SyncHandler, Version,
};
pub use slot::CallSlot;
pub use stats::{CoreStats, DriverStats};
pub use status::{Status, StatusCode};
pub use streams::{StreamReceiver, StreamRequest, StreamSender, TrySendError};
