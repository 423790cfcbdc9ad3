//! Received stream messages held compressed while the application has not read enough.
//!
//! Flow control counts a message as sent, compressed (docs/protocol.md §23.1), so a window
//! bounds wire bytes, not what they decompress to: a peer sending highly compressible messages
//! to a reader that does not read could make this side hold a compression ratio (hundreds)
//! times the window in decompressed messages. So the connection bounds the decompression
//! *surplus* (decompressed bytes delivered and not yet consumed, minus their size on the wire)
//! of all its streams together by one connection window. A compressed message that arrives
//! while that surplus is used up is kept as it came (its wire bytes, which the windows already
//! bound) and decompressed when the readers have consumed enough; the messages after it on the
//! same stream, and its end, wait behind it so the order holds. Uncompressed messages of other
//! streams are not held (they add no surplus), and neither is the next message of a stream
//! whose reader has consumed everything it was given (a waiting reader is never stalled by
//! another stream's silent one; each such stream adds at most one message to the bound).

use std::collections::VecDeque;

use super::stream::fail_app;
use super::{Caller, ConnError, Connection};
use crate::Status;

/// What one stream holds back from its application.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Payloads as they arrived (wire bytes), with whether each is compressed.
    msgs: VecDeque<(Vec<u8>, bool)>,
    /// The end of the peer's half, delivered after the messages: OK or the failure, and
    /// whether the failure ends both halves (an opener's StreamEnd with an error).
    end: Option<(Result<(), Status>, bool)>,
}

impl<C: Caller> Connection<C> {
    /// Whether a message on stream `id` must be held: something is held already (order), or
    /// it is compressed and the connection's decompression surplus is used up.
    pub(super) fn must_hold(&self, id: u32, compressed: bool) -> bool {
        let Some(s) = self.streams.as_ref() else {
            return false;
        };
        let Some(e) = s.map.get(&id) else {
            return false;
        };
        e.app.is_some()
            && (e.held.is_some()
                || (compressed && s.surplus >= s.conn_window as u64 && !e.drained()))
    }

    /// Keeps a copy of `payload` (as it arrived) for stream `id`, delivered later.
    pub(super) fn hold(&mut self, id: u32, payload: &[u8], compressed: bool) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let Some(e) = s.map.get_mut(&id) else {
            return;
        };
        if e.held.is_none() {
            s.held.push(id);
        }
        let h = e.held.get_or_insert_with(Box::default);
        h.msgs.push_back((payload.to_vec(), compressed));
    }

    /// The peer's half of stream `id` ended with `end`: tells the application now, or after
    /// the messages it still holds. `both`: a failure that ends both halves.
    pub(super) fn close_recv(&mut self, id: u32, end: Result<(), Status>, both: bool) {
        let Some(e) = self.streams.as_mut().and_then(|s| s.map.get_mut(&id)) else {
            return;
        };
        if let Some(h) = e.held.as_mut() {
            // Sending ends now; the receiver learns of the end after the held messages.
            if let (Err(st), true, Some(app)) = (&end, both, e.app.as_mut()) {
                app.send_closed(st.clone());
            }
            h.end = Some((end, false));
            return;
        }
        if let Some(app) = e.app.as_mut() {
            match end {
                Ok(()) => app.recv_closed(Ok(())),
                Err(st) if both => fail_app(&mut **app, &st),
                Err(st) => app.recv_closed(Err(st)),
            }
        }
    }

    /// Bytes held (as they arrived) for stream `id`: given back to the connection window when
    /// the stream goes without delivering them.
    pub(super) fn held_bytes(h: &Held) -> u64 {
        h.msgs.iter().map(|(m, _)| m.len() as u64).sum()
    }

    /// Delivers what the streams hold, in order, while the decompression surplus allows (after
    /// an application consumed something). A held message that does not decompress closes the
    /// connection, as it would have on arrival.
    pub(super) fn deliver_held(&mut self) {
        let mut i = 0;
        loop {
            let Some(s) = self.streams.as_mut() else {
                return;
            };
            let Some(&id) = s.held.get(i) else {
                return;
            };
            let room = s.surplus < s.conn_window as u64;
            let Some(e) = s.map.get_mut(&id) else {
                s.held.swap_remove(i);
                continue;
            };
            // A reader that has read everything it was given always gets its next message,
            // whatever the other streams hold: one stream's silent reader never stalls another.
            let room = room || e.drained();
            let Some(h) = e.held.as_mut() else {
                s.held.swap_remove(i);
                continue;
            };
            if e.app.is_none() {
                // Nobody reads any more: what was held is consumed at once.
                s.conn_pending = s
                    .conn_pending
                    .saturating_add(Self::held_bytes(h).min(u32::MAX as u64) as u32);
                e.held = None;
                s.held.swap_remove(i);
                self.end_if_finished(id);
                continue;
            }
            match h.msgs.front() {
                Some((_, true)) if !room => {
                    i += 1;
                    continue;
                }
                Some(_) => {
                    let (msg, compressed) = h.msgs.pop_front().unwrap_or_default();
                    if let Err(err) = self.deliver_one(id, &msg, compressed) {
                        self.close_with(err);
                        return;
                    }
                }
                None => {
                    let end = h.end.take();
                    e.held = None;
                    s.held.swap_remove(i);
                    if let Some((end, both)) = end {
                        self.close_recv(id, end, both);
                    }
                    self.end_if_finished(id);
                }
            }
        }
    }

    /// Decompresses (if `compressed`) and delivers one message of stream `id`.
    fn deliver_one(&mut self, id: u32, wire: &[u8], compressed: bool) -> Result<(), ConnError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.decompress_if(wire, compressed, &mut scratch);
        let r = r.map(|payload| {
            self.deliver_payload(
                id,
                netron_codec::stream::message_credit(wire.len()),
                payload,
            )
        });
        self.release_scratch(scratch);
        r
    }
}
