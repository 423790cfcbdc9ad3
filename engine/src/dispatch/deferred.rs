//! Deferred replies: a handle that answers a call later, from any thread, through the core's
//! inbox.

use std::sync::Arc;

use bytes::Bytes;
use netron_codec::hpack::HeaderList;

use crate::Status;
use crate::inbox::{Command, ConnRef, Inbox};

/// Where a call being dispatched came from: the core's inbox and the connection, for the
/// deferred reply handles of its calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub inbox: &'a Arc<Inbox>,
    pub conn: ConnRef,
    /// `shm://`: the peer process's credentials (for [`crate::Request::peer_cred`]).
    pub cred: Option<crate::shm::PeerCred>,
    /// `quic://`: the peer's verified certificate chain (for
    /// [`crate::Request::peer_certificates`]).
    pub certs: Option<&'a crate::PeerCertificates>,
}

impl<'a> Origin<'a> {
    /// Who is calling, as interceptors see it: the connection's key, credentials and
    /// certificates.
    pub(crate) fn caller(origin: Option<Origin<'a>>) -> Caller<'a> {
        Caller {
            peer: origin.map_or(0, |o| o.peer_key()),
            cred: origin.and_then(|o| o.cred),
            certs: origin.and_then(|o| o.certs),
        }
    }
}

/// Who is calling (for [`crate::Before`]): the connection's key ([`Origin::peer_key`], 0
/// outside a core), `shm://` credentials, `quic://` certificates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub peer: u64,
    pub cred: Option<crate::shm::PeerCred>,
    pub certs: Option<&'a crate::PeerCertificates>,
}

impl Origin<'_> {
    /// An opaque key of the connection (the core's inbox address, the slab key and its
    /// generation): distinct for every connection open at the same time in this process.
    pub(crate) fn peer_key(&self) -> u64 {
        let core = Arc::as_ptr(self.inbox) as u64;
        core.rotate_left(29) ^ (u64::from(self.conn.key) << 32 | u64::from(self.conn.generation))
    }
}

const DROPPED: &str = "the handler dropped its DeferredReply without answering";

/// The reply handle of a call served by a [`crate::Service::unary_deferred`] handler: answer
/// the call later, from any thread.
///
/// - Cheap: it holds the core's inbox (an `Arc` clone), the connection and the call id; it
///   allocates nothing. Answering sends one command through the core's inbox (a queue push,
///   and a doorbell write if the core sleeps).
/// - `Send`: answer from any thread. Answering consumes the handle, so a call is answered
///   at most once.
/// - Dropped unanswered, it answers `Internal` (the callee failed to answer, not the caller's
///   doing), so the caller never hangs.
/// - The caller's deadline still applies: when it passes, the core answers
///   `DeadlineExceeded`; an answer arriving after that (or after the caller cancelled, or the
///   connection closed) is dropped and counted in [`crate::CoreStats`] errors as
///   `late_deferred_reply`. A handle that outlives its connection or engine is harmless.
///
/// It moves to other threads and answers once:
///
/// ```
/// fn answer_elsewhere(reply: netron_engine::DeferredReply) {
///     std::thread::spawn(move || reply.send(netron_engine::Bytes::new()));
/// }
/// ```
///
/// Answering twice does not compile:
///
/// ```compile_fail
/// fn twice(reply: netron_engine::DeferredReply) {
///     reply.send(netron_engine::Bytes::new());
///     reply.send(netron_engine::Bytes::new()); // error: use of moved value
/// }
/// ```
#[derive(Debug)]
#[must_use = "a dropped DeferredReply answers the call with Internal"]
pub struct DeferredReply {
    inbox: Option<Arc<Inbox>>,
    /// Instead of the inbox: the slot a handler behind async interceptors is awaited on.
    slot: Option<Arc<crate::slot::Completion>>,
    conn: ConnRef,
    id: u32,
    token: u32,
}

impl DeferredReply {
    pub(crate) fn new(origin: Option<Origin<'_>>, id: u32, token: u32) -> Self {
        match origin {
            Some(o) => Self {
                inbox: Some(o.inbox.clone()),
                slot: None,
                conn: o.conn,
                id,
                token,
            },
            None => Self {
                inbox: None,
                slot: None,
                conn: ConnRef {
                    key: 0,
                    generation: 0,
                },
                id,
                token,
            },
        }
    }

    /// A handle that completes `slot` (armed) instead of answering through an inbox.
    pub(crate) fn to_slot(slot: Arc<crate::slot::Completion>, id: u32) -> Self {
        Self {
            inbox: None,
            slot: Some(slot),
            conn: ConnRef {
                key: 0,
                generation: 0,
            },
            id,
            token: 0,
        }
    }

    /// The call id on its connection.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Answers the call with `payload` (subject to the connection's `max_frame_size`: a
    /// reply above it fails the call with `ResourceExhausted`).
    pub fn send(self, payload: impl Into<Bytes>) {
        self.answer(Ok(payload.into()));
    }

    /// Answers the call with `payload` and response `metadata` (sent in the Response's header
    /// block, after which the interceptors' `after` hooks may add more). Costs the boxing of
    /// the list to send it to the core.
    pub fn send_with_metadata(mut self, payload: impl Into<Bytes>, metadata: HeaderList) {
        let metadata = (!metadata.is_empty()).then(|| Box::new(metadata));
        self.deliver(Ok(payload.into()), metadata);
    }

    /// Fails the call with `status`.
    pub fn fail(self, status: Status) {
        self.answer(Err(status));
    }

    /// Answers the call with `result`.
    pub fn answer(mut self, result: Result<Bytes, Status>) {
        self.deliver(result, None);
    }

    fn deliver(&mut self, result: Result<Bytes, Status>, metadata: Option<Box<HeaderList>>) {
        if let Some(slot) = self.slot.take() {
            // Awaited by the call's future on its core (async interceptors, dispatch/asynch.rs);
            // this handle is the slot's only completer.
            slot.complete_with(
                result.as_deref().map_err(Status::clone),
                metadata.as_deref(),
            );
            return;
        }
        if let Some(inbox) = self.inbox.take() {
            inbox.send(Command::Answer {
                conn: self.conn,
                id: self.id,
                token: self.token,
                result,
                metadata,
            });
        }
    }
}

impl Drop for DeferredReply {
    fn drop(&mut self) {
        if self.inbox.is_some() || self.slot.is_some() {
            self.deliver(Err(Status::internal(DROPPED)), None);
        }
    }
}
