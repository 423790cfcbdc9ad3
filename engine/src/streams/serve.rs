//! Stream handlers on a [`Service`]: registration of the three shapes, and starting one when
//! a StreamOpen arrives.
//!
//! A stream handler is async and runs on the core's executor like an async unary handler.
//! Its result ends the stream: `Ok` closes the server's half (an empty StreamEnd, unless the
//! handler already ended it), `Err(status)` ends the whole stream with `Error(id, status)`. A
//! panic fails the stream with `Internal`; the stream's deadline or the opener's Cancel drops
//! the handler's future. The interceptors' `before` runs when the StreamOpen arrives (and may
//! refuse the stream); `after` runs once the server's final frame is out, seeing the outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netron_codec::hpack::HeaderList;

use super::shared::{AppHandle, Notify, Shared};
use super::{StreamReceiver, StreamRequest, StreamSender};
use crate::Status;
use crate::conn::StreamApp;
use crate::service::{Handler, HandlerFuture, Service};
use netron_codec::sys::MethodKind;

/// A stream handler's future (runs on its core; need not be `Send`).
pub(crate) type StreamFuture = Pin<Box<dyn Future<Output = Result<(), Status>> + 'static>>;

/// A stream handler as stored: every shape reduced to request, receiver and sender.
pub(crate) type StreamHandler =
    dyn Fn(StreamRequest, StreamReceiver, StreamSender) -> StreamFuture + Send + Sync;

impl Service {
    /// Adds a server-streaming method: the handler gets the request message (the opener's
    /// first message; empty if it sent none) and a sender for its replies.
    ///
    /// ```
    /// use netron_engine::{Bytes, Service};
    /// let svc = Service::new("count", "1.0.0").unwrap().server_stream("upto", |_, req, mut tx| async move {
    ///     let n = req.first().copied().unwrap_or(0);
    ///     for i in 0..n {
    ///         tx.send(Bytes::from(vec![i])).await?;
    ///     }
    ///     Ok(())
    /// });
    /// # let _ = svc;
    /// ```
    pub fn server_stream<F, Fut>(self, method: &str, handler: F) -> Self
    where
        F: Fn(StreamRequest, Bytes, StreamSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + 'static,
    {
        let h = Arc::new(handler);
        self.with_handler(
            method,
            Handler::Stream(
                Arc::new(move |req, mut rx: StreamReceiver, tx| {
                    let h = h.clone();
                    Box::pin(async move {
                        let first = match rx.recv().await {
                            Some(Ok(b)) => b,
                            Some(Err(st)) => return Err(st),
                            None => Bytes::new(),
                        };
                        drop(rx);
                        h(req, first, tx).await
                    })
                }),
                MethodKind::ServerStream,
            ),
        )
    }

    /// Adds a client-streaming method: the handler reads the opener's messages and returns
    /// the one reply (sent as the server's last message).
    pub fn client_stream<F, Fut>(self, method: &str, handler: F) -> Self
    where
        F: Fn(StreamRequest, StreamReceiver) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + 'static,
    {
        let h = Arc::new(handler);
        self.with_handler(
            method,
            Handler::Stream(
                Arc::new(move |req, rx, tx: StreamSender| {
                    let fut = h(req, rx);
                    Box::pin(async move {
                        let reply = fut.await?;
                        tx.send_last(reply).await
                    })
                }),
                MethodKind::ClientStream,
            ),
        )
    }

    /// Adds a bidirectional method: the handler reads and writes as it likes; its result ends
    /// the stream.
    pub fn bidi_stream<F, Fut>(self, method: &str, handler: F) -> Self
    where
        F: Fn(StreamRequest, StreamReceiver, StreamSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + 'static,
    {
        self.with_handler(
            method,
            Handler::Stream(
                Arc::new(move |req, rx, tx| Box::pin(handler(req, rx, tx))),
                MethodKind::Bidi,
            ),
        )
    }
}

/// Starts stream handler `h` for a StreamOpen: its application side (for the connection)
/// and the future to run on the core's executor.
pub(crate) fn serve(
    h: &Arc<StreamHandler>,
    id: u32,
    headers: HeaderList,
    deadline: Option<Duration>,
    (peer, (cred, certs)): (
        crate::Peer,
        (
            Option<crate::shm::PeerCred>,
            Option<crate::PeerCertificates>,
        ),
    ),
    notify: Notify,
) -> (Box<dyn StreamApp>, HandlerFuture) {
    let shared = Shared::new_callee(notify);
    let req = StreamRequest {
        id,
        headers,
        deadline,
        peer,
        cred,
        certs,
    };
    let rx = StreamReceiver::new(shared.clone(), false);
    let tx = StreamSender::new(shared.clone(), false);
    let fut = h(req, rx, tx);
    let fin = shared.clone();
    let future: HandlerFuture = Box::pin(async move {
        let r = fut.await;
        // After what the handler queued: the end of its half, or the end of the stream. Only
        // now, so the stream's id is not free while this task runs.
        fin.finish_callee(r);
        Ok(Bytes::new())
    });
    (Box::new(AppHandle(shared)), future)
}
