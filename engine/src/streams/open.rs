//! Opening streams from a [`Channel`] (any thread) or from a handler through its [`Peer`]
//! (a stream into the peer that called); the halves are used asynchronously.

use std::sync::Arc;

use bytes::Bytes;

use super::shared::{AppHandle, Shared};
use super::{StreamReceiver, StreamSender};
use crate::dispatch::ClientInterceptors;
use crate::inbox::{Command, ConnRef, Inbox};
use crate::{CallOptions, Channel, Peer, Status};

/// A stream that failed before it was opened: both halves end with `st`.
fn failed(st: Status) -> Arc<Shared> {
    let shared = Shared::new(None);
    crate::conn::fail_app(&mut AppHandle(shared.clone()), &st);
    shared
}

/// Sends the StreamOpen command for a new stream to the core behind `route`; a detached
/// route (a [`Peer`] of a request that came from no connection) fails the stream at once.
/// The client interceptors' `before` hooks run first (they may add metadata, e.g. a token,
/// or refuse the stream: its halves then end with the refusal); their `after` hooks do not
/// run for streams.
fn open(
    (route, interceptors): (Option<(&Arc<Inbox>, ConnRef)>, Option<&ClientInterceptors>),
    service: &str,
    method: &str,
    options: &CallOptions,
    first: Option<Bytes>,
    end: bool,
) -> Arc<Shared> {
    let Some((inbox, conn)) = route else {
        return failed(
            Status::unavailable("this request did not arrive on a connection: it has no peer")
                .with_origin(crate::status::Origin::Closed),
        );
    };
    let intercepted;
    let options = match interceptors.filter(|i| !i.is_empty()) {
        None => options,
        Some(i) => match i.begin(service, method, options) {
            Ok((opts, _)) => {
                intercepted = opts;
                &intercepted
            }
            Err(e) => return failed(e.status().clone()),
        },
    };
    // As for calls: a reserved (`:`) metadata name is refused before anything is sent.
    if let Err(st) = options.check() {
        return failed(st.with_origin(crate::status::Origin::Refused));
    }
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

/// Opens with `service` resolved first (`name@^1.2`, `name`: see [`Channel::resolve`] and
/// [`Peer::resolve`]); a failure to resolve fails the stream's halves. Time spent resolving
/// comes off the stream's deadline.
fn open_resolved(
    route: (Option<(&Arc<Inbox>, ConnRef)>, Option<&ClientInterceptors>),
    resolve: impl FnOnce(&str, Option<std::time::Duration>) -> Result<String, Status>,
    (service, method): (&str, &str),
    options: &CallOptions,
    first: Option<Bytes>,
    end: bool,
) -> Arc<Shared> {
    if netron_codec::sys::ServiceId::parse(service.as_bytes()).is_ok() {
        return open(route, service, method, options, first, end);
    }
    let start = std::time::Instant::now();
    let resolved = match resolve(service, options.get_deadline()) {
        Ok(s) => s,
        Err(st) => return failed(st),
    };
    match options.get_deadline() {
        Some(d) => {
            let left = d.saturating_sub(start.elapsed());
            let options = options.clone().deadline(left);
            open(route, &resolved, method, &options, first, end)
        }
        None => open(route, &resolved, method, options, first, end),
    }
}

macro_rules! stream_openers {
    ($ty:ty, $route:ident, $resolve:ident) => {
        impl $ty {
            /// Opens a bidirectional stream to `service` / `method`. Both halves are usable at
            /// once; messages queued before the stream is open wait for it. The options'
            /// deadline bounds the whole stream.
            ///
            /// `service` is an exact `name@VERSION` or a requirement (`name@^1.2`, `name`):
            /// a [`Channel`] resolves it through the peer's `$sys` as [`Channel::resolve`]
            /// does (blocking on a cache miss, within the deadline, which the stream then
            /// gets the rest of); a [`Peer`] (inside a handler, which cannot wait) only
            /// from what its connection already resolved (await [`Peer::resolve`] first).
            ///
            /// Failures (unknown method, refused, connection closed, deadline) arrive as the
            /// receiver's `Some(Err(status))` and as the sender's errors.
            pub fn open_bidi(
                &self,
                service: &str,
                method: &str,
                options: &CallOptions,
            ) -> (StreamSender, StreamReceiver) {
                let shared = open_resolved(
                    self.$route(),
                    |s, d| self.$resolve(s, d),
                    (service, method),
                    options,
                    None,
                    false,
                );
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
                let shared = open_resolved(
                    self.$route(),
                    |s, d| self.$resolve(s, d),
                    (service, method),
                    options,
                    Some(request.into()),
                    true,
                );
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
    };
}

stream_openers!(Channel, channel_route, resolve_blocking);
stream_openers!(Peer, peer_route, resolve_kept);

impl Channel {
    /// Resolves a requirement for a stream: a blocking `$sys` round trip on a cache miss.
    fn resolve_blocking(
        &self,
        service: &str,
        deadline: Option<std::time::Duration>,
    ) -> Result<String, Status> {
        self.resolve(service, deadline)
            .map_err(|e| e.status().clone())
    }

    fn channel_route(&self) -> (Option<(&Arc<Inbox>, ConnRef)>, Option<&ClientInterceptors>) {
        (Some(self.route()), Some(self.client_interceptors()))
    }
}

impl Peer {
    /// Resolves a requirement for a stream from what the connection already fetched (a
    /// handler cannot wait here).
    fn resolve_kept(
        &self,
        service: &str,
        _deadline: Option<std::time::Duration>,
    ) -> Result<String, Status> {
        self.resolved_for_stream(service)
    }

    /// Client interceptors do not apply to calls into a peer (yet).
    fn peer_route(&self) -> (Option<(&Arc<Inbox>, ConnRef)>, Option<&ClientInterceptors>) {
        (self.link(), None)
    }
}
