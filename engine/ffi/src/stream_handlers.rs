//! Stream handlers: C callbacks serving the three stream shapes of a service.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use netron_engine::{Service, Status, StreamReceiver, StreamRequest, StreamSender};

use crate::guard::{InCallback, UserPtr, entry, str_arg};
use crate::server::{SERVICES, ntr_release, ntr_service};
use crate::status::*;
use crate::streams::{
    Done, STREAMS, Shape, StreamCell, close, ntr_stream, ntr_stream_handler, ntr_stream_request,
};

/// A registered C stream handler; releases its `user` when the last copy of the service
/// drops.
struct StreamCallback {
    handler: unsafe extern "C" fn(*mut c_void, *const ntr_stream_request, ntr_stream) -> ntr_status,
    user: UserPtr,
    release: ntr_release,
}

impl Drop for StreamCallback {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the registration's contract: `release(user)` may be called once, from
            // any thread, when the library is done with `user` (this is the last reference).
            unsafe { release(self.user.0) };
        }
    }
}

impl StreamCallback {
    /// Hands a new stream to C; the future the engine runs waits for its end.
    fn start(
        &self,
        req: &StreamRequest,
        first: &[u8],
        (tx, rx): (Option<StreamSender>, Option<StreamReceiver>),
        shape: Shape,
    ) -> Arc<Done> {
        let done = Arc::new(Done::default());
        let id = STREAMS.insert(StreamCell::new(tx, rx, Some(done.clone()), shape));
        let request = ntr_stream_request {
            data: if first.is_empty() {
                std::ptr::null()
            } else {
                first.as_ptr()
            },
            len: first.len(),
            stream_id: req.id(),
            deadline_ms: req.deadline().map_or(0, |d| {
                u64::try_from(d.as_micros().div_ceil(1000))
                    .unwrap_or(u64::MAX)
                    .max(1)
            }),
        };
        let status = {
            let _mark = InCallback::enter();
            // No lock is held: the handler may call any ntr_ function.
            // SAFETY: `handler` is such a function by the registration's contract; `request`
            // and the bytes it points to outlive the call.
            unsafe { (self.handler)(self.user.0, &request, ntr_stream { id }) }
        };
        if status != NTR_OK {
            done.resolve(Err(Status::new(
                to_code(status),
                format!(
                    "the C stream handler returned {} ({status})",
                    // SAFETY: a static NUL-terminated string.
                    unsafe { std::ffi::CStr::from_ptr(ntr_status_str(status)) }.to_string_lossy()
                ),
            )));
            // The failed stream's handle is the library's to free (unless the handler did).
            if let Ok(cell) = STREAMS.remove(id) {
                close(cell);
            }
        }
        done
    }
}

/// The registration arguments, checked: the method name and the callback.
///
/// # Safety
/// As `ntr_service_bidi_stream`.
unsafe fn register_args<'a>(
    service: ntr_service,
    method: *const c_char,
    handler: ntr_stream_handler,
    user: *mut c_void,
    release: ntr_release,
) -> Result<(&'a str, Arc<StreamCallback>), Error> {
    // SAFETY: NULL or NUL-terminated (contract); used during the call only.
    let method = unsafe { str_arg(method, "method") }?;
    let handler =
        handler.ok_or_else(|| Error::new(NTR_NULL_ARGUMENT, "argument `handler` is NULL"))?;
    SERVICES.with(service.id, |_| ())?;
    Ok((
        method,
        Arc::new(StreamCallback {
            handler,
            user: UserPtr(user),
            release,
        }),
    ))
}

/// Adds bidirectional streaming method `method` served by `handler` (see
/// `ntr_stream_handler`), which gets `user` for every stream. On success the library owns
/// `user` and calls `release(user)` (if not NULL) once done with it; on failure `release` is
/// not called. Registering a method name again replaces the earlier handler.
///
/// # Safety
/// `method` is NULL or a NUL-terminated string; `handler` and `release` are NULL or functions
/// of the stated signatures; `user` may be used by them from any thread, until `release`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_service_bidi_stream(
    service: ntr_service,
    method: *const c_char,
    handler: ntr_stream_handler,
    user: *mut c_void,
    release: ntr_release,
) -> ntr_status {
    entry(|| {
        // SAFETY: the same contract.
        let (method, cb) = unsafe { register_args(service, method, handler, user, release) }?;
        SERVICES.update(service.id, |svc: Service| {
            svc.bidi_stream(method, move |req, rx, tx| {
                let done = cb.start(&req, &[], (Some(tx), Some(rx)), Shape::Bidi);
                async move { done.wait().await.map(drop) }
            })
        })
    })
}

/// Adds server-streaming method `method`: the handler gets the opener's request in
/// `request->data` and sends its messages on the stream, then finishes it. As
/// `ntr_service_bidi_stream` otherwise.
///
/// # Safety
/// As `ntr_service_bidi_stream`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_service_server_stream(
    service: ntr_service,
    method: *const c_char,
    handler: ntr_stream_handler,
    user: *mut c_void,
    release: ntr_release,
) -> ntr_status {
    entry(|| {
        // SAFETY: the same contract.
        let (method, cb) = unsafe { register_args(service, method, handler, user, release) }?;
        SERVICES.update(service.id, |svc: Service| {
            svc.server_stream(method, move |req, first, tx| {
                let done = cb.start(&req, &first, (Some(tx), None), Shape::Server);
                async move { done.wait().await.map(drop) }
            })
        })
    })
}

/// Adds client-streaming method `method`: the handler receives the opener's messages until
/// `NTR_END_OF_STREAM`, sends one reply (`ntr_stream_send`, kept until the finish) and
/// finishes the stream (no send: an empty reply). As `ntr_service_bidi_stream` otherwise.
///
/// # Safety
/// As `ntr_service_bidi_stream`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_service_client_stream(
    service: ntr_service,
    method: *const c_char,
    handler: ntr_stream_handler,
    user: *mut c_void,
    release: ntr_release,
) -> ntr_status {
    entry(|| {
        // SAFETY: the same contract.
        let (method, cb) = unsafe { register_args(service, method, handler, user, release) }?;
        SERVICES.update(service.id, |svc: Service| {
            svc.client_stream(method, move |req, rx| {
                let done = cb.start(&req, &[], (None, Some(rx)), Shape::Client);
                done.wait()
            })
        })
    })
}
