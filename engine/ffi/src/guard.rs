//! The panic boundary and argument checks every entry point goes through.

use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::status::{
    Error, NTR_INVALID_UTF8, NTR_NULL_ARGUMENT, NTR_OK, NTR_PANIC, ntr_status, set_last_error,
};

/// Runs the body of an entry point: its error becomes the returned status and this thread's
/// last error text; a panic becomes `NTR_PANIC` and never unwinds into C.
pub(crate) fn entry(body: impl FnOnce() -> Result<(), Error>) -> ntr_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => NTR_OK,
        Ok(Err(e)) => failed(e),
        Err(panic) => panicked(&*panic),
    }
}

/// As [`entry`], for a body that returns its status itself (having recorded any error text
/// already, e.g. with [`failed`]): a fast path that builds no error values.
#[inline]
pub(crate) fn entry_status(body: impl FnOnce() -> ntr_status) -> ntr_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(panic) => panicked(&*panic),
    }
}

/// A panic caught at the boundary: its text as the thread's last error, and `NTR_PANIC`.
#[cold]
#[inline(never)]
fn panicked(panic: &(dyn std::any::Any + Send)) -> ntr_status {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    set_last_error(&format!(
        "libnetron panicked (a bug, please report): {what}"
    ));
    NTR_PANIC
}

/// Records `e`'s text as the thread's last error and returns its status. Out of line and
/// cold, as every error path of the library: the success path's code stays small, which is
/// what a call that comes after a wait (cold caches) pays for.
#[cold]
#[inline(never)]
pub(crate) fn failed(e: Error) -> ntr_status {
    set_last_error(&e.message);
    e.status
}

/// `Err(NTR_NULL_ARGUMENT)` naming `what` when `p` is NULL.
#[inline]
pub(crate) fn non_null<T>(p: *const T, what: &str) -> Result<(), Error> {
    if p.is_null() {
        Err(null_argument(what))
    } else {
        Ok(())
    }
}

#[cold]
#[inline(never)]
fn null_argument(what: &str) -> Error {
    Error::new(NTR_NULL_ARGUMENT, format!("argument `{what}` is NULL"))
}

/// Writes `v` to the out-parameter `out`.
///
/// # Safety
/// `out` is NULL (an error) or valid for a write of `T`.
pub(crate) unsafe fn write<T>(out: *mut T, v: T) -> Result<(), Error> {
    non_null(out, "out")?;
    // SAFETY: not NULL (checked), and valid for writes by the caller's contract.
    unsafe { out.write(v) };
    Ok(())
}

/// The UTF-8 string at `p`, named `what` in errors.
///
/// # Safety
/// `p` is NULL (an error) or a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    non_null(p, what)?;
    // SAFETY: not NULL (checked) and NUL-terminated, valid for 'a by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Error::new(NTR_INVALID_UTF8, format!("argument `{what}` is not UTF-8")))
}

/// The `len` bytes at `p`; `p` may be NULL when `len` is 0.
///
/// # Safety
/// Unless `len` is 0, `p` is NULL (an error) or valid for reads of `len` bytes, unchanged for
/// `'a`.
pub(crate) unsafe fn bytes_arg<'a>(
    p: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    non_null(p, what)?;
    // SAFETY: not NULL (checked), valid for `len` bytes for 'a by the caller's contract (and so
    // `len` is within one allocation, below isize::MAX).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A C `void *user` context that the caller promised may be used from any thread (stated for
/// every callback in the header).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserPtr(pub *mut std::ffi::c_void);

// SAFETY: the header's contract for every `user` argument: the library may pass it to the
// callbacks from any thread, and the C caller makes that safe (it is opaque to Rust, never
// dereferenced here).
unsafe impl Send for UserPtr {}
// SAFETY: as for Send: only copied and handed back to C, never dereferenced by Rust.
unsafe impl Sync for UserPtr {}

thread_local! {
    /// How many library callbacks into C are running on this thread (a handler, a stream
    /// handler, a completion): a blocking wait for the engine there could deadlock its core.
    static IN_CALLBACK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as inside a callback into C until dropped.
pub(crate) struct InCallback(());

impl InCallback {
    pub(crate) fn enter() -> InCallback {
        IN_CALLBACK.with(|c| c.set(c.get() + 1));
        InCallback(())
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// `Err(NTR_FAILED_PRECONDITION)` when called from inside a callback of this library (which
/// runs on an engine core: waiting there for that core would never end).
pub(crate) fn may_block(what: &str) -> Result<(), Error> {
    if IN_CALLBACK.with(std::cell::Cell::get) > 0 {
        return Err(Error::new(
            crate::status::NTR_FAILED_PRECONDITION,
            format!(
                "{what} with a timeout would block a core from inside a callback; pass timeout_ms 0 (do not wait) or wait on another thread"
            ),
        ));
    }
    Ok(())
}

/// The instant `ms` milliseconds from now; `None` for `NTR_FOREVER` (or one too far to
/// represent).
pub(crate) fn until(ms: u64) -> Option<std::time::Instant> {
    if ms == u64::MAX {
        return None;
    }
    std::time::Instant::now().checked_add(std::time::Duration::from_millis(ms))
}

/// Parks this thread until unparked or `until`; `false` once `until` passed.
pub(crate) fn park_until(until: Option<std::time::Instant>) -> bool {
    match until {
        None => {
            std::thread::park();
            true
        }
        Some(u) => match u.checked_duration_since(std::time::Instant::now()) {
            Some(d) if !d.is_zero() => {
                std::thread::park_timeout(d);
                true
            }
            _ => false,
        },
    }
}

/// A waker that unparks the thread that made it.
pub(crate) fn thread_waker() -> std::task::Waker {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())))
}
