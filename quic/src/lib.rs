//! netron-quic: Netron over QUIC (docs/protocol.md §27, docs/quic.md), sans-IO.
//!
//! [`QuicEndpoint`] wraps `quinn_proto::Endpoint` and its connections: no sockets, no threads,
//! no clock reads. The driver (the engine core, or a test) feeds it UDP datagrams and timer
//! expiries with the current `Instant`, sends the datagrams it produces and reacts to its
//! [`QuicEvent`]s. TLS 1.3 is rustls with the `ring` provider; ALPN is `netron/1`
//! ([`ALPN`]); server certificates are always verified ([`Trust`]); mutual TLS is
//! [`ClientAuth`], and the client's verified chain is [`QuicEndpoint::peer_identity`].
//!
//! ```no_run
//! # use netron_quic::*;
//! # fn demo(server: ServerConfig, client: ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let now = std::time::Instant::now();
//! let mut s = QuicEndpoint::new(Some(&server), None)?;
//! let mut c = QuicEndpoint::new(None, Some(&client))?;
//! let conn = c.connect(now, "127.0.0.1:4433".parse()?, "localhost")?;
//! let mut buf = Vec::new();
//! while let Some(t) = c.poll_transmit(now, &mut buf) {
//!     // send buf[..t.len] to t.destination; feed what arrives to handle_datagram
//! #   let _ = t;
//! }
//! # let _ = (conn, &mut s); Ok(()) }
//! ```

mod config;
mod endpoint;
mod error;
mod event;
mod header_streams;
pub mod router;
mod stream;

pub use config::{
    ALPN, CID_LEN, CidHook, ClientAuth, ClientConfig, Identity, QuicSettings, RetryPolicy,
    SESSION_CACHE_ENTRIES, ServerConfig, Trust,
};
pub use endpoint::{
    ALPN_REFUSED, Admission, ConnId, EcnCodepoint, EndpointStats, MAX_QUEUED_RESPONSES,
    QuicEndpoint, Transmit,
};
pub use error::{ConfigError, QuicError};
pub use event::{CloseReason, QuicEvent};
pub use quinn_proto::StreamId;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use stream::Read;
