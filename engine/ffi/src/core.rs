//! The caller-driven core: a C thread runs a core itself and calls on it with no thread hop.

use std::cell::{Cell, RefCell};
use std::ffi::c_char;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netron_engine::{CallSlot, ConnId, Core, CoreConfig, Endpoint};
use rustc_hash::FxHashMap;

use crate::buf::{fill, ntr_buf};
use crate::core_prepared::{Prepared, PreparedCalls};
use crate::guard::{bytes_arg, entry, non_null, str_arg, write};
use crate::idle::NTR_IDLE_ADAPTIVE;
use crate::status::*;

/// A core driven by the thread that created it (`ntr_core_new`): calls on it run its loop
/// until they complete, and `ntr_core_run_once` runs one turn. Usable only from that thread
/// (`NTR_WRONG_THREAD` elsewhere).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_core {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// A connection of a caller-driven core (`ntr_core_connect`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_conn {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

pub(crate) struct CoreCell {
    pub(crate) core: Core,
    pub(crate) slot: CallSlot,
    pub(crate) conns: FxHashMap<u64, ConnId>,
    /// The connection of the last successful lookup (`CoreCell::conn`), checked before the
    /// map: calls on one connection skip the hashing. Cleared when that connection closes.
    last_conn: Cell<Option<(u64, ConnId)>>,
    next_conn: u64,
    /// Its open streams by `ntr_core_stream` id (ids are never reused on a core).
    pub(crate) streams: FxHashMap<u64, crate::core_stream::CoreStreamCell>,
    pub(crate) next_stream: u64,
    /// `ntr_core_prepare_wait` announced a sleep: the next use ends it (`Core::woke`).
    waiting: bool,
    /// Calls started with `ntr_core_call_start`, by id: connection, call id, outcome slot.
    pub(crate) started: FxHashMap<u64, (ConnId, Option<u32>, CallSlot)>,
    pub(crate) next_started: u64,
    /// The high half of every id this core mints (connections, streams, started calls): a
    /// fingerprint of the core's own id, so a handle of another core is refused, not taken
    /// for one of this core's that has the same number.
    pub(crate) id_base: u64,
}

static THREADS: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// This thread's number (in the high half of its cores' ids), 0 until first needed.
    static THREAD_NO: Cell<u32> = const { Cell::new(0) };
    /// The cores of this thread; ids are never reused, so a freed one is detected.
    static CORES: RefCell<Cores> = const {
        RefCell::new(Cores { cells: Vec::new(), last: 0, minted: 0, prepared: PreparedCalls::new() })
    };
}

/// The caller-driven cores of one thread. A thread owns a few cores at most, so they sit in a
/// vector searched by id, with the index of the last one used checked first: a call on the
/// same core as the one before costs one comparison instead of a hash lookup.
pub(crate) struct Cores {
    cells: Vec<(u64, CoreCell)>,
    /// Index into `cells` of the core used last (may be stale: always checked).
    last: usize,
    /// Cores created on this thread so far (the low half of their ids).
    minted: u32,
    /// The prepared calls of this thread's cores (`ntr_core_prepare_call`): beside the cores,
    /// not inside them, so that a prepared call's handle alone finds both its entry and its
    /// core with one borrow of this thread's state.
    pub(crate) prepared: PreparedCalls,
}

/// The index in `cells` of the core of `id`, if this thread owns it; `last` is checked first
/// and updated.
#[inline]
fn find(cells: &[(u64, CoreCell)], last: &mut usize, id: u64) -> Option<usize> {
    if cells.get(*last).is_some_and(|(k, _)| *k == id) {
        return Some(*last);
    }
    let i = cells.iter().position(|(k, _)| *k == id)?;
    *last = i;
    Some(i)
}

impl Cores {
    /// The index of the core of `id`, if this thread owns it.
    fn find(&mut self, id: u64) -> Option<usize> {
        find(&self.cells, &mut self.last, id)
    }

    /// The core of `id`, woken from a wait `ntr_core_prepare_wait` announced (as
    /// [`with_core`] does).
    pub(crate) fn core(&mut self, id: u64) -> Result<&mut CoreCell, Error> {
        let Some(i) = self.find(id) else {
            return Err(not_here(id));
        };
        let cell = &mut self.cells[i].1;
        cell.wake_if_waiting();
        Ok(cell)
    }

    /// The prepared call of `id` and its core (woken as by [`Cores::core`]): one slot index
    /// and one comparison for the call, the core found as by [`with_core`].
    #[inline]
    pub(crate) fn prepared_call(&mut self, id: u64) -> Option<(&Prepared, &mut CoreCell)> {
        let p = self.prepared.get(id)?;
        // Always found: freeing a core frees its prepared calls (`ntr_core_free`).
        let i = find(&self.cells, &mut self.last, p.core)?;
        let cell = &mut self.cells[i].1;
        cell.wake_if_waiting();
        Some((p, cell))
    }
}

pub(crate) fn thread_no() -> u32 {
    THREAD_NO.with(|n| {
        if n.get() == 0 {
            n.set(THREADS.fetch_add(1, Ordering::Relaxed).max(1));
        }
        n.get()
    })
}

/// A C `deadline_ms` as a deadline: 0 is none.
pub(crate) fn deadline(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

/// The high half of the ids minted by the core of `id` (Fibonacci hashing, Knuth TAOCP vol. 3
/// §6.4), never 0.
fn id_base(id: u64) -> u64 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xffff_ffff_0000_0000).max(1 << 32)
}

impl CoreCell {
    /// The connection of handle `conn`, if it is one of this core's live connections.
    pub(crate) fn conn(&self, conn: ntr_conn) -> Result<ConnId, Error> {
        if let Some((id, c)) = self.last_conn.get()
            && id == conn.id
        {
            return Ok(c);
        }
        let c = *self.conns.get(&conn.id).ok_or_else(|| bad_conn(conn))?;
        self.last_conn.set(Some((conn.id, c)));
        Ok(c)
    }

    /// The id of this core's `n`-th connection, stream or started call (`n` counts from 1).
    pub(crate) fn mint(&self, n: u64) -> u64 {
        self.id_base | (n & 0xffff_ffff)
    }

    /// Ends a wait `ntr_core_prepare_wait` announced: every use of the core does this first.
    #[inline]
    fn wake_if_waiting(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.core.woke();
        }
    }
}

/// Runs `f` on the core of `id`, owned by this thread.
pub(crate) fn with_core<R>(
    id: u64,
    f: impl FnOnce(&mut CoreCell) -> Result<R, Error>,
) -> Result<R, Error> {
    CORES.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return Err(reentrant());
        };
        f(c.core(id)?)
    })
}

/// Runs `f` on this thread's cores and prepared calls (one borrow of both).
#[inline]
pub(crate) fn with_cores<R>(f: impl FnOnce(&mut Cores) -> Result<R, Error>) -> Result<R, Error> {
    CORES.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return Err(reentrant());
        };
        f(&mut c)
    })
}

/// [`with_cores`] for a fast path: `None`, and no error built, when this thread's cores are
/// in use already (a re-entrant call).
#[inline]
pub(crate) fn try_with_cores<R>(f: impl FnOnce(&mut Cores) -> R) -> Option<R> {
    CORES.with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
}

#[cold]
#[inline(never)]
fn reentrant() -> Error {
    Error::new(
        NTR_FAILED_PRECONDITION,
        "a caller-driven core was used re-entrantly",
    )
}

/// Why `id` is not a core of this thread: another thread's (its thread number is in the
/// high half), or no core at all.
#[cold]
#[inline(never)]
fn not_here(id: u64) -> Error {
    if id != 0 && id >> 32 != u64::from(thread_no()) {
        Error::new(
            NTR_WRONG_THREAD,
            format!(
                "ntr_core {id:#x} belongs to another thread (or was freed there); a caller-driven core is used only by the thread that created it"
            ),
        )
    } else {
        Error::new(
            NTR_INVALID_HANDLE,
            format!("invalid ntr_core handle {id:#x}: zero, already freed, or never created"),
        )
    }
}

/// The error of a failed call on a caller-driven core.
#[cold]
#[inline(never)]
pub(crate) fn call_failed(e: &netron_engine::CallError) -> Error {
    Error::new(from_code(e.code()), e.to_string())
}

/// For `netron-bench`'s C ABI section only (not part of the C ABI, not in `netron.h`, no
/// stability promise): runs `f` on the Rust [`Core`] and connection behind `core` and `conn`,
/// so that a Rust call can be timed on the very core and connection a C call uses (two cores
/// of one thread differ by ±200 ns per call from run to run, four times the C ABI's budget).
///
/// # Errors
/// The status `ntr_core_call` would return for the handles (`NTR_INVALID_HANDLE`,
/// `NTR_WRONG_THREAD`, `NTR_FAILED_PRECONDITION` when used re-entrantly).
#[doc(hidden)]
pub fn with_core_and_conn<R>(
    core: ntr_core,
    conn: ntr_conn,
    f: impl FnOnce(&mut Core, ConnId) -> R,
) -> Result<R, ntr_status> {
    with_core(core.id, |cell| {
        let c = cell.conn(conn)?;
        Ok(f(&mut cell.core, c))
    })
    .map_err(|e| e.status)
}

/// A new caller-driven core with default settings (idle policy `NTR_IDLE_ADAPTIVE`, 50 µs
/// spin), owned by the calling thread, as a pure client (it serves no services).
///
/// # Errors
/// `NTR_START_FAILED` when its io_uring (or the epoll fallback) cannot be set up.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_new(out: *mut ntr_core) -> ntr_status {
    // SAFETY: the caller's contract, passed on.
    unsafe { ntr_core_new_with_idle(NTR_IDLE_ADAPTIVE, 50, out) }
}

/// `ntr_core_new` with an idle policy: `NTR_IDLE_BUSY_POLL` (never sleeps: the lowest
/// latency, one CPU at 100 %) or `NTR_IDLE_ADAPTIVE` polling for `spin_us` µs after the last
/// piece of work before it parks. A latency-critical caller picks busy-poll: a call then
/// reads its reply directly, with no ring receive and no `io_uring_enter` (docs/ffi.md
/// "Idle policy"). `NTR_IDLE_ADAPTIVE` with `spin_us` 0 parks at once and, as in Rust, writes
/// a connection's queued calls every 2 KiB instead of once per turn (early writes,
/// docs/architecture.md).
///
/// # Errors
/// `NTR_INVALID_CONFIG` for an `idle` that is not an `NTR_IDLE_` value; `NTR_START_FAILED`
/// when its io_uring (or the epoll fallback) cannot be set up.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_new_with_idle(
    idle: u32,
    spin_us: u64,
    out: *mut ntr_core,
) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let idle = crate::idle::policy(idle, spin_us)?;
        let cfg = CoreConfig::default()
            .with_runtime(netron_engine::RuntimeConfig::default().with_idle(idle));
        let core = Core::new(cfg).map_err(|e| Error::new(NTR_START_FAILED, e.to_string()))?;
        let me = u64::from(thread_no());
        let id = CORES.with(|c| {
            let mut c = c.borrow_mut();
            c.minted = c.minted.wrapping_add(1).max(1);
            let id = me << 32 | u64::from(c.minted);
            c.cells.push((
                id,
                CoreCell {
                    core,
                    slot: CallSlot::new(),
                    conns: FxHashMap::default(),
                    last_conn: Cell::new(None),
                    next_conn: 0,
                    streams: FxHashMap::default(),
                    next_stream: 0,
                    waiting: false,
                    started: FxHashMap::default(),
                    next_started: 0,
                    id_base: id_base(id),
                },
            ));
            id
        });
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_core { id }) }
    })
}

/// Frees the core: its connections close, calls in flight fail, and its streams'
/// (`ntr_core_stream`) and prepared calls' (`ntr_core_prepared_call`) handles become invalid.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_core_free(core: ntr_core) -> ntr_status {
    entry(|| {
        let cell = with_cores(|c| {
            // Ends a wait `ntr_core_prepare_wait` announced, as every use does (and refuses
            // another thread's core or a freed one).
            c.core(core.id)?;
            let i = c.find(core.id).ok_or_else(|| not_here(core.id))?;
            c.prepared.core_freed(core.id);
            Ok(c.cells.swap_remove(i))
        })?;
        // Dropped outside the borrow: closing its connections may run code that uses cores.
        drop(cell);
        Ok(())
    })
}

/// Connects to `endpoint` and completes the handshake within `timeout_ms` milliseconds,
/// running the core on the calling thread meanwhile.
///
/// # Errors
/// `NTR_INVALID_ENDPOINT`, `NTR_CONNECT_FAILED` (the text says why).
///
/// # Safety
/// `endpoint` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_connect(
    core: ntr_core,
    endpoint: *const c_char,
    timeout_ms: u64,
    out: *mut ntr_conn,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let ep = unsafe { str_arg(endpoint, "endpoint") }?;
        non_null(out, "out")?;
        let ep: Endpoint = ep.parse().map_err(|e: netron_engine::EndpointError| {
            Error::new(NTR_INVALID_ENDPOINT, e.to_string())
        })?;
        let id = with_core(core.id, |cell| {
            let conn = cell
                .core
                .connect(&ep, Duration::from_millis(timeout_ms))
                .map_err(crate::engine::connect_error)?;
            cell.next_conn += 1;
            let id = cell.mint(cell.next_conn);
            cell.conns.insert(id, conn);
            Ok(id)
        })?;
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_conn { id }) }
    })
}

/// Closes a connection of the core (its calls in flight fail) and frees the handle. Calls
/// prepared on it (`ntr_core_prepare_call`) stay valid handles that fail with
/// `NTR_UNAVAILABLE` until freed.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_core_close(core: ntr_core, conn: ntr_conn) -> ntr_status {
    entry(|| {
        with_cores(|cores| {
            let cell = cores.core(core.id)?;
            let c = cell.conns.remove(&conn.id).ok_or_else(|| bad_conn(conn))?;
            cell.last_conn.set(None);
            cell.core.close(c);
            cores.prepared.conn_closed(core.id, conn.id);
            Ok(())
        })
    })
}

#[cold]
#[inline(never)]
pub(crate) fn bad_conn(conn: ntr_conn) -> Error {
    Error::new(
        NTR_INVALID_HANDLE,
        format!(
            "invalid ntr_conn handle {:#x} for this core: zero, closed, or of another core",
            conn.id
        ),
    )
}

/// One blocking unary call on `conn`, running the core on the calling thread until the reply,
/// the failure or the deadline (`deadline_ms`, 0: none). The reply replaces the contents of
/// `*reply`, whose memory is reused: no allocation per call in steady state. `service` is an
/// exact `name@1.2.0`. Repeated calls of one method are cheaper prepared once
/// (`ntr_core_prepare_call`, `ntr_core_call_prepared`): no names to scan, no connection
/// lookup.
///
/// # Errors
/// As `ntr_channel_call`.
///
/// # Safety
/// As `ntr_channel_call`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ntr_core_call(
    core: ntr_core,
    conn: ntr_conn,
    service: *const c_char,
    method: *const c_char,
    data: *const u8,
    len: usize,
    deadline_ms: u64,
    reply: *mut ntr_buf,
) -> ntr_status {
    entry(|| {
        non_null(service, "service")?;
        non_null(method, "method")?;
        // SAFETY: not NULL (checked) and NUL-terminated (contract); used during this call.
        let service = unsafe { std::ffi::CStr::from_ptr(service) }.to_bytes();
        // SAFETY: as above.
        let method = unsafe { std::ffi::CStr::from_ptr(method) }.to_bytes();
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        non_null(reply, "reply")?;
        // SAFETY: not NULL (checked); exclusively ours during this call (contract).
        let out = unsafe { &mut *reply };
        with_core(core.id, |cell| {
            let c = cell.conn(conn)?;
            let dl = deadline(deadline_ms);
            match cell
                .core
                .call(c, service, method, payload, dl, &mut cell.slot)
            {
                Ok(bytes) => {
                    // SAFETY: zeroed or filled by us (contract).
                    unsafe { fill(out, bytes) };
                    Ok(())
                }
                Err(e) => {
                    out.len = 0;
                    Err(call_failed(&e))
                }
            }
        })
    })
}

/// A call started on a caller-driven core without waiting (`ntr_core_call_start`); ended by
/// `ntr_core_call_result` once it is done, or by `ntr_core_call_cancel`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_core_call_handle {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// Starts a unary call on `conn` without waiting, and writes its handle to `*out`: the
/// request goes out on the core's next turn, and the outcome arrives as the core runs
/// (`ntr_core_run_once`, typically after a wait on `ntr_core_fd`); read it with
/// `ntr_core_call_result`. `service` is an exact `name@1.2.0`; `deadline_ms` as in
/// `ntr_core_call`. Allocates the call's outcome slot.
///
/// # Errors
/// `NTR_NULL_ARGUMENT` for a NULL name or `out` (or `data` with `len` > 0),
/// `NTR_INVALID_HANDLE` for a core or connection that is not live, `NTR_WRONG_THREAD`. A
/// refusal of the call itself (the peer's `max_concurrent_calls`, the frame size, a closed
/// connection) is its outcome: `ntr_core_call_result` returns it.
///
/// # Safety
/// As `ntr_core_call`; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ntr_core_call_start(
    core: ntr_core,
    conn: ntr_conn,
    service: *const c_char,
    method: *const c_char,
    data: *const u8,
    len: usize,
    deadline_ms: u64,
    out: *mut ntr_core_call_handle,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let service = unsafe { str_arg(service, "service") }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?;
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        non_null(out, "out")?;
        let id = with_core(core.id, |cell| {
            let c = cell.conn(conn)?;
            let dl = deadline(deadline_ms);
            let mut slot = CallSlot::new();
            let call = cell.core.start(
                c,
                service.as_bytes(),
                method.as_bytes(),
                payload,
                dl,
                &mut slot,
            );
            cell.next_started += 1;
            let id = cell.mint(cell.next_started);
            cell.started.insert(id, (c, call, slot));
            Ok(id)
        })?;
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_core_call_handle { id }) }
    })
}

fn bad_call(call: ntr_core_call_handle) -> Error {
    Error::new(
        NTR_INVALID_HANDLE,
        format!(
            "invalid ntr_core_call_handle {:#x} for this core: zero, already done or cancelled, or of another core",
            call.id
        ),
    )
}

/// The outcome of a started call, without waiting or running the core: `NTR_WOULD_BLOCK`
/// while it is in flight (the handle stays valid); otherwise the call is over and its handle
/// freed: `NTR_OK` with the reply in `*reply` (whose memory is reused), or the failure status
/// (as `ntr_core_call`; `*reply` then has `len` 0).
///
/// # Safety
/// `reply` is NULL or an `ntr_buf` zeroed or filled by this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_call_result(
    core: ntr_core,
    call: ntr_core_call_handle,
    reply: *mut ntr_buf,
) -> ntr_status {
    entry(|| {
        non_null(reply, "reply")?;
        // SAFETY: not NULL (checked); exclusively ours during this call (contract).
        let out = unsafe { &mut *reply };
        with_core(core.id, |cell| {
            let (_, _, slot) = cell.started.get(&call.id).ok_or_else(|| bad_call(call))?;
            let Some(r) = slot.reply() else {
                return Err(Error::new(NTR_WOULD_BLOCK, "the call is still in flight"));
            };
            let r = match r {
                Ok(bytes) => {
                    // SAFETY: zeroed or filled by us (contract).
                    unsafe { fill(out, bytes) };
                    Ok(())
                }
                Err(e) => {
                    out.len = 0;
                    Err(call_failed(&e))
                }
            };
            cell.started.remove(&call.id);
            r
        })
    })
}

/// Cancels a started call (a Cancel goes to the server unless it is over) and frees its
/// handle.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_core_call_cancel(core: ntr_core, call: ntr_core_call_handle) -> ntr_status {
    entry(|| {
        with_core(core.id, |cell| {
            let (c, id, slot) = cell
                .started
                .remove(&call.id)
                .ok_or_else(|| bad_call(call))?;
            if let (Some(id), false) = (id, slot.is_done()) {
                cell.core.cancel(c, id);
            }
            Ok(())
        })
    })
}

/// Runs one turn of the core's loop (completions, timers, commands) without blocking; writes
/// whether it did any work to `*did_work` (NULL: not wanted).
///
/// # Errors
/// `NTR_UNAVAILABLE` when the core's ring failed (the core is unusable from then on).
///
/// # Safety
/// `did_work` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_run_once(core: ntr_core, did_work: *mut bool) -> ntr_status {
    entry(|| {
        let work = with_core(core.id, |cell| {
            cell.core.poll_once().map_err(|e| {
                Error::new(NTR_UNAVAILABLE, format!("the core's io_uring failed: {e}"))
            })
        })?;
        if !did_work.is_null() {
            // SAFETY: not NULL (checked); valid for a write (contract).
            unsafe { write(did_work, work) }?;
        }
        Ok(())
    })
}

/// Writes to `*out` the descriptor that becomes readable when the core has work (a
/// completion, data, another thread's command), for the program's own poll(2), epoll or libuv
/// loop. It belongs to the core: valid until `ntr_core_free`; do not close or read it. On
/// io_uring it is an eventfd registered with the ring on the first call (from then on the
/// ring signals it once per batch of completions, a small cost only such cores pay).
///
/// The loop: `ntr_core_prepare_wait(core, &ms)`; wait for `POLLIN` on the descriptor for at
/// most `ms` milliseconds (-1: no limit; 0: do not wait); then `ntr_core_run_once`.
///
/// # Errors
/// `NTR_START_FAILED` when the eventfd cannot be created or registered.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_fd(core: ntr_core, out: *mut std::ffi::c_int) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let fd = with_core(core.id, |cell| {
            cell.core.wait_fd().map_err(|e| {
                Error::new(
                    NTR_START_FAILED,
                    format!("cannot make the core's wait descriptor: {e}"),
                )
            })
        })?;
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, fd) }
    })
}

/// Prepares the core for the program's wait on `ntr_core_fd`: submits what is queued,
/// announces the sleep (other threads' commands wake the descriptor from now on), and writes
/// to `*timeout_ms` how long the wait may last at most, in milliseconds rounded up: 0 when
/// work is waiting already (run a turn now), -1 for no limit, else until the core's next
/// timer (a call's or stream's deadline, a keepalive). Call it last, right before the wait:
/// any `ntr_core_*` call afterwards withdraws the announcement and queues its work for the
/// next turn without waking the descriptor, so after such a call prepare again (the new
/// timeout is 0 when that call left work to do) before waiting.
///
/// # Errors
/// `NTR_UNAVAILABLE` when the core's ring failed; `NTR_START_FAILED` as `ntr_core_fd`.
///
/// # Safety
/// `timeout_ms` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_prepare_wait(core: ntr_core, timeout_ms: *mut i64) -> ntr_status {
    entry(|| {
        non_null(timeout_ms, "timeout_ms")?;
        let ms = with_core(core.id, |cell| {
            let t = cell
                .core
                .prepare_wait()
                .map_err(|e| Error::new(NTR_UNAVAILABLE, format!("the core cannot wait: {e}")))?;
            cell.waiting = true;
            Ok(t.map_or(-1, |d| {
                i64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
            }))
        })?;
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(timeout_ms, ms) }
    })
}
