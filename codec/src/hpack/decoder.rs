//! The header-block decoder: one per connection and direction.

use super::HeaderList;
use super::integer::{decode_int, decode_str};
use super::static_table::{STATIC_LEN, STATIC_TABLE};
use super::table::{DynamicTable, ENTRY_OVERHEAD, NameSource};
use super::trace::{self, TraceParent};
use crate::HeaderError;

/// Decodes header blocks, keeping the dynamic table in step with the peer's
/// [`super::HeaderEncoder`].
///
/// Every index and length is checked before use; any error is a connection error (the table
/// may be partly updated and the connection must close, as in HPACK).
#[derive(Debug)]
pub struct HeaderDecoder {
    table: DynamicTable,
    max_list_size: usize,
    /// Whether packed `traceparent` values are accepted (`features::PACKED_TRACE` in force).
    packed_trace: bool,
    /// The trace-id of the last packed `traceparent` (docs/protocol.md §9.10).
    last_trace: Option<[u8; 16]>,
    /// The last block [`Self::decode_into`] decoded without changing any state, forgotten
    /// (`stamp` 0) by every change of the state blocks are decoded against: a table
    /// insertion or size update, a packed `traceparent` read, a setting.
    last: Repeat,
}

/// Longest block remembered for [`HeaderDecoder::decode_into`]'s repeat check (a steady-state
/// request's block is a few indexed fields: 2 to 8 bytes).
const REPEAT_MAX: usize = 14;

/// A block that decoded without changing the decoder's state, and the stamp of the list it
/// was decoded into (0: nothing remembered); 24 bytes.
#[derive(Debug, Default)]
struct Repeat {
    stamp: u64,
    len: u8,
    /// The block being decoded changed the state.
    changed: bool,
    bytes: [u8; REPEAT_MAX],
}

impl HeaderDecoder {
    /// A decoder for a dynamic table of at most `max_table_size` bytes (the negotiated
    /// `header_table_size`), rejecting blocks whose decoded size (name + value + 32 per field)
    /// exceeds `max_list_size`.
    pub fn new(max_table_size: u32, max_list_size: usize) -> Self {
        Self {
            table: DynamicTable::new(max_table_size),
            max_list_size,
            packed_trace: false,
            last_trace: None,
            last: Repeat::default(),
        }
    }

    /// Accepts packed `traceparent` values (docs/protocol.md §9.10), as sent by an encoder
    /// with [`super::HeaderEncoder::set_packed_trace`]; off, a packed value is an error.
    pub fn set_packed_trace(&mut self, on: bool) {
        self.state_changed();
        self.packed_trace = on;
    }

    /// Bytes currently held by the dynamic table (by the size rule).
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Entries in the dynamic table.
    pub fn table_len(&self) -> u32 {
        self.table.len()
    }

    /// Decodes `block`, calling `f(name, value)` for each field in order. Names and values are
    /// borrowed from `block` or from the table; nothing is allocated unless the table grows.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HeaderError> {
        let mut pos = 0;
        let mut list_size = 0usize;
        let mut first = true;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed field.
                let idx = decode_int(block, &mut pos, 7)?;
                let (n, v) = self.lookup(idx)?;
                list_size = self.account(list_size, n.len() + v.len())?;
                f(n, v);
            } else if b & 0xc0 == 0x40 {
                // Literal with incremental indexing.
                let idx = decode_int(block, &mut pos, 6)?;
                let value_pos;
                let src = if idx == 0 {
                    let name = decode_str(block, &mut pos)?;
                    value_pos = pos;
                    NameSource::Bytes(name)
                } else if idx <= STATIC_LEN {
                    value_pos = pos;
                    NameSource::Bytes(STATIC_TABLE[idx as usize - 1].0.as_bytes())
                } else {
                    self.lookup(idx)?;
                    value_pos = pos;
                    NameSource::Entry(idx - STATIC_LEN)
                };
                let mut p = value_pos;
                let value = decode_str(block, &mut p)?;
                pos = p;
                let name: &[u8] = match src {
                    NameSource::Bytes(n) => n,
                    NameSource::Entry(i) => self.table.get(i).map_or(&[][..], |(n, _)| n),
                };
                list_size = self.account(list_size, name.len() + value.len())?;
                // (`state_changed`, field by field: `name` borrows the table.)
                self.last.stamp = 0;
                self.last.changed = true;
                if name.len() + value.len() + ENTRY_OVERHEAD > self.table.max_size() {
                    // Too large for the table: still a field of this block, then the insert
                    // below empties the table (RFC 7541 §4.4), as the encoder's does.
                    f(name, value);
                    self.table
                        .insert(src, value, &mut |_: &[u8], _: &[u8], _| {});
                } else {
                    self.table
                        .insert(src, value, &mut |_: &[u8], _: &[u8], _| {});
                    let (n, v) = self.table.get(1).ok_or(HeaderError::Truncated)?;
                    f(n, v);
                }
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update: only at the start of a block.
                if !first {
                    return Err(HeaderError::SizeUpdateNotFirst);
                }
                let size = decode_int(block, &mut pos, 5)?;
                if size as usize > self.table.limit() {
                    return Err(HeaderError::TableSizeTooLarge {
                        requested: size,
                        max: self.table.limit() as u32,
                    });
                }
                self.state_changed();
                self.table
                    .set_max_size(size as usize, &mut |_: &[u8], _: &[u8], _| {});
                // Several updates in a row are allowed at the start.
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let idx = decode_int(block, &mut pos, 4)?;
                if idx == trace::NAME_INDEX && block.get(pos).is_some_and(|b| b & 0x80 != 0) {
                    let text = self.packed_trace_at(block, &mut pos)?;
                    list_size = self.account(list_size, trace::NAME.len() + text.len())?;
                    f(trace::NAME, &text);
                    first = false;
                    continue;
                }
                let name: &[u8] = if idx == 0 {
                    decode_str(block, &mut pos)?
                } else {
                    self.lookup(idx)?.0
                };
                let mut p = pos;
                let value = decode_str(block, &mut p)?;
                pos = p;
                list_size = self.account(list_size, name.len() + value.len())?;
                f(name, value);
            }
            first = false;
        }
        Ok(())
    }

    /// Notes that the state blocks are decoded against changed: a remembered block may mean
    /// something else now.
    #[inline]
    fn state_changed(&mut self) {
        self.last.stamp = 0;
        self.last.changed = true;
    }

    /// Decodes `block` into `list` (cleared first). `list` keeps its capacity between calls,
    /// so in steady state this allocates nothing.
    ///
    /// A steady-state peer sends the same block again and again (the same indexed fields:
    /// `:service`, `:method`). When `block` has the bytes of the last block decoded here, that
    /// block changed no state (no insertion, size update or packed `traceparent`), nothing
    /// changed the state since, and `list` still holds exactly what that decode wrote (or a
    /// clone of it: [`HeaderList`] keeps a process-wide unique stamp that any change clears),
    /// the result is already in `list`: it is left as it is, and the call costs a comparison
    /// of at most 14 bytes instead of a decode.
    ///
    /// # Errors
    /// As [`Self::decode`]; `list` then holds the fields decoded before the error.
    pub fn decode_into(&mut self, block: &[u8], list: &mut HeaderList) -> Result<(), HeaderError> {
        let last = &self.last;
        if last.stamp != 0
            && last.stamp == list.stamp()
            && usize::from(last.len) == block.len()
            && last.bytes[..block.len()] == *block
        {
            return Ok(());
        }
        list.clear();
        self.last.changed = false;
        self.decode(block, |n, v| list.push(n, v))?;
        let stamp = list.seal();
        if !self.last.changed && block.len() <= REPEAT_MAX {
            self.last.len = block.len() as u8;
            self.last.bytes[..block.len()].copy_from_slice(block);
            self.last.stamp = stamp;
        } else {
            self.last.stamp = 0;
        }
        Ok(())
    }

    /// Reads a packed `traceparent` value at `*pos` and rebuilds its text.
    fn packed_trace_at(
        &mut self,
        block: &[u8],
        pos: &mut usize,
    ) -> Result<[u8; trace::TEXT_LEN], HeaderError> {
        if !self.packed_trace {
            return Err(HeaderError::PackedValue(
                "a packed traceparent, but PACKED_TRACE is not in force on this connection",
            ));
        }
        let len = decode_int(block, pos, 7)? as usize;
        let end = pos.checked_add(len).ok_or(HeaderError::Truncated)?;
        let packed = block.get(*pos..end).ok_or(HeaderError::Truncated)?;
        let tp = TraceParent::unpack(packed, self.last_trace)?;
        self.state_changed();
        *pos = end;
        self.last_trace = Some(tp.trace_id);
        Ok(tp.text())
    }

    #[inline]
    fn lookup(&self, idx: u32) -> Result<(&[u8], &[u8]), HeaderError> {
        if idx == 0 {
            return Err(HeaderError::ZeroIndex);
        }
        if idx <= STATIC_LEN {
            let (n, v) = STATIC_TABLE[idx as usize - 1];
            return Ok((n.as_bytes(), v.as_bytes()));
        }
        self.table
            .get(idx - STATIC_LEN)
            .ok_or(HeaderError::IndexOutOfRange {
                index: idx,
                len: STATIC_LEN + self.table.len(),
            })
    }

    #[inline]
    fn account(&self, so_far: usize, bytes: usize) -> Result<usize, HeaderError> {
        let size = so_far + bytes + ENTRY_OVERHEAD;
        if size > self.max_list_size {
            return Err(HeaderError::ListTooLarge {
                size,
                max: self.max_list_size,
            });
        }
        Ok(size)
    }
}
