//! Publish/subscribe: publish on a channel, an engine or a caller-driven core; subscribe
//! there and pull events from the subscription handle.

use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use netron_engine::{Event, RecvError, SlowPolicy, SubscribeOptions, Subscription};

use crate::client::{CHANNELS, ntr_channel};
use crate::core::{ntr_conn, ntr_core, with_core};
use crate::engine::{ENGINES, ntr_engine};
use crate::guard::{bytes_arg, entry, may_block, non_null, str_arg, write};
use crate::handles::Table;
use crate::status::*;

/// A subscription (`ntr_channel_subscribe`, `ntr_engine_subscribe`, `ntr_core_subscribe`):
/// pull its events with `ntr_subscription_next`; `ntr_subscription_free` unsubscribes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_subscription {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// What a subscriber's publisher does when the subscription's queue is full: its default
/// (drop-oldest on a Netron engine).
pub const NTR_SLOW_DEFAULT: u32 = 0;
/// Drop the oldest queued event (the subscriber sees the count in `ntr_event.lost`).
pub const NTR_SLOW_DROP_OLDEST: u32 = 1;
/// End the subscription with `NTR_RESOURCE_EXHAUSTED` ("subscriber too slow").
pub const NTR_SLOW_DISCONNECT: u32 = 2;

/// How to subscribe; a NULL `ntr_subscribe_options *` means all defaults (all zero).
#[repr(C)]
#[derive(Debug)]
pub struct ntr_subscribe_options {
    /// Queue group name (NUL-terminated, copied), or NULL for none: of a group's
    /// subscriptions at the publisher, one gets each event.
    pub group: *const c_char,
    /// Events the publisher (and this side) may hold for the subscription while it is not
    /// read; 0: the publisher's default (1024 on a Netron engine).
    pub queue_depth: u32,
    /// `NTR_SLOW_DEFAULT`, `NTR_SLOW_DROP_OLDEST` or `NTR_SLOW_DISCONNECT`.
    pub on_full: u32,
}

/// One event, as `ntr_subscription_next` gives it. Every pointer is owned by the library and
/// borrowed until the next `ntr_subscription_next` or `ntr_subscription_free` of the same
/// subscription.
#[repr(C)]
#[derive(Debug)]
pub struct ntr_event {
    /// The event's subject, NUL-terminated (`orders.eu.created`).
    pub subject: *const c_char,
    /// Length of `subject` in bytes, without the NUL.
    pub subject_len: usize,
    /// The payload (NULL if `len` is 0).
    pub data: *const u8,
    /// Payload length in bytes.
    pub len: usize,
    /// Events of this subscription lost just before this one: its queue (or the
    /// publisher's queue for it) was full, or an event did not fit the connection's
    /// negotiated frame size (events above this side's own `max_frame_size` are refused
    /// when published: `NTR_RESOURCE_EXHAUSTED`).
    pub lost: u32,
}

struct SubCell {
    sub: Subscription,
    /// The event C borrows, and its subject with a NUL (a reused buffer).
    current: Mutex<(Option<Event>, Vec<u8>)>,
    /// `ntr_subscription_free` was called: a thread still waiting gets `NTR_INVALID_HANDLE`,
    /// never an event whose memory goes with the handle.
    freed: AtomicBool,
    /// The failure the subscription ended with was reported: later calls say
    /// `NTR_END_OF_STREAM`, as streams do.
    end_reported: AtomicBool,
}

static SUBS: Table<Arc<SubCell>> = Table::new(5, "ntr_subscription");

fn status_err(st: netron_engine::Status) -> Error {
    status_error(&st)
}

/// The options at `opts` (NULL: defaults).
///
/// # Safety
/// `opts` is NULL or points to a valid `ntr_subscribe_options` whose `group` is NULL or a
/// NUL-terminated string.
unsafe fn options(opts: *const ntr_subscribe_options) -> Result<SubscribeOptions, Error> {
    let mut o = SubscribeOptions::new();
    if opts.is_null() {
        return Ok(o);
    }
    // SAFETY: not NULL, valid for reads (contract).
    let opts = unsafe { &*opts };
    o = o.queue_depth(opts.queue_depth);
    o = o.on_full(match opts.on_full {
        NTR_SLOW_DEFAULT => SlowPolicy::PublisherDefault,
        NTR_SLOW_DROP_OLDEST => SlowPolicy::DropOldest,
        NTR_SLOW_DISCONNECT => SlowPolicy::Disconnect,
        v => {
            return Err(Error::new(
                NTR_INVALID_CONFIG,
                format!("ntr_subscribe_options.on_full {v} is not an NTR_SLOW_ value (0 to 2)"),
            ));
        }
    });
    if !opts.group.is_null() {
        // SAFETY: not NULL, NUL-terminated (contract); copied here.
        o = o.group(unsafe { str_arg(opts.group, "opts->group") }?);
    }
    Ok(o)
}

fn insert(sub: Subscription, out: *mut ntr_subscription) -> Result<(), Error> {
    let id = SUBS.insert(Arc::new(SubCell {
        sub,
        current: Mutex::new((None, Vec::new())),
        freed: AtomicBool::new(false),
        end_reported: AtomicBool::new(false),
    }));
    // SAFETY: checked not NULL by the caller; valid for a write (its contract).
    unsafe { write(out, ntr_subscription { id }) }
}

/// Publishes an event of `subject` with payload `data[0..len]` (copied) to the channel's peer,
/// which delivers it to its matching subscriptions. Fire-and-forget: `NTR_OK` says it was
/// handed to the connection's core, not that anyone received it.
///
/// # Errors
/// `NTR_INVALID_ARGUMENT` for an invalid subject; `NTR_RESOURCE_EXHAUSTED` for an event no frame can carry
/// (above the configured `max_frame_size`, 16 MiB by default), or when the core has 64 MiB of
/// published events still to take (retry later).
///
/// # Safety
/// `subject` is NULL or a NUL-terminated string; `data` is valid for `len` bytes (or NULL
/// with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_channel_publish(
    channel: ntr_channel,
    subject: *const c_char,
    data: *const u8,
    len: usize,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let subject = unsafe { str_arg(subject, "subject") }?;
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        let ch = CHANNELS.get(channel.id)?;
        ch.publish(subject, netron_engine::Bytes::copy_from_slice(payload))
            .map_err(status_err)
    })
}

/// Subscribes at the channel's peer to the subjects matching `pattern` (`orders.*`: one
/// token, `orders.>`: the rest) with `opts` (NULL: defaults), and writes the subscription
/// to `*out`. A refusal by the peer (its limit) or the connection's end shows in
/// `ntr_subscription_next`.
///
/// # Errors
/// `NTR_INVALID_ARGUMENT` for an invalid pattern, `NTR_INVALID_CONFIG` for a bad `on_full`.
///
/// # Safety
/// `pattern` is NULL or a NUL-terminated string; `opts` is NULL or valid (its `group` NULL or
/// NUL-terminated); `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_channel_subscribe(
    channel: ntr_channel,
    pattern: *const c_char,
    opts: *const ntr_subscribe_options,
    out: *mut ntr_subscription,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let pattern = unsafe { str_arg(pattern, "pattern") }?;
        // SAFETY: the same contract.
        let o = unsafe { options(opts) }?;
        non_null(out, "out")?;
        let ch = CHANNELS.get(channel.id)?;
        insert(ch.subscribe(pattern, o).map_err(status_err)?, out)
    })
}

fn with_engine<R>(
    engine: ntr_engine,
    f: impl FnOnce(&netron_engine::Engine) -> Result<R, Error>,
) -> Result<R, Error> {
    let cell = ENGINES.get(engine.id)?;
    let g = cell.engine.lock().unwrap_or_else(PoisonError::into_inner);
    let e = g
        .as_ref()
        .ok_or_else(|| Error::new(NTR_UNAVAILABLE, "the engine is stopping"))?;
    f(e)
}

/// Publishes an event on the engine itself: the subscriptions its peers hold (on every core)
/// and its in-process ones (`ntr_engine_subscribe`) get it. As `ntr_channel_publish`
/// otherwise.
///
/// # Safety
/// As `ntr_channel_publish`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_publish(
    engine: ntr_engine,
    subject: *const c_char,
    data: *const u8,
    len: usize,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let subject = unsafe { str_arg(subject, "subject") }?;
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        with_engine(engine, |e| {
            e.publish(subject, netron_engine::Bytes::copy_from_slice(payload))
                .map_err(status_err)
        })
    })
}

/// Subscribes in-process to the events published on the engine (by its peers and with
/// `ntr_engine_publish`). As `ntr_channel_subscribe` otherwise.
///
/// # Safety
/// As `ntr_channel_subscribe`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_subscribe(
    engine: ntr_engine,
    pattern: *const c_char,
    opts: *const ntr_subscribe_options,
    out: *mut ntr_subscription,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let pattern = unsafe { str_arg(pattern, "pattern") }?;
        // SAFETY: the same contract.
        let o = unsafe { options(opts) }?;
        non_null(out, "out")?;
        let sub = with_engine(engine, |e| e.subscribe(pattern, o).map_err(status_err))?;
        insert(sub, out)
    })
}

/// Publishes an event to the peer of `conn` of a caller-driven core (it goes out on the
/// core's next turn). As `ntr_channel_publish` otherwise, and `NTR_UNAVAILABLE` for a closed
/// connection, `NTR_UNIMPLEMENTED` if the peer takes no events.
///
/// # Safety
/// As `ntr_channel_publish`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_publish(
    core: ntr_core,
    conn: ntr_conn,
    subject: *const c_char,
    data: *const u8,
    len: usize,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let subject = unsafe { str_arg(subject, "subject") }?;
        // SAFETY: valid for `len` bytes during this call (contract).
        let payload = unsafe { bytes_arg(data, len, "data") }?;
        with_core(core.id, |cell| {
            let c = cell.conn(conn)?;
            cell.core.publish(c, subject, payload).map_err(status_err)
        })
    })
}

/// Subscribes at the peer of `conn` of a caller-driven core. Its events arrive only while
/// that core runs (`ntr_core_run_once`, calls, stream receives on it): read them with
/// `ntr_subscription_next(sub, 0, ...)` between turns (a wait would not run the core). As
/// `ntr_channel_subscribe` otherwise.
///
/// # Safety
/// As `ntr_channel_subscribe`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_core_subscribe(
    core: ntr_core,
    conn: ntr_conn,
    pattern: *const c_char,
    opts: *const ntr_subscribe_options,
    out: *mut ntr_subscription,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let pattern = unsafe { str_arg(pattern, "pattern") }?;
        // SAFETY: the same contract.
        let o = unsafe { options(opts) }?;
        non_null(out, "out")?;
        let sub = with_core(core.id, |cell| {
            let c = cell.conn(conn)?;
            cell.core.subscribe(c, pattern, o).map_err(status_err)
        })?;
        insert(sub, out)
    })
}

/// Takes the next event of `sub` into `*out` (borrowed: see `ntr_event`), waiting up to
/// `timeout_ms` milliseconds (0: do not wait; `NTR_FOREVER`: no limit). The previous event of
/// this subscription is released first. Call it from one thread at a time per subscription.
///
/// # Errors
/// `NTR_WOULD_BLOCK` when no event arrived within the timeout; once the subscription ended
/// and every event received before was taken: `NTR_END_OF_STREAM` (ended by the publisher
/// without error) or why it ended (`NTR_RESOURCE_EXHAUSTED` "subscriber too slow" or the
/// peer's limit, `NTR_UNAVAILABLE` when the connection closed...); `NTR_FAILED_PRECONDITION`
/// for a non-zero timeout inside a callback of this library.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_subscription_next(
    sub: ntr_subscription,
    timeout_ms: u64,
    out: *mut ntr_event,
) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let cell = SUBS.get(sub.id)?;
        let mut cur = cell.current.lock().unwrap_or_else(PoisonError::into_inner);
        cur.0 = None;
        let r = if timeout_ms == 0 {
            cell.sub
                .try_recv()
                .and_then(|e| e.ok_or(RecvError::Timeout))
        } else {
            may_block("ntr_subscription_next")?;
            let t = if timeout_ms == u64::MAX {
                Duration::MAX
            } else {
                Duration::from_millis(timeout_ms)
            };
            cell.sub.recv_timeout(t)
        };
        if cell.freed.load(Ordering::Acquire) {
            return Err(Error::new(
                NTR_INVALID_HANDLE,
                "the ntr_subscription was freed while this call waited on it",
            ));
        }
        let ev = match r {
            Ok(ev) => ev,
            Err(RecvError::Ended(_)) if cell.end_reported.load(Ordering::Acquire) => {
                return Err(Error::new(
                    NTR_END_OF_STREAM,
                    "the subscription ended (its failure was reported by an earlier call)",
                ));
            }
            Err(RecvError::Timeout) => {
                return Err(Error::new(
                    NTR_WOULD_BLOCK,
                    format!("no event within timeout_ms {timeout_ms}"),
                ));
            }
            Err(RecvError::Ended(st)) if st.code == netron_engine::StatusCode::Ok => {
                return Err(Error::new(
                    NTR_END_OF_STREAM,
                    "the subscription ended (the publisher ended it)",
                ));
            }
            Err(RecvError::Ended(st)) => {
                cell.end_reported.store(true, Ordering::Release);
                return Err(status_error(&st));
            }
            Err(e) => return Err(Error::new(NTR_UNKNOWN, e.to_string())),
        };
        let (slot, subject) = &mut *cur;
        subject.clear();
        subject.extend_from_slice(ev.topic());
        subject.push(0);
        let payload = ev.payload();
        let event = ntr_event {
            subject: subject.as_ptr().cast::<c_char>(),
            subject_len: subject.len() - 1,
            data: if payload.is_empty() {
                std::ptr::null()
            } else {
                payload.as_ptr()
            },
            len: payload.len(),
            lost: ev.lost(),
        };
        // The event (and so its payload) stays in the cell until the next call or the free.
        *slot = Some(ev);
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, event) }
    })
}

/// Unsubscribes and frees `sub` (the last event taken is released). A thread waiting in
/// `ntr_subscription_next` on it returns `NTR_INVALID_HANDLE` at once.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_subscription_free(sub: ntr_subscription) -> ntr_status {
    entry(|| {
        let cell = SUBS.remove(sub.id)?;
        cell.freed.store(true, Ordering::Release);
        cell.sub.unsubscribe();
        Ok(())
    })
}
