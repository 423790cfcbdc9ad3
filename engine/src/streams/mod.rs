//! Streams: server-streaming, client-streaming and bidirectional calls with credit-based flow
//! control (docs/protocol.md §22–§23; the engine's choices in docs/architecture.md,
//! "Streams").
//!
//! Both sides of a stream hold a [`StreamSender`] (messages out; it waits for credit, so a
//! slow reader bounds what a writer can queue to one stream window, and all the streams of a
//! connection together to one connection window; a message takes its length in credit, an
//! empty one 1 byte, so windows bound message counts too) and a [`StreamReceiver`]
//! (messages in, as [`Bytes`]). Servers register handlers for the three shapes on a
//! [`crate::Service`] ([`crate::Service::server_stream`], [`crate::Service::client_stream`],
//! [`crate::Service::bidi_stream`]); clients open them on a [`crate::Channel`]
//! ([`crate::Channel::open_bidi`], [`crate::Channel::open_server_stream`],
//! [`crate::Channel::open_client_stream`]). Async users get [`futures_core::Stream`] and
//! [`futures_sink::Sink`] implementations.

mod budget;
mod open;
mod serve;
mod shared;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netron_codec::hpack::HeaderList;

use crate::Status;
use crate::conn::Outgoing;

pub(crate) use budget::SendBudget;
pub(crate) use serve::{StreamFuture, StreamHandler, serve};
pub use shared::TrySendError;
pub(crate) use shared::{AppHandle, Shared};

/// The sending half of a stream: queues messages while the stream has credit.
///
/// At most one stream window (`ProtocolConfig` server's `initial_stream_window`, 256 KiB by
/// default) plus one message is ever queued per stream, and at most one connection window
/// (16 stream windows) plus one message by all the streams of a connection together, however
/// fast the senders are and however slow the peer reads: [`StreamSender::send`] waits for
/// credit and room, [`StreamSender::try_send`] says [`TrySendError::WouldBlock`]. Dropping an opener's sender ends its half (OK); a
/// handler's sender is ended by the handler's result.
#[derive(Debug)]
pub struct StreamSender {
    shared: Arc<Shared>,
    /// An opener's sender ends its half when dropped.
    end_on_drop: bool,
}

impl StreamSender {
    pub(crate) fn new(shared: Arc<Shared>, end_on_drop: bool) -> StreamSender {
        StreamSender {
            shared,
            end_on_drop,
        }
    }

    /// Queues `msg` if the stream has credit and its connection room, without waiting.
    ///
    /// # Errors
    /// [`TrySendError::WouldBlock`] (with the message) when no credit is left, the
    /// connection's streams together queue a connection window already, or the stream is not
    /// open yet; [`TrySendError::TooLarge`] above the negotiated frame size;
    /// [`TrySendError::Closed`] once the stream ended or this half was ended.
    pub fn try_send(&mut self, msg: impl Into<Bytes>) -> Result<(), TrySendError> {
        self.shared.try_send(msg.into(), false)
    }

    /// Queues `msg`, waiting for credit first.
    ///
    /// # Errors
    /// The status the stream ended with (cancelled, failed, deadline, connection closed), or
    /// `ResourceExhausted` for a message above the negotiated frame size.
    pub async fn send(&mut self, msg: impl Into<Bytes>) -> Result<(), Status> {
        self.send_inner(msg.into(), false).await
    }

    /// Queues `msg` as this side's last message (END_STREAM), waiting for credit first.
    ///
    /// # Errors
    /// As [`StreamSender::send`].
    pub async fn send_last(mut self, msg: impl Into<Bytes>) -> Result<(), Status> {
        self.send_inner(msg.into(), true).await
    }

    async fn send_inner(&mut self, msg: Bytes, end: bool) -> Result<(), Status> {
        // With credit and room (the steady state), one lock: queue at once.
        let msg = match self.shared.try_send(msg, end) {
            Ok(()) => return Ok(()),
            Err(TrySendError::WouldBlock(msg)) => msg,
            Err(e) => return Err(to_status(e)),
        };
        poll_fn(|cx| self.shared.poll_send_ready(cx)).await?;
        self.shared.send_ready(msg, end).map_err(to_status)
    }

    /// Ends this side's half: OK (an empty StreamEnd).
    pub fn finish(self) {
        self.shared.push(Outgoing::End(Ok(())));
    }

    /// Ends this side's half with a failure (a StreamEnd with an ErrorBody). From a server's
    /// handler this ends the whole stream.
    pub fn fail(self, status: Status) {
        self.shared.push(Outgoing::End(Err(status)));
    }

    /// Bytes queued and not yet taken by the connection (at most the stream window plus one
    /// message).
    pub fn buffered(&self) -> usize {
        self.shared.buffered()
    }

    /// The credit left in bytes (negative after a message larger than what was left; 0
    /// before the stream is open).
    pub fn credit(&self) -> i64 {
        self.shared.credit()
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        if self.end_on_drop {
            self.shared.push(Outgoing::End(Ok(())));
        }
    }
}

fn to_status(e: TrySendError) -> Status {
    match e {
        TrySendError::Closed(st) => st,
        e @ TrySendError::TooLarge { .. } => {
            Status::new(crate::StatusCode::ResourceExhausted, e.to_string())
        }
        TrySendError::WouldBlock(_) => Status::new(
            crate::StatusCode::ResourceExhausted,
            "no stream credit left although the sender was ready",
        ),
    }
}

impl futures_sink::Sink<Bytes> for StreamSender {
    type Error = Status;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.shared.poll_send_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<(), Status> {
        self.shared.send_ready(item, false).map_err(to_status)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Queued messages belong to the connection, which sends them as credit allows.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.shared.push(Outgoing::End(Ok(())));
        Poll::Ready(Ok(()))
    }
}

/// The receiving half of a stream: the peer's messages in order, then the end.
///
/// Credit goes back to the peer as messages are read, so a receiver that does not read
/// holds the peer to one stream window. Dropping an opener's receiver before the stream
/// ended cancels the stream.
#[derive(Debug)]
pub struct StreamReceiver {
    shared: Arc<Shared>,
    /// An opener's receiver cancels the stream when dropped before its end.
    cancel_on_drop: bool,
}

impl StreamReceiver {
    pub(crate) fn new(shared: Arc<Shared>, cancel_on_drop: bool) -> StreamReceiver {
        StreamReceiver {
            shared,
            cancel_on_drop,
        }
    }

    /// The next message; `None` once the peer ended its half OK; `Some(Err)` (once, then
    /// `None`) when it failed or the stream ended otherwise (cancelled, deadline, connection
    /// closed: `Unavailable`).
    pub async fn recv(&mut self) -> Option<Result<Bytes, Status>> {
        poll_fn(|cx| self.shared.poll_recv(cx)).await
    }

    /// Cancels the stream (an opener's Cancel; the peer's handler is stopped).
    pub fn cancel(self) {
        self.shared.push(Outgoing::Abort(Status::new(
            crate::StatusCode::Cancelled,
            "cancelled by the caller",
        )));
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        if self.cancel_on_drop && !self.shared.recv_finished() {
            self.shared.push(Outgoing::Abort(Status::new(
                crate::StatusCode::Cancelled,
                "the stream's receiver was dropped",
            )));
        }
        self.shared.drop_receiver();
    }
}

impl futures_core::Stream for StreamReceiver {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.poll_recv(cx)
    }
}

/// A stream as its handler sees it: the metadata of the StreamOpen, its deadline, and the
/// calling peer.
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamRequest {
    id: u32,
    headers: HeaderList,
    deadline: Option<Duration>,
    peer: crate::Peer,
    cred: Option<crate::shm::PeerCred>,
    certs: Option<crate::PeerCertificates>,
}

impl StreamRequest {
    /// The stream's id on its connection.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The calling process's credentials on an `shm://` connection (as
    /// [`crate::Request::peer_cred`]); `None` on other transports.
    pub fn peer_cred(&self) -> Option<crate::shm::PeerCred> {
        self.cred
    }

    /// The caller's verified certificate chain on a `quic://` connection with mutual TLS (as
    /// [`crate::Request::peer_certificates`]); `None` otherwise.
    pub fn peer_certificates(&self) -> Option<&crate::PeerCertificates> {
        self.certs.as_ref()
    }

    /// The same request with `headers` (after async interceptors added metadata).
    pub(crate) fn with_headers(mut self, headers: HeaderList) -> StreamRequest {
        self.headers = headers;
        self
    }

    /// All header fields of the StreamOpen (`:service`, `:method` and metadata).
    pub fn headers(&self) -> &HeaderList {
        &self.headers
    }

    /// The last value of metadata field `name`, if present.
    pub fn metadata(&self, name: &str) -> Option<&[u8]> {
        crate::service::last(&self.headers, name)
    }

    /// The time the opener gave the whole stream, measured when the StreamOpen arrived.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The peer that opened the stream (to call it back).
    pub fn peer(&self) -> crate::Peer {
        self.peer.clone()
    }
}
