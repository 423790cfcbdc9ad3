//! `Peer`: a handler's handle to the other side of its connection (peers are symmetric,
//! SPEC §4; docs/architecture.md, "Symmetric peers").
//!
//! Either side of a connection may serve services and call the other side's: the side that
//! connected registers services on its core (an [`crate::Engine`]'s services, or
//! [`crate::Core::with_services`]), and the side that accepted calls them over the same
//! connection, with ids of its own parity (the initiator opens odd ids, the acceptor even
//! ones), so calls in the two directions never collide.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::client::CallFuture;
use crate::inbox::{ConnRef, Inbox};
use crate::{CallError, Status, StatusCode};

/// The peer at the other end of the connection a request arrived on: calls made through it
/// go to that peer's services, over that same connection.
///
/// Got from [`crate::Request::peer`] (sync handlers) or [`crate::AsyncRequest::peer`] (async
/// handlers). Cheap to clone (a reference count), `Send + Sync`: it may be kept after the call
/// that gave it (in the service's state, or on another thread) to call the peer later. It does
/// not keep the connection open; once the connection closes, calls through it fail with
/// `Unavailable` (the peer's services went with its connection), and so do calls still
/// pending when it closes.
///
/// ```
/// use netron_engine::{Bytes, Engine, Service};
/// use std::time::Duration;
///
/// let dl = Some(Duration::from_secs(5));
/// // The accepting side's handler calls the caller's `phone@1.0.0/ring` back, mid-call.
/// let desk = Service::new("desk", "1.0.0")?.unary_async("ask", move |req| {
///     let peer = req.peer();
///     async move {
///         let r = peer.call_async("phone@1.0.0", "ring", req.into_payload(), dl).await?;
///         Ok(Bytes::from(r))
///     }
/// });
/// let server = Engine::builder().cores(1).service(desk).listen("tcp://127.0.0.1:0").build()?;
/// // The connecting side serves `phone` on its engine's cores, where its connections live.
/// let phone = Service::new("phone", "1.0.0")?.unary("ring", |req, reply| {
///     reply.write(b"ringing ");
///     reply.write(req.payload());
///     Ok(())
/// });
/// let client = Engine::builder().cores(1).service(phone).build()?;
/// let ch = client.client().connect(&server.endpoints()[0].to_string())?;
/// assert_eq!(ch.call("desk@1.0.0", "ask", &b"bob"[..], dl)?, b"ringing bob");
/// drop(ch);
/// client.shutdown(Duration::from_secs(1));
/// server.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Only the engine makes peers: one cannot be made up for a connection.
///
/// ```compile_fail
/// // No public constructor and no `Default`: a `Peer` only comes from a request.
/// let peer = netron_engine::Peer::default();
/// ```
///
/// # Blocking
/// A sync handler must not wait for its peer: its core's thread would wait for a reply that
/// only that same core can read. [`Peer::call`] (blocking) made on the core that owns the
/// connection therefore fails at once with `FailedPrecondition` instead of deadlocking, and a
/// [`Peer::call_async`] future polled there outside the core's executor (a sync handler
/// blocking on it) resolves at once with [`crate::CallError::WouldDeadlock`]; so do the
/// halves of a stream opened into the peer (`Peer::open_*`): a `recv` or `send` that would
/// wait, polled there, ends at once with `FailedPrecondition`. Call back with
/// [`Peer::call_async`] from an async handler (awaiting it there lets the core go
/// on serving, including the peer's own calls), or block from a thread that is no core's. (A
/// blocking call from another core's handler stalls that core until the reply or the
/// deadline, as with a [`crate::Channel`].)
#[derive(Clone)]
pub struct Peer {
    /// The owning core's inbox and the connection on it; `None` for a request that did not
    /// arrive on a connection of a core (a detached peer: its calls fail).
    link: Option<(Arc<Inbox>, ConnRef)>,
}

// A `Peer` goes anywhere a handler's state goes; its call futures may run on any executor.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    const fn assert_send<T: Send>() {}
    assert_send_sync::<Peer>();
    assert_send::<CallFuture>();
};

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Peer");
        match &self.link {
            Some((_, c)) => d.field("conn", &(c.key, c.generation)),
            None => d.field("conn", &"detached"),
        };
        d.finish_non_exhaustive()
    }
}

impl Peer {
    /// The peer of connection `conn` of the core behind `inbox`.
    pub(crate) fn new(inbox: Arc<Inbox>, conn: ConnRef) -> Peer {
        Peer {
            link: Some((inbox, conn)),
        }
    }

    /// A peer reached through no connection (a request built outside a core).
    pub(crate) fn detached() -> Peer {
        Peer { link: None }
    }

    fn detached_status() -> Status {
        Status::unavailable("this request did not arrive on a connection: it has no peer to call")
            .with_origin(crate::status::Origin::Closed)
    }

    /// Publishes an event to the peer (as [`crate::Channel::publish`]): it reaches the
    /// peer's matching subscriptions. Never blocks.
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid topic; `Unavailable` for a detached peer;
    /// `ResourceExhausted` when the core has 64 MiB of published events still to take.
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), Status> {
        let Some((inbox, conn)) = &self.link else {
            return Err(Self::detached_status());
        };
        crate::events::publish_to(inbox, *conn, topic, payload.into())
    }

    /// Subscribes at the peer (as [`crate::Channel::subscribe`]): the peer's events
    /// matching `pattern` arrive on the returned subscription. Never blocks; read it from
    /// an async handler (its `Stream`) or another thread, not by blocking in a sync handler
    /// of the same core.
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid pattern; `Unavailable` for a detached peer.
    pub fn subscribe(
        &self,
        pattern: &str,
        opts: crate::SubscribeOptions,
    ) -> Result<crate::Subscription, Status> {
        let Some((inbox, conn)) = &self.link else {
            return Err(Self::detached_status());
        };
        crate::events::subscribe_at(inbox, *conn, pattern, opts)
    }

    /// Calls `method` of the peer's `service` (`name@version`) without blocking: the future
    /// resolves to the reply, the peer's status, `DeadlineExceeded` once `deadline` passes, or
    /// `Unavailable` if the connection is closed or closes first (or the core stopped).
    /// Dropping the future cancels the call (the peer gets a Cancel). Works with any executor;
    /// from an async handler it is sent to the connection directly, in the same loop turn.
    ///
    /// Costs three allocations per call (the completion slot and the two names); prefer
    /// a [`crate::Channel`]'s bound [`crate::Method`] for hot paths to the other side.
    pub fn call_async(
        &self,
        service: &str,
        method: &str,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
    ) -> CallFuture {
        match &self.link {
            Some((inbox, conn)) => crate::client::start_async(
                inbox,
                *conn,
                service.as_bytes().into(),
                method.as_bytes().into(),
                payload.into(),
                deadline,
            ),
            None => crate::client::CallFuture::failed(Self::detached_status()),
        }
    }

    /// Calls `method` of the peer's `service` and waits for the reply (blocking).
    ///
    /// Never from a handler on the connection's own core (see "Blocking" above): that fails
    /// at once. On a caller-driven [`crate::Core`], block only from a thread other than the
    /// one that drives it (that thread must keep running turns for the reply to be read).
    ///
    /// # Errors
    /// [`CallError::WouldDeadlock`] (`FailedPrecondition`) when called on the thread of the
    /// core that owns the connection; [`CallError::Closed`] (`Unavailable`) if the connection
    /// is closed or closes before the reply (the peer's services go with it);
    /// [`CallError::EngineStopped`] if the core stopped; [`CallError::Refused`]
    /// (`ResourceExhausted`) for a request above the negotiated limits, refused before
    /// sending; [`CallError::Status`] with `DeadlineExceeded` once `deadline` passes (the call
    /// is then cancelled on the wire), or with the peer's status.
    pub fn call(
        &self,
        service: &str,
        method: &str,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let Some((inbox, conn)) = &self.link else {
            return Err(CallError::Closed(Self::detached_status()));
        };
        let mut out = Vec::new();
        crate::client::call_blocking(
            inbox,
            *conn,
            (service.as_bytes().into(), method.as_bytes().into()),
            payload.into(),
            deadline,
            &mut out,
        )?;
        Ok(out)
    }

    /// The core's inbox and the connection (`None` if detached).
    pub(crate) fn link(&self) -> Option<(&Arc<Inbox>, ConnRef)> {
        self.link.as_ref().map(|(i, c)| (i, *c))
    }

    /// The core and connection of this peer, as a dispatch origin (`None` if detached).
    pub(crate) fn origin(&self) -> Option<crate::dispatch::Origin<'_>> {
        self.link
            .as_ref()
            .map(|(inbox, conn)| crate::dispatch::Origin {
                inbox,
                conn: *conn,
                cred: None,
                certs: None,
            })
    }

    /// Whether `self` and `other` reach the same connection (the same peer).
    pub fn same_connection(&self, other: &Peer) -> bool {
        match (&self.link, &other.link) {
            (Some((a, c)), Some((b, d))) => Arc::ptr_eq(a, b) && c == d,
            _ => false,
        }
    }
}

/// The status of a call made through a peer whose connection is gone.
pub(crate) fn closed() -> Status {
    Status::new(
        StatusCode::Unavailable,
        "the connection is closed: the peer's services went with it",
    )
    .with_origin(crate::status::Origin::Closed)
}
