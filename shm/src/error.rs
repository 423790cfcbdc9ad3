//! The one error type of the crate.

/// What went wrong with a ring, a segment or a rendezvous.
///
/// `Full` and `Timeout` are ordinary back-pressure results: retry later. Every other variant means
/// the connection is unusable: drop it (and reconnect if that makes sense).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer process is gone: its end of the liveness socket closed (exit, crash or `kill -9`).
    #[error(
        "the peer process is gone (its liveness socket closed); drop this connection and reconnect"
    )]
    PeerGone,
    /// The peer wrote something into shared memory that breaks the ring's rules.
    #[error(
        "shared-memory segment is corrupt: {what}; the connection was closed (the peer is faulty or malicious)"
    )]
    Corrupt {
        /// Which rule the segment broke.
        what: &'static str,
    },
    /// The ring has no room for the record right now.
    #[error(
        "ring is full; let the consumer catch up and retry, or use reserve_wait() with a deadline"
    )]
    Full,
    /// The record can never fit in this ring.
    #[error(
        "record of {len} bytes is larger than the ring allows ({max} bytes); raise the ring capacity or split the message"
    )]
    TooLarge {
        /// The requested payload length.
        len: usize,
        /// The largest payload this ring accepts.
        max: usize,
    },
    /// A record lent with [`Producer::lend`](crate::Producer::lend) is outstanding: commit or
    /// cancel it before reserving again (a usage error of this side, not the peer's).
    #[error(
        "a lent record is outstanding on this ring; call commit_lent() or cancel_lent() before reserving again"
    )]
    Lent,
    /// `commit_lent` or `commit_lent_part` was called with nothing lent (no
    /// [`Producer::lend`](crate::Producer::lend) outstanding): a usage error of this side.
    #[error("nothing is lent on this ring; call lend() before commit_lent() or commit_lent_part()")]
    NotLent,
    /// The deadline passed before the operation could complete.
    #[error("deadline passed before the operation could complete; retry or give up")]
    Timeout,
    /// The connection was closed earlier (after a corrupt segment or by `close()`).
    #[error("connection was closed after an earlier error or by close(); open a new connection")]
    Closed,
    /// The rendezvous did not follow the protocol (bad hello, bad reply, missing descriptors).
    #[error(
        "shared-memory rendezvous failed: {what}; check that both sides run the same netron-shm version"
    )]
    Handshake {
        /// What was wrong.
        what: &'static str,
    },
    /// The server refused this client by its rules (its `allow_uids` list): on the client,
    /// what the server's reply said; on the server, which rule refused it. Not a protocol
    /// fault: retrying as the same user will be refused again.
    #[error("the server refused the connection: {what}")]
    Refused {
        /// Which rule refused it.
        what: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid netron-shm configuration: {what}")]
    Config {
        /// Which value and why.
        what: &'static str,
    },
    /// Another listener serves this name (a live endpoint is never shared or taken over).
    #[error("address in use: {what} already listens on {name}; stop it or choose another name")]
    AddrInUse {
        /// The name as given to `bind`.
        name: String,
        /// Who holds it.
        what: &'static str,
    },
    /// A system call failed.
    #[error("I/O error during {op}: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The error from the operating system.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the name of the operation that failed.
    pub(crate) fn io(op: &'static str, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            op,
            source: source.into(),
        }
    }

    /// `true` when the connection cannot be used any more (everything except `Full`,
    /// `Timeout` and `TooLarge`).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Full | Error::Timeout | Error::TooLarge { .. } | Error::Config { .. }
        )
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
