//! Streams: the `ntr_stream` handle both sides use from any thread (send, receive, finish,
//! fail, cancel, free), and streams opened from a channel. The handlers that serve them are
//! in `stream_handlers.rs`.

use std::ffi::{c_char, c_void};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;
use netron_engine::{
    Bytes, CallOptions, Status, StatusCode, StreamReceiver, StreamSender, TrySendError,
};

use crate::client::CHANNELS;
use crate::client::ntr_channel;
use crate::guard::{
    bytes_arg, entry, may_block, non_null, park_until, str_arg, thread_waker, until, write,
};
use crate::handles::Table;
use crate::status::*;

/// One stream, as its opener or its handler holds it (`ntr_channel_open_*`, or given to a
/// stream handler). Usable from any thread; freed exactly once with `ntr_stream_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_stream {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// A stream as its handler sees it when it opens. Every pointer is borrowed: valid only until
/// the handler callback returns.
#[repr(C)]
#[derive(Debug)]
pub struct ntr_stream_request {
    /// A server-streaming method's request message (NULL if `len` is 0); NULL for the other
    /// shapes, whose messages are read with `ntr_stream_recv`.
    pub data: *const u8,
    /// Length of `data` in bytes.
    pub len: usize,
    /// The stream's id on its connection.
    pub stream_id: u32,
    /// Milliseconds left before the opener's deadline for the whole stream, rounded up; 0 if
    /// it set none.
    pub deadline_ms: u64,
}

/// A received message: `data[0..len]`, owned by the library and borrowed by the caller until
/// the next `ntr_stream_recv` or `ntr_stream_free` of the same stream (`ntr_core_stream_recv`
/// / `ntr_core_stream_free` for a core's stream).
#[repr(C)]
#[derive(Debug)]
pub struct ntr_chunk {
    /// The message's bytes (NULL if `len` is 0).
    pub data: *const u8,
    /// Length in bytes.
    pub len: usize,
}

/// A stream handler: called on an engine core thread when a stream of its method opens, with
/// the `user` given at registration, the request (borrowed for the duration of the call) and
/// the stream's handle. When it returns `NTR_OK` the program owns the handle and frees it
/// with `ntr_stream_free` once done with it.
///
/// It must not block (it holds its core): keep `stream` and serve it from another thread.
/// Inside the callback, `ntr_stream_finish`, `_fail`, `_cancel` and `_free` work;
/// `ntr_stream_try_send` says `NTR_WOULD_BLOCK` (the stream opens once the callback returned),
/// and `ntr_stream_recv` and a waiting `ntr_stream_send` are refused with
/// `NTR_FAILED_PRECONDITION` (waiting would hold the core). The stream ends when the program calls `ntr_stream_finish` (OK),
/// `ntr_stream_fail` or `ntr_stream_cancel`, or frees the handle (cancelled). Returning a
/// status from 1 to 16 fails the stream with it (other non-zero values: `NTR_INTERNAL`)
/// unless it already ended, and the library frees `stream` (not to be used after that).
pub type ntr_stream_handler = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        request: *const ntr_stream_request,
        stream: ntr_stream,
    ) -> ntr_status,
>;

/// How a handler's stream ends its half, once (the handler future waits for it).
#[derive(Default)]
pub(crate) struct Done {
    inner: Mutex<DoneInner>,
}

#[derive(Default)]
struct DoneInner {
    result: Option<Result<Bytes, Status>>,
    resolved: bool,
    waker: Option<Waker>,
}

impl Done {
    fn lock(&self) -> MutexGuard<'_, DoneInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the outcome unless one was set; `false` if one was.
    pub(crate) fn resolve(&self, r: Result<Bytes, Status>) -> bool {
        let waker = {
            let mut g = self.lock();
            if g.resolved {
                return false;
            }
            g.resolved = true;
            g.result = Some(r);
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    pub(crate) async fn wait(self: Arc<Self>) -> Result<Bytes, Status> {
        std::future::poll_fn(|cx| {
            let mut g = self.lock();
            match g.result.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    g.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Server,
    Client,
    Bidi,
}

struct State {
    tx: Option<StreamSender>,
    rx: Option<StreamReceiver>,
    /// The chunk C borrows (until the next receive or the free).
    chunk: Bytes,
    /// `Some` on a handler's stream: how its half ends.
    done: Option<Arc<Done>>,
    /// A client-streaming handler's reply, sent when it finishes.
    reply: Option<Bytes>,
    shape: Shape,
    /// Threads waiting in a blocking send or receive (unparked by a free).
    waiters: Vec<Thread>,
    freed: bool,
}

pub(crate) struct StreamCell {
    state: Mutex<State>,
}

impl StreamCell {
    pub(crate) fn new(
        tx: Option<StreamSender>,
        rx: Option<StreamReceiver>,
        done: Option<Arc<Done>>,
        shape: Shape,
    ) -> Arc<StreamCell> {
        Arc::new(StreamCell {
            state: Mutex::new(State {
                tx,
                rx,
                chunk: Bytes::new(),
                done,
                reply: None,
                shape,
                waiters: Vec::new(),
                freed: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing that may panic runs while it is held with the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) static STREAMS: Table<Arc<StreamCell>> = Table::new(8, "ntr_stream");

fn freed_error(stream: ntr_stream) -> Error {
    Error::new(
        NTR_INVALID_HANDLE,
        format!(
            "ntr_stream {:#x} was freed while this call waited",
            stream.id
        ),
    )
}

fn send_error(e: TrySendError) -> Error {
    match e {
        TrySendError::WouldBlock(_) => would_block_send(),
        TrySendError::Closed(st) => status_error(&st),
        e => Error::new(NTR_RESOURCE_EXHAUSTED, e.to_string()),
    }
}

fn would_block_send() -> Error {
    Error::new(
        NTR_WOULD_BLOCK,
        "no stream credit now: the stream is not open yet, or the peer has not read enough of what was sent (the stream window, or the connection window for all its streams); retry later",
    )
}

fn no_sender(st: &State) -> Error {
    let why = if st.done.is_none() && st.shape == Shape::Server {
        "a server-streaming opener sends only its request"
    } else {
        "this side already finished, failed or cancelled its half"
    };
    Error::new(NTR_FAILED_PRECONDITION, format!("cannot send: {why}"))
}

/// A client-streaming handler's send: its one reply, sent by `ntr_stream_finish`.
fn keep_reply(st: &mut State, bytes: &[u8]) -> Result<(), Error> {
    if st.reply.is_some() || st.done.as_ref().is_some_and(|d| d.lock().resolved) {
        return Err(Error::new(
            NTR_FAILED_PRECONDITION,
            "a client-streaming handler sends one reply (then ntr_stream_finish); it already sent it or ended",
        ));
    }
    st.reply = Some(Bytes::copy_from_slice(bytes));
    Ok(())
}

/// Queues the `len` bytes at `data` (copied) on `stream` if it has credit, without waiting.
/// On a client-streaming handler's stream this is its one reply, sent when it finishes.
///
/// # Errors
/// `NTR_WOULD_BLOCK` with no credit (the peer has not read enough yet, or the stream is not
/// open yet: retry after receiving, or use `ntr_stream_send` with a timeout);
/// `NTR_RESOURCE_EXHAUSTED` above the negotiated frame size; `NTR_FAILED_PRECONDITION` after
/// this side finished (or for a server-streaming opener, which has no sending half); the
/// stream's end status (1 to 16) once it ended.
///
/// # Safety
/// `data` is valid for reads of `len` bytes (or NULL with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_stream_try_send(
    stream: ntr_stream,
    data: *const u8,
    len: usize,
) -> ntr_status {
    entry(|| {
        // SAFETY: valid for `len` bytes during this call (contract).
        let bytes = unsafe { bytes_arg(data, len, "data") }?;
        let cell = STREAMS.get(stream.id)?;
        let mut st = cell.lock();
        if st.done.is_some() && st.shape == Shape::Client {
            return keep_reply(&mut st, bytes);
        }
        let Some(tx) = st.tx.as_mut() else {
            return Err(no_sender(&st));
        };
        // No probe with an empty message to learn whether the stream ended without copying:
        // credit could arrive between the check and the probe, and the probe then went out
        // as a real empty message (the C++ streams example once echoed 1,001 messages for
        // 1,000, the first an empty one, on a loaded CI host). A blocked sender pays a copy.
        tx.try_send(Bytes::copy_from_slice(bytes))
            .map_err(send_error)
    })
}

/// Queues the `len` bytes at `data` (copied) on `stream`, waiting up to `timeout_ms`
/// milliseconds for credit (`NTR_FOREVER`: no limit but the stream's own deadline; 0: as
/// `ntr_stream_try_send`).
///
/// # Errors
/// As `ntr_stream_try_send` (`NTR_WOULD_BLOCK` when the timeout passed), and
/// `NTR_FAILED_PRECONDITION` for a non-zero timeout inside a callback of this library.
///
/// # Safety
/// `data` is valid for reads of `len` bytes (or NULL with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_stream_send(
    stream: ntr_stream,
    data: *const u8,
    len: usize,
    timeout_ms: u64,
) -> ntr_status {
    if timeout_ms == 0 {
        // SAFETY: the same contract.
        return unsafe { ntr_stream_try_send(stream, data, len) };
    }
    entry(|| {
        // SAFETY: valid for `len` bytes during this call (contract).
        let bytes = unsafe { bytes_arg(data, len, "data") }?;
        let cell = STREAMS.get(stream.id)?;
        may_block("ntr_stream_send")?;
        let end = until(timeout_ms);
        let waker = thread_waker();
        let mut cx = Context::from_waker(&waker);
        let mut msg = None;
        let me = std::thread::current();
        loop {
            {
                let mut st = cell.lock();
                st.waiters.retain(|t| t.id() != me.id());
                if st.freed {
                    return Err(freed_error(stream));
                }
                if st.done.is_some() && st.shape == Shape::Client {
                    return keep_reply(&mut st, bytes);
                }
                let Some(tx) = st.tx.as_mut() else {
                    return Err(no_sender(&st));
                };
                match Pin::new(&mut *tx).poll_ready(&mut cx) {
                    Poll::Ready(Ok(())) => {
                        let msg = msg.take().unwrap_or_else(|| Bytes::copy_from_slice(bytes));
                        return Pin::new(tx).start_send(msg).map_err(|s| status_error(&s));
                    }
                    Poll::Ready(Err(s)) => return Err(status_error(&s)),
                    Poll::Pending => {
                        msg.get_or_insert_with(|| Bytes::copy_from_slice(bytes));
                        st.waiters.push(me.clone());
                    }
                }
            }
            if !park_until(end) {
                cell.lock().waiters.retain(|t| t.id() != me.id());
                return Err(Error::new(
                    NTR_WOULD_BLOCK,
                    format!("no stream credit within timeout_ms {timeout_ms}"),
                ));
            }
        }
    })
}

/// Receives the next message of `stream` into `*out` (borrowed: see `ntr_chunk`), waiting up
/// to `timeout_ms` milliseconds (0: do not wait; `NTR_FOREVER`: no limit but the stream's
/// deadline). The previous chunk of this stream is released first. Messages arrive in order;
/// reading returns credit to the peer.
///
/// # Errors
/// `NTR_WOULD_BLOCK` when nothing arrived within the timeout; `NTR_END_OF_STREAM` once the
/// peer ended its half OK (and on every later call); the status the stream ended with (1 to
/// 16: the peer's failure, `NTR_CANCELLED`, `NTR_DEADLINE_EXCEEDED`, `NTR_UNAVAILABLE` when
/// the connection closed) once, then `NTR_END_OF_STREAM`; `NTR_FAILED_PRECONDITION` for a
/// non-zero timeout inside a callback of this library. `*out` is written only on `NTR_OK`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_stream_recv(
    stream: ntr_stream,
    timeout_ms: u64,
    out: *mut ntr_chunk,
) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let cell = STREAMS.get(stream.id)?;
        if timeout_ms != 0 {
            may_block("ntr_stream_recv")?;
        }
        let end = until(timeout_ms);
        let waker = if timeout_ms == 0 {
            Waker::noop().clone()
        } else {
            thread_waker()
        };
        let mut cx = Context::from_waker(&waker);
        let me = std::thread::current();
        loop {
            {
                let mut st = cell.lock();
                st.waiters.retain(|t| t.id() != me.id());
                if st.freed {
                    return Err(freed_error(stream));
                }
                st.chunk = Bytes::new();
                let Some(rx) = st.rx.as_mut() else {
                    return Err(Error::new(
                        NTR_END_OF_STREAM,
                        "the stream's receiving half ended (or this side has none)",
                    ));
                };
                match Pin::new(rx).poll_next(&mut cx) {
                    Poll::Ready(Some(Ok(b))) => {
                        let chunk = ntr_chunk {
                            data: if b.is_empty() {
                                std::ptr::null()
                            } else {
                                b.as_ptr()
                            },
                            len: b.len(),
                        };
                        // The bytes stay in the cell until the next receive or the free.
                        st.chunk = b;
                        // SAFETY: not NULL (checked); valid for a write (contract).
                        return unsafe { write(out, chunk) };
                    }
                    Poll::Ready(Some(Err(s))) => return Err(status_error(&s)),
                    Poll::Ready(None) => {
                        return Err(Error::new(
                            NTR_END_OF_STREAM,
                            "the peer ended its half of the stream",
                        ));
                    }
                    Poll::Pending if timeout_ms == 0 => {
                        return Err(Error::new(NTR_WOULD_BLOCK, "no message waiting"));
                    }
                    Poll::Pending => st.waiters.push(me.clone()),
                }
            }
            if !park_until(end) {
                cell.lock().waiters.retain(|t| t.id() != me.id());
                return Err(Error::new(
                    NTR_WOULD_BLOCK,
                    format!("no message within timeout_ms {timeout_ms}"),
                ));
            }
        }
    })
}

/// Ends this side's half of `stream` OK: an opener's last message was sent (the peer's
/// receive sees the end); a handler's stream ends its half (a client-streaming handler's
/// reply, kept by its send, goes out now). The handle stays valid (receive the rest, then
/// free it).
///
/// # Errors
/// `NTR_FAILED_PRECONDITION` when this side already ended its half (or has none).
#[unsafe(no_mangle)]
pub extern "C" fn ntr_stream_finish(stream: ntr_stream) -> ntr_status {
    entry(|| {
        let cell = STREAMS.get(stream.id)?;
        let mut st = cell.lock();
        if let Some(done) = st.done.clone() {
            let reply = st.reply.take().unwrap_or_default();
            if !done.resolve(Ok(reply)) {
                return Err(no_sender(&st));
            }
            st.tx = None;
            return Ok(());
        }
        let tx = st.tx.take().ok_or_else(|| no_sender(&st))?;
        tx.finish();
        Ok(())
    })
}

/// Ends this side's half of `stream` with `status` (1 to 16; other values give
/// `NTR_INTERNAL`) and `message` (copied; NULL for none). From a handler this ends the whole
/// stream: the opener's receive returns that status.
///
/// # Errors
/// `NTR_FAILED_PRECONDITION` when this side already ended its half (or has none).
///
/// # Safety
/// `message` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_stream_fail(
    stream: ntr_stream,
    status: ntr_status,
    message: *const c_char,
) -> ntr_status {
    entry(|| {
        let text = if message.is_null() {
            String::new()
        } else {
            // SAFETY: not NULL, NUL-terminated (contract); copied here.
            unsafe { str_arg(message, "message") }?.to_owned()
        };
        let st_fail = Status::new(to_code(status), text);
        let cell = STREAMS.get(stream.id)?;
        let mut st = cell.lock();
        if let Some(done) = st.done.clone() {
            if !done.resolve(Err(st_fail)) {
                return Err(no_sender(&st));
            }
            st.tx = None;
            return Ok(());
        }
        let tx = st.tx.take().ok_or_else(|| no_sender(&st))?;
        tx.fail(st_fail);
        Ok(())
    })
}

/// Cancels `stream`: an opener's Cancel (the peer's handler is stopped), or a handler ending
/// the stream with `NTR_CANCELLED`. What was queued and not yet sent is dropped. The handle
/// stays valid until freed; receiving gives `NTR_END_OF_STREAM` (opener) or the end, also to
/// a thread already waiting in `ntr_stream_recv` or `ntr_stream_send` (woken at once).
#[unsafe(no_mangle)]
pub extern "C" fn ntr_stream_cancel(stream: ntr_stream) -> ntr_status {
    entry(|| {
        let cell = STREAMS.get(stream.id)?;
        let waiters = {
            let mut st = cell.lock();
            cancel(&mut st, "cancelled by the C program");
            std::mem::take(&mut st.waiters)
        };
        // A thread blocked in a send or receive of this stream finds it ended.
        for t in waiters {
            t.unpark();
        }
        Ok(())
    })
}

fn cancel(st: &mut State, why: &'static str) {
    st.chunk = Bytes::new();
    if let Some(done) = &st.done {
        done.resolve(Err(Status::new(StatusCode::Cancelled, why)));
        st.tx = None;
        return;
    }
    if let Some(rx) = st.rx.take() {
        rx.cancel();
    }
    // The cancel went first: this half's end after it changes nothing.
    st.tx = None;
}

/// Frees `stream`. A stream still open is cancelled (as `ntr_stream_cancel`): a handle never
/// leaks a stream, and a thread waiting on it returns `NTR_INVALID_HANDLE`. The last chunk
/// received is released.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_stream_free(stream: ntr_stream) -> ntr_status {
    entry(|| STREAMS.remove(stream.id).map(close))
}

/// Ends what a freed handle still holds: cancels a stream still open, releases the chunk and
/// wakes the threads waiting on it.
pub(crate) fn close(cell: Arc<StreamCell>) {
    let (tx, rx, waiters) = {
        let mut st = cell.lock();
        st.freed = true;
        if let Some(done) = &st.done {
            done.resolve(Err(Status::new(
                StatusCode::Cancelled,
                "the C program freed the stream before finishing it",
            )));
        }
        st.chunk = Bytes::new();
        (st.tx.take(), st.rx.take(), std::mem::take(&mut st.waiters))
    };
    // An opener's receiver cancels the stream if it is still open; its sender then ends its
    // half (no effect after the cancel).
    drop(rx);
    drop(tx);
    for t in waiters {
        t.unpark();
    }
}

fn deadline_opts(ms: u64) -> CallOptions {
    match ms {
        0 => CallOptions::new(),
        ms => CallOptions::new().deadline(Duration::from_millis(ms)),
    }
}

/// The channel's stream arguments, checked.
///
/// # Safety
/// `service` and `method` are NULL or NUL-terminated strings valid during the call; `out` is
/// NULL or valid for a write.
unsafe fn open_args<'a>(
    service: *const c_char,
    method: *const c_char,
    out: *mut ntr_stream,
) -> Result<(&'a str, &'a str), Error> {
    // SAFETY: NULL or NUL-terminated (contract).
    let service = unsafe { str_arg(service, "service") }?;
    // SAFETY: as above.
    let method = unsafe { str_arg(method, "method") }?;
    non_null(out, "out")?;
    Ok((service, method))
}

fn insert(
    out: *mut ntr_stream,
    tx: Option<StreamSender>,
    rx: StreamReceiver,
    shape: Shape,
) -> Result<(), Error> {
    let id = STREAMS.insert(StreamCell::new(tx, Some(rx), None, shape));
    // SAFETY: checked not NULL by open_args; valid for a write (the caller's contract).
    unsafe { write(out, ntr_stream { id }) }
}

/// Opens a bidirectional stream to `method` of `service` (`name@1.2.0`, or a requirement
/// resolved through the peer's `$sys` as in `ntr_channel_call`) and writes its handle to
/// `*out`. Both halves are usable at once (messages sent before it is open wait for credit);
/// `deadline_ms` bounds the whole stream (0: none). Failures to open (no such method, refused,
/// connection closed) arrive through `ntr_stream_recv`. Free it with `ntr_stream_free`.
///
/// # Safety
/// `service` and `method` are NULL or NUL-terminated strings; `out` is NULL or valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_channel_open_bidi(
    channel: ntr_channel,
    service: *const c_char,
    method: *const c_char,
    deadline_ms: u64,
    out: *mut ntr_stream,
) -> ntr_status {
    entry(|| {
        // SAFETY: the same contract.
        let (service, method) = unsafe { open_args(service, method, out) }?;
        let ch = CHANNELS.get(channel.id)?;
        let (tx, rx) = ch.open_bidi(service, method, &deadline_opts(deadline_ms));
        insert(out, Some(tx), rx, Shape::Bidi)
    })
}

/// Opens a client-streaming stream: send messages, `ntr_stream_finish`, then receive the one
/// reply. As `ntr_channel_open_bidi` otherwise.
///
/// # Safety
/// As `ntr_channel_open_bidi`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_channel_open_client_stream(
    channel: ntr_channel,
    service: *const c_char,
    method: *const c_char,
    deadline_ms: u64,
    out: *mut ntr_stream,
) -> ntr_status {
    entry(|| {
        // SAFETY: the same contract.
        let (service, method) = unsafe { open_args(service, method, out) }?;
        let ch = CHANNELS.get(channel.id)?;
        let (tx, rx) = ch.open_client_stream(service, method, &deadline_opts(deadline_ms));
        insert(out, Some(tx), rx, Shape::Client)
    })
}

/// Opens a server-streaming stream with the request `data[0..len]` (copied): receive the
/// server's messages until `NTR_END_OF_STREAM`. This side has no sending half. As
/// `ntr_channel_open_bidi` otherwise.
///
/// # Safety
/// As `ntr_channel_open_bidi`; `data` is valid for `len` bytes (or NULL with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_channel_open_server_stream(
    channel: ntr_channel,
    service: *const c_char,
    method: *const c_char,
    data: *const u8,
    len: usize,
    deadline_ms: u64,
    out: *mut ntr_stream,
) -> ntr_status {
    entry(|| {
        // SAFETY: the same contract.
        let (service, method) = unsafe { open_args(service, method, out) }?;
        // SAFETY: valid for `len` bytes during this call (contract).
        let request = unsafe { bytes_arg(data, len, "data") }?;
        let ch = CHANNELS.get(channel.id)?;
        let rx = ch.open_server_stream(
            service,
            method,
            Bytes::copy_from_slice(request),
            &deadline_opts(deadline_ms),
        );
        insert(out, None, rx, Shape::Server)
    })
}
