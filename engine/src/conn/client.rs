//! Client role: calls in flight on one connection, their deadlines, and their completion.

use std::time::{Duration, Instant};

use netron_codec::hpack::{Header, HeaderList};
use netron_codec::{Frame, FrameKind, StatusCode};
use rustc_hash::FxHashMap;

use super::{ConnError, Connection, Env};
use crate::Status;

/// Where a call's outcome goes: the connection completes it exactly once, with the reply
/// payload (borrowed: the receiver copies what it keeps) or the failure. The core implements it
/// for its cross-thread completion slots; `conn/` itself holds no `Arc`, thread, park or
/// unpark (docs/architecture.md, "The connection contract").
pub(crate) trait Caller: Sized + std::fmt::Debug {
    /// Delivers the outcome.
    fn complete(self, result: Result<&[u8], Status>);
    /// Delivers the outcome with the reply's header block (response metadata).
    fn complete_with(self, result: Result<&[u8], Status>, metadata: &HeaderList) {
        let _ = metadata;
        self.complete(result);
    }
    /// Whether `self` and `other` are the same destination (to cancel by destination).
    fn is(&self, other: &Self) -> bool;
}

#[derive(Debug)]
struct Pending<C> {
    /// Where the outcome goes; `None` once the call was cancelled or expired locally: the id
    /// stays reserved until the peer's final frame for it arrives (docs/protocol.md §14).
    slot: Option<C>,
    deadline: Option<Instant>,
}

/// The calls this side opened on one connection and has not yet seen answered, by id.
#[derive(Debug)]
pub(crate) struct PendingCalls<C> {
    by_id: FxHashMap<u32, Pending<C>>,
    /// The last id allocated (ids advance by 2 within this side's parity).
    pub(super) next_id: u32,
    /// Earliest deadline among pending calls (a lower bound; recomputed on expiry).
    pub(crate) next_deadline: Option<Instant>,
    /// Calls cancelled or expired locally whose final frame has not arrived yet.
    abandoned: usize,
}

/// Whether `a` comes after `b` in serial-number order (RFC 1982 with 32-bit serials): ids
/// advance modulo 2^32, so GoAway's `last_id` is compared this way (docs/protocol.md §14).
pub(crate) fn serial_after(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 31
}

impl<C: Caller> PendingCalls<C> {
    /// Calls opened by the connection's initiator (the side that sent Hello) have odd ids,
    /// the acceptor's even ids.
    pub(crate) fn new(initiator: bool) -> Self {
        Self {
            by_id: FxHashMap::default(),
            // The first allocation adds 2: initiator 1, acceptor 2.
            next_id: if initiator { u32::MAX } else { 0 },
            next_deadline: None,
            abandoned: 0,
        }
    }

    pub(super) fn allocate_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(2);
            if self.next_id != 0 && !self.by_id.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// Calls in flight, including cancelled ones still awaiting the peer's final frame.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Fails every pending call with `status` and forgets them all (the connection ended).
    pub(crate) fn fail_all(&mut self, status: &Status) {
        let status = &closed(status);
        for (_, p) in self.by_id.drain() {
            if let Some(slot) = p.slot {
                slot.complete(Err(status.clone()));
            }
        }
        self.abandoned = 0;
        self.next_deadline = None;
    }

    /// Fails pending calls opened after `last_id` (a GoAway: the peer did not process them,
    /// so they may be retried elsewhere).
    pub(crate) fn fail_after(&mut self, last_id: u32, status: &Status) {
        let status = &closed(status);
        let mut abandoned = 0;
        self.by_id.retain(|&id, p| {
            if serial_after(id, last_id) {
                match p.slot.take() {
                    Some(slot) => slot.complete(Err(status.clone())),
                    None => abandoned += 1,
                }
                false
            } else {
                true
            }
        });
        self.abandoned -= abandoned;
    }

    /// Completes calls whose deadline passed with DeadlineExceeded; returns their ids (to
    /// send Cancel). Their ids stay reserved until the peer answers.
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Vec<u32>) {
        match self.next_deadline {
            Some(d) if d <= now => {}
            _ => return,
        }
        let mut next: Option<Instant> = None;
        for (&id, p) in &mut self.by_id {
            match p.deadline {
                Some(d) if d <= now => {
                    p.deadline = None;
                    if let Some(slot) = p.slot.take() {
                        slot.complete(Err(Status::deadline_exceeded(
                            "the deadline passed before a reply arrived",
                        )));
                        self.abandoned += 1;
                        out.push(id);
                    }
                }
                Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        self.next_deadline = next;
    }

    /// Completes call `id` with `status` and keeps its id reserved until the peer's final
    /// frame. Returns whether the call was pending (a Cancel is then due).
    pub(crate) fn abandon(&mut self, id: u32, status: Status) -> bool {
        match self.by_id.get_mut(&id).and_then(|p| p.slot.take()) {
            Some(slot) => {
                slot.complete(Err(status));
                self.abandoned += 1;
                true
            }
            None => false,
        }
    }
}

/// `status` as the end of calls whose connection ended (closed, failed, going away): a
/// local cause, `CallError::Closed` for the caller, unless it already names another.
fn closed(status: &Status) -> Status {
    if status.origin() == crate::status::Origin::Status {
        status.clone().with_origin(crate::status::Origin::Closed)
    } else {
        status.clone()
    }
}

/// What a client call carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSpec<'a> {
    pub service: &'a [u8],
    pub method: &'a [u8],
    pub payload: &'a [u8],
    pub deadline: Option<Duration>,
    pub idempotent: bool,
    /// Request metadata sent after `:service` and `:method`.
    pub metadata: Option<&'a HeaderList>,
}

impl<C: Caller> Connection<C> {
    /// Encodes a Request for `spec` and registers `slot` to receive its outcome. On error
    /// nothing was encoded (the connection and its other calls are untouched), the slot is
    /// not registered, and the caller completes it with the returned status.
    pub(crate) fn start_call(
        &mut self,
        spec: &CallSpec<'_>,
        slot: C,
        now: Instant,
    ) -> Result<u32, Status> {
        if spec.deadline == Some(Duration::ZERO) {
            // Expired before it started: nothing is sent (the peer would only count it late).
            return Err(Status::deadline_exceeded(
                "the deadline (0) passed before the call was sent",
            ));
        }
        let early = !self.is_open() && self.early_call_fits(spec);
        if !self.is_open() && !early {
            return Err(Status::unavailable(if self.is_closing() {
                self.close_reason
                    .as_deref()
                    .unwrap_or("connection is closing")
                    .to_owned()
            } else {
                "connection is not open yet".to_owned()
            }));
        }
        if self.peer_going_away || self.going_away {
            return Err(Status::unavailable(
                "the connection is going away (GoAway); open a new one",
            ));
        }
        let max_calls = match &self.settings {
            Some(s) => s.max_concurrent_calls,
            // 0-RTT: the early budget bounds the calls.
            None if early => u32::MAX,
            None => return Err(Status::unavailable("connection is not open yet")),
        };
        if self.calls.len() >= max_calls as usize {
            return Err(Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "too many calls in flight on this connection: {} (the peer's \
                     max_concurrent_calls; {} of them cancelled and awaiting the peer's answer)",
                    max_calls, self.calls.abandoned
                ),
            ));
        }
        // A deadline too far to represent is no local deadline (the wire saturates it).
        let deadline_at = spec.deadline.and_then(|d| now.checked_add(d));
        let base = [Header::service(spec.service), Header::method(spec.method)];
        // Without metadata (the common case) the two fields go to the encoder as they are;
        // with it, they are gathered with the metadata on the stack first.
        let id = match spec.metadata.filter(|m| !m.is_empty()) {
            None => self.encode_request(spec, &base)?,
            Some(metadata) => crate::dispatch::with_fields(&base, metadata, |headers| {
                self.encode_request(spec, headers)
            })?,
        };
        if early {
            self.spend_early(spec);
        }
        if let Some(d) = deadline_at {
            self.calls.next_deadline = Some(self.calls.next_deadline.map_or(d, |n| n.min(d)));
        }
        self.calls.by_id.insert(
            id,
            Pending {
                slot: Some(slot),
                deadline: deadline_at,
            },
        );
        Ok(id)
    }

    /// Encodes the Request of `spec` with `headers`; returns its id. Inlined into each call
    /// site so that the common one (just `:service` and `:method`) is compiled for its two
    /// known fields, as before request metadata existed.
    #[inline(always)]
    fn encode_request(
        &mut self,
        spec: &CallSpec<'_>,
        headers: &[Header<'_>],
    ) -> Result<u32, Status> {
        self.check_outgoing(headers, spec.payload)?;
        let id = self.calls.allocate_id();
        let flags = if spec.idempotent {
            netron_codec::Flags::IDEMPOTENT
        } else {
            netron_codec::Flags::empty()
        };
        let r = self.queue(|c, b| {
            let fb = b
                .request(id, spec.deadline)?
                .flags(flags)
                .headers(&mut c.enc, headers)?;
            fb.payload_compressed(spec.payload, &mut c.compressor)
                .finish()
        });
        match r {
            Ok(_) => {}
            Err(e) if e.status == StatusCode::Internal => {
                // Cannot happen after `check_outgoing`; if it does, the header encoder moved
                // ahead of the peer and the connection cannot continue.
                self.close_with(e.clone());
                return Err(Status::new(StatusCode::Internal, e.message));
            }
            Err(e) => return Err(Status::new(e.status, e.message)),
        }
        Ok(id)
    }

    /// Ends the call whose outcome goes to `slot` with `code`, if it is still pending.
    /// Returns whether it was.
    pub(crate) fn cancel_slot(&mut self, slot: &C, code: StatusCode) -> bool {
        let id = self
            .calls
            .by_id
            .iter()
            .find(|(_, p)| p.slot.as_ref().is_some_and(|s| s.is(slot)))
            .map(|(id, _)| *id);
        let Some(id) = id else { return false };
        let why = if code == StatusCode::DeadlineExceeded {
            "the deadline passed before a reply arrived"
        } else {
            "cancelled by the caller"
        };
        self.cancel_call(id, code, why);
        true
    }

    /// Ends call `id` locally with `code` and tells the peer (Cancel). The id stays reserved
    /// until the peer's final frame for it.
    pub(crate) fn cancel_call(&mut self, id: u32, code: StatusCode, why: &'static str) {
        if self.calls.abandon(id, Status::new(code, why)) && self.is_open() {
            let _ = self.queue(|_, b| b.empty_frame(FrameKind::Cancel, id, 0));
        }
    }

    pub(super) fn on_reply(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let id = frame.id();
        let Some(p) = self.calls.by_id.remove(&id) else {
            // No call of ours has this id: the peer broke the id rules. Ignored, but it costs
            // the peer budget like any frame that does no work.
            env.stats.count_error("unknown_id");
            return self.charge_idle_frame(env);
        };
        let Some(slot) = p.slot else {
            // The final frame of a call we cancelled or expired: the id is free again.
            self.calls.abandoned -= 1;
            env.stats.count_error("late_reply");
            return Ok(());
        };
        if frame.kind() == FrameKind::Response {
            if frame.flags().contains(netron_codec::Flags::COMPRESSED) {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                if let Err(e) = self.check_decompress(frame.payload(), &scratch) {
                    self.release_scratch(scratch);
                    slot.complete(Err(Status::new(e.status, e.message.clone())));
                    return Err(e);
                }
                let r = self
                    .decompressor
                    .decompress_into(frame.payload(), &mut scratch);
                match r {
                    Ok(()) => slot.complete_with(Ok(&scratch), &self.headers),
                    Err(e) => slot.complete(Err(Status::new(StatusCode::DataLoss, e.to_string()))),
                }
                self.release_scratch(scratch);
            } else {
                slot.complete_with(Ok(frame.payload()), &self.headers);
            }
            env.stats.calls_ok += 1;
        } else {
            let body = netron_codec::control::read_error(&frame);
            let status = match body {
                Ok(b) => Status::new(
                    netron_codec::control::status(b.status()),
                    super::truncate_message(b.message().unwrap_or("")).to_owned(),
                ),
                Err(e) => Status::new(StatusCode::Internal, format!("malformed error reply: {e}")),
            };
            slot.complete(Err(status));
            env.stats.calls_failed += 1;
        }
        Ok(())
    }
}
