//! Request and response metadata on the caller's side.

use std::time::Duration;

use netron_codec::hpack::HeaderList;

use crate::{CallError, Status};

/// Options of one call made with [`crate::Method::call_with`] or [`crate::Core::call_with`]:
/// its deadline and the request metadata sent with it.
///
/// Metadata fields travel HPACK-encoded in the Request frame's header block after
/// `:service` and `:method`; the handler reads them with [`crate::Request::metadata`].
/// Encoding costs no allocation for up to 6 fields (one beyond); through a
/// [`crate::Channel`], handing the list to the core costs a copy of it (three allocations).
///
/// ```
/// use netron_engine::CallOptions;
/// use std::time::Duration;
/// let opts = CallOptions::new()
///     .deadline(Duration::from_secs(1))
///     .metadata("tenant", b"blue");
/// assert_eq!(opts.get_metadata().get(b"tenant"), Some(&b"blue"[..]));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    deadline: Option<Duration>,
    metadata: HeaderList,
    idempotent: bool,
}

impl CallOptions {
    /// No deadline, no metadata.
    pub fn new() -> Self {
        Self::default()
    }
    /// The call fails with `DeadlineExceeded` (and is cancelled on the wire) if no answer
    /// arrives within `deadline`; the server gets the time left with the request (in
    /// microseconds up to about 35 minutes, then in milliseconds rounded up, at most
    /// 2^31 − 1 ms, about 24.8 days, protocol.md §8.1: a longer deadline reaches the server
    /// as that; the caller's own wait still honours the full `deadline`). Without one a call waits as long as the peer takes (a
    /// deferred reply that is leaked, not dropped, is then never answered).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
    /// Adds a request metadata field. Names are case-sensitive bytes (`authorization`, not
    /// `Authorization`, is what [`crate::middleware::Auth`] reads). Names starting with `:` are
    /// reserved for the protocol's pseudo-headers: a call carrying one fails with
    /// `InvalidArgument` before anything is sent. The header list (service, method and
    /// metadata: name + value + 32 bytes per field, RFC 7541 §4.1) must stay within
    /// `max_header_list_size` (16 KiB by default; a receiver closes the connection beyond its
    /// own): above it the call fails with `ResourceExhausted` before anything is sent.
    pub fn metadata(mut self, name: &str, value: &[u8]) -> Self {
        self.metadata.push(name.as_bytes(), value);
        self
    }
    /// Marks the call idempotent (running it twice does what running it once does): the
    /// Request carries the IDEMPOTENT flag (docs/protocol.md §8), and on a `quic://`
    /// connection that resumed with 0-RTT (`netron_quic::ClientConfig::zero_rtt`) the call
    /// goes in the first flight, before the handshake completes. A server serves such an
    /// early call only if the method is declared idempotent too
    /// ([`crate::Service::idempotent`]), else it answers `Unavailable` without running it
    /// (docs/quic.md "0-RTT"). 0-RTT data can be replayed by an attacker: mark only calls
    /// that are safe to run twice.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
    /// Whether the call is marked idempotent ([`CallOptions::idempotent`]).
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }
    /// The deadline, if any.
    pub fn get_deadline(&self) -> Option<Duration> {
        self.deadline
    }
    /// The request metadata.
    pub fn get_metadata(&self) -> &HeaderList {
        &self.metadata
    }

    /// `InvalidArgument` if a metadata name is reserved.
    pub(crate) fn check(&self) -> Result<(), Status> {
        match self.metadata.iter().find(|(n, _)| n.first() == Some(&b':')) {
            Some((n, _)) => Err(Status::invalid_argument(format!(
                "request metadata name {:?} starts with ':' (reserved for pseudo-headers)",
                String::from_utf8_lossy(n)
            ))),
            None => Ok(()),
        }
    }
}

/// The outcome of a call made with [`crate::Method::call_with`]: the reply payload or the
/// failure, and the response metadata the callee sent (its handler through
/// [`crate::Reply::metadata`], its interceptors through [`crate::After::insert`]).
#[derive(Debug, Clone)]
pub struct Response {
    result: Result<Vec<u8>, CallError>,
    metadata: HeaderList,
}

impl Response {
    pub(crate) fn new(result: Result<Vec<u8>, CallError>, metadata: HeaderList) -> Self {
        Self { result, metadata }
    }
    /// The reply payload, or the failure.
    ///
    /// # Errors
    ///
    /// The call's failure (as for [`crate::Method::call`]).
    pub fn result(&self) -> Result<&[u8], &CallError> {
        self.result.as_deref()
    }
    /// The reply payload or the failure, owned.
    ///
    /// # Errors
    ///
    /// The call's failure (as for [`crate::Method::call`]).
    pub fn into_result(self) -> Result<Vec<u8>, CallError> {
        self.result
    }
    /// The outcome and the response metadata.
    pub(crate) fn into_parts(self) -> (Result<Vec<u8>, CallError>, HeaderList) {
        (self.result, self.metadata)
    }
    /// The response metadata (empty for a failed call: Error frames carry no header block).
    pub fn metadata(&self) -> &HeaderList {
        &self.metadata
    }
    /// The value of the last response metadata field named `name` (what an interceptor
    /// added overrides the handler's field of the same name).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        crate::service::last(&self.metadata, name)
    }
}
