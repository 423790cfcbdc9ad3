//! Input from record transports (docs/protocol.md §26.1–§26.3): each record holds the
//! handshake's bytes, one batch of whole frames, or one fragment of a frame larger than any
//! record the transport carries.
//!
//! The rules are those of `netron_codec::record::RecordReader` (the tests check both agree
//! record by record); the reassembly buffer here is the connection's own receive buffer, so
//! a fragmented frame is counted against the core's buffer budget and its stall timer runs
//! exactly like a partial frame on a byte stream.

use netron_codec::record::RecordError;
use netron_codec::{DecodeError, Frame, HEADER_LEN};

use super::{Caller, ConnError, Connection, Env, KEEP_BUFFER, Role};

impl From<RecordError> for ConnError {
    fn from(e: RecordError) -> Self {
        ConnError {
            counter: e.counter(),
            status: e.status(),
            message: e.to_string(),
        }
    }
}

// Driven by the record links of `transport/` (wired in by the transport layer's change).
#[cfg_attr(not(test), allow(dead_code))]
impl<C: Caller> Connection<C> {
    /// Feeds one record of a record transport whose records carry at most `record_limit`
    /// bytes. Same contract as [`Connection::handle_input`]: on `Err` the connection is
    /// closing (an Error frame was queued and calls in flight failed).
    ///
    /// Until the handshake completes, the records' bytes are the handshake's (§26.1: the
    /// preface, then Hello, one per record). Afterwards each record is one batch checked as
    /// in §10.2, or a fragment (§26.3).
    pub(crate) fn handle_record(
        &mut self,
        record: &[u8],
        record_limit: usize,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        if !self.is_open() {
            if self.role == Role::Server
                && self.rx.is_empty()
                && matches!(self.state, super::State::ServerHandshake(_))
                && record.len() != netron_codec::handshake::PREFACE.len()
            {
                // §26.1: the client's first record is exactly the 8-byte preface; anything
                // else is not Netron (a byte stream would wait for the rest instead).
                let mut got = [0u8; 6];
                let n = record.len().min(got.len());
                got[..n].copy_from_slice(&record[..n]);
                let e = ConnError::from(netron_codec::HandshakeError::BadPreface(got));
                env.stats.bytes_in += record.len() as u64;
                self.fail(e.clone(), env);
                self.recharge();
                return Err(e);
            }
            self.handle_input(record, env)?;
            // Where the awaited handshake frame starts in `rx` (the server keeps the
            // preface there until the Hello is whole).
            let awaited = match self.state {
                super::State::ServerHandshake(_) => Some(netron_codec::handshake::PREFACE.len()),
                super::State::ClientHandshake(_) => Some(0),
                _ => None,
            };
            if let Some(part) = awaited
                .and_then(|start| self.rx.get(start..))
                .filter(|p| !p.is_empty())
            {
                // The record ended inside the Hello (or Welcome): legal only as the first
                // fragments of a frame longer than a record (§26.1, §26.3 rule 2).
                let length = part
                    .get(..4)
                    .map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
                if part.len() < HEADER_LEN || length <= record_limit {
                    let e = ConnError::from(DecodeError::Incomplete {
                        needed: length.max(HEADER_LEN).saturating_sub(part.len()).max(1),
                    });
                    self.rx.clear();
                    self.fail(e.clone(), env);
                    self.recharge();
                    return Err(e);
                }
            }
            if self.is_open() && !self.rx.is_empty() {
                // The handshake's record went on with part of a frame: records carry whole
                // frames, so this one ends inside a frame (§10.2 check 3).
                let e = ConnError::from(DecodeError::Incomplete {
                    needed: HEADER_LEN.saturating_sub(self.rx.len()).max(1),
                });
                self.rx.clear();
                self.fail(e.clone(), env);
                self.recharge();
                return Err(e);
            }
            return Ok(());
        }
        self.last_rx = env.now;
        self.ping_outstanding = None;
        env.stats.bytes_in += record.len() as u64;
        if self.peer_eof {
            return Ok(());
        }
        let r = if self.rx.is_empty() && record.is_empty() {
            // An empty record holds no frame (§2.2) yet costs the receiver a read, like an
            // empty frame: it is charged to the peer's idle-frame budget, so a flood of them
            // is cut off as a ping flood is.
            self.charge_idle_frame(env)
        } else if self.rx.is_empty() {
            self.first_record(record, record_limit, env)
        } else {
            self.continuation(record, env)
        };
        if let Err(e) = &r {
            self.rx.clear();
            self.fail(e.clone(), env);
        }
        self.recharge();
        r
    }

    /// A record that starts with a frame: a batch, or the first fragment of a frame longer
    /// than `record_limit`.
    fn first_record(
        &mut self,
        record: &[u8],
        record_limit: usize,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        // Only a record whose first frame declares more bytes than any record holds can be a
        // first fragment; every other record is a batch, parsed once by `process_frames`.
        let declared = record
            .get(..4)
            .map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
        if record.len() < HEADER_LEN || declared <= record_limit || declared <= record.len() {
            return self.process_frames(record, true, env).map(drop);
        }
        match Frame::parse(record, &self.limits()) {
            Err(DecodeError::Incomplete { needed }) if record.len() + needed > record_limit => {
                // The first fragment: its header is valid (length <= max_frame_size), so
                // reserving the whole frame is bounded; the stall timer runs from now.
                self.rx_started = env.now;
                let mut rx = std::mem::take(&mut self.rx);
                let r = self.reserve(&mut rx, record);
                if r.is_ok() {
                    rx.extend_from_slice(record);
                }
                self.rx = rx;
                r
            }
            _ => self.process_frames(record, true, env).map(drop),
        }
    }

    /// A record continuing a fragmented frame (§26.3 rule 1 and 4).
    fn continuation(&mut self, record: &[u8], env: &mut Env<'_>) -> Result<(), ConnError> {
        // The first fragment's header was validated; its length is the frame's.
        let want = u32::from_le_bytes([self.rx[0], self.rx[1], self.rx[2], self.rx[3]]) as usize;
        let missing = want - self.rx.len();
        if record.is_empty() {
            return Err(RecordError::EmptyFragment.into());
        }
        if record.len() > missing {
            return Err(RecordError::FragmentOverrun {
                missing,
                got: record.len(),
            }
            .into());
        }
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(record);
        if rx.len() < want {
            self.rx = rx;
            return Ok(());
        }
        // Reassembled: a batch of one frame.
        let r = self.process_frames(&rx, true, env).map(drop);
        rx.clear();
        if rx.capacity() > KEEP_BUFFER {
            rx = Vec::new();
        }
        self.rx = rx;
        r
    }
}

/// Whole frames are grouped into records of at most this many bytes (or `record_limit`, if
/// smaller); a larger frame still goes in one record if it fits. A busy-polling reader takes
/// about this much per loop turn ([`crate::transport::record`]) and answers it before reading
/// on, so a large batch of small calls is served in a pipeline across the two cores instead
/// of all at once: measured with 256 calls of 64 bytes in flight over `shm://`
/// (docs/benchmarks.md "shm://"). The cost is a 16-byte record header per 8 KiB.
pub(crate) const GROUP_BYTES: usize = 8 << 10;

/// Cuts one outgoing batch into records of at most `record_limit` bytes, the sender's side
/// of §26.1–§26.3. `first` is `Some(role)` for a side's first batch, which holds its
/// handshake: a client's starts with the 8-byte preface, which goes alone in the first record;
/// the handshake frame (Hello, Welcome or Reject) goes alone in the next. Whole frames are grouped
/// into records of up to [`GROUP_BYTES`]; a frame longer than `record_limit` goes alone, in fragments
/// (`netron_codec::record::fragment_sizes`). `emit` gets each record's bytes in order, as
/// slices of `batch` (no copy here: the transport copies them into its ring).
///
/// `batch` is this side's own encoder output (whole, valid frames), so frame lengths are read
/// without checks beyond bounds.
///
/// # Panics
/// If `record_limit` is below the 16-byte frame header (a transport that small cannot carry
/// Netron; links check their limit when they are created).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn for_each_record(
    batch: &[u8],
    first: Option<Role>,
    record_limit: usize,
    mut emit: impl FnMut(&[u8]),
) {
    assert!(
        record_limit >= HEADER_LEN,
        "a record transport must carry at least one frame header"
    );
    let mut rest = batch;
    if first == Some(Role::Client) {
        let n = rest.len().min(netron_codec::handshake::PREFACE.len());
        emit(&rest[..n]);
        rest = &rest[n..];
    }
    let mut hello = first.is_some();
    while !rest.is_empty() {
        // Group whole frames while they fit (the Hello travels alone).
        let mut end = 0;
        while end < rest.len() {
            let len = frame_len(&rest[end..]);
            if end > 0 && (end + len > record_limit.min(GROUP_BYTES) || hello) {
                break;
            }
            end += len;
            if hello {
                break;
            }
        }
        hello = false;
        let end = end.min(rest.len());
        if end <= record_limit {
            emit(&rest[..end]);
        } else {
            // One frame, longer than any record: fragments.
            let mut off = 0;
            for n in netron_codec::record::fragment_sizes(end, fragment_limit(record_limit))
                .expect("limit checked above")
            {
                emit(&rest[off..off + n]);
                off += n;
            }
        }
        rest = &rest[end..];
    }
}

/// The size of the fragments of a frame longer than any record: a quarter of the record
/// limit (at least a frame header), so that on a ring the sender writes the next fragment
/// while the receiver still copies the previous one out, instead of each fragment filling
/// the whole ring and the two sides taking turns (§26.3 lets fragments be any size).
fn fragment_limit(record_limit: usize) -> usize {
    (record_limit / 4).max(HEADER_LEN).min(record_limit)
}

#[cfg_attr(not(test), allow(dead_code))]
/// The length field of the frame at the start of `b` (at least 1, so a malformed own batch
/// cannot loop forever; it is then cut at the batch's end).
fn frame_len(b: &[u8]) -> usize {
    match b.get(..4) {
        Some(h) => (u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize).max(1),
        None => b.len().max(1),
    }
}
