//! `Client`: calls from any thread, through the owning core's inbox.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netron_codec::hpack::HeaderList;

use crate::inbox::{Command, ConnRef, Inbox};
use crate::slot::Completion;
use crate::{CallError, CallOptions, ConnectError, Endpoint, Response, Status};

/// What a blocking call says when its deadline passes before the reply: the same words as
/// the core's own deadline timer (whichever sees it first ends the call), naming no culprit
/// (a slow handler, a slow path or a busy core look the same from here).
const LATE: &str = "the deadline passed before a reply arrived";

/// How long a waiting caller spins before parking (a cross-core wake-up costs ~25–30 µs on
/// small VMs, so spinning this long keeps a fast reply on the fast path).
const SPIN: Duration = Duration::from_micros(60);

thread_local! {
    /// One completion slot per caller thread, reused call after call.
    static SLOT: RefCell<Option<Arc<Completion>>> = const { RefCell::new(None) };
}

/// The calling thread's slot, armed for a new call. If a core still owns the previous one (a
/// caller gave up on its call), a fresh slot replaces it: a call given up never poisons the
/// thread's next call.
fn thread_slot() -> Arc<Completion> {
    SLOT.with_borrow_mut(|s| {
        let slot = s.get_or_insert_with(|| Arc::new(Completion::new()));
        Completion::rearm(slot);
        slot.clone()
    })
}

/// A handle for making calls; `Send + Sync + Clone`. Connections it opens live on the
/// engine's cores (round-robin).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    inboxes: Vec<Arc<Inbox>>,
    next: AtomicUsize,
    /// `ProtocolConfig::connect_timeout` of the engine.
    connect_timeout: Duration,
    /// `ProtocolConfig::with_quic_client` of the engine (`quic://` connects).
    quic_client: Option<netron_quic::ClientConfig>,
    /// Around every call of the channels it opens.
    interceptors: crate::dispatch::ClientInterceptors,
}

impl Client {
    pub(crate) fn new(
        inboxes: Vec<Arc<Inbox>>,
        connect_timeout: Duration,
        quic_client: Option<netron_quic::ClientConfig>,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                inboxes,
                next: AtomicUsize::new(0),
                connect_timeout,
                quic_client,
                interceptors: crate::dispatch::ClientInterceptors::default(),
            }),
        }
    }

    /// Connects to `endpoint` (`tcp://…`, `unix://…`, `inproc://…`, `shm://…`, `quic://…`)
    /// and completes the handshake, waiting at most the engine's
    /// `ProtocolConfig::connect_timeout` (default 10 s) for both together.
    ///
    /// `quic://` with 0-RTT (`netron_quic::ClientConfig::zero_rtt`): a connect that resumes a
    /// session returns before the handshake completes; calls marked idempotent
    /// ([`crate::CallOptions::idempotent`], [`Method::idempotent`]) go at once, in the first
    /// flight, and everything else waits for the handshake (its deadline running). A handshake
    /// that then fails fails those calls instead of the connect (docs/quic.md "0-RTT").
    ///
    /// # Errors
    /// As [`Client::connect_timeout`]; a [`ConnectError::Timeout`] names
    /// `ProtocolConfig::connect_timeout`.
    pub fn connect(&self, endpoint: &str) -> Result<Channel, ConnectError> {
        self.connect_within(
            endpoint,
            self.inner.connect_timeout,
            "ProtocolConfig::connect_timeout",
        )
    }

    /// Connects to `endpoint` and completes the handshake within `timeout` (socket connect
    /// and handshake together), instead of the configured connect timeout.
    ///
    /// # Errors
    /// - [`ConnectError::Endpoint`]: the endpoint string is invalid;
    /// - [`ConnectError::OnCoreThread`]: called from one of the engine's own core threads;
    /// - [`ConnectError::EngineStopped`]: the engine's core is not running (at once);
    /// - [`ConnectError::Io`]: the transport could not connect (e.g. connection refused);
    /// - [`ConnectError::Refused`]: the peer refused the handshake (its status inside);
    /// - [`ConnectError::Timeout`]: `timeout`, or the engine's
    ///   `ProtocolConfig::handshake_timeout`, passed first (the variant names which);
    /// - [`ConnectError::Tls`]: a `quic://` TLS handshake failed (either side refused);
    /// - [`ConnectError::Closed`]: the connection closed during the handshake.
    pub fn connect_timeout(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Channel, ConnectError> {
        self.connect_within(
            endpoint,
            timeout,
            "the timeout argument of Client::connect_timeout",
        )
    }

    fn connect_within(
        &self,
        endpoint: &str,
        timeout: Duration,
        setting: &'static str,
    ) -> Result<Channel, ConnectError> {
        let start = Instant::now();
        let until = start.checked_add(timeout);
        // Checked first: resolving the name and connecting block too, and must never run on
        // a core's thread.
        if self.inner.inboxes.iter().any(Inbox::is_current) {
            return Err(ConnectError::OnCoreThread);
        }
        let ep: Endpoint = endpoint.parse()?;
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.inboxes.len();
        let inbox = self.inner.inboxes[i].clone();
        if let Some((why, _)) = inbox.stopped() {
            return Err(ConnectError::EngineStopped {
                reason: why.to_owned(),
            });
        }
        let link = crate::transport::connect(&ep, timeout, self.inner.quic_client.as_ref())
            .map_err(|e| ConnectError::from_io(ep.to_string(), e, timeout, setting))?;
        // A fresh slot per connect (not a hot path): if this caller gives up, the core learns
        // it from the slot and closes the connection instead of leaking it.
        let slot = Arc::new(Completion::new());
        let armed = slot.arm();
        debug_assert!(armed);
        inbox.push(Command::Adopt {
            link,
            slot: slot.clone(),
        });
        if !slot.wait(SPIN, until) && !slot.abandon() {
            return Err(ConnectError::Timeout {
                endpoint: ep.to_string(),
                timeout,
                setting,
            });
        }
        let b = slot
            .result()
            .unwrap_or_else(|| Err(Status::internal("connect slot not completed")))
            .map_err(|s| ConnectError::from_core(ep.to_string(), s, timeout))?;
        let conn = match (b.get(..4), b.get(4..8)) {
            (Some(k), Some(g)) => ConnRef {
                key: u32::from_le_bytes(k.try_into().unwrap_or_default()),
                generation: u32::from_le_bytes(g.try_into().unwrap_or_default()),
            },
            _ => {
                return Err(ConnectError::Closed {
                    endpoint: ep.to_string(),
                    reason: "malformed connection handle from the core (a bug)".to_owned(),
                });
            }
        };
        Ok(Channel {
            inner: Arc::new(ChannelInner {
                inbox,
                conn,
                sys: crate::sys::Cache::default(),
                interceptors: self.inner.interceptors.clone(),
            }),
        })
    }
}

#[derive(Debug)]
struct ChannelInner {
    inbox: Arc<Inbox>,
    conn: ConnRef,
    /// The peer's `$sys` listing, once fetched (requirements resolved on this connection).
    sys: crate::sys::Cache,
    /// The client's interceptors when this channel was opened.
    interceptors: crate::dispatch::ClientInterceptors,
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        self.inbox.send(Command::Close { conn: self.conn });
    }
}

/// One client connection; `Send + Sync + Clone` (clones share the connection, which closes
/// when the last clone is dropped).
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

/// A method bound to a channel: service and method names are shared, not copied, per call.
#[derive(Debug, Clone)]
pub struct Method {
    channel: Channel,
    service: Arc<[u8]>,
    method: Arc<[u8]>,
    /// Every call is marked idempotent ([`Method::idempotent`]).
    idempotent: bool,
}

impl Channel {
    /// The core inbox and connection this channel's calls and streams go to.
    pub(crate) fn route(&self) -> (&Arc<Inbox>, ConnRef) {
        (&self.inner.inbox, self.inner.conn)
    }

    /// The client interceptors of this channel (run around its calls and stream opens).
    pub(crate) fn client_interceptors(&self) -> &crate::dispatch::ClientInterceptors {
        &self.inner.interceptors
    }

    /// Publishes an event to the peer (docs/protocol.md §24.1): the peer delivers it to its
    /// matching subscriptions, on all its cores. Fire-and-forget: returns once it is handed
    /// to the connection's core; a refusal there (connection closed, event above the
    /// negotiated frame size) is counted as `publish_failed`, not reported (§24.5).
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid topic (§24.2); `ResourceExhausted` for an event no
    /// frame can carry (above this side's configured `max_frame_size`), or when the
    /// connection's core has 64 MiB of published events still to take (the publisher is
    /// faster than the core: retry later).
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), Status> {
        crate::events::publish_to(&self.inner.inbox, self.inner.conn, topic, payload.into())
    }

    /// Subscribes at the peer to the subjects matching `pattern` (`orders.*` one token,
    /// `orders.>` the rest). A refusal by the peer (its subscription limit, an unsupported
    /// feature) or the connection's end ends the subscription with that status, which
    /// [`crate::Subscription::recv_timeout`] returns after the events received before.
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid pattern.
    pub fn subscribe(
        &self,
        pattern: &str,
        opts: crate::SubscribeOptions,
    ) -> Result<crate::Subscription, Status> {
        crate::events::subscribe_at(&self.inner.inbox, self.inner.conn, pattern, opts)
    }

    /// Binds `service` (`name@version`) and `method` for repeated calls.
    pub fn method(&self, service: &str, method: &str) -> Method {
        Method {
            channel: self.clone(),
            service: service.as_bytes().into(),
            method: method.as_bytes().into(),
            idempotent: false,
        }
    }

    /// One unary call (blocking): sends `payload` and waits for the reply, the error, or the
    /// deadline (the call is then cancelled on the wire and fails with DeadlineExceeded).
    ///
    /// `service` is an exact `name@VERSION` or a requirement (`name@^1.2`, `name`), resolved
    /// through the peer's `$sys` within the same `deadline` (see [`Channel::resolve`]).
    ///
    /// # Errors
    /// As [`Method::call_into`], and [`Channel::resolve`] for a requirement.
    pub fn call(
        &self,
        service: &str,
        method: &str,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let payload = payload.into();
        self.with_resolved(
            service,
            deadline,
            Err,
            |svc, dl| self.method(svc, method).call(payload.clone(), dl),
            |r| matches!(r, Err(CallError::Status(s)) if s.code == crate::StatusCode::NotFound),
        )
    }

    /// One unary call (blocking) with [`CallOptions`] (deadline, request metadata); the
    /// [`Response`] also carries the response metadata. See [`Method::call_with`].
    pub fn call_with(
        &self,
        service: &str,
        method: &str,
        payload: impl Into<Bytes>,
        options: &CallOptions,
    ) -> Response {
        let payload = payload.into();
        self.with_resolved(
            service,
            options.get_deadline(),
            |e| Response::new(Err(e), HeaderList::default()),
            |svc, dl| match dl {
                Some(dl) if Some(dl) != options.get_deadline() => {
                    // Less time left after resolving: the rest of the caller's deadline.
                    let o = options.clone().deadline(dl);
                    self.method(svc, method).call_with(payload.clone(), &o)
                }
                _ => self.method(svc, method).call_with(payload.clone(), options),
            },
            |r| matches!(r.result(), Err(CallError::Status(s)) if s.code == crate::StatusCode::NotFound),
        )
    }

    /// The cache of the peer's `$sys` listing.
    pub(crate) fn sys_cache(&self) -> &crate::sys::Cache {
        &self.inner.sys
    }
}

/// A call in flight, as a future. Dropping it before it resolves cancels the call: the
/// server gets a Cancel and drops its work.
#[derive(Debug)]
#[must_use = "a call future does nothing unless awaited; dropping it cancels the call"]
pub struct CallFuture {
    slot: Arc<Completion>,
    /// The core that owns the call's connection, and that connection (to cancel on drop);
    /// `None` for a call that failed before it was sent.
    target: Option<(Arc<Inbox>, ConnRef)>,
    /// A channel's call keeps its connection open until it resolves; a [`crate::Peer`]'s
    /// call does not (the connection is the peer's, and closes with it).
    _channel: Option<Channel>,
    finished: bool,
    /// The client interceptors' `after` hooks still to run (a channel with interceptors).
    after: Option<Box<crate::dispatch::PendingAfter>>,
}

impl std::future::Future for CallFuture {
    type Output = Result<Vec<u8>, CallError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.slot.register(cx.waker());
        let Some(result) = self.slot.result() else {
            if let Some((inbox, _)) = &self.target {
                if inbox.is_current() && !crate::executor::in_task() {
                    // Polled on the connection's own core outside its executor (a sync
                    // handler blocking on it): the core cannot read the reply until this
                    // returns, so waiting would never end. Fails now; the drop cancels it.
                    return std::task::Poll::Ready(Err(CallError::WouldDeadlock(Status::new(
                        crate::StatusCode::FailedPrecondition,
                        "a call future polled by a sync handler on its connection's own core \
                         would deadlock (the core cannot read the reply while the handler \
                         waits); await it in an async handler or hand it to another thread",
                    ))));
                }
            }
            return std::task::Poll::Pending;
        };
        let mut out = result.map(<[u8]>::to_vec).map_err(CallError::from_status);
        if let Some(after) = self.after.take() {
            after.run(&mut out, self.slot.metadata());
        }
        self.finished = true;
        std::task::Poll::Ready(out)
    }
}

impl CallFuture {
    /// A call that failed before it was sent: resolves at once to `status`.
    pub(crate) fn failed(status: Status) -> CallFuture {
        let slot = Arc::new(Completion::new());
        let armed = slot.arm();
        debug_assert!(armed);
        slot.complete(Err(status));
        CallFuture {
            slot,
            target: None,
            _channel: None,
            finished: false,
            after: None,
        }
    }
}

impl Drop for CallFuture {
    fn drop(&mut self) {
        if let Some((inbox, conn)) = self
            .target
            .as_ref()
            .filter(|_| !self.finished && !self.slot.is_done())
        {
            inbox.send(Command::CancelSlot {
                conn: *conn,
                slot: self.slot.clone(),
                code: crate::StatusCode::Cancelled,
            });
        }
    }
}

impl Method {
    /// Hands the call to the connection's core; `slot` is armed.
    fn send(&self, payload: Bytes, deadline: Option<Duration>, slot: &Arc<Completion>) {
        self.send_with(payload, deadline, None, slot);
    }

    fn send_with(
        &self,
        payload: Bytes,
        deadline: Option<Duration>,
        metadata: Option<Box<HeaderList>>,
        slot: &Arc<Completion>,
    ) {
        self.send_marked(payload, deadline, metadata, self.idempotent, slot);
    }

    fn send_marked(
        &self,
        payload: Bytes,
        deadline: Option<Duration>,
        metadata: Option<Box<HeaderList>>,
        idempotent: bool,
        slot: &Arc<Completion>,
    ) {
        let ch = &self.channel.inner;
        let names = (self.service.clone(), self.method.clone());
        let call = CallParts {
            payload,
            deadline,
            metadata,
            idempotent,
        };
        push_call(&ch.inbox, ch.conn, names, call, slot);
    }

    /// Marks every call made through this method idempotent, as
    /// [`CallOptions::idempotent`] does for one call (on a `quic://` connection resumed with
    /// 0-RTT they go in the first flight).
    pub fn idempotent(mut self) -> Method {
        self.idempotent = true;
        self
    }

    /// Calls the method without blocking: the returned future resolves to the reply. Works with
    /// any executor (the core wakes the future's task). Dropping the future cancels the call.
    /// Costs one allocation per call for its completion slot. If the engine's core has
    /// stopped, the future resolves at once with [`CallError::EngineStopped`]; its other
    /// failures are those of [`Method::call_into`].
    pub fn call_async(&self, payload: impl Into<Bytes>, deadline: Option<Duration>) -> CallFuture {
        let slot = Arc::new(Completion::new());
        let armed = slot.arm();
        debug_assert!(armed);
        let ch = &self.channel.inner;
        let after = if ch.interceptors.is_empty() {
            self.send(payload.into(), deadline, &slot);
            None
        } else {
            // The client's interceptors: `before` now, `after` when the future resolves.
            match crate::dispatch::PendingAfter::begin(
                &ch.interceptors,
                (&self.service, &self.method),
                deadline,
            ) {
                Ok((after, metadata)) => {
                    let metadata = (!metadata.is_empty()).then(|| Box::new(metadata));
                    self.send_with(payload.into(), deadline, metadata, &slot);
                    Some(after)
                }
                Err(e) => {
                    let status = e
                        .status()
                        .clone()
                        .with_origin(crate::status::Origin::Refused);
                    return CallFuture::failed(status);
                }
            }
        };
        CallFuture {
            slot,
            target: Some((ch.inbox.clone(), ch.conn)),
            _channel: Some(self.channel.clone()),
            finished: false,
            after,
        }
    }

    /// Calls the method (blocking), returning the reply bytes.
    ///
    /// # Errors
    /// As [`Method::call_into`].
    pub fn call(
        &self,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let mut out = Vec::new();
        self.call_into(payload, deadline, &mut out)?;
        Ok(out)
    }

    /// Calls the method (blocking), appending the reply to `out`.
    ///
    /// The caller's `deadline` is honoured by this wait itself, whatever the core is doing (a
    /// blocking handler holding it, a stopped engine): the call returns `DeadlineExceeded` once
    /// it passes, and the core cancels the call on the wire when it gets to it.
    ///
    /// # Errors
    /// - [`CallError::Status`]: the peer's failure status, or `DeadlineExceeded` once
    ///   `deadline` passed (the call is cancelled on the wire);
    /// - [`CallError::Refused`]: refused before anything was sent, by a limit of the
    ///   connection (`ResourceExhausted`: a request above the peer's negotiated
    ///   `max_frame_size`, too many calls in flight, or `ProtocolConfig::max_backlog_bytes`;
    ///   the message names which); the connection and its other calls go on;
    /// - [`CallError::Closed`]: the connection is closed or going away, or closed before the
    ///   reply (`Unavailable`, saying why);
    /// - [`CallError::EngineStopped`]: the connection's core is not running (at once);
    /// - [`CallError::WouldDeadlock`]: called from a handler on the connection's own core
    ///   (`FailedPrecondition`; use [`Method::call_async`]).
    pub fn call_into(
        &self,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
        out: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        if !self.channel.inner.interceptors.is_empty() {
            let opts = match deadline {
                Some(d) => CallOptions::new().deadline(d),
                None => CallOptions::new(),
            };
            out.extend_from_slice(&self.call_with(payload, &opts).into_result()?);
            return Ok(());
        }
        if self.channel.inner.inbox.is_current() {
            return Err(CallError::WouldDeadlock(Status::new(
                crate::StatusCode::FailedPrecondition,
                "a blocking call from a handler on the connection's own core would deadlock; use call_async",
            )));
        }
        let until = deadline.and_then(|d| Instant::now().checked_add(d));
        let slot = thread_slot();
        self.send(payload.into(), deadline, &slot);
        // The core completes the slot on reply, error, deadline or connection loss.
        let ch = &self.channel.inner;
        let slot = await_slot(&ch.inbox, ch.conn, slot, until, LATE)?;
        out.extend_from_slice(
            slot.result()
                .unwrap_or_else(|| Err(Status::internal("call slot not completed")))
                .map_err(CallError::from_status)?,
        );
        Ok(())
    }

    /// Calls the method (blocking) with [`CallOptions`]: its deadline (honoured as in
    /// [`Method::call_into`]) and request metadata. The [`Response`] holds the reply or the
    /// failure, and the response metadata the callee sent. Costs, beyond [`Method::call`]:
    /// the reply is copied into the [`Response`] (one allocation), request metadata is
    /// copied to hand it to the core (three allocations), response metadata into the
    /// [`Response`] (two allocations when there is some).
    pub fn call_with(&self, payload: impl Into<Bytes>, options: &CallOptions) -> Response {
        let interceptors = &self.channel.inner.interceptors;
        if interceptors.is_empty() {
            return self.call_with_raw(payload.into(), options);
        }
        let payload = payload.into();
        let (service, method) = (
            String::from_utf8_lossy(&self.service),
            String::from_utf8_lossy(&self.method),
        );
        interceptors.run(&service, &method, options, |o| {
            self.call_with_raw(payload, o)
        })
    }

    /// [`Method::call_with`] without the client's interceptors.
    fn call_with_raw(&self, payload: Bytes, options: &CallOptions) -> Response {
        if let Err(s) = options.check() {
            return Response::new(Err(CallError::Refused(s)), HeaderList::default());
        }
        if self.channel.inner.inbox.is_current() {
            return Response::new(
                Err(CallError::WouldDeadlock(Status::new(
                    crate::StatusCode::FailedPrecondition,
                    "a blocking call from a handler on the connection's own core would deadlock; use call_async",
                ))),
                HeaderList::default(),
            );
        }
        let deadline = options.get_deadline();
        let until = deadline.and_then(|d| Instant::now().checked_add(d));
        let slot = thread_slot();
        let metadata = Some(options.get_metadata())
            .filter(|m| !m.is_empty())
            .map(|m| Box::new(m.clone()));
        let idempotent = self.idempotent || options.is_idempotent();
        self.send_marked(payload, deadline, metadata, idempotent, &slot);
        let ch = &self.channel.inner;
        let slot = match await_slot(&ch.inbox, ch.conn, slot, until, LATE) {
            Ok(slot) => slot,
            Err(e) => return Response::new(Err(e), HeaderList::default()),
        };
        let result = slot
            .result()
            .unwrap_or_else(|| Err(Status::internal("call slot not completed")))
            .map(<[u8]>::to_vec)
            .map_err(CallError::from_status);
        let metadata = slot.metadata().cloned().unwrap_or_default();
        Response::new(result, metadata)
    }
}

/// Waits for `slot` (a call on connection `conn` of the core behind `inbox`) until `until`:
/// the completed slot, or — the deadline passed first — a Cancel to the core and
/// `DeadlineExceeded` saying `late`. The caller's own deadline bounds the wait in case the
/// core cannot complete the slot.
fn await_slot(
    inbox: &Arc<Inbox>,
    conn: ConnRef,
    slot: Arc<Completion>,
    until: Option<Instant>,
    late: &'static str,
) -> Result<Arc<Completion>, CallError> {
    if !slot.wait(SPIN, until) && !slot.is_done() {
        inbox.send(Command::CancelSlot {
            conn,
            slot,
            code: crate::StatusCode::DeadlineExceeded,
        });
        return Err(CallError::Status(Status::deadline_exceeded(late)));
    }
    Ok(slot)
}

/// What a call hands to the core besides its names.
struct CallParts {
    payload: Bytes,
    deadline: Option<Duration>,
    metadata: Option<Box<HeaderList>>,
    idempotent: bool,
}

impl CallParts {
    fn plain(payload: Bytes, deadline: Option<Duration>) -> Self {
        Self {
            payload,
            deadline,
            metadata: None,
            idempotent: false,
        }
    }
}

/// Hands a call of `names` (service, method) on connection `conn` to the core behind `inbox`;
/// its outcome goes to `slot`.
fn push_call(
    inbox: &Arc<Inbox>,
    conn: ConnRef,
    names: (Arc<[u8]>, Arc<[u8]>),
    call: CallParts,
    slot: &Arc<Completion>,
) {
    let (service, method) = names;
    inbox.send(Command::Call {
        conn,
        service,
        method,
        payload: call.payload,
        deadline: call.deadline,
        idempotent: call.idempotent,
        metadata: call.metadata,
        slot: slot.clone(),
    });
}

/// Starts a call of `service`/`method` on connection `conn` of the core behind `inbox` and
/// returns its future (for [`crate::Peer::call_async`]: the future does not keep the
/// connection open). One allocation for the completion slot.
pub(crate) fn start_async(
    inbox: &Arc<Inbox>,
    conn: ConnRef,
    service: Arc<[u8]>,
    method: Arc<[u8]>,
    payload: Bytes,
    deadline: Option<Duration>,
) -> CallFuture {
    let slot = Arc::new(Completion::new());
    let armed = slot.arm();
    debug_assert!(armed);
    push_call(
        inbox,
        conn,
        (service, method),
        CallParts::plain(payload, deadline),
        &slot,
    );
    CallFuture {
        slot,
        target: Some((inbox.clone(), conn)),
        _channel: None,
        finished: false,
        after: None,
    }
}

/// A blocking call of `service`/`method` on connection `conn` of the core behind `inbox`,
/// appending the reply to `out` (for [`crate::Peer::call`]). Called on that core's own
/// thread, the wait would never end (the core cannot answer while its thread waits), so it
/// fails at once with `FailedPrecondition`.
pub(crate) fn call_blocking(
    inbox: &Arc<Inbox>,
    conn: ConnRef,
    spec: (Arc<[u8]>, Arc<[u8]>),
    payload: Bytes,
    deadline: Option<Duration>,
    out: &mut Vec<u8>,
) -> Result<(), CallError> {
    if inbox.is_current() {
        return Err(CallError::WouldDeadlock(Status::new(
            crate::StatusCode::FailedPrecondition,
            "a blocking call to the peer from a handler on its connection's own core would \
             deadlock (the core cannot serve the reply while its thread waits); use \
             Peer::call_async from an async handler",
        )));
    }
    let until = deadline.and_then(|d| Instant::now().checked_add(d));
    let slot = thread_slot();
    push_call(
        inbox,
        conn,
        spec,
        CallParts::plain(payload, deadline),
        &slot,
    );
    let slot = await_slot(
        inbox,
        conn,
        slot,
        until,
        "the deadline passed before the peer's reply arrived (the connection's core did \
         not answer in time)",
    )?;
    out.extend_from_slice(
        slot.result()
            .unwrap_or_else(|| Err(Status::internal("call slot not completed")))
            .map_err(CallError::from_status)?,
    );
    Ok(())
}

/// Client-side interceptors (docs/architecture.md, "Middleware").
impl Client {
    /// A client whose channels run `interceptor` around every blocking call (see
    /// [`crate::ClientInterceptor`]), after the interceptors this client already has. The
    /// new client shares the engine's cores; channels opened before keep their interceptors.
    pub fn with_interceptor(&self, interceptor: impl crate::ClientInterceptor) -> Client {
        let mut interceptors = self.inner.interceptors.clone();
        interceptors.push(Arc::new(interceptor));
        Client {
            inner: Arc::new(Inner {
                inboxes: self.inner.inboxes.clone(),
                next: AtomicUsize::new(0),
                connect_timeout: self.inner.connect_timeout,
                quic_client: self.inner.quic_client.clone(),
                interceptors,
            }),
        }
    }
}
