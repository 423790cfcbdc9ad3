//! The sending side: header lists in, header blocks plus encoder-stream instructions out,
//! decoder-stream instructions from the peer in.

use std::collections::{HashMap, VecDeque};

use super::prefix::{decode_int, encode_int, encode_str};
use super::table::{Table, entry_size};
use super::{MAX_BLOCKED_STREAMS, QpackError, max_entries};
use crate::hpack::static_table;
use crate::hpack::{Header, Indexing};

/// Most unacknowledged blocks with dynamic references the reference encoder keeps track of.
pub const MAX_UNACKED_SECTIONS: usize = 1024;

/// One field line, decided before the block is written (the prefix needs the largest
/// reference first). Literal values and names are named by their field's index in the list
/// being encoded, so the encoder keeps one buffer of lines for every block (no allocation per
/// block once it has grown to the longest list).
#[derive(Debug, Clone, Copy)]
enum Line {
    Static(u64),
    Dynamic(u64),
    LiteralStaticName(u64, usize, bool),
    LiteralDynamicName(u64, usize, bool),
    Literal(usize, bool),
}

/// The unacknowledged blocks of one stream, oldest first: (required insert count, smallest
/// absolute index referenced). The first is kept inline: a call has one block per direction,
/// so tracking it allocates nothing.
#[derive(Debug)]
struct Unacked {
    first: (u64, u64),
    rest: VecDeque<(u64, u64)>,
}

impl Unacked {
    fn iter(&self) -> impl Iterator<Item = &(u64, u64)> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    fn len(&self) -> usize {
        1 + self.rest.len()
    }
}

/// Encodes header blocks for one direction of a QUIC connection (see the [module](super)).
///
/// Policy (the reference encoder; any valid encoding is accepted by decoders): fields the
/// [`Indexing::Auto`] policy of §9.9 would index are inserted into the dynamic table through
/// the encoder stream the first time and referenced afterwards. A block references an entry
/// the decoder has not acknowledged only while fewer than [`MAX_BLOCKED_STREAMS`] streams are
/// blocked; otherwise the field goes literally (and the inserted entry serves later blocks).
/// Entries still referenced by unacknowledged blocks, and entries whose insertion the decoder
/// has not acknowledged yet (RFC 9204 §2.1.1), are never evicted: a field that would need such
/// an eviction is sent literally. (The second rule keeps every Required Insert Count within
/// `MaxEntries` of what the decoder has received, which its decoding relies on.) With [`MAX_UNACKED_SECTIONS`] blocks
/// unacknowledged, blocks use only the static table and literals until acknowledgements
/// arrive, so a peer that never acknowledges cannot make the encoder's memory grow.
#[derive(Debug)]
pub struct QpackEncoder {
    table: Table,
    max_capacity: usize,
    known_received: u64,
    /// Unacknowledged blocks with a non-zero Required Insert Count, per stream, in order.
    outstanding: HashMap<u64, Unacked>,
    /// Decoder-stream bytes of an instruction not yet complete.
    pending: Vec<u8>,
    /// The field lines of the block being encoded (kept for the next block).
    lines: Vec<Line>,
}

impl QpackEncoder {
    /// An encoder for a dynamic table of at most `max_capacity` bytes (the negotiated
    /// `header_table_size`; the table starts at that capacity, as the peer's decoder does).
    pub fn new(max_capacity: u32) -> Self {
        Self {
            table: Table::new(max_capacity as usize),
            max_capacity: max_capacity as usize,
            known_received: 0,
            outstanding: HashMap::new(),
            pending: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Insertions sent so far.
    pub fn insert_count(&self) -> u64 {
        self.table.insert_count()
    }

    /// Insertions the decoder is known to have received.
    pub fn known_received_count(&self) -> u64 {
        self.known_received
    }

    /// Streams whose unacknowledged blocks may be blocked at the decoder.
    pub fn blocked_streams(&self) -> usize {
        self.outstanding
            .values()
            .filter(|q| q.iter().any(|(ric, _)| *ric > self.known_received))
            .count()
    }

    /// Bytes held by the dynamic table (by the size rule).
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Lowers (or restores, up to the negotiated maximum) the table capacity, in bytes:
    /// appends a Set Dynamic Table Capacity instruction. Entries still referenced, and entries
    /// the decoder has not acknowledged yet, are kept, so the capacity may not drop below what
    /// they use.
    ///
    /// # Errors
    ///
    /// [`QpackError::CapacityTooLarge`] above the negotiated maximum or below the size of the
    /// entries that cannot be evicted yet (nothing is appended then).
    pub fn set_capacity(
        &mut self,
        capacity: u32,
        encoder_stream: &mut (impl crate::OutBuf + ?Sized),
    ) -> Result<(), QpackError> {
        let capacity = capacity as usize;
        let pinned = self.evictable_below(u64::MAX);
        let mut keep = 0;
        let mut abs = pinned;
        while let Some((n, v)) = self.table.get(abs) {
            keep += entry_size(n, v);
            abs += 1;
        }
        if capacity > self.max_capacity || capacity < keep {
            return Err(QpackError::CapacityTooLarge {
                requested: capacity as u64,
                max: self.max_capacity,
            });
        }
        self.table.set_capacity(capacity);
        encode_int(encoder_stream, 0x20, 5, capacity as u64);
        Ok(())
    }

    /// Entries with an absolute index below the result may be evicted: not referenced by an
    /// unacknowledged block (nor by the block being encoded, whose smallest reference is
    /// `current`), and known to have reached the decoder. An entry the decoder has not
    /// received must stay even if nothing references it (RFC 9204 §2.1.1): evicting it would
    /// let later blocks carry a Required Insert Count more than `MaxEntries` ahead of the
    /// decoder, which the wrapped encoding of §4.5.1.1 cannot express.
    fn evictable_below(&self, current: u64) -> u64 {
        self.outstanding
            .values()
            .flat_map(|q| q.iter().map(|(_, min)| *min))
            .fold(current.min(self.known_received), u64::min)
    }

    fn is_blocking(&self, stream: u64) -> bool {
        self.outstanding
            .get(&stream)
            .is_some_and(|q| q.iter().any(|(ric, _)| *ric > self.known_received))
    }

    /// Encodes `fields` as the header block of a frame of exchange `stream` (its frame id,
    /// §27.4: one QUIC stream per exchange and direction) into `block`,
    /// appending any insertions to `encoder_stream` (write those bytes to the encoder stream;
    /// the block may reach the peer first, it is then blocked there until they arrive).
    ///
    /// # Errors
    ///
    /// [`QpackError::BlockTooLarge`] if the block exceeds 65 535 bytes. The insertions already
    /// appended to `encoder_stream` must still be sent (the table has moved); `block` is left
    /// as it was and the encoder does not wait for an acknowledgement of it (send the fields
    /// some other way, or fail the call).
    pub fn encode(
        &mut self,
        stream: u64,
        fields: &[Header<'_>],
        block: &mut (impl crate::OutBuf + ?Sized),
        encoder_stream: &mut (impl crate::OutBuf + ?Sized),
    ) -> Result<(), QpackError> {
        self.encode_inner(Some(stream), fields, block, encoder_stream)
    }

    /// Encodes `fields` for a datagram: static references and literals only (Required Insert
    /// Count 0), no insertion.
    ///
    /// # Errors
    ///
    /// [`QpackError::BlockTooLarge`] if the block exceeds 65 535 bytes (`block` is left as it
    /// was).
    pub fn encode_datagram(
        &mut self,
        fields: &[Header<'_>],
        block: &mut (impl crate::OutBuf + ?Sized),
    ) -> Result<(), QpackError> {
        self.encode_inner(None, fields, block, &mut Vec::new())
    }

    fn encode_inner(
        &mut self,
        stream: Option<u64>,
        fields: &[Header<'_>],
        block: &mut (impl crate::OutBuf + ?Sized),
        encoder_stream: &mut (impl crate::OutBuf + ?Sized),
    ) -> Result<(), QpackError> {
        let start = block.len();
        // A peer that never acknowledges costs compression, not memory: past the bound, blocks
        // reference nothing dynamic (and insert nothing) until acknowledgements arrive.
        let unacked: usize = self.outstanding.values().map(Unacked::len).sum();
        // (A capacity below 32 bytes holds no entry: MaxEntries is 0, nothing dynamic.)
        let dynamic_ok = stream.is_some()
            && max_entries(self.max_capacity) > 0
            && unacked < MAX_UNACKED_SECTIONS;
        let may_block = stream
            .is_some_and(|s| self.is_blocking(s) || self.blocked_streams() < MAX_BLOCKED_STREAMS);
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        let mut min_ref = u64::MAX;
        let mut max_ref: Option<u64> = None;
        for (f, h) in fields.iter().enumerate() {
            let (name, value) = (h.name, h.value);
            let policy = match h.indexing {
                Indexing::Auto => auto_policy(name, value, self.table.capacity()),
                other => other,
            };
            let never = policy == Indexing::Never;
            let static_name = static_table::find_name(name).map(|i| i as u64 - 1);
            if !never {
                if let Some(i) = static_table::find_field(name, value) {
                    lines.push(Line::Static(i as u64 - 1));
                    continue;
                }
            }
            let usable = |abs: u64, kr: u64| abs < kr || may_block;
            let (exact, by_name) = if dynamic_ok {
                self.table.find(name, value)
            } else {
                (None, None)
            };
            if let Some(abs) = exact.filter(|a| !never && usable(*a, self.known_received)) {
                lines.push(Line::Dynamic(abs));
                min_ref = min_ref.min(abs);
                max_ref = Some(max_ref.map_or(abs, |m| m.max(abs)));
                continue;
            }
            if dynamic_ok && exact.is_none() && policy == Indexing::Incremental {
                let size = entry_size(name, value);
                let evictable = self.evictable_below(min_ref);
                if self.table.can_fit(size, evictable) {
                    match static_name {
                        Some(i) => encode_int(encoder_stream, 0xc0, 6, i),
                        None => encode_str(encoder_stream, 0x40, 5, name),
                    }
                    encode_str(encoder_stream, 0x00, 7, value);
                    self.table.insert(name, value);
                    let abs = self.table.insert_count() - 1;
                    if may_block {
                        lines.push(Line::Dynamic(abs));
                        min_ref = min_ref.min(abs);
                        max_ref = Some(abs);
                        continue;
                    }
                }
            }
            match (
                static_name,
                by_name.filter(|a| usable(*a, self.known_received)),
            ) {
                (Some(i), _) => lines.push(Line::LiteralStaticName(i, f, never)),
                (None, Some(abs)) if self.table.get(abs).is_some() => {
                    lines.push(Line::LiteralDynamicName(abs, f, never));
                    min_ref = min_ref.min(abs);
                    max_ref = Some(max_ref.map_or(abs, |m| m.max(abs)));
                }
                _ => lines.push(Line::Literal(f, never)),
            }
        }
        // Prefix: Required Insert Count and Base = Required Insert Count (all references are
        // relative; the reference encoder never uses post-base indices).
        let ric = max_ref.map_or(0, |m| m + 1);
        let encoded = if ric == 0 {
            0
        } else {
            ric % (2 * max_entries(self.max_capacity)) + 1
        };
        encode_int(block, 0x00, 8, encoded);
        encode_int(block, 0x00, 7, 0);
        let base = ric;
        for line in &lines {
            match *line {
                Line::Static(i) => encode_int(block, 0xc0, 6, i),
                Line::Dynamic(abs) => encode_int(block, 0x80, 6, base - 1 - abs),
                Line::LiteralStaticName(i, f, never) => {
                    encode_int(block, 0x50 | if never { 0x20 } else { 0 }, 4, i);
                    encode_str(block, 0x00, 7, fields[f].value);
                }
                Line::LiteralDynamicName(abs, f, never) => {
                    encode_int(
                        block,
                        0x40 | if never { 0x20 } else { 0 },
                        4,
                        base - 1 - abs,
                    );
                    encode_str(block, 0x00, 7, fields[f].value);
                }
                Line::Literal(f, never) => {
                    encode_str(
                        block,
                        0x20 | if never { 0x10 } else { 0 },
                        3,
                        fields[f].name,
                    );
                    encode_str(block, 0x00, 7, fields[f].value);
                }
            }
        }
        self.lines = lines;
        if block.len() - start > u16::MAX as usize {
            // The block is never sent, so it must not be tracked: no acknowledgement would ever
            // come, its stream would count as blocked and its entries stay pinned for good.
            block.truncate(start);
            return Err(QpackError::BlockTooLarge);
        }
        if let (Some(s), true) = (stream, ric > 0) {
            match self.outstanding.entry(s) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    e.get_mut().rest.push_back((ric, min_ref));
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Unacked {
                        first: (ric, min_ref),
                        rest: VecDeque::new(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads decoder-stream bytes from the peer (any split), applying every complete
    /// instruction.
    ///
    /// # Errors
    ///
    /// [`QpackError::UnexpectedAck`] for an acknowledgement of a stream with no block
    /// outstanding, [`QpackError::BadIncrement`] for an increment of 0 or beyond the
    /// insertions sent, [`QpackError::IntegerOverflow`]: connection errors.
    pub fn feed_decoder_stream(&mut self, bytes: &[u8]) -> Result<(), QpackError> {
        self.pending.extend_from_slice(bytes);
        let mut pos = 0;
        let result = loop {
            let Some(&b) = self.pending.get(pos) else {
                break Ok(());
            };
            let mut p = pos;
            let prefix = if b & 0x80 != 0 { 7 } else { 6 };
            let v = match decode_int(&self.pending, &mut p, prefix) {
                Ok(v) => v,
                Err(QpackError::Truncated) => break Ok(()),
                Err(e) => break Err(e),
            };
            pos = p;
            let r = if b & 0x80 != 0 {
                self.section_ack(v)
            } else if b & 0x40 != 0 {
                self.outstanding.remove(&v);
                Ok(())
            } else {
                self.increment(v)
            };
            if let Err(e) = r {
                break Err(e);
            }
        };
        self.pending.drain(..pos);
        result
    }

    fn section_ack(&mut self, stream: u64) -> Result<(), QpackError> {
        let q = self
            .outstanding
            .get_mut(&stream)
            .ok_or(QpackError::UnexpectedAck(stream))?;
        let (ric, _) = q.first;
        match q.rest.pop_front() {
            Some(next) => q.first = next,
            None => {
                self.outstanding.remove(&stream);
            }
        }
        self.known_received = self.known_received.max(ric);
        Ok(())
    }

    fn increment(&mut self, n: u64) -> Result<(), QpackError> {
        if n == 0 || n > self.table.insert_count() - self.known_received {
            return Err(QpackError::BadIncrement);
        }
        self.known_received += n;
        Ok(())
    }
}

/// The §9.9 policy: `authorization` never indexed; values that change per call not indexed;
/// fields above half the table not indexed; everything else indexed.
fn auto_policy(name: &[u8], value: &[u8], capacity: usize) -> Indexing {
    match name {
        b"authorization" => Indexing::Never,
        b"traceparent" | b"tracestate" | b"x-request-id" | b"idempotency-key"
        | b"x-retry-attempt" => Indexing::No,
        _ if entry_size(name, value) > capacity / 2 => Indexing::No,
        _ => Indexing::Incremental,
    }
}
