//! The header-block encoder: one per connection and direction.

use rustc_hash::{FxHashMap, FxHasher};
use std::hash::Hasher;

use super::integer::{encode_int, encode_str};
use super::static_table::{self, STATIC_LEN};
use super::table::{DynamicTable, NameSource};
use super::trace::{self, TraceParent};
use crate::HeaderError;

/// How a header field may be stored in the dynamic tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Indexing {
    /// Let the encoder decide: pseudo-headers and ordinary metadata are indexed; keys whose
    /// values change on every call (`traceparent`, `tracestate`, `x-request-id`,
    /// `idempotency-key`, `x-retry-attempt`) are not; `authorization` is never indexed; values
    /// larger than half the table are not indexed.
    #[default]
    Auto,
    /// Add the field to the dynamic table (later sends cost one byte).
    Incremental,
    /// Send literally and do not add to the table.
    No,
    /// Send literally, do not add, and ask intermediaries never to index it (secrets).
    Never,
}

/// One header field to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Field name (lower-case by convention; `:`-prefixed names are Netron pseudo-headers).
    pub name: &'a [u8],
    /// Field value.
    pub value: &'a [u8],
    /// Indexing policy.
    pub indexing: Indexing,
}

impl<'a> Header<'a> {
    /// A field with [`Indexing::Auto`].
    pub const fn new(name: &'a [u8], value: &'a [u8]) -> Self {
        Self {
            name,
            value,
            indexing: Indexing::Auto,
        }
    }
    /// `:service` = `name@version`.
    pub const fn service(value: &'a [u8]) -> Self {
        Self::new(b":service", value)
    }
    /// `:method` = method name.
    pub const fn method(value: &'a [u8]) -> Self {
        Self::new(b":method", value)
    }
    /// `:topic` = event topic.
    pub const fn topic(value: &'a [u8]) -> Self {
        Self::new(b":topic", value)
    }
    /// The same field with another indexing policy.
    pub const fn with_indexing(mut self, indexing: Indexing) -> Self {
        self.indexing = indexing;
        self
    }
}

/// Byte-slice equality without a `memcmp` call for the short strings headers usually are:
/// two overlapping loads cover lengths up to 16.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    #[inline(always)]
    fn load32(s: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]])
    }
    #[inline(always)]
    fn load64(s: &[u8], i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_ne_bytes(w)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=8 => load32(a, 0) == load32(b, 0) && load32(a, n - 4) == load32(b, n - 4),
        9..=16 => load64(a, 0) == load64(b, 0) && load64(a, n - 8) == load64(b, n - 8),
        _ => a == b,
    }
}

#[inline(always)]
fn same_field(entry: Option<(&[u8], &[u8])>, name: &[u8], value: &[u8]) -> bool {
    entry.is_some_and(|(n, v)| same(n, name) && same(v, value))
}

fn hash_field(name: &[u8], value: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(name);
    h.write_u8(0xff);
    h.write(value);
    h.finish()
}

fn hash_name(name: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(name);
    h.finish()
}

/// Encodes header lists into header blocks, keeping the dynamic table in step with the peer's
/// [`super::HeaderDecoder`].
///
/// Lookups go through two hash maps (field → newest entry, name → newest entry) that are
/// checked against the table bytes on a hit, so a lookup costs one hash and one compare. In
/// steady state (the same fields again) encoding allocates nothing.
#[derive(Debug)]
pub struct HeaderEncoder {
    table: DynamicTable,
    by_field: FxHashMap<u64, u64>,
    by_name: FxHashMap<u64, u64>,
    /// Smallest and last size set since the last block (RFC 7541 §4.2: both are signalled).
    pending_size_update: Option<(u32, u32)>,
    hints: [Hint; HINTS],
    /// Whether `traceparent` values are packed (`features::PACKED_TRACE` in force).
    packed_trace: bool,
    /// The trace-id of the last packed `traceparent` (docs/protocol.md §9.10).
    last_trace: Option<[u8; 16]>,
}

/// Number of hint slots (direct-mapped by the value's address).
const HINTS: usize = 16;

/// A hint that the field whose name and value live at these addresses is the table entry
/// `id`. Callers usually pass the same `&'static` or long-lived slices call after call, so
/// checking addresses skips hashing; a hit is still verified against the table's bytes, so a
/// stale hint only costs a compare.
#[derive(Debug, Clone, Copy, Default)]
struct Hint {
    name: usize,
    value: usize,
    lens: u64,
    id: u64,
    /// The entry's arena offset (stable while it lives): verification reads the bytes there.
    off: u32,
}

#[inline]
fn hint_slot(value: &[u8]) -> usize {
    ((value.as_ptr() as usize) >> 3) % HINTS
}

#[inline]
fn hint_key(name: &[u8], value: &[u8]) -> (usize, usize, u64) {
    (
        name.as_ptr() as usize,
        value.as_ptr() as usize,
        (name.len() as u64) << 32 | value.len() as u64,
    )
}

impl HeaderEncoder {
    /// An encoder whose dynamic table may hold `max_table_size` bytes (the negotiated
    /// `header_table_size`; 0 disables the dynamic table).
    pub fn new(max_table_size: u32) -> Self {
        Self {
            table: DynamicTable::new(max_table_size),
            by_field: FxHashMap::default(),
            by_name: FxHashMap::default(),
            pending_size_update: None,
            hints: [Hint::default(); HINTS],
            packed_trace: false,
            last_trace: None,
        }
    }

    /// Packs canonical `traceparent` values (26 bytes, or 10 within the trace of the previous
    /// one, instead of 55; docs/protocol.md §9.10). Turn it on only when the protocol bit
    /// [`crate::features::PACKED_TRACE`] is in force: a peer without it refuses the block.
    pub fn set_packed_trace(&mut self, on: bool) {
        self.packed_trace = on;
    }

    /// Shrinks (or regrows, up to the negotiated size) the table; a size update goes at the
    /// start of the next block. Returns an error if `size` exceeds the negotiated size.
    pub fn set_max_table_size(&mut self, size: u32) -> Result<(), HeaderError> {
        if size as usize > self.table.limit() {
            return Err(HeaderError::TableSizeTooLarge {
                requested: size,
                max: self.table.limit() as u32,
            });
        }
        let (by_field, by_name) = (&mut self.by_field, &mut self.by_name);
        self.table
            .set_max_size(size as usize, &mut |n: &[u8], v: &[u8], id| {
                forget(by_field, by_name, n, v, id)
            });
        self.pending_size_update = Some(match self.pending_size_update {
            Some((min, _)) => (min.min(size), size),
            None => (size, size),
        });
        Ok(())
    }

    /// An upper bound on the header block [`HeaderEncoder::encode`] writes for `headers`,
    /// whatever the table holds: every field as a literal with a literal name (the longest
    /// representation, RFC 7541 §6.2.1), plus two table size updates. A sender compares it
    /// with the negotiated limits *before* encoding, because a block once encoded has moved
    /// the table and cannot be taken back.
    pub fn max_encoded_len(headers: &[Header<'_>]) -> usize {
        // A prefix integer of a u32 takes at most 1 + 5 bytes (RFC 7541 §5.1).
        const INT: usize = 6;
        headers.iter().fold(2 * INT, |acc, h| {
            acc.saturating_add(1 + INT + h.name.len() + INT + h.value.len())
        })
    }

    /// Bytes currently held by the dynamic table (by the size rule).
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Entries in the dynamic table.
    pub fn table_len(&self) -> u32 {
        self.table.len()
    }

    /// Appends one header block for `headers` to `out`.
    pub fn encode<'h, I>(
        &mut self,
        headers: I,
        out: &mut (impl crate::OutBuf + ?Sized),
    ) -> Result<(), HeaderError>
    where
        I: IntoIterator<Item = &'h Header<'h>>,
    {
        if let Some((min, last)) = self.pending_size_update.take() {
            encode_int(out, 0x20, 5, min);
            if last != min {
                encode_int(out, 0x20, 5, last);
            }
        }
        for h in headers {
            self.encode_field(h, out);
        }
        Ok(())
    }

    fn dynamic_index(&self, id: Option<&u64>) -> Option<u32> {
        id.and_then(|&id| self.table.index_of_id(id))
            .map(|i| i + STATIC_LEN)
    }

    #[inline]
    fn encode_field(&mut self, h: &Header<'_>, out: &mut (impl crate::OutBuf + ?Sized)) {
        let (name, value) = (h.name, h.value);
        // A never-indexed field is always sent literally, even if the table holds it.
        let never = h.indexing == Indexing::Never
            || (h.indexing == Indexing::Auto && name == b"authorization");
        if never {
            let name_index = static_table::find_name(name);
            self.encode_literal(0x10, 4, name_index, name, value, out);
            return;
        }
        if self.packed_trace && name == trace::NAME && h.indexing != Indexing::Incremental {
            if let Some(tp) = TraceParent::parse(value) {
                let reuse = self.last_trace == Some(tp.trace_id);
                let len = if reuse {
                    trace::SHORT_LEN
                } else {
                    trace::FULL_LEN
                };
                encode_int(out, 0x00, 4, trace::NAME_INDEX);
                encode_int(out, 0x80, 7, len as u32);
                tp.pack(reuse, out);
                self.last_trace = Some(tp.trace_id);
                return;
            }
        }
        // 1. Whole field already known: one indexed byte (for the first 127 entries).
        if let Some(i) = static_table::find_field(name, value) {
            encode_int(out, 0x80, 7, i);
            return;
        }
        let slot = hint_slot(value);
        let (np, vp, lens) = hint_key(name, value);
        let hint = self.hints[slot];
        if hint.name == np && hint.value == vp && hint.lens == lens {
            // Still live? (age since insertion within the table) Then compare the bytes at its
            // arena offset: name then value, contiguous.
            if let Some(idx) = self.table.index_of_id(hint.id) {
                let total = name.len() + value.len();
                if let Some(b) = self.table.arena_bytes(hint.off, total) {
                    if same(&b[..name.len()], name) && same(&b[name.len()..], value) {
                        encode_int(out, 0x80, 7, idx + STATIC_LEN);
                        return;
                    }
                }
            }
        }
        let fh = hash_field(name, value);
        if let Some(&id) = self.by_field.get(&fh) {
            if let Some(idx) = self.dynamic_index(Some(&id)) {
                if same_field(self.table.get(idx - STATIC_LEN), name, value) {
                    let off = self.table.offset_of(idx - STATIC_LEN).unwrap_or(u32::MAX);
                    self.hints[slot] = Hint {
                        name: np,
                        value: vp,
                        lens,
                        id,
                        off,
                    };
                    encode_int(out, 0x80, 7, idx);
                    return;
                }
            }
        }
        // 2. A literal value; the name by index if known.
        let nh = hash_name(name);
        let name_index = static_table::find_name(name).or_else(|| {
            self.dynamic_index(self.by_name.get(&nh)).filter(|&idx| {
                self.table
                    .get(idx - STATIC_LEN)
                    .is_some_and(|(n, _)| n == name)
            })
        });
        let indexing = match h.indexing {
            Indexing::Auto => auto_policy(name, value, self.table.max_size()),
            other => other,
        };
        let (pattern, prefix) = match indexing {
            Indexing::Incremental | Indexing::Auto => (0x40, 6),
            Indexing::No => (0x00, 4),
            Indexing::Never => (0x10, 4),
        };
        self.encode_literal(pattern, prefix, name_index, name, value, out);
        if pattern == 0x40 {
            let src = match name_index {
                Some(i) if i > STATIC_LEN => NameSource::Entry(i - STATIC_LEN),
                _ => NameSource::Bytes(name),
            };
            let (by_field, by_name) = (&mut self.by_field, &mut self.by_name);
            let added = self
                .table
                .insert(src, value, &mut |n: &[u8], v: &[u8], id| {
                    forget(by_field, by_name, n, v, id)
                });
            if added {
                let id = self.table.id_of(1);
                self.by_field.insert(fh, id);
                self.by_name.insert(nh, id);
                let off = self.table.offset_of(1).unwrap_or(u32::MAX);
                self.hints[slot] = Hint {
                    name: np,
                    value: vp,
                    lens,
                    id,
                    off,
                };
            }
        }
    }
}

impl HeaderEncoder {
    #[inline]
    fn encode_literal(
        &self,
        pattern: u8,
        prefix: u8,
        name_index: Option<u32>,
        name: &[u8],
        value: &[u8],
        out: &mut (impl crate::OutBuf + ?Sized),
    ) {
        match name_index {
            Some(i) => encode_int(out, pattern, prefix, i),
            None => {
                out.push(pattern);
                encode_str(out, name);
            }
        }
        encode_str(out, value);
    }
}

/// Drops map entries that point at an evicted entry (only if they still point at it).
fn forget(
    by_field: &mut FxHashMap<u64, u64>,
    by_name: &mut FxHashMap<u64, u64>,
    n: &[u8],
    v: &[u8],
    id: u64,
) {
    let fh = hash_field(n, v);
    if by_field.get(&fh) == Some(&id) {
        by_field.remove(&fh);
    }
    let nh = hash_name(n);
    if by_name.get(&nh) == Some(&id) {
        by_name.remove(&nh);
    }
}

fn auto_policy(name: &[u8], value: &[u8], max_size: usize) -> Indexing {
    match name {
        b"authorization" => Indexing::Never,
        b"traceparent" | b"tracestate" | b"x-request-id" | b"idempotency-key"
        | b"x-retry-attempt" => Indexing::No,
        _ if name.len() + value.len() + 32 > max_size / 2 => Indexing::No,
        _ => Indexing::Incremental,
    }
}
