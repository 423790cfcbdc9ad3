//! Async interceptors: `before` hooks that may await (an auth lookup in another service, a
//! token introspection), run on the core's executor before the handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use netron_codec::hpack::HeaderList;

use crate::service::{AsyncRequest, Handler, HandlerFuture, Reply, Request};
use crate::slot::Completion;
use crate::{DeferredReply, Status};

/// The future an [`AsyncInterceptor`] returns: the request to go on with (its metadata
/// possibly extended with [`AsyncRequest::insert_metadata`]), or the status to reject with.
/// It runs on the core that serves the call and need not be `Send`.
pub type InterceptFuture = Pin<Box<dyn Future<Output = Result<AsyncRequest, Status>> + 'static>>;

/// A `before` hook that may await, for checks that need I/O (an auth lookup, a quota held
/// by another service).
///
/// Installed per service ([`crate::Service::async_interceptor`]) or for every service of an
/// engine ([`crate::EngineBuilder::async_interceptor`]). The async hooks run after every sync
/// [`crate::Interceptor::before`] hook (engine's, then the service's), the engine's async
/// hooks before the service's, each group in installation order, then the handler. A hook
/// that returns `Err` stops the call: the later hooks and the handler do not run, the sync
/// interceptors' `after` hooks see the status, and the caller gets it. The caller's
/// deadline covers the hooks (the core drops the call's future when it passes) and a
/// Cancel drops them too.
///
/// Cost (docs/architecture.md, "Middleware"): a service with an async interceptor (its own
/// or the engine's) serves every method as an async one: the payload and headers are copied
/// into an [`AsyncRequest`] and the call's future is allocated, as for
/// [`crate::Service::unary_async`], plus one boxed future per hook. A sync handler then runs
/// on the core's executor after the hooks, writing into a fresh buffer (one more copy of the
/// reply), and its [`Reply::metadata`] is not sent (async handlers have no response
/// metadata); a deferred handler's answer comes back through a completion slot (one more
/// allocation). Sync [`crate::Interceptor`]s cost none of this: prefer them for checks that
/// need no I/O.
pub trait AsyncInterceptor: Send + Sync + 'static {
    /// Checks `request` and returns it (to go on) or the status to reject the call with.
    fn before(&self, request: AsyncRequest) -> InterceptFuture;
}

/// Async interceptors in installation order.
#[derive(Clone, Default)]
pub(crate) struct AsyncInterceptors(pub(crate) Vec<Arc<dyn AsyncInterceptor>>);

impl std::fmt::Debug for AsyncInterceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsyncInterceptors({})", self.0.len())
    }
}

/// The async interceptors around one service's handlers, outermost first.
pub(crate) type AsyncChain = Arc<[Arc<dyn AsyncInterceptor>]>;

async fn run_chain(chain: &AsyncChain, mut req: AsyncRequest) -> Result<AsyncRequest, Status> {
    for ic in chain.iter() {
        req = ic.before(req).await?;
    }
    Ok(req)
}

/// `h` behind `chain`: an async handler that awaits the hooks, then runs `h`.
pub(crate) fn wrap(h: &Handler, chain: AsyncChain) -> Handler {
    match h {
        Handler::Async(f) => {
            let f = f.clone();
            Handler::Async(Arc::new(move |req| {
                let (chain, f) = (chain.clone(), f.clone());
                Box::pin(async move {
                    let req = run_chain(&chain, req).await?;
                    f(req).await
                }) as HandlerFuture
            }))
        }
        Handler::Sync(f) => {
            let f = f.clone();
            Handler::Async(Arc::new(move |req| {
                let (chain, f) = (chain.clone(), f.clone());
                Box::pin(async move {
                    let req = run_chain(&chain, req).await?;
                    run_sync(&*f, &req)
                }) as HandlerFuture
            }))
        }
        Handler::Deferred(f) => {
            let f = f.clone();
            Handler::Async(Arc::new(move |req| {
                let (chain, f) = (chain.clone(), f.clone());
                Box::pin(async move {
                    let req = run_chain(&chain, req).await?;
                    let slot = Arc::new(Completion::new());
                    let armed = slot.arm();
                    debug_assert!(armed);
                    let reply = DeferredReply::to_slot(slot.clone(), req.id());
                    let peer = req.peer();
                    let r = Request::new(
                        req.id(),
                        req.payload(),
                        req.headers(),
                        req.deadline(),
                        origin_of(&peer, &req),
                    );
                    f(&r, reply);
                    SlotFuture(slot).await
                }) as HandlerFuture
            }))
        }
        // Around a stream: the hooks see the StreamOpen's metadata (not its messages) and may
        // add to it or refuse the stream (its handler never runs; the stream ends with the
        // status).
        Handler::Stream(f, kind) => {
            let f = f.clone();
            Handler::Stream(
                Arc::new(move |req: crate::StreamRequest, rx, tx| {
                    let (chain, f) = (chain.clone(), f.clone());
                    Box::pin(async move {
                        let checked = AsyncRequest::new(
                            req.id(),
                            Bytes::new(),
                            req.headers().clone(),
                            req.deadline(),
                            req.peer(),
                        )
                        .with_caller(req.peer_cred(), req.peer_certificates().cloned());
                        let checked = run_chain(&chain, checked).await?;
                        f(req.with_headers(checked.headers().clone()), rx, tx).await
                    }) as crate::streams::StreamFuture
                }),
                *kind,
            )
        }
    }
}

/// The origin a sync or deferred handler behind async hooks sees: the peer's core and
/// connection, with the caller's credentials and certificates the owned request carries
/// (fresh user R9's finding 3: they were lost, `None`, behind an async interceptor).
fn origin_of<'a>(
    peer: &'a crate::Peer,
    req: &'a AsyncRequest,
) -> Option<crate::dispatch::Origin<'a>> {
    peer.origin().map(|o| crate::dispatch::Origin {
        cred: req.peer_cred(),
        certs: req.peer_certificates(),
        ..o
    })
}

/// Runs a sync handler on an owned request, its reply into a fresh buffer.
fn run_sync(f: &crate::SyncHandler, req: &AsyncRequest) -> Result<Bytes, Status> {
    let peer = req.peer();
    let r = Request::new(
        req.id(),
        req.payload(),
        req.headers(),
        req.deadline(),
        origin_of(&peer, req),
    );
    let mut out = netron_codec::TxBuf::new();
    let mut metadata = HeaderList::default();
    // Bounded by the largest frame the protocol allows; the connection checks the reply
    // against the peer's negotiated `max_frame_size` when it sends it (ResourceExhausted
    // naming it).
    let room = netron_codec::Limits::MAX_FRAME_SIZE as usize;
    let mut buf = netron_codec::PayloadBuf::over(&mut out, room);
    f(&r, &mut Reply::new(&mut buf, &mut metadata))?;
    if buf.overflowed() {
        return Err(Status::new(
            crate::StatusCode::ResourceExhausted,
            format!("the reply exceeds the largest frame the protocol allows ({room} bytes)"),
        ));
    }
    Ok(Bytes::from(out.into_vec()))
}

/// Resolves when a deferred handler behind async interceptors answers (its
/// [`DeferredReply`] completes the slot).
struct SlotFuture(Arc<Completion>);

impl Future for SlotFuture {
    type Output = Result<Bytes, Status>;
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.register(cx.waker());
        match self.0.result() {
            Some(r) => std::task::Poll::Ready(r.map(Bytes::copy_from_slice)),
            None => std::task::Poll::Pending,
        }
    }
}
