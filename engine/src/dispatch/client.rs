//! Client-side interceptors: code around every call a [`crate::Client`]'s channels make
//! (before sending, after the outcome), on the caller's thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netron_codec::hpack::HeaderList;

use crate::{CallError, CallOptions, Response, Status};

/// Code that runs around every call made through the channels of a
/// [`crate::Client`] it is installed on ([`crate::Client::with_interceptor`]): add or read
/// request metadata, refuse a call locally, read the response metadata, time the call.
///
/// Both hooks run on the caller's thread (never on a core). `before` hooks run in
/// installation order, `after` hooks in reverse, so the first installed is the outermost.
/// A `before` that returns `Err` refuses the call before anything is sent: the later hooks
/// do not run, the `after` hooks of those that ran do (seeing the refusal), and the caller
/// gets [`CallError::Refused`] with that status. Resolving a requirement through `$sys`
/// is a call like any other, so it is intercepted too.
///
/// Applies to [`crate::Method::call`], [`crate::Method::call_into`],
/// [`crate::Method::call_with`], [`crate::Method::call_async`] (the `after` hooks run when
/// its future resolves, on the thread that polls it; not if it is dropped first) and the
/// [`crate::Channel`] calls built on them; not to a [`crate::Peer`]'s calls.
///
/// Cost: nothing when none is installed (one emptiness check per call). With any installed,
/// a call goes the way of [`crate::Method::call_with`] (its request metadata copied to
/// reach the core, the reply copied into the response) plus one clock read at each end.
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Runs before the call is sent.
    ///
    /// # Errors
    ///
    /// The status the call is refused with (nothing is sent).
    fn before(&self, call: &mut Outgoing<'_>) -> Result<(), Status> {
        let _ = call;
        Ok(())
    }
    /// Runs once the call's outcome is known (a reply, the peer's status, a local failure).
    /// For [`crate::Method::call_async`]: on the thread that polls the future (possibly a
    /// core's, for a future awaited in an async handler), so it must not block.
    fn after(&self, call: &mut Returned<'_>) {
        let _ = call;
    }
}

/// A call about to be sent (see [`ClientInterceptor::before`]).
#[derive(Debug)]
pub struct Outgoing<'a> {
    service: &'a str,
    method: &'a str,
    deadline: Option<Duration>,
    metadata: &'a mut HeaderList,
}

impl Outgoing<'_> {
    /// The service the call goes to (`name@VERSION`, resolved).
    pub fn service(&self) -> &str {
        self.service
    }
    /// The method.
    pub fn method(&self) -> &str {
        self.method
    }
    /// The call's deadline.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
    /// The value of the last request metadata field named `name`.
    pub fn metadata(&self, name: &str) -> Option<&[u8]> {
        crate::service::last(self.metadata, name)
    }
    /// Adds a request metadata field (a name starting with `:` fails the call with
    /// `InvalidArgument`, as in [`CallOptions::metadata`]).
    pub fn insert(&mut self, name: &str, value: &[u8]) {
        self.metadata.push(name.as_bytes(), value);
    }
}

/// A call whose outcome is known (see [`ClientInterceptor::after`]).
#[derive(Debug)]
pub struct Returned<'a> {
    service: &'a str,
    method: &'a str,
    result: &'a mut Result<Vec<u8>, CallError>,
    metadata: &'a HeaderList,
    elapsed_us: u64,
}

impl Returned<'_> {
    /// The service the call went to.
    pub fn service(&self) -> &str {
        self.service
    }
    /// The method.
    pub fn method(&self) -> &str {
        self.method
    }
    /// The reply, or the failure.
    pub fn outcome(&self) -> Result<&[u8], &CallError> {
        self.result.as_deref()
    }
    /// Replaces the outcome with `status` (the caller gets [`CallError::Status`]).
    pub fn fail(&mut self, status: Status) {
        *self.result = Err(CallError::Status(status));
    }
    /// The value of the last response metadata field named `name`.
    pub fn metadata(&self, name: &str) -> Option<&[u8]> {
        crate::service::last(self.metadata, name)
    }
    /// Microseconds from just before the first `before` hook to the outcome.
    pub fn elapsed_us(&self) -> u64 {
        self.elapsed_us
    }
}

/// The client interceptors of a [`crate::Client`] and its channels (cloning is a
/// reference-count increment).
#[derive(Clone, Default)]
pub(crate) struct ClientInterceptors(Arc<Vec<Arc<dyn ClientInterceptor>>>);

impl std::fmt::Debug for ClientInterceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientInterceptors({})", self.0.len())
    }
}

impl ClientInterceptors {
    pub(crate) fn push(&mut self, i: Arc<dyn ClientInterceptor>) {
        Arc::make_mut(&mut self.0).push(i);
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs `call` (which sends with the options given) inside the hooks.
    pub(crate) fn run(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
        call: impl FnOnce(&CallOptions) -> Response,
    ) -> Response {
        let (opts, started) = match self.begin(service, method, options) {
            Ok(b) => b,
            Err(e) => return Response::new(Err(e), HeaderList::default()),
        };
        let (mut result, response) = call(&opts).into_parts();
        self.end(service, method, &mut result, &response, started);
        Response::new(result, response)
    }

    /// Runs the `before` hooks: the options to send with (the caller's plus what the hooks
    /// added) and when the call started, or the refusal (after the `after` hooks of the
    /// interceptors that ran before the refusing one).
    pub(crate) fn begin(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
    ) -> Result<(CallOptions, Instant), CallError> {
        let started = Instant::now();
        let mut metadata = options.get_metadata().clone();
        let deadline = options.get_deadline();
        for (i, ic) in self.0.iter().enumerate() {
            let mut out = Outgoing {
                service,
                method,
                deadline,
                metadata: &mut metadata,
            };
            if let Err(status) = ic.before(&mut out) {
                let mut result = Err(CallError::Refused(status));
                let none = HeaderList::default();
                self.after(i, (service, method), &mut result, &none, started);
                return Err(result.err().unwrap_or_else(|| {
                    CallError::Refused(Status::internal(
                        "a client interceptor accepted a call another refused",
                    ))
                }));
            }
        }
        let mut opts = CallOptions::new();
        if let Some(d) = deadline {
            opts = opts.deadline(d);
        }
        for (n, v) in metadata.iter() {
            opts = opts.metadata(&String::from_utf8_lossy(n), v);
        }
        Ok((opts, started))
    }

    /// Runs the `after` hooks, last first, on the call's outcome.
    pub(crate) fn end(
        &self,
        service: &str,
        method: &str,
        result: &mut Result<Vec<u8>, CallError>,
        metadata: &HeaderList,
        started: Instant,
    ) {
        self.after(self.0.len(), (service, method), result, metadata, started);
    }

    /// The `after` hooks of the first `n`, last first.
    fn after(
        &self,
        n: usize,
        (service, method): (&str, &str),
        result: &mut Result<Vec<u8>, CallError>,
        metadata: &HeaderList,
        started: Instant,
    ) {
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        for ic in self.0[..n].iter().rev() {
            ic.after(&mut Returned {
                service,
                method,
                result,
                metadata,
                elapsed_us,
            });
        }
    }
}

/// The `after` hooks of a [`crate::Method::call_async`] call, run when its future resolves.
pub(crate) struct PendingAfter {
    chain: ClientInterceptors,
    service: String,
    method: String,
    started: Instant,
}

impl std::fmt::Debug for PendingAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAfter")
            .field("service", &self.service)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl PendingAfter {
    /// Runs the `before` hooks of `chain` for a call of `names` (service, method): the
    /// hooks still to run and the request metadata to send, or the refusal.
    pub(crate) fn begin(
        chain: &ClientInterceptors,
        (service, method): (&[u8], &[u8]),
        deadline: Option<Duration>,
    ) -> Result<(Box<PendingAfter>, HeaderList), CallError> {
        let service = String::from_utf8_lossy(service).into_owned();
        let method = String::from_utf8_lossy(method).into_owned();
        let options = deadline.map_or_else(CallOptions::new, |d| CallOptions::new().deadline(d));
        let (opts, started) = chain.begin(&service, &method, &options)?;
        opts.check().map_err(CallError::Refused)?;
        let metadata = opts.get_metadata().clone();
        Ok((
            Box::new(PendingAfter {
                chain: chain.clone(),
                service,
                method,
                started,
            }),
            metadata,
        ))
    }

    /// Runs the `after` hooks on the call's outcome.
    pub(crate) fn run(
        self,
        result: &mut Result<Vec<u8>, CallError>,
        metadata: Option<&HeaderList>,
    ) {
        let empty = HeaderList::default();
        self.chain.end(
            &self.service,
            &self.method,
            result,
            metadata.unwrap_or(&empty),
            self.started,
        );
    }
}
