//! Errors: configuration errors name the setting; operation errors name the connection or
//! stream and the cause.

use quinn_proto::StreamId;

/// A configuration the endpoint cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting is out of range or unusable.
    #[error("QUIC setting {setting}: {why}")]
    Setting {
        /// The setting, e.g. `QuicSettings::idle_timeout`.
        setting: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused a certificate, key or protocol setting.
    #[error("QUIC setting {setting}: {source}")]
    Tls {
        /// The setting, e.g. `ServerConfig::identity`.
        setting: &'static str,
        /// rustls' error.
        source: rustls::Error,
    },
}

/// An operation on a connection or stream that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    /// The connection handle names no live connection (closed and drained, or never opened).
    #[error("no such QUIC connection (closed or never opened)")]
    NoConnection,
    /// The endpoint has no client configuration, so it cannot connect.
    #[error("this QUIC endpoint has no ClientConfig: it cannot connect")]
    NotAClient,
    /// quinn-proto refused to start a connection.
    #[error("QUIC connect failed: {0}")]
    Connect(String),
    /// The stream is closed or was never opened in this direction.
    #[error("QUIC stream {0} is closed or unknown")]
    ClosedStream(StreamId),
    /// The peer asked us to stop sending on the stream (STOP_SENDING with this code).
    #[error("QUIC stream {stream}: peer stopped reading (code {code})")]
    Stopped {
        /// The stream.
        stream: StreamId,
        /// The peer's application error code.
        code: u64,
    },
    /// The connection is closed or closing; no more stream operations.
    #[error("QUIC connection lost: {0}")]
    ConnectionLost(String),
    /// Datagrams are off on this connection (ours or the peer's setting) or too large.
    #[error("QUIC datagram not sent: {0}")]
    Datagram(String),
}
