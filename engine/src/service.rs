//! Services `name@semver` with methods, and the registry a core dispatches through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use netron_codec::hpack::HeaderList;
use rustc_hash::FxHashMap;

use crate::Status;

/// A request as a sync handler sees it: everything is borrowed from the receive buffer, so it
/// cannot outlive the handler call:
///
/// Its parts borrow the receive buffer (`'a`), not the `Request`:
///
/// ```
/// fn payload_of<'a>(req: &netron_engine::Request<'a>) -> &'a [u8] {
///     req.payload()
/// }
/// ```
///
/// and nothing of it can be kept past the handler call:
///
/// ```compile_fail
/// // error: the payload is borrowed from the receive buffer for this call only
/// fn keep<'a>(req: &netron_engine::Request<'a>) -> &'static [u8] {
///     req.payload()
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Request<'a> {
    id: u32,
    payload: &'a [u8],
    headers: &'a HeaderList,
    deadline: Option<Duration>,
    /// The core and connection the request arrived on (`None` outside a core), for
    /// [`Request::peer`].
    origin: Option<crate::dispatch::Origin<'a>>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(
        id: u32,
        payload: &'a [u8],
        headers: &'a HeaderList,
        deadline: Option<Duration>,
        origin: Option<crate::dispatch::Origin<'a>>,
    ) -> Self {
        Self {
            id,
            payload,
            headers,
            deadline,
            origin,
        }
    }
    /// The peer that made this call, to call its services back over the same connection
    /// (see [`crate::Peer`]: a sync handler must not block on it, so only keep it or start
    /// [`crate::Peer::call_async`]; a blocking [`crate::Peer::call`] here fails at once).
    /// A reference-count increment, no allocation; nothing when not called.
    pub fn peer(&self) -> crate::Peer {
        self.origin.map_or_else(crate::Peer::detached, |o| {
            crate::Peer::new(o.inbox.clone(), o.conn)
        })
    }
    /// The calling process's credentials (user, group and process id, `SO_PEERCRED`) on an
    /// `shm://` connection, to decide what it may do (docs/shm.md, "Who is calling");
    /// `None` on other transports and outside a core. A copy, no system call.
    pub fn peer_cred(&self) -> Option<crate::shm::PeerCred> {
        self.origin.and_then(|o| o.cred)
    }
    /// The caller's certificate chain on a `quic://` connection, as TLS verified it against
    /// the server's `ClientAuth` CAs (mutual TLS; see [`crate::PeerCertificates`]), to decide
    /// what it may do; `None` on other transports, without a client certificate, and outside
    /// a core. A reference, no copy.
    pub fn peer_certificates(&self) -> Option<&crate::PeerCertificates> {
        self.origin.and_then(|o| o.certs)
    }
    /// The call id on its connection.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The request payload (decompressed if it arrived compressed).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The request's header fields: `:service`, `:method`, the caller's metadata, then any
    /// metadata the interceptors added (docs/architecture.md, "Dispatch").
    #[inline]
    pub fn headers(&self) -> &'a HeaderList {
        self.headers
    }
    /// The value of the last field named `name` (see [`Request::headers`]): a field an
    /// interceptor added overrides one of the same name the caller sent, so a caller cannot
    /// forge what an interceptor vouches for.
    #[inline]
    pub fn metadata(&self, name: &str) -> Option<&'a [u8]> {
        last(self.headers, name)
    }
    /// Time left before the caller gives up, as carried by the request (measured from when
    /// the request was read).
    #[inline]
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
}

/// Where a sync handler writes its reply: straight into the connection's send buffer.
///
/// Append-only: the bytes of other frames in the batch are out of reach, and appends stop at
/// the connection's negotiated `max_frame_size` (the call then fails with
/// `ResourceExhausted` naming that limit, and the connection carries on). It implements
/// [`std::io::Write`] for serialisers that write to a sink.
#[derive(Debug)]
pub struct Reply<'a, 'b> {
    buf: &'a mut netron_codec::PayloadBuf<'b>,
    written: usize,
    metadata: &'a mut HeaderList,
}

impl<'a, 'b> Reply<'a, 'b> {
    pub(crate) fn new(
        buf: &'a mut netron_codec::PayloadBuf<'b>,
        metadata: &'a mut HeaderList,
    ) -> Self {
        Self {
            buf,
            written: 0,
            metadata,
        }
    }
    /// Adds a response metadata field (sent HPACK-encoded in the Response frame's header
    /// block; the caller reads it with [`crate::Method::call_with`]). A reply with metadata
    /// costs one copy of the payload into a reused buffer (the header block goes first) and
    /// no allocation for up to 8 fields (docs/architecture.md, "Dispatch"); a reply without
    /// any costs nothing extra. Names are case-sensitive bytes. The fields together (name +
    /// value + 32 bytes each) must stay within `max_header_list_size` (16 KiB by default):
    /// above it the call fails with ResourceExhausted instead of the reply going out.
    pub fn metadata(&mut self, name: &str, value: &[u8]) {
        self.metadata.push(name.as_bytes(), value);
    }
    /// Appends reply bytes.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.written = self.written.saturating_add(bytes.len());
    }
    /// Appends `len` zero bytes and lets `fill` write them in place (for serialisers that need
    /// a sized slice). Nothing is appended if `len` exceeds [`Reply::remaining`].
    pub fn write_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        self.buf.append_with(len, fill);
        self.written = self.written.saturating_add(len);
    }
    /// Bytes that may still be appended before the reply exceeds the connection's
    /// `max_frame_size`.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }
    /// Reply bytes written so far (including any refused for exceeding the frame limit).
    #[inline]
    pub fn len(&self) -> usize {
        self.written
    }
    /// Whether nothing was written yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

impl std::io::Write for Reply<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = std::io::Write::write(self.buf, bytes)?;
        self.written = self.written.saturating_add(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The value of the last field of `list` named `name`.
pub(crate) fn last<'l>(list: &'l HeaderList, name: &str) -> Option<&'l [u8]> {
    list.iter()
        .filter(|(n, _)| *n == name.as_bytes())
        .last()
        .map(|(_, v)| v)
}

/// A synchronous handler: runs on the core that received the request, must not block.
pub type SyncHandler = dyn Fn(&Request<'_>, &mut Reply<'_, '_>) -> Result<(), Status> + Send + Sync;

/// A request as an async handler sees it: owned, so the future can hold it across awaits.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AsyncRequest {
    id: u32,
    payload: Bytes,
    headers: HeaderList,
    deadline: Option<Duration>,
    /// The connection's peer.
    peer: crate::Peer,
    /// `shm://`: the peer process's credentials.
    cred: Option<crate::shm::PeerCred>,
    /// `quic://`: the peer's verified certificate chain.
    certs: Option<crate::PeerCertificates>,
}

impl AsyncRequest {
    pub(crate) fn new(
        id: u32,
        payload: Bytes,
        headers: HeaderList,
        deadline: Option<Duration>,
        peer: crate::Peer,
    ) -> Self {
        Self {
            id,
            payload,
            headers,
            deadline,
            peer,
            cred: None,
            certs: None,
        }
    }
    /// With the peer process's credentials (`shm://` connections) and certificate chain
    /// (`quic://`).
    pub(crate) fn with_caller(
        mut self,
        cred: Option<crate::shm::PeerCred>,
        certs: Option<crate::PeerCertificates>,
    ) -> Self {
        self.cred = cred;
        self.certs = certs;
        self
    }
    /// The caller's verified certificate chain on a `quic://` connection with mutual TLS (as
    /// [`Request::peer_certificates`]); `None` otherwise.
    pub fn peer_certificates(&self) -> Option<&crate::PeerCertificates> {
        self.certs.as_ref()
    }
    /// The calling process's credentials on an `shm://` connection (as
    /// [`Request::peer_cred`]); `None` on other transports and for stream requests.
    pub fn peer_cred(&self) -> Option<crate::shm::PeerCred> {
        self.cred
    }
    /// The peer that made this call, to call its services back over the same connection,
    /// during this call (await [`crate::Peer::call_async`] in the handler's future) or later
    /// (keep the [`crate::Peer`]).
    pub fn peer(&self) -> crate::Peer {
        self.peer.clone()
    }
    /// The call id on its connection.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The request payload (decompressed if it arrived compressed).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
    /// Takes the payload out of the request.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }
    /// The request's header fields (see [`Request::headers`]).
    pub fn headers(&self) -> &HeaderList {
        &self.headers
    }
    /// The value of the last field named `name` (see [`Request::metadata`]).
    pub fn metadata(&self, name: &str) -> Option<&[u8]> {
        last(&self.headers, name)
    }
    /// Adds request metadata that later hooks and the handler see, overriding a field of
    /// the same name the caller sent (for [`crate::AsyncInterceptor`]s, e.g. the identity an
    /// auth check established).
    pub fn insert_metadata(&mut self, name: &str, value: &[u8]) {
        self.headers.push(name.as_bytes(), value);
    }
    /// Time left before the caller gives up, as carried by the request. The core cancels the
    /// handler's future (dropping it) and answers DeadlineExceeded when it passes.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
}

/// The future an async handler returns: it runs on the core that received the request (it
/// need not be `Send`) and resolves to the reply payload or a status.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, Status>> + 'static>>;

/// An asynchronous handler.
pub type AsyncHandler = dyn Fn(AsyncRequest) -> HandlerFuture + Send + Sync;

/// A handler that answers later through a [`crate::DeferredReply`] (from any thread).
pub type DeferredHandler = dyn Fn(&Request<'_>, crate::DeferredReply) + Send + Sync;

/// How a method is served.
#[derive(Clone)]
pub(crate) enum Handler {
    Sync(Arc<SyncHandler>),
    Async(Arc<AsyncHandler>),
    Deferred(Arc<DeferredHandler>),
    /// A stream handler (any of the three shapes; streams/serve.rs).
    /// A stream method, with its shape (as `$sys` lists it).
    Stream(
        Arc<crate::streams::StreamHandler>,
        netron_codec::sys::MethodKind,
    ),
}

/// A service definition error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The version is not semver `MAJOR.MINOR.PATCH[-PRERELEASE]`.
    #[error(
        "service version {0:?} is not semver MAJOR.MINOR.PATCH or MAJOR.MINOR.PATCH-PRERELEASE \
         (no leading zeros, no build metadata)"
    )]
    BadVersion(String),
    /// The name is not 1 to 128 bytes of printable ASCII without `@`.
    #[error("service name {0:?} must be 1 to 128 bytes of printable ASCII (0x21-0x7e) without '@'")]
    BadName(String),
    /// The name starts with `$`, reserved for the protocol's services (`$sys`).
    #[error("service name {0:?} starts with '$', which is reserved for the protocol (e.g. $sys)")]
    Reserved(String),
    /// Two services with the same `name@version`.
    #[error("service {0} is registered twice")]
    Duplicate(String),
    /// [`crate::Engine::remove_service`] or [`crate::Core::remove_service`] of a service that
    /// is not registered.
    #[error("service {0} is not registered")]
    NotRegistered(String),
}

/// A service version: the `semver` crate's [`semver::Version`] (re-exported by the codec),
/// `MAJOR.MINOR.PATCH` with an optional pre-release part (docs/protocol.md §25.2).
pub use netron_codec::sys::Version;

/// A service: `name@version` and its methods.
///
/// ```
/// use netron_engine::{Service, Status};
/// let calc = Service::new("calc", "1.2.0").unwrap()
///     .unary("add", |req, reply| {
///         let [a, b]: [u8; 2] = req.payload().try_into().map_err(|_| Status::invalid_argument("need 2 bytes"))?;
///         reply.write(&[a.wrapping_add(b)]);
///         Ok(())
///     });
/// assert_eq!(calc.key(), "calc@1.2.0");
/// ```
#[derive(Clone)]
pub struct Service {
    name: String,
    version: Version,
    key: String,
    methods: FxHashMap<Box<[u8]>, Handler>,
    /// This service's own interceptors, inside the engine's (docs/architecture.md,
    /// "Middleware").
    pub(crate) interceptors: crate::dispatch::Interceptors,
    /// This service's own async interceptors (applied to its handlers by the registry).
    asyncs: crate::dispatch::AsyncInterceptors,
    /// Methods declared idempotent ([`Service::idempotent`]).
    idempotent: rustc_hash::FxHashSet<Box<[u8]>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m: Vec<_> = self
            .methods
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        m.sort();
        f.debug_struct("Service")
            .field("key", &self.key)
            .field("methods", &m)
            .finish()
    }
}

impl Service {
    /// A service named `name` at `version` (`MAJOR.MINOR.PATCH`, optionally with a
    /// pre-release part such as `2.0.0-beta.1`; docs/protocol.md §25.2).
    ///
    /// # Errors
    ///
    /// [`ServiceError::BadName`], [`ServiceError::Reserved`] (a name starting with `$`) or
    /// [`ServiceError::BadVersion`].
    pub fn new(name: &str, version: &str) -> Result<Service, ServiceError> {
        if netron_codec::sys::check_name(name.as_bytes()).is_err() {
            return Err(ServiceError::BadName(name.to_owned()));
        }
        if name.starts_with('$') {
            return Err(ServiceError::Reserved(name.to_owned()));
        }
        Self::reserved(name, version)
    }

    /// [`Service::new`] without the check for the reserved `$` prefix (for `$sys`).
    pub(crate) fn reserved(name: &str, version: &str) -> Result<Service, ServiceError> {
        let v = netron_codec::sys::parse_version(version.as_bytes())
            .map_err(|_| ServiceError::BadVersion(version.to_owned()))?;
        Ok(Self::with_version(name, v))
    }

    /// A service of a checked name and version.
    pub(crate) fn with_version(name: &str, version: Version) -> Service {
        Service {
            name: name.to_owned(),
            key: format!("{name}@{version}"),
            version,
            methods: FxHashMap::default(),
            interceptors: crate::dispatch::Interceptors::default(),
            asyncs: crate::dispatch::AsyncInterceptors::default(),
            idempotent: rustc_hash::FxHashSet::default(),
        }
    }

    /// Adds a unary method served by a sync handler.
    pub fn unary<F>(mut self, method: &str, handler: F) -> Self
    where
        F: Fn(&Request<'_>, &mut Reply<'_, '_>) -> Result<(), Status> + Send + Sync + 'static,
    {
        self.methods
            .insert(method.as_bytes().into(), Handler::Sync(Arc::new(handler)));
        self
    }

    /// Adds a unary method served by an async handler. Its future runs on the core's executor
    /// (it may `await` work completed by other threads: the waker rings the core's doorbell)
    /// and gets an owned [`AsyncRequest`]. Costs one allocation for the payload copy and one
    /// for the future per call; prefer [`Service::unary`] for handlers that can answer at once.
    pub fn unary_async<F, Fut>(mut self, method: &str, handler: F) -> Self
    where
        F: Fn(AsyncRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + 'static,
    {
        let h: Arc<AsyncHandler> = Arc::new(move |req| Box::pin(handler(req)) as HandlerFuture);
        self.methods
            .insert(method.as_bytes().into(), Handler::Async(h));
        self
    }

    /// Adds a unary method whose handler may answer later, from any thread, through the
    /// [`crate::DeferredReply`] it gets (for handlers that wait on other services, and for
    /// the C ABI). The handler runs on the core like a sync one and must not block; the
    /// handle costs no allocation (an `Arc` clone of the core's inbox, the connection and the
    /// call id), and answering travels through the core's inbox. See
    /// [`crate::DeferredReply`] for deadlines and dropped handles.
    ///
    /// ```
    /// use netron_engine::{Service, Bytes};
    /// let svc = Service::new("later", "1.0.0").unwrap().unary_deferred("echo", |req, reply| {
    ///     let payload = Bytes::copy_from_slice(req.payload());
    ///     std::thread::spawn(move || reply.send(payload));
    /// });
    /// ```
    pub fn unary_deferred<F>(mut self, method: &str, handler: F) -> Self
    where
        F: Fn(&Request<'_>, crate::DeferredReply) + Send + Sync + 'static,
    {
        self.methods.insert(
            method.as_bytes().into(),
            Handler::Deferred(Arc::new(handler)),
        );
        self
    }

    /// Declares `method` idempotent: serving a call twice does what serving it once does
    /// (a read, or a write that sets rather than adds). Only such methods are served for
    /// calls that arrive in QUIC 0-RTT, before the handshake completes, and only when the
    /// call is marked idempotent too ([`crate::CallOptions::idempotent`]); any other call in
    /// 0-RTT is answered `Unavailable` without running (the caller may retry), counted as
    /// `zero_rtt_refused` (docs/quic.md "0-RTT"; 0-RTT data can be replayed by an attacker,
    /// RFC 9001 §9.2). Declaring a method that is not (yet) added is allowed. No effect on
    /// other transports or on calls after the handshake.
    pub fn idempotent(mut self, method: &str) -> Self {
        self.idempotent.insert(method.as_bytes().into());
        self
    }

    /// Whether `method` is declared idempotent ([`Service::idempotent`]).
    pub fn is_idempotent(&self, method: &[u8]) -> bool {
        self.idempotent.contains(method)
    }

    /// Runs `interceptor` around every call of this service, inside the engine's
    /// interceptors ([`crate::EngineBuilder::interceptor`]): `before` hooks run engine's
    /// first then the service's, each group in installation order; `after` hooks in exactly
    /// the reverse order (docs/architecture.md, "Middleware"). Costs as an engine-wide
    /// interceptor, on this service's calls only.
    pub fn interceptor(mut self, interceptor: impl crate::Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Runs `interceptor`, which may await, before every call of this service, after the
    /// engine's async interceptors (see [`crate::AsyncInterceptor`] for the order and the
    /// cost: every method of the service is then served as an async one).
    pub fn async_interceptor(mut self, interceptor: impl crate::AsyncInterceptor) -> Self {
        self.asyncs.0.push(Arc::new(interceptor));
        self
    }

    /// Adds `method` served by `handler` (the stream registrations, streams/serve.rs).
    pub(crate) fn with_handler(mut self, method: &str, handler: Handler) -> Self {
        self.methods.insert(method.as_bytes().into(), handler);
        self
    }

    /// `name@version`, as sent in `:service`.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The version.
    pub fn version(&self) -> &Version {
        &self.version
    }
    /// Method names.
    pub fn methods(&self) -> impl Iterator<Item = &[u8]> {
        self.methods.keys().map(|k| &k[..])
    }

    /// Method names and how they are served (for `$sys`).
    pub(crate) fn handlers(&self) -> impl Iterator<Item = (&[u8], &Handler)> {
        self.methods.iter().map(|(k, h)| (&k[..], h))
    }
}

/// All services a core serves (with `$sys`, which lists them) and the interceptors its
/// dispatcher runs; shared read-only between cores, replaced whole when services are added
/// or removed at run time.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    by_key: FxHashMap<Box<[u8]>, Service>,
    pub(crate) interceptors: crate::dispatch::Interceptors,
    /// The engine's async interceptors, applied to services as they are added.
    asyncs: crate::dispatch::AsyncInterceptors,
    /// The capability word `$sys` lists (what this side offers in its handshake).
    features: u64,
}

impl Default for Registry {
    /// No application services: `$sys` only.
    fn default() -> Self {
        let mut r = Registry {
            by_key: FxHashMap::default(),
            interceptors: crate::dispatch::Interceptors::default(),
            asyncs: crate::dispatch::AsyncInterceptors::default(),
            features: crate::ProtocolConfig::default().server().features,
        };
        r.refresh_sys();
        r
    }
}

impl Registry {
    pub(crate) fn add(&mut self, mut s: Service) -> Result<(), ServiceError> {
        let key: Box<[u8]> = s.key.as_bytes().into();
        if self.by_key.contains_key(&key) {
            return Err(ServiceError::Duplicate(s.key));
        }
        if !self.asyncs.0.is_empty() || !s.asyncs.0.is_empty() {
            let chain: crate::dispatch::AsyncChain =
                self.asyncs.0.iter().chain(&s.asyncs.0).cloned().collect();
            for h in s.methods.values_mut() {
                *h = crate::dispatch::wrap_async(h, chain.clone());
            }
            // Wrapped once: a registry that copies this service does not wrap it again.
            s.asyncs.0.clear();
        }
        self.by_key.insert(key, s);
        self.refresh_sys();
        Ok(())
    }

    /// Removes the service `key` (`name@version`).
    pub(crate) fn remove(&mut self, key: &str) -> Result<Service, ServiceError> {
        if key.starts_with('$') {
            return Err(ServiceError::Reserved(key.to_owned()));
        }
        let s = self
            .by_key
            .remove(key.as_bytes())
            .ok_or_else(|| ServiceError::NotRegistered(key.to_owned()))?;
        self.refresh_sys();
        Ok(s)
    }

    /// The registered services, `$sys` included.
    pub(crate) fn services(&self) -> impl Iterator<Item = &Service> {
        self.by_key.values()
    }

    /// Rebuilds `$sys` from the services registered now.
    fn refresh_sys(&mut self) {
        let mut sys = crate::sys::sys_service(
            self.by_key.values().filter(|s| !s.name.starts_with('$')),
            self.features,
        );
        if !self.asyncs.0.is_empty() {
            let chain: crate::dispatch::AsyncChain = self.asyncs.0.iter().cloned().collect();
            for h in sys.methods.values_mut() {
                *h = crate::dispatch::wrap_async(h, chain.clone());
            }
        }
        self.by_key.insert(sys.key.as_bytes().into(), sys);
    }

    /// Sets the capability word `$sys` lists (the engine's or core's handshake offer).
    pub(crate) fn set_features(&mut self, features: u64) {
        if self.features != features {
            self.features = features;
            self.refresh_sys();
        }
    }

    /// Sets the engine's async interceptors (before services are added: they are wrapped as
    /// they are added).
    pub(crate) fn set_asyncs(&mut self, asyncs: crate::dispatch::AsyncInterceptors) {
        self.asyncs = asyncs;
        self.refresh_sys();
    }

    /// The handler for `service` (`name@version`) and `method`, or the status to answer.
    #[inline]
    /// Whether `method` of the service `service` (`name@version`, exact) is declared
    /// idempotent ([`Service::idempotent`]).
    pub(crate) fn is_idempotent(&self, service: Option<&[u8]>, method: Option<&[u8]>) -> bool {
        match (service.and_then(|s| self.by_key.get(s)), method) {
            (Some(svc), Some(m)) => svc.is_idempotent(m),
            _ => false,
        }
    }

    pub(crate) fn lookup(
        &self,
        service: Option<&[u8]>,
        method: Option<&[u8]>,
    ) -> Result<(&Handler, &crate::dispatch::Interceptors), Status> {
        let service =
            service.ok_or_else(|| Status::invalid_argument("request has no :service header"))?;
        let method =
            method.ok_or_else(|| Status::invalid_argument("request has no :method header"))?;
        let svc = match self.by_key.get(service) {
            Some(svc) => svc,
            None => return Err(crate::sys::unknown_service(self, service)),
        };
        let h = svc.methods.get(method).ok_or_else(|| {
            Status::new(
                crate::StatusCode::Unimplemented,
                format!(
                    "service {} has no method {}",
                    svc.key,
                    String::from_utf8_lossy(method)
                ),
            )
        })?;
        Ok((h, &svc.interceptors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_lookup() {
        assert_eq!(
            *Service::new("calc", "1.2.3").unwrap().version(),
            Version::new(1, 2, 3)
        );
        for bad in ["1.2", "1.2.3.4", "01.2.3", "a.b.c", "", "1..3", "1.2.3+b"] {
            assert!(Service::new("calc", bad).is_err(), "{bad}");
        }
        assert!(Service::new("calc", "2.0.0-beta.1").is_ok());
        assert!(Service::new("a@b", "1.0.0").is_err());
        assert_eq!(
            Service::new("$mine", "1.0.0").unwrap_err(),
            ServiceError::Reserved("$mine".into())
        );
        let mut r = Registry::default();
        r.add(
            Service::new("calc", "1.0.0")
                .unwrap()
                .unary("add", |_, _| Ok(())),
        )
        .unwrap();
        assert!(r.add(Service::new("calc", "1.0.0").unwrap()).is_err());
        assert!(r.lookup(Some(b"calc@1.0.0"), Some(b"add")).is_ok());
        assert_eq!(
            r.lookup(Some(b"calc@2.0.0"), Some(b"add"))
                .err()
                .unwrap()
                .code,
            crate::StatusCode::NotFound
        );
        assert_eq!(
            r.lookup(Some(b"calc@1.0.0"), Some(b"sub"))
                .err()
                .unwrap()
                .code,
            crate::StatusCode::Unimplemented
        );
        assert_eq!(
            r.lookup(None, Some(b"sub")).err().unwrap().code,
            crate::StatusCode::InvalidArgument
        );
    }
}
