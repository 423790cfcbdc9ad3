//! Status codes, the thread-local error text, and the version query.

use std::cell::RefCell;
use std::ffi::{CString, c_char};

use netron_engine::StatusCode;

/// The outcome of every `ntr_` function (and what a handler callback returns).
///
/// `NTR_OK` (0) is success. 1 to 16 are the gRPC status codes a call can end with (the peer's
/// answer, a deadline, a closed connection...). 100 and above are misuses and failures of this
/// library. Numbers are never reused: a removed code leaves a hole.
pub type ntr_status = u32;

/// Success.
pub const NTR_OK: ntr_status = 0;
/// The call was cancelled (e.g. its reply handle was freed by the server, or the caller gave up).
pub const NTR_CANCELLED: ntr_status = 1;
/// An error with no better code.
pub const NTR_UNKNOWN: ntr_status = 2;
/// The request was malformed (a handler's verdict).
pub const NTR_INVALID_ARGUMENT: ntr_status = 3;
/// The call's deadline passed; the call was cancelled on the wire.
pub const NTR_DEADLINE_EXCEEDED: ntr_status = 4;
/// No such service or method at the peer.
pub const NTR_NOT_FOUND: ntr_status = 5;
/// The entity already exists.
pub const NTR_ALREADY_EXISTS: ntr_status = 6;
/// The caller may not do this.
pub const NTR_PERMISSION_DENIED: ntr_status = 7;
/// A limit was hit (frame size, calls in flight, backlog); the message names it.
pub const NTR_RESOURCE_EXHAUSTED: ntr_status = 8;
/// Not possible in this state (e.g. a blocking call from a handler on its own core).
pub const NTR_FAILED_PRECONDITION: ntr_status = 9;
/// Aborted.
pub const NTR_ABORTED: ntr_status = 10;
/// Out of range.
pub const NTR_OUT_OF_RANGE: ntr_status = 11;
/// Not implemented.
pub const NTR_UNIMPLEMENTED: ntr_status = 12;
/// The callee failed (e.g. a deferred reply freed unanswered).
pub const NTR_INTERNAL: ntr_status = 13;
/// The connection or engine is gone or going away; a retry may succeed.
pub const NTR_UNAVAILABLE: ntr_status = 14;
/// Data loss.
pub const NTR_DATA_LOSS: ntr_status = 15;
/// Not authenticated.
pub const NTR_UNAUTHENTICATED: ntr_status = 16;
/// A pointer argument was NULL.
pub const NTR_NULL_ARGUMENT: ntr_status = 100;
/// A handle is zero, was freed (or already consumed), or belongs to another kind of object.
pub const NTR_INVALID_HANDLE: ntr_status = 101;
/// A string argument is not UTF-8.
pub const NTR_INVALID_UTF8: ntr_status = 102;
/// A bug in libnetron panicked; the operation did not complete. Please report it.
pub const NTR_PANIC: ntr_status = 103;
/// A caller-driven core was used from a thread other than the one that created it.
pub const NTR_WRONG_THREAD: ntr_status = 104;
/// An endpoint string is invalid (`tcp://host:port`, `unix:///path`, `inproc://name`).
pub const NTR_INVALID_ENDPOINT: ntr_status = 105;
/// A setting or name is unusable (engine settings, service name or version, duplicates).
pub const NTR_INVALID_CONFIG: ntr_status = 106;
/// The engine or core could not start (io_uring unavailable, cannot listen...).
pub const NTR_START_FAILED: ntr_status = 107;
/// Connecting failed (refused, timed out, handshake refused); the text says which.
pub const NTR_CONNECT_FAILED: ntr_status = 108;
/// An index argument is past the end.
pub const NTR_INDEX_OUT_OF_RANGE: ntr_status = 109;
/// Nothing can be done now without waiting: no stream credit to send (the peer has not read
/// enough yet), or nothing received within the timeout. Try again later.
pub const NTR_WOULD_BLOCK: ntr_status = 110;
/// The stream's receiving half or the subscription ended normally (the peer finished, or
/// the publisher ended the subscription without error); nothing more will arrive.
pub const NTR_END_OF_STREAM: ntr_status = 111;

/// A `timeout_ms` that waits with no time limit (a stream's own deadline still applies).
pub const NTR_FOREVER: u64 = u64::MAX;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// An error of an entry point: its status and the text for `ntr_last_error`.
#[derive(Debug)]
pub(crate) struct Error {
    pub status: ntr_status,
    pub message: String,
}

impl Error {
    pub(crate) fn new(status: ntr_status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }
}

/// Records `message` as this thread's last error text.
pub(crate) fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// The error of a failure `Status` (its code, 1 to 16, and its text).
pub(crate) fn status_error(st: &netron_engine::Status) -> Error {
    Error::new(from_code(st.code), format!("{:?}: {}", st.code, st.message))
}

/// The `ntr_status` of a call's failure status code (1 to 16).
pub(crate) fn from_code(code: StatusCode) -> ntr_status {
    code as ntr_status
}

/// The status code a handler's `ntr_status` stands for: 1 to 16 as such, anything else
/// (including a library code) `Internal`, `NTR_OK` never (the caller checks it first).
pub(crate) fn to_code(status: ntr_status) -> StatusCode {
    match u16::try_from(status) {
        Ok(v @ 1..=16) => StatusCode::from_u16(v),
        _ => StatusCode::Internal,
    }
}

/// The text of the last failure of an `ntr_` function on the calling thread: a NUL-terminated
/// string owned by the library, valid until the next `ntr_` call on this thread. Empty if no
/// call failed yet. Never NULL. Inside a completion callback it is the call's failure text.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_last_error() -> *const c_char {
    // `with` fails only during thread teardown; a static empty string then.
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// A constant name of `status` (`"NTR_OK"`, `"NTR_DEADLINE_EXCEEDED"`...), or `"NTR_?"` for a
/// number that is not a status. Static storage: never freed, never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_status_str(status: ntr_status) -> *const c_char {
    let s: &'static std::ffi::CStr = match status {
        NTR_OK => c"NTR_OK",
        NTR_CANCELLED => c"NTR_CANCELLED",
        NTR_UNKNOWN => c"NTR_UNKNOWN",
        NTR_INVALID_ARGUMENT => c"NTR_INVALID_ARGUMENT",
        NTR_DEADLINE_EXCEEDED => c"NTR_DEADLINE_EXCEEDED",
        NTR_NOT_FOUND => c"NTR_NOT_FOUND",
        NTR_ALREADY_EXISTS => c"NTR_ALREADY_EXISTS",
        NTR_PERMISSION_DENIED => c"NTR_PERMISSION_DENIED",
        NTR_RESOURCE_EXHAUSTED => c"NTR_RESOURCE_EXHAUSTED",
        NTR_FAILED_PRECONDITION => c"NTR_FAILED_PRECONDITION",
        NTR_ABORTED => c"NTR_ABORTED",
        NTR_OUT_OF_RANGE => c"NTR_OUT_OF_RANGE",
        NTR_UNIMPLEMENTED => c"NTR_UNIMPLEMENTED",
        NTR_INTERNAL => c"NTR_INTERNAL",
        NTR_UNAVAILABLE => c"NTR_UNAVAILABLE",
        NTR_DATA_LOSS => c"NTR_DATA_LOSS",
        NTR_UNAUTHENTICATED => c"NTR_UNAUTHENTICATED",
        NTR_NULL_ARGUMENT => c"NTR_NULL_ARGUMENT",
        NTR_INVALID_HANDLE => c"NTR_INVALID_HANDLE",
        NTR_INVALID_UTF8 => c"NTR_INVALID_UTF8",
        NTR_PANIC => c"NTR_PANIC",
        NTR_WRONG_THREAD => c"NTR_WRONG_THREAD",
        NTR_INVALID_ENDPOINT => c"NTR_INVALID_ENDPOINT",
        NTR_INVALID_CONFIG => c"NTR_INVALID_CONFIG",
        NTR_START_FAILED => c"NTR_START_FAILED",
        NTR_CONNECT_FAILED => c"NTR_CONNECT_FAILED",
        NTR_INDEX_OUT_OF_RANGE => c"NTR_INDEX_OUT_OF_RANGE",
        NTR_WOULD_BLOCK => c"NTR_WOULD_BLOCK",
        NTR_END_OF_STREAM => c"NTR_END_OF_STREAM",
        _ => c"NTR_?",
    };
    s.as_ptr()
}

/// Writes the library's version (`"0.1.0"`, semver; static storage) to `*out`.
///
/// # Safety
/// `out` is NULL or valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_version(out: *mut *const c_char) -> ntr_status {
    crate::guard::entry(|| {
        let v = concat!(env!("CARGO_PKG_VERSION"), "\0");
        // SAFETY: the caller passes NULL (checked) or a valid pointer (this function's
        // contract).
        unsafe { crate::guard::write(out, v.as_ptr().cast::<c_char>()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_statuses_map_to_codes() {
        assert_eq!(to_code(NTR_NOT_FOUND), StatusCode::NotFound);
        assert_eq!(to_code(NTR_UNAUTHENTICATED), StatusCode::Unauthenticated);
        assert_eq!(to_code(NTR_PANIC), StatusCode::Internal);
        assert_eq!(to_code(u32::MAX), StatusCode::Internal);
        assert_eq!(
            from_code(StatusCode::DeadlineExceeded),
            NTR_DEADLINE_EXCEEDED
        );
    }
}
