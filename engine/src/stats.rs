//! Per-core statistics, readable through the API.

use std::collections::BTreeMap;

/// Counters of one core. Plain integers: each core owns its own, and publishes a copy on
/// request (see [`crate::Engine::stats`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused (limit reached).
    pub refused: u64,
    /// Accepts re-armed after a backoff (persistent accept errors such as running out of
    /// descriptors; the episode itself counts once as the error `accept_failed`).
    pub accept_retries: u64,
    /// Connections closed.
    pub closed: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Requests received (server role).
    pub calls_in: u64,
    /// Calls that completed with a reply.
    pub calls_ok: u64,
    /// Calls that completed with an error status.
    pub calls_failed: u64,
    /// Client calls that hit their deadline.
    pub deadline_exceeded: u64,
    /// Cancel frames received.
    pub cancels_in: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Write operations submitted (one per batch).
    pub writes: u64,
    /// Of those, writes sent with `SendZc` (zero-copy).
    pub zero_copy_writes: u64,
    /// `io_uring_enter` calls.
    pub submits: u64,
    /// Non-blocking `recv(2)` calls on hot connections (busy-poll cores; see
    /// [`crate::DirectRecv`]). On a record transport (`inproc://`): looks at a hot link's
    /// ring, with no system call.
    pub direct_recvs: u64,
    /// Batches written with a direct non-blocking `send(2)` on a hot connection (what the
    /// socket did not take went through the ring). On a record transport (`inproc://`) every
    /// batch counts, hot or not: it is copied straight into the peer's ring.
    pub direct_sends: u64,
    /// Times a connection became hot (its ring receive was cancelled for direct reads).
    pub hot_promotions: u64,
    /// Loop turns.
    pub turns: u64,
    /// Bytes held right now in partial-frame and decompression buffers by the core's
    /// connections (a gauge, against `ProtocolConfig::max_buffer_bytes`).
    pub buffer_bytes: u64,
    /// Errors by kind (stable labels, e.g. `unknown_kind`, `frame_too_large`, `dead_peer`).
    pub errors: BTreeMap<&'static str, u64>,
}

impl CoreStats {
    /// Counts one error of kind `label`.
    pub fn count_error(&mut self, label: &'static str) {
        *self.errors.entry(label).or_insert(0) += 1;
    }

    /// Frames per write so far.
    pub fn frames_per_write(&self) -> f64 {
        if self.writes == 0 {
            0.0
        } else {
            self.frames_out as f64 / self.writes as f64
        }
    }

    /// Adds `other` into `self` (for engine-wide totals).
    pub fn merge(&mut self, other: &CoreStats) {
        self.accepted += other.accepted;
        self.buffer_bytes += other.buffer_bytes;
        self.refused += other.refused;
        self.accept_retries += other.accept_retries;
        self.closed += other.closed;
        self.handshakes += other.handshakes;
        self.calls_in += other.calls_in;
        self.calls_ok += other.calls_ok;
        self.calls_failed += other.calls_failed;
        self.deadline_exceeded += other.deadline_exceeded;
        self.cancels_in += other.cancels_in;
        self.frames_in += other.frames_in;
        self.frames_out += other.frames_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.writes += other.writes;
        self.zero_copy_writes += other.zero_copy_writes;
        self.submits += other.submits;
        self.direct_recvs += other.direct_recvs;
        self.hot_promotions += other.hot_promotions;
        self.direct_sends += other.direct_sends;
        self.turns += other.turns;
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
    }

    /// Total errors of kind `label`.
    pub fn errors_of(&self, label: &str) -> u64 {
        self.errors.get(label).copied().unwrap_or(0)
    }
}
