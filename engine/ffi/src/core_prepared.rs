//! Prepared calls on a caller-driven core: what does not change between calls (the core, the
//! connection, the service and method names) is resolved once by `ntr_core_prepare_call`, so
//! that `ntr_core_call_prepared` passes only the prepared handle, the request, the deadline and
//! the reply buffer: no `strlen`, no hash lookup, no allocation per call.
//!
//! The entries live in the calling thread's state beside its cores (`core::Cores`), in slots
//! reused through a free list. An id is `9 << 56 | thread << 36 | generation << 20 |
//! (index + 1)`: the tag 9 (after the handle tables' 1 to 8), the low 16 bits of the
//! thread's number (the same number as in its cores' ids), a 16-bit generation bumped when
//! the slot is freed, and the slot's index in 20 bits. The entry keeps its whole id, so one
//! 64-bit comparison checks tag, thread, generation and index at once: a freed, zeroed,
//! forged or other kind of id, or one of another thread, is refused with
//! `NTR_INVALID_HANDLE` or `NTR_WRONG_THREAD`, never dereferenced. Limits: 2^20 − 1 live
//! prepared calls per thread (`NTR_RESOURCE_EXHAUSTED` beyond); a freed id could be taken
//! for a new one only after its slot was reused 2^16 times, and another thread's id for one
//! of this thread only when the two threads' numbers agree in their low 16 bits (both
//! cases misdirect a misused handle to a live prepared call of the calling thread, never to
//! freed memory).
//!
//! The header block is not cached: the engine encodes `:service` and `:method` with the
//! connection's HPACK encoder, whose dynamic table changes as it encodes, so an encoded block
//! cannot be replayed safely; after the first call both names are one-byte indexed fields.

use std::ffi::c_char;

use netron_engine::ConnId;

use crate::buf::{fill, ntr_buf};
use crate::core::{
    call_failed, deadline, ntr_conn, ntr_core, thread_no, try_with_cores, with_cores,
};
use crate::guard::{bytes_arg, entry, entry_status, failed, non_null, str_arg, write};
use crate::status::*;

/// A unary call prepared on a connection of a caller-driven core (`ntr_core_prepare_call`):
/// the core, the connection and the names resolved once, for repeated
/// `ntr_core_call_prepared`. Used on the core's thread only, like the core; freed with
/// `ntr_core_prepared_call_free` (or with its core, by `ntr_core_free`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_core_prepared_call {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

const TAG: u64 = 9;
const INDEX_BITS: u32 = 20;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const GENERATION_MASK: u64 = 0xffff;
const THREAD_MASK: u64 = 0xffff;

/// The id of slot `index` at `generation`, minted on thread `thread`.
fn make_id(thread: u32, generation: u64, index: usize) -> u64 {
    TAG << 56
        | (u64::from(thread) & THREAD_MASK) << 36
        | (generation & GENERATION_MASK) << INDEX_BITS
        | (index as u64 + 1)
}

/// What a prepared call resolved.
pub(crate) struct Prepared {
    /// The id of its core (of this thread).
    pub(crate) core: u64,
    /// The `ntr_conn` handle it was prepared on, to find it when that connection is closed.
    conn_handle: u64,
    /// The engine's connection; `None` once `ntr_core_close` closed it.
    pub(crate) conn: Option<ConnId>,
    pub(crate) service: Box<[u8]>,
    pub(crate) method: Box<[u8]>,
}

struct Slot {
    /// The id of the slot's current occupant, or of its next one while it is free (its
    /// generation already bumped).
    id: u64,
    call: Option<Prepared>,
}

/// The prepared calls of one thread.
pub(crate) struct PreparedCalls {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl PreparedCalls {
    pub(crate) const fn new() -> Self {
        PreparedCalls {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// The live prepared call of `id`: one bounds check and one comparison.
    #[inline]
    pub(crate) fn get(&self, id: u64) -> Option<&Prepared> {
        let index = ((id & INDEX_MASK) as usize).wrapping_sub(1);
        let slot = self.slots.get(index)?;
        if slot.id != id {
            return None;
        }
        slot.call.as_ref()
    }

    /// Stores `call` (prepared on this thread) and returns its id.
    fn insert(&mut self, call: Prepared) -> Result<u64, Error> {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                let i = self.slots.len();
                if i as u64 >= INDEX_MASK {
                    return Err(Error::new(
                        NTR_RESOURCE_EXHAUSTED,
                        format!(
                            "{INDEX_MASK} prepared calls are live on this thread (the limit): free some with ntr_core_prepared_call_free"
                        ),
                    ));
                }
                self.slots.push(Slot {
                    id: make_id(thread_no(), 1, i),
                    call: None,
                });
                i
            }
        };
        let slot = &mut self.slots[index];
        slot.call = Some(call);
        Ok(slot.id)
    }

    /// Frees slot `index`: its id is refused from now on.
    fn free_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.call = None;
        let generation = ((slot.id >> INDEX_BITS) + 1) & GENERATION_MASK;
        slot.id = make_id(thread_no(), generation.max(1), index);
        self.free.push(index as u32);
    }

    /// Frees the prepared call of `id`.
    fn remove(&mut self, id: u64) -> Result<(), Error> {
        self.get(id).ok_or_else(|| bad_prepared(id))?;
        self.free_slot(((id & INDEX_MASK) - 1) as usize);
        Ok(())
    }

    /// The connection `conn` of core `core` was closed: its prepared calls fail from now on.
    pub(crate) fn conn_closed(&mut self, core: u64, conn: u64) {
        for p in self.slots.iter_mut().filter_map(|s| s.call.as_mut()) {
            if p.core == core && p.conn_handle == conn {
                p.conn = None;
            }
        }
    }

    /// Core `core` is being freed: so are its prepared calls.
    pub(crate) fn core_freed(&mut self, core: u64) {
        for i in 0..self.slots.len() {
            if self.slots[i].call.as_ref().is_some_and(|p| p.core == core) {
                self.free_slot(i);
            }
        }
    }
}

/// Why `id` is not a live prepared call of this thread: one of another thread, or none.
#[cold]
#[inline(never)]
pub(crate) fn bad_prepared(id: u64) -> Error {
    let thread = (id >> 36) & THREAD_MASK;
    if id >> 56 == TAG && thread != u64::from(thread_no()) & THREAD_MASK {
        Error::new(
            NTR_WRONG_THREAD,
            format!(
                "ntr_core_prepared_call {id:#x} belongs to another thread (or was freed there); a prepared call is used only by the thread of its core"
            ),
        )
    } else {
        Error::new(
            NTR_INVALID_HANDLE,
            format!(
                "invalid ntr_core_prepared_call handle {id:#x}: zero, freed (or its core freed), or not a prepared call"
            ),
        )
    }
}

#[cold]
#[inline(never)]
fn conn_closed(id: u64) -> Error {
    Error::new(
        NTR_UNAVAILABLE,
        format!(
            "the connection of ntr_core_prepared_call {id:#x} was closed (ntr_core_close): prepare the call again on an open connection"
        ),
    )
}

/// Prepares unary calls of `method` of `service` (an exact `name@1.2.0`) on `conn` of `core`
/// and writes the handle to `*out`: the names are copied and the handles resolved once, for
/// `ntr_core_call_prepared`. Allocates the names' copies (once).
///
/// The prepared call belongs to the core's thread, like the core (`NTR_WRONG_THREAD`
/// elsewhere). It keeps no connection open: once `conn` is closed (`ntr_core_close`, or by
/// the peer) its calls fail with `NTR_UNAVAILABLE`. Free it with
/// `ntr_core_prepared_call_free`; `ntr_core_free` frees its core's prepared calls.
///
/// # Errors
/// `NTR_NULL_ARGUMENT`, `NTR_INVALID_UTF8` for a name, `NTR_INVALID_HANDLE` for a core or
/// connection that is not live, `NTR_WRONG_THREAD`, `NTR_RESOURCE_EXHAUSTED` above 1,048,575
/// live prepared calls on the thread.
///
/// # Safety
/// `service` and `method` are NULL or NUL-terminated strings (copied); `out` is NULL or valid
/// for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_prepare_call(
    core: ntr_core,
    conn: ntr_conn,
    service: *const c_char,
    method: *const c_char,
    out: *mut ntr_core_prepared_call,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); copied here.
        let service = unsafe { str_arg(service, "service") }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?;
        non_null(out, "out")?;
        let id = with_cores(|cores| {
            let c = cores.core(core.id)?.conn(conn)?;
            cores.prepared.insert(Prepared {
                core: core.id,
                conn_handle: conn.id,
                conn: Some(c),
                service: service.as_bytes().into(),
                method: method.as_bytes().into(),
            })
        })?;
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_core_prepared_call { id }) }
    })
}

/// One blocking unary call of a prepared call: as `ntr_core_call` on the prepared core,
/// connection and names (the core runs on the calling thread until the reply, the failure or
/// the deadline, `deadline_ms`, 0: none), with no string scan and no handle search per call.
/// The reply replaces the contents of `*reply`, whose memory is reused: no allocation per
/// call in steady state.
///
/// # Errors
/// As `ntr_core_call`: a status from 1 to 16 for the call (`*reply` then has `len` 0),
/// `NTR_UNAVAILABLE` also when the connection was closed (`ntr_core_close`);
/// `NTR_NULL_ARGUMENT` for a NULL `reply` (or `data` with `len` > 0); `NTR_INVALID_HANDLE`
/// for a zeroed or freed prepared call (or one whose core was freed); `NTR_WRONG_THREAD` off
/// the core's thread.
///
/// # Safety
/// `data` is valid for `len` bytes (or NULL with `len` 0); `reply` is NULL or an `ntr_buf`
/// zeroed or filled by this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_call_prepared(
    call: ntr_core_prepared_call,
    data: *const u8,
    len: usize,
    deadline_ms: u64,
    reply: *mut ntr_buf,
) -> ntr_status {
    // The common case in one pass that builds no error values: valid pointers and a live
    // prepared call of this thread on an open connection. Anything else gives up before
    // doing anything, and the checked path below finds and reports it.
    if !reply.is_null() && (len == 0 || !data.is_null()) {
        let status = entry_status(|| {
            let payload: &[u8] = if len == 0 {
                &[]
            } else {
                // SAFETY: not NULL (checked) and valid for `len` bytes during this call
                // (contract), so within one allocation.
                unsafe { std::slice::from_raw_parts(data, len) }
            };
            // SAFETY: not NULL (checked); exclusively ours during this call (contract).
            let out = unsafe { &mut *reply };
            try_with_cores(|cores| {
                let (p, cell) = cores.prepared_call(call.id)?;
                let c = p.conn?;
                let dl = deadline(deadline_ms);
                Some(
                    match cell
                        .core
                        .call(c, &p.service, &p.method, payload, dl, &mut cell.slot)
                    {
                        Ok(bytes) => {
                            // SAFETY: zeroed or filled by us (contract).
                            unsafe { fill(out, bytes) };
                            NTR_OK
                        }
                        Err(e) => {
                            out.len = 0;
                            failed(call_failed(&e))
                        }
                    },
                )
            })
            .flatten()
            .unwrap_or(GAVE_UP)
        });
        if status != GAVE_UP {
            return status;
        }
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { call_prepared_checked(call, data, len, reply) }
}

/// Not a status: the fast path of `ntr_core_call_prepared` gave up without doing anything.
const GAVE_UP: ntr_status = ntr_status::MAX;

/// Why `ntr_core_call_prepared` cannot call: the argument or handle at fault, as an error.
///
/// # Safety
/// As `ntr_core_call_prepared`.
#[cold]
#[inline(never)]
unsafe fn call_prepared_checked(
    call: ntr_core_prepared_call,
    data: *const u8,
    len: usize,
    reply: *mut ntr_buf,
) -> ntr_status {
    entry(|| {
        // SAFETY: valid for `len` bytes during this call (contract).
        unsafe { bytes_arg(data, len, "data") }?;
        non_null(reply, "reply")?;
        // SAFETY: not NULL (checked); exclusively ours during this call (contract).
        let out = unsafe { &mut *reply };
        with_cores(|cores| {
            let Some((p, _)) = cores.prepared_call(call.id) else {
                return Err(bad_prepared(call.id));
            };
            out.len = 0;
            if p.conn.is_none() {
                return Err(conn_closed(call.id));
            }
            Err(Error::new(
                NTR_PANIC,
                "ntr_core_call_prepared: the fast path gave up on a valid call (a bug)",
            ))
        })
    })
}

/// Frees a prepared call (calls on its connection are not affected).
///
/// # Errors
/// `NTR_INVALID_HANDLE` for a zeroed or already freed one (or one whose core was freed),
/// `NTR_WRONG_THREAD` off the core's thread.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_core_prepared_call_free(call: ntr_core_prepared_call) -> ntr_status {
    entry(|| with_cores(|cores| cores.prepared.remove(call.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(core: u64, conn: u64) -> Prepared {
        Prepared {
            core,
            conn_handle: conn,
            conn: None,
            service: Box::new([]),
            method: Box::new([]),
        }
    }

    #[test]
    fn freed_forged_and_foreign_ids_are_refused() {
        let mut t = PreparedCalls::new();
        let a = t.insert(prepared(1, 10)).unwrap();
        assert_eq!(a >> 56, TAG);
        assert!(t.get(a).is_some());
        assert!(t.get(0).is_none());
        assert!(t.get(u64::MAX).is_none());
        assert!(t.get(a + 1).is_none(), "the next slot is empty");
        t.remove(a).unwrap();
        assert!(t.get(a).is_none());
        assert_eq!(t.remove(a).unwrap_err().status, NTR_INVALID_HANDLE);
        let b = t.insert(prepared(1, 10)).unwrap();
        assert_eq!(a & INDEX_MASK, b & INDEX_MASK, "the slot is reused");
        assert_ne!(a, b, "with a new generation");
        assert!(t.get(a).is_none() && t.get(b).is_some());
        let other_thread = b ^ (1 << 36);
        assert!(t.get(other_thread).is_none());
        assert_eq!(bad_prepared(other_thread).status, NTR_WRONG_THREAD);
        assert_eq!(bad_prepared(0).status, NTR_INVALID_HANDLE);
        assert_eq!(bad_prepared(1 << 56 | 1).status, NTR_INVALID_HANDLE);
    }

    #[test]
    fn a_freed_core_frees_its_prepared_calls() {
        let mut t = PreparedCalls::new();
        let (a, b, c) = (
            t.insert(prepared(1, 10)).unwrap(),
            t.insert(prepared(2, 20)).unwrap(),
            t.insert(prepared(1, 11)).unwrap(),
        );
        t.core_freed(1);
        assert!(t.get(a).is_none() && t.get(c).is_none());
        assert!(t.get(b).is_some());
    }
}
