//! Errors of the operations that are not the engine's setup: connecting ([`ConnectError`]) and
//! calling ([`CallError`]). Each says which side is to blame and names the limit or setting
//! involved; a failure the peer sent stays a [`Status`] inside.

use std::time::Duration;

use crate::status::Origin;
use crate::{EndpointError, Status, StatusCode};

/// Connecting ([`crate::Client::connect`], [`crate::Core::connect`]) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint string is invalid (nothing was attempted).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The transport could not connect (refused, unreachable, no such socket file or
    /// `inproc://` name, out of descriptors...): the OS error is the source.
    #[error("connect to {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The error of the socket (or in-process) connect.
        #[source]
        source: std::io::Error,
    },
    /// The peer refused the handshake; `status` is its code and reason.
    #[error("{endpoint} refused the handshake: {status}")]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The peer's code and reason.
        status: Status,
    },
    /// The connection and handshake did not complete in time; `setting` names the bound that
    /// expired (`ProtocolConfig::connect_timeout`, `ProtocolConfig::handshake_timeout`, or the
    /// timeout argument of the call).
    #[error("connect to {endpoint}: not connected within {setting} ({timeout:?})")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The bound that expired.
        timeout: Duration,
        /// Which setting or argument set it.
        setting: &'static str,
    },
    /// The TLS handshake of a `quic://` connection failed, on either side: this side refused
    /// the peer's certificate (not signed by a CA of `ClientConfig::trust`, not valid for the
    /// host name, expired) or the peer refused ours (mutual TLS without or with an untrusted
    /// `ClientConfig::identity`), or no common ALPN. `reason` says which side refused, the
    /// TLS alert, and the setting to check.
    #[error("connect to {endpoint}: the TLS handshake failed: {reason}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// Which side refused, why, and what to check.
        reason: String,
    },
    /// The connection closed before the handshake completed (the peer hung up, or spoke
    /// something other than Netron); `reason` says what was seen.
    #[error("connect to {endpoint}: the connection closed during the handshake: {reason}")]
    Closed {
        /// The endpoint.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// Called from one of the engine's own core threads, where waiting would deadlock.
    #[error(
        "Client::connect blocks; calling it from one of the engine's core threads would \
         deadlock (connect before, or from another thread)"
    )]
    OnCoreThread,
    /// The engine's core that would own the connection is not running.
    #[error("the engine core is not running: {reason}")]
    EngineStopped {
        /// Why it stopped.
        reason: String,
    },
}

impl ConnectError {
    /// The failure of a connect as the core reported it (its status carries the origin).
    pub(crate) fn from_core(endpoint: String, s: Status, timeout: Duration) -> Self {
        match s.origin() {
            Origin::HandshakeRefused => ConnectError::Refused {
                endpoint,
                status: s,
            },
            Origin::HandshakeTimeout => ConnectError::Timeout {
                endpoint,
                timeout,
                setting: "ProtocolConfig::handshake_timeout",
            },
            Origin::EngineStopped => ConnectError::EngineStopped {
                reason: s.message.into_owned(),
            },
            Origin::Tls => ConnectError::Tls {
                endpoint,
                reason: s.message.into_owned(),
            },
            Origin::Status | Origin::Closed | Origin::Refused => ConnectError::Closed {
                endpoint,
                reason: s.message.into_owned(),
            },
        }
    }

    /// The transport's connect failed: a timeout names `setting`, a TLS failure (a
    /// [`TlsFailure`] inside the error) is [`ConnectError::Tls`], anything else is I/O.
    pub(crate) fn from_io(
        endpoint: String,
        e: std::io::Error,
        timeout: Duration,
        setting: &'static str,
    ) -> Self {
        if let Some(tls) = e.get_ref().and_then(|x| x.downcast_ref::<TlsFailure>()) {
            ConnectError::Tls {
                endpoint,
                reason: tls.0.clone(),
            }
        } else if e.kind() == std::io::ErrorKind::TimedOut {
            ConnectError::Timeout {
                endpoint,
                timeout,
                setting,
            }
        } else {
            ConnectError::Io {
                endpoint,
                source: e,
            }
        }
    }
}

/// A TLS handshake failure carried inside the `io::Error` of a transport's connect, so
/// [`ConnectError::from_io`] makes it [`ConnectError::Tls`] (the text says which side refused
/// and why).
#[derive(Debug)]
pub(crate) struct TlsFailure(pub String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// A call failed. The peer's answer (and a passed deadline) is a [`CallError::Status`]; the
/// other variants are causes on this side, each holding the status the call ended with (so
/// [`Status::from`] loses nothing, for async handlers that `?` a call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The peer answered with this failure (its handler's status, an unknown service or
    /// method...), or the call's deadline passed (`DeadlineExceeded`: the call was cancelled
    /// on the wire).
    #[error("{0}")]
    Status(Status),
    /// Refused on this side before anything was sent, by a limit of the connection: a request
    /// above the peer's negotiated `max_frame_size` (or other negotiated limit), more calls in
    /// flight than the peer's `max_concurrent_calls`, or output beyond
    /// `ProtocolConfig::max_backlog_bytes`. The message names the limit; the connection and
    /// its other calls go on.
    #[error("refused before sending: {0}")]
    Refused(Status),
    /// The connection is closed, closing or going away (GoAway), or closed before the reply
    /// arrived; the message says why (a dead peer, the peer's error, this side's close...).
    #[error("{0}")]
    Closed(Status),
    /// The engine's core that owns the connection is not running (stopped, or its ring
    /// failed).
    #[error("{0}")]
    EngineStopped(Status),
    /// A blocking call from a handler on the connection's own core, which would deadlock
    /// (use the async call).
    #[error("{0}")]
    WouldDeadlock(Status),
}

impl CallError {
    /// The status the call ended with.
    pub fn status(&self) -> &Status {
        match self {
            CallError::Status(s)
            | CallError::Refused(s)
            | CallError::Closed(s)
            | CallError::EngineStopped(s)
            | CallError::WouldDeadlock(s) => s,
        }
    }

    /// The status code the call ended with.
    pub fn code(&self) -> StatusCode {
        self.status().code
    }

    /// A call's failure status, classified by where it arose.
    pub(crate) fn from_status(s: Status) -> Self {
        match s.origin() {
            Origin::Status | Origin::HandshakeRefused | Origin::HandshakeTimeout => {
                CallError::Status(s)
            }
            Origin::Refused => CallError::Refused(s),
            Origin::Closed | Origin::Tls => CallError::Closed(s),
            Origin::EngineStopped => CallError::EngineStopped(s),
        }
    }
}

impl From<CallError> for Status {
    fn from(e: CallError) -> Status {
        match e {
            CallError::Status(s)
            | CallError::Refused(s)
            | CallError::Closed(s)
            | CallError::EngineStopped(s)
            | CallError::WouldDeadlock(s) => s,
        }
    }
}
