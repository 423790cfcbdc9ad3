//! Services: unary methods served by C callbacks, and their reply handles.

use std::ffi::{c_char, c_void};

use netron_engine::{DeferredReply, Request, Service, Status};

use crate::guard::{UserPtr, bytes_arg, entry, non_null, str_arg, write};
use crate::handles::Table;
use crate::status::*;

/// A service being defined (`ntr_service_new`); moved into an engine by
/// `ntr_engine_builder_service`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_service {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// The reply handle of one call: answer it once with `ntr_reply_send` or `ntr_reply_fail`,
/// from any thread, during the handler callback or later. `ntr_reply_free` on an unanswered
/// handle fails the call with `NTR_INTERNAL`. The handle is invalid once answered or freed.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_reply {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// A request as a handler callback sees it. Every pointer is borrowed: valid only until the
/// callback returns (copy what must live longer).
#[repr(C)]
#[derive(Debug)]
pub struct ntr_request {
    /// The request payload (NULL if `len` is 0).
    pub data: *const u8,
    /// Payload length in bytes.
    pub len: usize,
    /// The call's id on its connection.
    pub call_id: u32,
    /// Milliseconds left before the caller's deadline, rounded up; 0 if the caller set none.
    pub deadline_ms: u64,
}

/// A unary handler: called on an engine core thread for each call of its method, with the
/// `user` given at registration, the request (borrowed for the duration of the call) and the
/// call's reply handle.
///
/// It must not block (it holds its core): answer at once with `ntr_reply_send`, or keep
/// `reply` and answer later from any thread. It returns `NTR_OK`, or a status from 1 to 16
/// to fail the call with it when `reply` was not answered (any other value fails the call
/// with `NTR_INTERNAL`; a reply already answered is not changed).
pub type ntr_handler = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        request: *const ntr_request,
        reply: ntr_reply,
    ) -> ntr_status,
>;

/// Releases a `user` context once the library no longer uses it (when the service, or the
/// engine serving it, is freed, or its method is registered again). May run on any thread;
/// must not call `ntr_` functions. NULL: nothing to release.
pub type ntr_release = Option<unsafe extern "C" fn(user: *mut c_void)>;

pub(crate) static SERVICES: Table<Service> = Table::new(6, "ntr_service");
static REPLIES: Table<DeferredReply> = Table::new(7, "ntr_reply");

/// A registered C handler; releases its `user` when the last copy of the service drops.
struct Callback {
    handler: unsafe extern "C" fn(*mut c_void, *const ntr_request, ntr_reply) -> ntr_status,
    user: UserPtr,
    release: ntr_release,
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the registration's contract: `release(user)` may be called once, from
            // any thread, when the library is done with `user` (the last reference is this).
            unsafe { release(self.user.0) };
        }
    }
}

impl Callback {
    fn invoke(&self, req: &Request<'_>, reply: DeferredReply) {
        let payload = req.payload();
        let request = ntr_request {
            data: if payload.is_empty() {
                std::ptr::null()
            } else {
                payload.as_ptr()
            },
            len: payload.len(),
            call_id: req.id(),
            deadline_ms: req.deadline().map_or(0, |d| {
                u64::try_from(d.as_micros().div_ceil(1000))
                    .unwrap_or(u64::MAX)
                    .max(1)
            }),
        };
        let id = REPLIES.insert(reply);
        // No table lock is held: the handler may call any ntr_ function.
        // SAFETY: `handler` was given as such a function by the registration's contract;
        // `request` and the payload it points to outlive the call.
        let status = {
            let _mark = crate::guard::InCallback::enter();
            // SAFETY: as above.
            unsafe { (self.handler)(self.user.0, &request, ntr_reply { id }) }
        };
        if status != NTR_OK {
            if let Ok(reply) = REPLIES.remove(id) {
                reply.fail(Status::new(
                    to_code(status),
                    format!(
                        "the C handler returned {} ({status})",
                        // SAFETY: a static NUL-terminated string.
                        unsafe { std::ffi::CStr::from_ptr(ntr_status_str(status)) }
                            .to_string_lossy()
                    ),
                ));
            }
        }
    }
}

/// A new service `name` at `version` (semver, `"1.2.0"`), with no method yet. Callers address
/// it as `name@version` (or a requirement such as `name@^1.2`).
///
/// # Errors
/// `NTR_INVALID_CONFIG` for an invalid name or version (the text says why).
///
/// # Safety
/// `name` and `version` are NULL or NUL-terminated strings; `out` is NULL or valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_service_new(
    name: *const c_char,
    version: *const c_char,
    out: *mut ntr_service,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let name = unsafe { str_arg(name, "name") }?;
        // SAFETY: as above.
        let version = unsafe { str_arg(version, "version") }?;
        non_null(out, "out")?;
        let svc = Service::new(name, version)
            .map_err(|e| Error::new(NTR_INVALID_CONFIG, e.to_string()))?;
        let id = SERVICES.insert(svc);
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_service { id }) }
    })
}

/// Adds unary method `method` served by `handler`, which gets `user` on every call. On
/// success the library owns `user` and calls `release(user)` (if not NULL) once it is done
/// with it; on failure `release` is not called. Registering a method name again replaces the
/// earlier handler.
///
/// # Safety
/// `method` is NULL or a NUL-terminated string; `handler` and `release` are NULL or functions
/// of the stated signatures; `user` may be used by them from any thread, until `release`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_service_unary(
    service: ntr_service,
    method: *const c_char,
    handler: ntr_handler,
    user: *mut c_void,
    release: ntr_release,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let method = unsafe { str_arg(method, "method") }?;
        let handler =
            handler.ok_or_else(|| Error::new(NTR_NULL_ARGUMENT, "argument `handler` is NULL"))?;
        SERVICES.with(service.id, |_| ())?;
        let cb = Callback {
            handler,
            user: UserPtr(user),
            release,
        };
        SERVICES.update(service.id, |svc| {
            svc.unary_deferred(method, move |req, reply| cb.invoke(req, reply))
        })
    })
}

/// Frees a service that was not moved into an engine (its `release` callbacks run).
#[unsafe(no_mangle)]
pub extern "C" fn ntr_service_free(service: ntr_service) -> ntr_status {
    entry(|| SERVICES.remove(service.id).map(drop))
}

/// Answers the call with the `len` bytes at `data` (copied; NULL is fine when `len` is 0) and
/// consumes `reply`. A reply above the connection's frame size fails the call with
/// `NTR_RESOURCE_EXHAUSTED` at the caller. An answer after the caller's deadline is dropped.
///
/// # Safety
/// `data` is valid for reads of `len` bytes (or NULL with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_reply_send(
    reply: ntr_reply,
    data: *const u8,
    len: usize,
) -> ntr_status {
    entry(|| {
        // SAFETY: valid for `len` bytes during this call (contract).
        let bytes = unsafe { bytes_arg(data, len, "data") }?;
        let r = REPLIES.remove(reply.id)?;
        r.send(netron_engine::Bytes::copy_from_slice(bytes));
        Ok(())
    })
}

/// Fails the call with `status` (1 to 16; other values give `NTR_INTERNAL`) and `message`
/// (UTF-8, copied; NULL for none), and consumes `reply`.
///
/// # Safety
/// `message` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_reply_fail(
    reply: ntr_reply,
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
        let r = REPLIES.remove(reply.id)?;
        r.fail(Status::new(to_code(status), text));
        Ok(())
    })
}

/// Frees an unanswered reply handle: the call fails with `NTR_INTERNAL` ("the handler dropped
/// its reply"), so the caller never hangs.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_reply_free(reply: ntr_reply) -> ntr_status {
    entry(|| REPLIES.remove(reply.id).map(drop))
}
