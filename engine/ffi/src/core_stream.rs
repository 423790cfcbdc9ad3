//! Streams on a caller-driven core: opened, fed and read by the core's own thread, which runs
//! the core while it waits (no thread hop, no allocation per chunk in steady state).

use std::ffi::c_char;
use std::task::Poll;

use netron_engine::{CallError, CoreStream, TrySendError};

use crate::core::{ntr_conn, ntr_core, with_core};
use crate::guard::{bytes_arg, entry, non_null, str_arg, write};
use crate::status::*;
use crate::streams::ntr_chunk;

/// A stream of a caller-driven core (`ntr_core_open_stream`); used with that core, on its
/// thread, and freed with `ntr_core_stream_free` (or with the core).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_core_stream {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// One stream of a core, with the buffer C borrows its last chunk from.
pub(crate) struct CoreStreamCell {
    stream: Option<CoreStream>,
    chunk: Vec<u8>,
    recv_done: bool,
    send_done: bool,
}

fn bad_stream(stream: ntr_core_stream) -> Error {
    Error::new(
        NTR_INVALID_HANDLE,
        format!(
            "invalid ntr_core_stream handle {:#x} for this core: zero, freed, or of another core",
            stream.id
        ),
    )
}

fn call_error(e: &CallError) -> Error {
    Error::new(from_code(e.code()), e.to_string())
}

/// Opens a stream to `method` of `service` (an exact `name@1.2.0`) on `conn`, and writes its
/// handle to `*out`. `data[0..len]` (copied), if `len` is not 0 or `half_close` is set, goes
/// with the opening as the first message; `half_close` ends this side's half at once (a
/// server-streaming call: the request, then only receive). `deadline_ms` bounds the whole
/// stream (0: none). The shapes: bidirectional and client-streaming `(NULL, 0, false)`,
/// server-streaming `(request, n, true)`.
///
/// # Errors
/// `NTR_UNAVAILABLE` for a closed connection, `NTR_RESOURCE_EXHAUSTED` above the peer's limits,
/// `NTR_UNIMPLEMENTED` if the peer serves no streams. A missing method shows in the first
/// `ntr_core_stream_recv`.
///
/// # Safety
/// `service` and `method` are NULL or NUL-terminated strings; `data` is valid for `len` bytes
/// (or NULL with `len` 0); `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ntr_core_open_stream(
    core: ntr_core,
    conn: ntr_conn,
    service: *const c_char,
    method: *const c_char,
    data: *const u8,
    len: usize,
    half_close: bool,
    deadline_ms: u64,
    out: *mut ntr_core_stream,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let service = unsafe { str_arg(service, "service") }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?;
        // SAFETY: valid for `len` bytes during this call (contract).
        let first = unsafe { bytes_arg(data, len, "data") }?;
        non_null(out, "out")?;
        let id = with_core(core.id, |cell| {
            let c = cell.conn(conn)?;
            let first = (!first.is_empty() || half_close).then_some(first);
            let dl = crate::core::deadline(deadline_ms);
            let stream = cell
                .core
                .open_stream(
                    c,
                    service.as_bytes(),
                    method.as_bytes(),
                    first,
                    half_close,
                    dl,
                )
                .map_err(|e| call_error(&e))?;
            cell.next_stream += 1;
            let id = cell.mint(cell.next_stream);
            cell.streams.insert(
                id,
                CoreStreamCell {
                    stream: Some(stream),
                    chunk: Vec::new(),
                    recv_done: false,
                    send_done: half_close,
                },
            );
            Ok(id)
        })?;
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_core_stream { id }) }
    })
}

/// Queues `data[0..len]` (copied into a reused buffer) on `stream` if it has credit, without
/// waiting; it goes out on the core's next turn.
///
/// # Errors
/// `NTR_WOULD_BLOCK` with no credit (run the core, e.g. `ntr_core_stream_recv` or
/// `ntr_core_run_once`, until the peer grants more); `NTR_RESOURCE_EXHAUSTED` above the frame
/// size; `NTR_FAILED_PRECONDITION` after this side finished; the stream's end status once it
/// ended.
///
/// # Safety
/// `data` is valid for `len` bytes (or NULL with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_stream_try_send(
    core: ntr_core,
    stream: ntr_core_stream,
    data: *const u8,
    len: usize,
) -> ntr_status {
    entry(|| {
        // SAFETY: valid for `len` bytes during this call (contract).
        let bytes = unsafe { bytes_arg(data, len, "data") }?;
        with_core(core.id, |cell| {
            let s = cell
                .streams
                .get(&stream.id)
                .ok_or_else(|| bad_stream(stream))?;
            let Some(st) = s.stream.as_ref() else {
                return Err(Error::new(
                    NTR_FAILED_PRECONDITION,
                    "the stream was cancelled",
                ));
            };
            cell.core.stream_try_send(st, bytes).map_err(|e| match e {
                TrySendError::WouldBlock(_) => Error::new(
                    NTR_WOULD_BLOCK,
                    "no stream credit now (the peer has not read enough yet): run the core and retry",
                ),
                TrySendError::Closed(st) => status_error(&st),
                e => Error::new(NTR_RESOURCE_EXHAUSTED, e.to_string()),
            })
        })
    })
}

/// Receives the next message of `stream` into `*out`, running the core on the calling thread
/// until one arrives, the peer ends its half, or the stream's deadline passes (a stream with
/// no deadline waits as long as the peer is silent). The chunk is borrowed until the next
/// `ntr_core_stream_recv` / `_try_recv` or `ntr_core_stream_free` of this stream (or the
/// core's free); its buffer is reused, so no allocation per chunk in steady state.
///
/// # Errors
/// `NTR_END_OF_STREAM` once the peer ended its half OK (and on every later call, and after a
/// cancel); the stream's failure status (1 to 16) once, then `NTR_END_OF_STREAM`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_stream_recv(
    core: ntr_core,
    stream: ntr_core_stream,
    out: *mut ntr_chunk,
) -> ntr_status {
    // SAFETY: the same contract.
    unsafe { recv(core, stream, out, true) }
}

/// As `ntr_core_stream_recv`, without running the core: `NTR_WOULD_BLOCK` when nothing
/// arrived yet (for a core driven from the program's own loop: run it after its descriptor
/// is readable, then try again).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_stream_try_recv(
    core: ntr_core,
    stream: ntr_core_stream,
    out: *mut ntr_chunk,
) -> ntr_status {
    // SAFETY: the same contract.
    unsafe { recv(core, stream, out, false) }
}

/// The two receives: `wait` runs the core until something arrives.
///
/// # Safety
/// `out` is NULL or valid for a write.
unsafe fn recv(
    core: ntr_core,
    stream: ntr_core_stream,
    out: *mut ntr_chunk,
    wait: bool,
) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let chunk = with_core(core.id, |cell| {
            let crate::core::CoreCell { core, streams, .. } = cell;
            let s = streams
                .get_mut(&stream.id)
                .ok_or_else(|| bad_stream(stream))?;
            s.chunk.clear();
            let end = || Error::new(NTR_END_OF_STREAM, "the stream's receiving half ended");
            let Some(st) = s.stream.as_ref() else {
                return Err(end());
            };
            if s.recv_done {
                return Err(end());
            }
            let buf = &mut s.chunk;
            let r = if wait {
                core.recv_chunk(st, |b| buf.extend_from_slice(b))
            } else {
                match core.try_recv_chunk(st, |b| buf.extend_from_slice(b)) {
                    Ok(Poll::Pending) => {
                        return Err(Error::new(NTR_WOULD_BLOCK, "nothing received yet"));
                    }
                    Ok(Poll::Ready(r)) => Ok(r),
                    Err(e) => Err(e),
                }
            };
            match r {
                Ok(Some(())) => Ok(ntr_chunk {
                    data: if buf.is_empty() {
                        std::ptr::null()
                    } else {
                        buf.as_ptr()
                    },
                    len: buf.len(),
                }),
                Ok(None) => {
                    s.recv_done = true;
                    Err(end())
                }
                Err(e) => {
                    s.recv_done = true;
                    Err(call_error(&e))
                }
            }
        })?;
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, chunk) }
    })
}

/// Ends this side's half of `stream` OK (its last message was sent).
///
/// # Errors
/// `NTR_FAILED_PRECONDITION` if it already ended (or was cancelled).
#[unsafe(no_mangle)]
pub extern "C" fn ntr_core_stream_finish(core: ntr_core, stream: ntr_core_stream) -> ntr_status {
    entry(|| {
        with_core(core.id, |cell| {
            let s = cell
                .streams
                .get_mut(&stream.id)
                .ok_or_else(|| bad_stream(stream))?;
            match s.stream.as_ref() {
                Some(st) if !s.send_done => {
                    cell.core.stream_finish(st);
                    s.send_done = true;
                    Ok(())
                }
                _ => Err(Error::new(
                    NTR_FAILED_PRECONDITION,
                    "this side already finished or cancelled the stream",
                )),
            }
        })
    })
}

fn cancel(core: &mut netron_engine::Core, s: &mut CoreStreamCell) {
    if let Some(st) = s.stream.take() {
        if !(s.recv_done && s.send_done) {
            core.stream_cancel(st);
        }
    }
    s.recv_done = true;
    s.send_done = true;
}

/// Cancels `stream` (the peer's handler is stopped); the handle stays valid until freed.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_core_stream_cancel(core: ntr_core, stream: ntr_core_stream) -> ntr_status {
    entry(|| {
        with_core(core.id, |cell| {
            let s = cell
                .streams
                .get_mut(&stream.id)
                .ok_or_else(|| bad_stream(stream))?;
            cancel(&mut cell.core, s);
            Ok(())
        })
    })
}

/// Frees `stream`; a stream still open is cancelled first.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_core_stream_free(core: ntr_core, stream: ntr_core_stream) -> ntr_status {
    entry(|| {
        with_core(core.id, |cell| {
            let mut s = cell
                .streams
                .remove(&stream.id)
                .ok_or_else(|| bad_stream(stream))?;
            cancel(&mut cell.core, &mut s);
            Ok(())
        })
    })
}
