//! `Client`: calls from any thread, through the owning core's inbox.

use std::cell::OnceCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::driver::sock;
use crate::inbox::{Command, ConnRef, Inbox};
use crate::slot::CallSlot;
use crate::{Endpoint, Status};

/// How long a waiting caller spins before parking (a cross-core wake-up costs ~25–30 µs on
/// small VMs, so spinning this long keeps a fast reply on the fast path).
const SPIN: Duration = Duration::from_micros(60);

thread_local! {
    /// One completion slot per caller thread, reused call after call.
    static SLOT: OnceCell<Arc<CallSlot>> = const { OnceCell::new() };
}

fn thread_slot() -> Arc<CallSlot> {
    SLOT.with(|s| s.get_or_init(|| Arc::new(CallSlot::new())).clone())
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
}

impl Client {
    pub(crate) fn new(inboxes: Vec<Arc<Inbox>>) -> Client {
        Client {
            inner: Arc::new(Inner {
                inboxes,
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// Connects to `endpoint` (`tcp://…`, `unix://…`) and completes the handshake.
    pub fn connect(&self, endpoint: &str) -> Result<Channel, Status> {
        // Checked first: resolving the name and connecting block too, and must never run on
        // a core's thread.
        if self.inner.inboxes.iter().any(Inbox::is_current) {
            return Err(Status::new(
                crate::StatusCode::FailedPrecondition,
                "Client::connect blocks; calling it from a core's own thread would deadlock (connect before, or from another thread)",
            ));
        }
        let ep: Endpoint = endpoint
            .parse()
            .map_err(|e: crate::EndpointError| Status::invalid_argument(e.to_string()))?;
        let fd = sock::connect(&ep, Duration::from_secs(5))
            .map_err(|e| Status::unavailable(format!("connect to {ep}: {e}")))?;
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.inboxes.len();
        let inbox = self.inner.inboxes[i].clone();
        let slot = thread_slot();
        slot.arm();
        inbox.push(Command::Adopt {
            fd,
            slot: slot.clone(),
        });
        if !slot.wait(SPIN, Some(Instant::now() + Duration::from_secs(10))) {
            return Err(Status::unavailable(format!(
                "handshake with {ep} timed out"
            )));
        }
        let b = slot.result()?;
        let conn = ConnRef {
            key: u32::from_le_bytes(b[..4].try_into().expect("8 bytes")),
            generation: u32::from_le_bytes(b[4..8].try_into().expect("8 bytes")),
        };
        Ok(Channel {
            inner: Arc::new(ChannelInner { inbox, conn }),
        })
    }
}

#[derive(Debug)]
struct ChannelInner {
    inbox: Arc<Inbox>,
    conn: ConnRef,
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
}

impl Channel {
    /// Binds `service` (`name@version`) and `method` for repeated calls.
    pub fn method(&self, service: &str, method: &str) -> Method {
        Method {
            channel: self.clone(),
            service: service.as_bytes().into(),
            method: method.as_bytes().into(),
        }
    }

    /// One unary call (blocking): sends `payload` and waits for the reply, the error, or the
    /// deadline (the call is then cancelled on the wire and fails with DeadlineExceeded).
    pub fn call(
        &self,
        service: &str,
        method: &str,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, Status> {
        self.method(service, method).call(payload, deadline)
    }
}

/// A call in flight, as a future. Dropping it before it resolves cancels the call: the
/// server gets a Cancel and drops its work.
#[derive(Debug)]
#[must_use = "a call future does nothing unless awaited; dropping it cancels the call"]
pub struct CallFuture {
    slot: Arc<CallSlot>,
    channel: Channel,
    finished: bool,
}

impl std::future::Future for CallFuture {
    type Output = Result<Vec<u8>, Status>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.slot.register(cx.waker());
        if !self.slot.is_done() {
            return std::task::Poll::Pending;
        }
        self.finished = true;
        std::task::Poll::Ready(self.slot.result().map(<[u8]>::to_vec))
    }
}

impl Drop for CallFuture {
    fn drop(&mut self) {
        if !self.finished && !self.slot.is_done() {
            let ch = &self.channel.inner;
            ch.inbox.send(Command::CancelSlot {
                conn: ch.conn,
                slot: self.slot.clone(),
            });
        }
    }
}

impl Method {
    /// Arms `slot` and hands the call to the connection's core.
    fn send(&self, payload: Bytes, deadline: Option<Duration>, slot: &Arc<CallSlot>) {
        slot.arm();
        let ch = &self.channel.inner;
        ch.inbox.send(Command::Call {
            conn: ch.conn,
            service: self.service.clone(),
            method: self.method.clone(),
            payload,
            deadline,
            idempotent: false,
            slot: slot.clone(),
        });
    }

    /// Calls the method without blocking: the returned future resolves to the reply. Works with
    /// any executor (the core wakes the future's task). Dropping the future cancels the call.
    /// Costs one allocation per call for its completion slot.
    pub fn call_async(&self, payload: impl Into<Bytes>, deadline: Option<Duration>) -> CallFuture {
        let slot = Arc::new(CallSlot::new());
        self.send(payload.into(), deadline, &slot);
        CallFuture {
            slot,
            channel: self.channel.clone(),
            finished: false,
        }
    }

    /// Calls the method (blocking), returning the reply bytes.
    pub fn call(
        &self,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, Status> {
        let mut out = Vec::new();
        self.call_into(payload, deadline, &mut out)?;
        Ok(out)
    }

    /// Calls the method (blocking), appending the reply to `out`.
    pub fn call_into(
        &self,
        payload: impl Into<Bytes>,
        deadline: Option<Duration>,
        out: &mut Vec<u8>,
    ) -> Result<(), Status> {
        if self.channel.inner.inbox.is_current() {
            return Err(Status::new(
                crate::StatusCode::FailedPrecondition,
                "a blocking call from a handler on the connection's own core would deadlock; use call_async",
            ));
        }
        let slot = thread_slot();
        self.send(payload.into(), deadline, &slot);
        // The core completes the slot on reply, error, deadline or connection loss.
        slot.wait(SPIN, None);
        out.extend_from_slice(slot.result()?);
        Ok(())
    }
}
