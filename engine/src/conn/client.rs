//! Client role: calls in flight on one connection, their deadlines, and their completion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netron_codec::hpack::Header;
use netron_codec::{Frame, FrameKind, StatusCode};
use rustc_hash::FxHashMap;

use super::{ConnError, Connection, Env};
use crate::Status;
use crate::slot::CallSlot;

#[derive(Debug)]
struct Pending {
    slot: Arc<CallSlot>,
    deadline: Option<Instant>,
}

/// The calls a client connection is waiting on, by id.
#[derive(Debug, Default)]
pub(crate) struct PendingCalls {
    by_id: FxHashMap<u32, Pending>,
    next_id: u32,
    /// Earliest deadline among pending calls (a lower bound; recomputed on expiry).
    pub(crate) next_deadline: Option<Instant>,
}

impl PendingCalls {
    fn allocate_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.by_id.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Fails every pending call with `status`.
    pub(crate) fn fail_all(&mut self, status: Status) {
        for (_, p) in self.by_id.drain() {
            p.slot.complete(Err(status.clone()));
        }
        self.next_deadline = None;
    }

    /// Fails pending calls with ids above `last_id` (after a GoAway).
    pub(crate) fn fail_above(&mut self, last_id: u32, status: Status) {
        self.by_id.retain(|&id, p| {
            if id > last_id {
                p.slot.complete(Err(status.clone()));
                false
            } else {
                true
            }
        });
    }

    /// Completes and removes calls whose deadline passed; returns their ids (to cancel).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<u32> {
        match self.next_deadline {
            Some(d) if d <= now => {}
            _ => return Vec::new(),
        }
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        self.by_id.retain(|&id, p| match p.deadline {
            Some(d) if d <= now => {
                p.slot.complete(Err(Status::deadline_exceeded(
                    "the deadline passed before a reply arrived",
                )));
                expired.push(id);
                false
            }
            Some(d) => {
                next = Some(next.map_or(d, |n| n.min(d)));
                true
            }
            None => true,
        });
        self.next_deadline = next;
        expired
    }

    /// Removes a call without completing it (the caller gave up; a Cancel goes out).
    pub(crate) fn forget(&mut self, id: u32) -> Option<Arc<CallSlot>> {
        self.by_id.remove(&id).map(|p| p.slot)
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
}

impl Connection {
    /// Encodes a Request for `spec` and registers `slot` to receive its outcome. On error the
    /// slot is not registered and the caller completes it.
    pub(crate) fn start_call(
        &mut self,
        spec: &CallSpec<'_>,
        slot: Arc<CallSlot>,
        now: Instant,
    ) -> Result<u32, Status> {
        if !self.is_open() {
            return Err(Status::unavailable("connection is not open"));
        }
        if self.peer_going_away {
            return Err(Status::unavailable("the server is going away; reconnect"));
        }
        if let Some(s) = &self.settings {
            if self.calls.len() >= s.max_concurrent_calls as usize {
                return Err(Status::new(
                    StatusCode::ResourceExhausted,
                    "too many calls in flight on this connection",
                ));
            }
        }
        let id = self.calls.allocate_id();
        let headers = [Header::service(spec.service), Header::method(spec.method)];
        let flags = if spec.idempotent {
            netron_codec::Flags::IDEMPOTENT
        } else {
            netron_codec::Flags::empty()
        };
        let r = self.queue(|c, b| {
            let fb = b
                .request(id, spec.deadline)?
                .flags(flags)
                .headers(&mut c.enc, &headers)?;
            fb.payload_compressed(spec.payload, &mut c.compressor)
                .finish()
        });
        match r {
            Ok(_) => {}
            Err(e) if e.status == StatusCode::Internal => {
                // The header encoder moved ahead of the peer: the connection cannot continue.
                self.state = super::State::Closing;
                return Err(Status::new(StatusCode::Internal, e.message));
            }
            Err(e) => return Err(Status::new(e.status, e.message)),
        }
        let deadline = spec.deadline.map(|d| now + d);
        if let Some(d) = deadline {
            self.calls.next_deadline = Some(self.calls.next_deadline.map_or(d, |n| n.min(d)));
        }
        self.calls.by_id.insert(id, Pending { slot, deadline });
        Ok(id)
    }

    /// Cancels the call whose outcome goes to `slot`, if it is still pending.
    pub(crate) fn cancel_slot(&mut self, slot: &Arc<CallSlot>) {
        let id = self
            .calls
            .by_id
            .iter()
            .find(|(_, p)| Arc::ptr_eq(&p.slot, slot))
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.cancel_call(id);
        }
    }

    /// Cancels call `id`: completes it with `Cancelled` and tells the server.
    pub(crate) fn cancel_call(&mut self, id: u32) {
        if let Some(slot) = self.calls.forget(id) {
            slot.complete(Err(Status::new(
                StatusCode::Cancelled,
                "cancelled by the caller",
            )));
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
            // A reply to a call we cancelled or expired: nothing to do.
            env.stats.count_error("late_reply");
            return Ok(());
        };
        if frame.kind() == FrameKind::Response {
            if !frame.header_block().is_empty() {
                self.dec
                    .decode_into(frame.header_block(), &mut self.headers)
                    .map_err(netron_codec::DecodeError::from)?;
            }
            if frame.flags().contains(netron_codec::Flags::COMPRESSED) {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                let r = self
                    .decompressor
                    .decompress_into(frame.payload(), &mut scratch);
                match r {
                    Ok(()) => p.slot.complete(Ok(&scratch)),
                    Err(e) => p
                        .slot
                        .complete(Err(Status::new(StatusCode::DataLoss, e.to_string()))),
                }
                self.scratch = scratch;
            } else {
                p.slot.complete(Ok(frame.payload()));
            }
            env.stats.calls_ok += 1;
        } else {
            let body = netron_codec::control::read_error(&frame);
            let status = match body {
                Ok(b) => Status::new(
                    netron_codec::control::status(b.status()),
                    b.message().unwrap_or("").to_owned(),
                ),
                Err(e) => Status::new(StatusCode::Internal, format!("malformed error reply: {e}")),
            };
            p.slot.complete(Err(status));
            env.stats.calls_failed += 1;
        }
        Ok(())
    }
}
