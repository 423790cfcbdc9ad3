//! The outcome of a failed call: a status code and a message.

use std::borrow::Cow;

pub use netron_codec::StatusCode;

/// A failed call: a gRPC-style status code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Status {
    /// The code.
    pub code: StatusCode,
    /// What happened, for people.
    pub message: Cow<'static, str>,
}

impl Status {
    /// A status with a code and message.
    pub fn new(code: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
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
