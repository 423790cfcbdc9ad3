//! Opening streams from a [`Channel`] (any thread; async use of the halves).

use std::sync::Arc;

use bytes::Bytes;

use super::shared::Shared;
use super::{StreamReceiver, StreamSender};
use crate::inbox::Command;
use crate::{CallOptions, Channel};

impl Channel {
    fn open(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
        first: Option<Bytes>,
        end: bool,
    ) -> Arc<Shared> {
        let (inbox, conn) = self.route();
        let shared = Shared::new(Some((inbox.clone(), conn)));
        let metadata = options.get_metadata();
        inbox.send(Command::OpenStream {
            conn,
            service: service.as_bytes().into(),
            method: method.as_bytes().into(),
            metadata: (!metadata.is_empty()).then(|| Box::new(metadata.clone())),
            deadline: options.get_deadline(),
            first,
            end,
            app: shared.clone(),
        });
        shared
    }

    /// Opens a bidirectional stream to `service` (`name@version`) / `method`. Both halves are
    /// usable at once; messages queued before the stream is open wait for it. The options'
    /// deadline bounds the whole stream.
    ///
    /// Failures (unknown method, refused, connection closed, deadline) arrive as the
    /// receiver's `Some(Err(status))` and as the sender's errors.
    pub fn open_bidi(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
    ) -> (StreamSender, StreamReceiver) {
        let shared = self.open(service, method, options, None, false);
        (
            StreamSender::new(shared.clone(), true),
            StreamReceiver::new(shared, true),
        )
    }

    /// Opens a server stream: `request` goes with the StreamOpen (which closes this side's
    /// half); the receiver yields the server's messages.
    pub fn open_server_stream(
        &self,
        service: &str,
        method: &str,
        request: impl Into<Bytes>,
        options: &CallOptions,
    ) -> StreamReceiver {
        let shared = self.open(service, method, options, Some(request.into()), true);
        StreamReceiver::new(shared, true)
    }

    /// Opens a client stream: send the messages, then end the sender (drop it or call
    /// [`StreamSender::finish`]); the receiver yields the server's one reply.
    pub fn open_client_stream(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
    ) -> (StreamSender, StreamReceiver) {
        self.open_bidi(service, method, options)
    }
}
