//! Channels and methods: blocking calls with a deadline, and async calls with a completion
//! callback.

use std::ffi::{c_char, c_void};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use netron_engine::{Bytes, CallError, CallFuture, Channel, Method};

use crate::buf::{ntr_buf, put, take};
use crate::guard::{UserPtr, bytes_arg, entry, non_null, str_arg, write};
use crate::handles::Table;
use crate::status::*;

/// A client connection (`ntr_engine_connect`); usable from any thread at once.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_channel {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// A method bound to a channel (`ntr_channel_method`): repeated calls share its names.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_method {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// The completion of an async call: called exactly once, on an engine core thread (or on the
/// calling thread before `ntr_method_call_async` returns, when the call ends at once), with
/// the call's `user`, its status (`NTR_OK` or 1 to 16; `ntr_last_error()` has the text) and
/// the reply bytes (borrowed until the callback returns; NULL with 0 on failure). It must not
/// block; it may call `ntr_` functions, but a blocking call on the same engine fails with
/// `NTR_FAILED_PRECONDITION`.
pub type ntr_completion = Option<
    unsafe extern "C" fn(user: *mut c_void, status: ntr_status, data: *const u8, len: usize),
>;

pub(crate) static CHANNELS: Table<Channel> = Table::new(1, "ntr_channel");
static METHODS: Table<Method> = Table::new(2, "ntr_method");

fn deadline(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

fn call_error(e: &CallError) -> Error {
    Error::new(from_code(e.code()), e.to_string())
}

/// Closes the channel's connection once its calls in flight ended (async calls keep it open
/// until they complete), and frees the handle.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_channel_free(channel: ntr_channel) -> ntr_status {
    entry(|| CHANNELS.remove(channel.id).map(drop))
}

/// One blocking unary call: sends the `len` bytes at `data` (copied) to `method` of `service`
/// (`name@1.2.0`, or a requirement such as `name@^1.2` or `name`, resolved through the peer's
/// `$sys` listing) and waits for the reply, which replaces the contents of `*reply`.
///
/// `deadline_ms`: milliseconds the caller waits at most (0: no deadline); when it passes the
/// call fails with `NTR_DEADLINE_EXCEEDED` and is cancelled on the wire.
///
/// # Errors
/// A status from 1 to 16: the peer's failure, `NTR_DEADLINE_EXCEEDED`,
/// `NTR_RESOURCE_EXHAUSTED` (a limit, named), `NTR_UNAVAILABLE` (closed connection or stopped
/// engine), `NTR_FAILED_PRECONDITION` (from a handler on the channel's own core). `*reply`
/// then has `len` 0.
///
/// # Safety
/// `service` and `method` are NULL or NUL-terminated strings; `data` is valid for `len` bytes
/// (or NULL with `len` 0); `reply` is NULL or an `ntr_buf` zeroed or filled by this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_channel_call(
    channel: ntr_channel,
    service: *const c_char,
    method: *const c_char,
    data: *const u8,
    len: usize,
    deadline_ms: u64,
    reply: *mut ntr_buf,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let service = unsafe { str_arg(service, "service") }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?;
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        non_null(reply, "reply")?;
        let ch = CHANNELS.get(channel.id)?;
        // SAFETY: not NULL (checked); exclusively ours during this call (contract).
        let out = unsafe { &mut *reply };
        // SAFETY: zeroed or filled by us (contract).
        let old = unsafe { take(out) };
        drop(old);
        let r = ch.call(
            service,
            method,
            Bytes::copy_from_slice(payload),
            deadline(deadline_ms),
        );
        match r {
            Ok(v) => {
                put(out, v);
                Ok(())
            }
            Err(e) => Err(call_error(&e)),
        }
    })
}

/// Binds `method` of `service` (an exact `name@1.2.0`) on `channel`, for repeated calls with
/// `ntr_method_call` and `ntr_method_call_async`. Free it with `ntr_method_free`; it keeps the
/// connection open until then.
///
/// # Safety
/// `service` and `method` are NULL or NUL-terminated strings; `out` is NULL or valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_channel_method(
    channel: ntr_channel,
    service: *const c_char,
    method: *const c_char,
    out: *mut ntr_method,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); copied here.
        let service = unsafe { str_arg(service, "service") }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?;
        non_null(out, "out")?;
        let m = CHANNELS.get(channel.id)?.method(service, method);
        let id = METHODS.insert(m);
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_method { id }) }
    })
}

/// Frees a method handle.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_method_free(method: ntr_method) -> ntr_status {
    entry(|| METHODS.remove(method.id).map(drop))
}

/// One blocking unary call of a bound method; as `ntr_channel_call`, and `*reply`'s memory is
/// reused (no allocation for the reply once it is large enough; the request is copied once).
///
/// # Safety
/// As `ntr_channel_call`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_method_call(
    method: ntr_method,
    data: *const u8,
    len: usize,
    deadline_ms: u64,
    reply: *mut ntr_buf,
) -> ntr_status {
    entry(|| {
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        non_null(reply, "reply")?;
        let m = METHODS.get(method.id)?;
        // SAFETY: not NULL (checked); exclusively ours during this call (contract).
        let out = unsafe { &mut *reply };
        // SAFETY: zeroed or filled by us (contract).
        let mut v = unsafe { take(out) };
        v.clear();
        let r = m.call_into(
            Bytes::copy_from_slice(payload),
            deadline(deadline_ms),
            &mut v,
        );
        put(out, v);
        r.map_err(|e| call_error(&e))
    })
}

/// An async call in flight: its future, polled when the core wakes it.
struct AsyncCall {
    future: Mutex<Option<CallFuture>>,
    /// A wake arrived while another thread (or this one, re-entrantly) was polling.
    repoll: AtomicBool,
    done: unsafe extern "C" fn(*mut c_void, ntr_status, *const u8, usize),
    user: UserPtr,
}

impl AsyncCall {
    /// Polls until pending with no wake missed, or complete (then runs the callback once).
    fn poll(self: &Arc<Self>) {
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            // Err: another poll holds the lock and sees the flag after it unlocks (a poisoned
            // lock cannot happen: nothing that may panic runs while it is held).
            let Ok(mut guard) = self.future.try_lock() else {
                return;
            };
            self.repoll.store(false, Ordering::SeqCst);
            let Some(fut) = guard.as_mut() else { return };
            match Pin::new(&mut *fut).poll(&mut cx) {
                // Polled on the connection's own core outside its executor (a call started
                // from a handler or a completion callback): `CallFuture` says it would
                // deadlock if we waited here, but we do not wait. Its waker is registered
                // before that check, so the reply still wakes us, on the core, with the
                // result ready.
                Poll::Ready(Err(CallError::WouldDeadlock(_))) | Poll::Pending => {}
                Poll::Ready(result) => {
                    let fut = guard.take();
                    drop(guard);
                    self.complete(&result);
                    drop(fut);
                    return;
                }
            }
            drop(guard);
            if !self.repoll.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    fn complete(&self, result: &Result<Vec<u8>, CallError>) {
        let (status, data, len) = match result {
            Ok(v) => (
                NTR_OK,
                if v.is_empty() {
                    std::ptr::null()
                } else {
                    v.as_ptr()
                },
                v.len(),
            ),
            Err(e) => {
                let e = call_error(e);
                set_last_error(&e.message);
                (e.status, std::ptr::null(), 0)
            }
        };
        // SAFETY: `done` is a completion function (the contract of ntr_method_call_async),
        // called once (the future was taken out); `data` lives until it returns.
        let _mark = crate::guard::InCallback::enter();
        // SAFETY: as above.
        unsafe { (self.done)(self.user.0, status, data, len) };
    }
}

impl Wake for AsyncCall {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Flag first: a poller that holds the lock now checks it after unlocking.
        self.repoll.store(true, Ordering::SeqCst);
        self.poll();
    }
}

/// Starts a unary call of a bound method without blocking; `done(user, ...)` is called
/// exactly once with the outcome (see `ntr_completion`) if this returns `NTR_OK`, never if it
/// fails. The request is copied. `deadline_ms` as in `ntr_channel_call`. Costs two
/// allocations per call (the completion and the request copy).
///
/// # Safety
/// `data` is valid for `len` bytes (or NULL with `len` 0); `done` is NULL or a function of the
/// stated signature; `user` may be used by `done` on any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_method_call_async(
    method: ntr_method,
    data: *const u8,
    len: usize,
    deadline_ms: u64,
    done: ntr_completion,
    user: *mut c_void,
) -> ntr_status {
    entry(|| {
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        let done = done.ok_or_else(|| Error::new(NTR_NULL_ARGUMENT, "argument `done` is NULL"))?;
        let m = METHODS.get(method.id)?;
        let fut = m.call_async(Bytes::copy_from_slice(payload), deadline(deadline_ms));
        let call = Arc::new(AsyncCall {
            future: Mutex::new(Some(fut)),
            repoll: AtomicBool::new(false),
            done,
            user: UserPtr(user),
        });
        call.poll();
        Ok(())
    })
}
