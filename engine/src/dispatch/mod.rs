//! The dispatch layer: every handler (sync, async or deferred) is invoked through it, with the
//! installed [`Interceptor`]s around the call (docs/architecture.md, "Dispatch").
//!
//! This is the mechanism: a trait and an installation point ([`crate::EngineBuilder::interceptor`],
//! [`crate::Core::with_dispatch`]). The ergonomic middleware API and ready-made interceptors
//! come with the `$sys`/middleware issue (18).

mod asynch;
mod call;
mod client;
mod deferred;

pub(crate) use asynch::{AsyncChain, AsyncInterceptors, wrap as wrap_async};
pub use asynch::{AsyncInterceptor, InterceptFuture};
pub use call::{CallOptions, Response};
pub use client::{ClientInterceptor, Outgoing, Returned};
pub(crate) use client::{ClientInterceptors, PendingAfter};
pub use deferred::DeferredReply;
pub(crate) use deferred::{Caller, Origin};

use std::sync::Arc;
use std::time::Instant;

use netron_codec::hpack::{Header, HeaderList};

use crate::Status;

/// Code that runs around every call a core serves.
///
/// Order, as with tower layers and gRPC interceptors: [`Interceptor::before`] runs in the
/// order the interceptors were installed, [`Interceptor::after`] in the reverse order, so the
/// first installed is the outermost. An interceptor whose `before` rejects the call (returns a
/// [`Status`]) stops it: the handler and the later interceptors do not run, the `after` of
/// the interceptors that ran before it does (in reverse order, seeing the rejection), and the
/// caller gets the status. Both hooks run on the core that serves the call and must not
/// block. A panic in a hook fails the call with `Internal`, like a panicking handler.
///
/// Costs (docs/architecture.md, "Dispatch"): with no interceptor installed nothing is added
/// to a call; with interceptors, two clock reads per call, plus what the hooks themselves do.
pub trait Interceptor: Send + Sync + 'static {
    /// Runs before the handler: may read the request's headers, add request metadata the
    /// handler sees ([`Before::insert`]), or reject the call.
    ///
    /// # Errors
    ///
    /// The status the caller gets instead of running the handler.
    fn before(&self, call: &mut Before<'_>) -> Result<(), Status> {
        let _ = call;
        Ok(())
    }
    /// Runs after the handler (for async and deferred handlers: when they answer, or when
    /// the call ends by its deadline or a Cancel; not when its connection closes): sees the
    /// outcome and the time the call took, may add response metadata or replace the outcome.
    fn after(&self, call: &mut After<'_>) {
        let _ = call;
    }
}

/// A call before its handler runs (see [`Interceptor::before`]).
#[derive(Debug)]
pub struct Before<'a> {
    id: u32,
    peer: u64,
    cred: Option<crate::shm::PeerCred>,
    certs: Option<&'a crate::PeerCertificates>,
    headers: &'a mut HeaderList,
}

impl Before<'_> {
    /// The call id on its connection.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// An opaque key of the calling connection (the peer): the same for every call on
    /// one connection, distinct between connections open at the same time in this process
    /// (a closed connection's key may come back later). 0 for calls not on a core's
    /// connection.
    pub fn peer(&self) -> u64 {
        self.peer
    }
    /// The calling process's credentials (user, group and process id, `SO_PEERCRED`) on an
    /// `shm://` connection, to decide who may call what (docs/shm.md, "Who is calling");
    /// `None` on other transports.
    pub fn peer_cred(&self) -> Option<crate::shm::PeerCred> {
        self.cred
    }
    /// The caller's verified certificate chain on a `quic://` connection with mutual TLS
    /// (see [`crate::PeerCertificates`]), to decide what it may do; `None` on other
    /// transports, without a client certificate, and outside a core.
    pub fn peer_certificates(&self) -> Option<&crate::PeerCertificates> {
        self.certs
    }
    /// The `:service` the call is for (`name@VERSION`).
    pub fn service(&self) -> Option<&[u8]> {
        self.headers.service()
    }
    /// The `:method` the call is for.
    pub fn method(&self) -> Option<&[u8]> {
        self.headers.method()
    }
    /// The request's header fields (`:service`, `:method`, the caller's metadata, and what
    /// earlier interceptors added).
    pub fn headers(&self) -> &HeaderList {
        self.headers
    }
    /// The value of the last field named `name` (as [`crate::Request::metadata`]: what an
    /// earlier interceptor added overrides what the caller sent).
    pub fn metadata(&self, name: &str) -> Option<&[u8]> {
        crate::service::last(self.headers, name)
    }
    /// Adds request metadata visible to later interceptors and to the handler
    /// ([`crate::Request::headers`]). Reuses the connection's header buffer: no allocation
    /// once it has grown to fit.
    pub fn insert(&mut self, name: &str, value: &[u8]) {
        self.headers.push(name.as_bytes(), value);
    }
    /// Removes every request field named `name`, whoever sent it: for metadata only this
    /// interceptor may set (e.g. an identity it vouches for), so that a caller cannot supply
    /// it. No allocation.
    pub fn remove(&mut self, name: &str) {
        self.headers.remove(name.as_bytes());
    }
}

/// A call after its handler answered (see [`Interceptor::after`]).
#[derive(Debug)]
pub struct After<'a> {
    id: u32,
    request: Option<&'a HeaderList>,
    names: Option<&'a Names>,
    outcome: &'a mut Result<(), Status>,
    elapsed_us: u64,
    metadata: &'a mut HeaderList,
}

impl After<'_> {
    /// The call id on its connection.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The request's header fields, for sync and deferred handlers answered at once; `None`
    /// for calls answered later (async and deferred handlers), whose headers the connection
    /// no longer holds (the handler's [`crate::AsyncRequest::headers`] has them).
    pub fn request_headers(&self) -> Option<&HeaderList> {
        self.request
    }
    /// The `:service` the call was for (for every call, also those answered later).
    pub fn service(&self) -> Option<&[u8]> {
        match self.request {
            Some(h) => h.service(),
            None => self.names.map(|n| &n.0[..]),
        }
    }
    /// The `:method` the call was for (for every call, also those answered later).
    pub fn method(&self) -> Option<&[u8]> {
        match self.request {
            Some(h) => h.method(),
            None => self.names.map(|n| &n.1[..]),
        }
    }
    /// The outcome so far: `Ok` for a reply, the status otherwise.
    pub fn outcome(&self) -> Result<(), &Status> {
        self.outcome.as_ref().map(|_| ())
    }
    /// Microseconds from just before the first `before` hook to just after the handler
    /// answered (for async and deferred handlers: until the core got the answer).
    pub fn elapsed_us(&self) -> u64 {
        self.elapsed_us
    }
    /// Replaces the outcome with `status` (the reply is dropped; the caller gets `status`).
    pub fn fail(&mut self, status: Status) {
        *self.outcome = Err(status);
    }
    /// Adds response metadata, sent in the Response frame's header block (dropped if the
    /// call fails: Error frames carry no header block).
    pub fn insert(&mut self, name: &str, value: &[u8]) {
        self.metadata.push(name.as_bytes(), value);
    }
    /// The response metadata added so far (by the handler and by inner interceptors).
    pub fn metadata(&self) -> &HeaderList {
        self.metadata
    }
}

/// Metadata fields lent as a slice of [`Header`]s without allocating, up to this many.
const INLINE_FIELDS: usize = 8;

/// Calls `f` with `prefix` followed by the fields of `list`, as encoder input: on the stack
/// for up to [`INLINE_FIELDS`] fields in all, in one allocation beyond.
pub(crate) fn with_fields<R>(
    prefix: &[Header<'_>],
    list: &HeaderList,
    f: impl FnOnce(&[Header<'_>]) -> R,
) -> R {
    let n = prefix.len() + list.len();
    if n <= INLINE_FIELDS {
        let mut inline = [Header::new(b"", b""); INLINE_FIELDS];
        inline[..prefix.len()].copy_from_slice(prefix);
        for (slot, (name, value)) in inline[prefix.len()..].iter_mut().zip(list.iter()) {
            *slot = Header::new(name, value);
        }
        f(&inline[..n])
    } else {
        let fields: Vec<Header<'_>> = prefix
            .iter()
            .copied()
            .chain(list.iter().map(|(n, v)| Header::new(n, v)))
            .collect();
        f(&fields)
    }
}

/// The interceptors a dispatcher runs, in installation order; shared by the cores (cloning
/// is a reference-count increment).
#[derive(Clone, Default)]
pub(crate) struct Interceptors(Arc<Vec<Arc<dyn Interceptor>>>);

impl std::fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interceptors({})", self.0.len())
    }
}

/// A call's `:service` and `:method`.
type Names = (Box<[u8]>, Box<[u8]>);

/// The bookkeeping of one intercepted call: when it started, and the service's own
/// interceptors (the engine's come from the registry).
#[derive(Debug, Clone)]
pub(crate) struct Started {
    at: Instant,
    own: Interceptors,
    /// `:service` and `:method`, kept for calls answered later (their headers are gone by
    /// then): one allocation per such call with interceptors.
    names: Option<Box<Names>>,
}

impl Started {
    /// Keeps the call's `:service` and `:method` from `headers` for its `after` hooks.
    pub(crate) fn with_names(mut self, headers: &HeaderList) -> Self {
        let name = |v: Option<&[u8]>| Box::<[u8]>::from(v.unwrap_or_default());
        self.names = Some(Box::new((name(headers.service()), name(headers.method()))));
        self
    }
}

impl Interceptors {
    pub(crate) fn push(&mut self, i: Arc<dyn Interceptor>) {
        Arc::make_mut(&mut self.0).push(i);
    }

    /// Whether no interceptor is installed (then dispatch adds nothing to a call).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `i`-th interceptor of the chain `self` (the engine's, outermost) then `own` (the
    /// service's).
    fn nth<'a>(&'a self, own: &'a Interceptors, i: usize) -> &'a Arc<dyn Interceptor> {
        match self.0.get(i) {
            Some(ic) => ic,
            None => &own.0[i - self.0.len()],
        }
    }

    /// Runs every `before` hook in order: the engine's (`self`), then the service's (`own`).
    /// On a rejection, runs the `after` hooks of those that ran before it (reverse order)
    /// and returns the final status.
    pub(crate) fn before(
        &self,
        own: &Interceptors,
        id: u32,
        caller: Caller<'_>,
        headers: &mut HeaderList,
        response: &mut HeaderList,
    ) -> Result<Started, Status> {
        let started = Started {
            at: Instant::now(),
            own: own.clone(),
            names: None,
        };
        for i in 0..self.0.len() + own.0.len() {
            let ic = self.nth(own, i);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ic.before(&mut Before {
                    id,
                    peer: caller.peer,
                    cred: caller.cred,
                    certs: caller.certs,
                    headers,
                })
            }))
            .unwrap_or_else(|_| Err(Status::internal("an interceptor panicked")));
            if let Err(status) = r {
                let mut outcome = Err(status);
                self.after_from(i, id, Some(headers), &mut outcome, &started, response);
                return Err(outcome.err().unwrap_or_else(|| {
                    Status::internal("an interceptor accepted a call another rejected")
                }));
            }
        }
        Ok(started)
    }

    /// Runs every `after` hook in reverse order: the service's, then the engine's.
    pub(crate) fn after(
        &self,
        id: u32,
        request: Option<&HeaderList>,
        outcome: &mut Result<(), Status>,
        started: &Started,
        response: &mut HeaderList,
    ) {
        let n = self.0.len() + started.own.0.len();
        self.after_from(n, id, request, outcome, started, response);
    }

    /// Runs the `after` hooks of the first `n` interceptors of the chain, last first.
    fn after_from(
        &self,
        n: usize,
        id: u32,
        request: Option<&HeaderList>,
        outcome: &mut Result<(), Status>,
        started: &Started,
        response: &mut HeaderList,
    ) {
        let elapsed_us = u64::try_from(started.at.elapsed().as_micros()).unwrap_or(u64::MAX);
        for i in (0..n).rev() {
            let ic = self.nth(&started.own, i);
            let mut call = After {
                id,
                request,
                names: started.names.as_deref(),
                outcome,
                elapsed_us,
                metadata: response,
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ic.after(&mut call)))
                .is_err()
            {
                *outcome = Err(Status::internal("an interceptor panicked"));
            }
        }
    }
}
