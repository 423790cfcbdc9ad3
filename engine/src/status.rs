//! The outcome of a failed call: a status code and a message.

use std::borrow::Cow;

pub use netron_codec::StatusCode;

/// A failed call: a gRPC-style status code and a human-readable message.
///
/// Equality compares the code and the message. A status also remembers, privately, whether
/// this side produced it for a local cause (connection closed, request refused before
/// sending, core stopped, handshake refused or timed out), so that [`crate::CallError`] and
/// [`crate::ConnectError`] blame the right side; a status read from the wire, or made with
/// [`Status::new`], is the peer's (or a handler's) own.
///
/// So a status is made with its constructors, never as a literal (which could not say where
/// it came from):
///
/// ```compile_fail
/// # use netron_engine::{Status, StatusCode};
/// let s = Status { code: StatusCode::Internal, message: "x".into() };
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Status {
    /// The code.
    pub code: StatusCode,
    /// What happened, for people.
    pub message: Cow<'static, str>,
    origin: Origin,
}

impl PartialEq for Status {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message
    }
}

impl Eq for Status {}

/// Where a failure arose, when this side produced it for a local cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Origin {
    /// A status as such: the peer's answer, a handler's, or a deadline.
    #[default]
    Status,
    /// The connection is closed, closing or going away.
    Closed,
    /// Refused before anything was sent (a limit of the connection).
    Refused,
    /// The core is not running.
    EngineStopped,
    /// The peer refused the handshake; the status is the peer's.
    HandshakeRefused,
    /// The handshake did not complete within `ProtocolConfig::handshake_timeout`.
    HandshakeTimeout,
    /// The transport's TLS handshake failed (`quic://`).
    Tls,
}

impl Status {
    /// A status with a code and message.
    pub fn new(code: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            origin: Origin::Status,
        }
    }

    /// The same status, marked as produced here for a local cause.
    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Where this status arose (see [`Origin`]).
    pub(crate) fn origin(&self) -> Origin {
        self.origin
    }
    /// `InvalidArgument` with a message.
    pub fn invalid_argument(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::InvalidArgument, message)
    }
    /// `NotFound` with a message.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NotFound, message)
    }
    /// `Internal` with a message.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::Internal, message)
    }
    /// `Unavailable` with a message.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::Unavailable, message)
    }
    /// `DeadlineExceeded` with a message.
    pub fn deadline_exceeded(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::DeadlineExceeded, message)
    }
}
