//! What a peer can make a connection spend: the budget of frames that do no work (a token
//! bucket per connection) and the core-wide budget of reassembly and decompression buffers,
//! and refusing outgoing messages the peer's limits or this side's backlog would refuse.

use super::*;

/// Bytes of receive-reassembly and decompression buffers that all connections of one core
/// hold, against `ProtocolConfig::max_buffer_bytes`. A connection asks before a buffer grows; a
/// peer whose frame would take the core past its budget gets a connection error
/// (ResourceExhausted, counter `buffer_budget`), so slow or malicious senders of large frames
/// cannot make a core hold more than the budget, whatever their number.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    pub(super) used: std::cell::Cell<usize>,
    pub(super) limit: usize,
}

impl BufferBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            used: std::cell::Cell::new(0),
            limit,
        }
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }

    /// The budget, bytes (`ProtocolConfig::max_buffer_bytes`).
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A holder outside a connection's own buffers (a QUIC link's per-stream reassembly)
    /// now holds `new` bytes where it was charged `old`.
    pub(crate) fn recharge(&self, old: usize, new: usize) {
        self.used
            .set(self.used.get().saturating_sub(old).saturating_add(new));
    }
}

/// A token bucket for frames that do no work (cancels, pings, ignored frames): the defence
/// against floods such as HTTP/2 rapid reset (CVE-2023-44487). Tokens are counted in quarters:
/// such a frame costs 4; time refills `per_sec` frames a second up to `burst`; and every
/// Request earns 2 more, kept apart and without a cap, so over a connection's life a caller
/// may send one such frame for every two calls, in any order (cancel half of a pipelined
/// batch at once), beyond the burst. A flood that is not paid for by real calls runs dry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    quarters: u64,
    cap: u64,
    per_sec: u64,
    last: Instant,
    /// Quarters earned by Requests (spent after the time-based ones).
    earned: u64,
}

impl Budget {
    pub(super) fn new(b: crate::config::FrameBudget, now: Instant) -> Self {
        let cap = u64::from(b.burst).saturating_mul(4);
        Self {
            quarters: cap,
            cap,
            per_sec: u64::from(b.per_sec).saturating_mul(4),
            last: now,
            earned: 0,
        }
    }

    /// Takes one frame's cost; `false` when the budget is spent.
    pub(super) fn charge(&mut self, now: Instant) -> bool {
        if self.quarters < 4 {
            let elapsed = now.saturating_duration_since(self.last);
            let add = (elapsed.as_micros().min(u128::from(u64::MAX)) as u64)
                .saturating_mul(self.per_sec)
                / 1_000_000;
            if add > 0 {
                self.quarters = self.quarters.saturating_add(add).min(self.cap);
                self.last = now;
            }
        }
        if self.quarters < 4 {
            if self.earned < 4 {
                return false;
            }
            self.earned -= 4;
            return true;
        }
        if self.quarters == self.cap {
            self.last = now;
        }
        self.quarters -= 4;
        true
    }

    #[inline]
    pub(super) fn refund_half(&mut self) {
        self.earned = self.earned.saturating_add(2);
    }
}

impl<C: Caller> Connection<C> {
    /// Charges one frame that does no work against the peer's budget; a peer that spent it
    /// gets a connection error (ResourceExhausted) and is closed (docs/protocol.md §17).
    pub(crate) fn charge_idle_frame(&mut self, env: &mut Env<'_>) -> Result<(), ConnError> {
        if self.budget.charge(env.now) {
            return Ok(());
        }
        Err(ConnError {
            counter: "idle_frame_budget",
            status: StatusCode::ResourceExhausted,
            message: format!(
                "too many frames that do no work (cancels of answered calls, pings, ignored \
                 frames): more than {} in a burst or {} a second \
                 (ProtocolConfig::idle_frame_budget)",
                self.cfg.idle_frames.burst, self.cfg.idle_frames.per_sec
            ),
        })
    }

    /// Makes room in `rx` for `data`, growing it to the whole frame at once when its header
    /// says how long it is, within the core's buffer budget.
    pub(super) fn reserve(&mut self, rx: &mut Vec<u8>, data: &[u8]) -> Result<(), ConnError> {
        let needed = rx.len() + data.len();
        if needed <= rx.capacity() {
            return Ok(());
        }
        // The frame's declared length (validated against max_frame_size when it is parsed);
        // reserving it at once avoids regrowing a large frame's buffer several times.
        let mut head = [0u8; 4];
        for (i, b) in rx.iter().chain(data).take(4).enumerate() {
            head[i] = *b;
        }
        let max = self
            .settings
            .as_ref()
            .map_or(netron_codec::handshake::HANDSHAKE_MAX_FRAME, |s| {
                s.limits.max_frame_size
            }) as usize;
        // Before the handshake completed the first bytes are the preface, not a length.
        let declared = if self.is_open() {
            (u32::from_le_bytes(head) as usize).min(max)
        } else {
            needed
        };
        let target = needed.max(declared.min(needed + max));
        if target - rx.capacity() > self.budget_room() {
            return Err(self.over_budget(format_args!("a {target}-byte frame buffer")));
        }
        rx.reserve_exact(target - rx.len());
        Ok(())
    }

    /// Bytes the core's buffer budget (`ProtocolConfig::max_buffer_bytes`) has left.
    pub(super) fn budget_room(&self) -> usize {
        let b = &self.cfg.buffers;
        b.limit.saturating_sub(b.used.get())
    }

    /// The connection error for a buffer (`what`) the core's budget cannot take now.
    pub(super) fn over_budget(&self, what: std::fmt::Arguments<'_>) -> ConnError {
        ConnError {
            counter: "buffer_budget",
            status: StatusCode::ResourceExhausted,
            message: format!(
                "the core's buffers for partial and decompressed frames are full \
                 (ProtocolConfig::max_buffer_bytes = {} bytes); {what} does not fit now",
                self.cfg.buffers.limit
            ),
        }
    }

    /// Re-counts this connection's buffer capacity against the core's budget.
    pub(crate) fn recharge(&mut self) {
        let now = self.rx.capacity() + self.scratch.capacity() + self.dec.held_bytes();
        let b = &self.cfg.buffers;
        b.used.set(
            b.used
                .get()
                .saturating_sub(self.charged)
                .saturating_add(now),
        );
        self.charged = now;
    }

    /// Checks that decompressing `payload` (its declared size) fits the core's buffer budget.
    pub(crate) fn check_decompress(
        &self,
        payload: &[u8],
        scratch: &Vec<u8>,
    ) -> Result<(), ConnError> {
        let declared = self
            .decompressor
            .declared_size(payload)
            .map_err(netron_codec::DecodeError::from)?;
        let grow = declared.saturating_sub(scratch.capacity());
        if grow > 0 && grow > self.budget_room() {
            return Err(self.over_budget(format_args!(
                "a payload declaring {declared} decompressed bytes"
            )));
        }
        Ok(())
    }

    /// Refuses an outgoing message that the peer's negotiated limits (or this side's output
    /// backlog) would refuse, before anything of it is encoded: header compression cannot
    /// roll back, so a frame must never fail after its header block was written.
    pub(crate) fn check_outgoing(
        &self,
        headers: &[netron_codec::hpack::Header<'_>],
        payload: &[u8],
    ) -> Result<(), crate::Status> {
        if self.settings.is_none() && !self.is_early() {
            return Err(crate::Status::unavailable("connection is not open yet"));
        }
        // In 0-RTT: the handshake's limits, which every peer accepts (§27.3).
        let limits = self.limits();
        let block = netron_codec::hpack::HeaderEncoder::max_encoded_len(headers);
        if block > u16::MAX as usize {
            return Err(crate::Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "the header block may take up to {block} bytes, above the 65535 a frame \
                     can carry (shorten the service, method or metadata)"
                ),
            ));
        }
        // The peer refuses a block that decodes to more than the negotiated
        // max_header_list_size (name + value + 32 per field, RFC 7541 §4.1) as a connection
        // error: refuse this one message here instead.
        let list: usize = headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 32)
            .sum();
        let max_list = limits.max_header_list_size as usize;
        if list > max_list {
            return Err(crate::Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "the header list (service, method and metadata) decodes to {list} bytes \
                     (name + value + 32 per field), above max_header_list_size ({max_list} \
                     bytes, this side's setting, taken as the peer's: a receiver closes the \
                     connection beyond its own, 16 KiB by default, protocol.md §9.7); send \
                     less metadata"
                ),
            ));
        }
        // The payload is sent raw when compression does not shrink it: bound by the raw size.
        let frame = netron_codec::HEADER_LEN + block + payload.len();
        let max = limits.max_frame_size as usize;
        if frame > max {
            return Err(crate::Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "message of {} bytes does not fit the negotiated max_frame_size of {max} \
                     bytes once its frame header and header block are added (a frame of up to \
                     {frame} bytes); send it as a stream",
                    payload.len()
                ),
            ));
        }
        let backlog = self.backlog_bytes();
        if backlog > 0 && backlog + frame > self.cfg.max_backlog_bytes {
            return Err(crate::Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "{backlog} bytes are already waiting for the peer to read; a {frame}-byte \
                     frame would exceed ProtocolConfig::max_backlog_bytes ({})",
                    self.cfg.max_backlog_bytes
                ),
            ));
        }
        Ok(())
    }
}
