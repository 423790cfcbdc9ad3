//! The header-block decoder: one per connection and direction.

use super::HeaderList;
use super::integer::{decode_int, decode_str};
use super::static_table::{STATIC_LEN, STATIC_TABLE};
use super::table::{DynamicTable, ENTRY_OVERHEAD, NameSource};
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
}

impl HeaderDecoder {
    /// A decoder for a dynamic table of at most `max_table_size` bytes (the negotiated
    /// `header_table_size`), rejecting blocks whose decoded size (name + value + 32 per field)
    /// exceeds `max_list_size`.
    pub fn new(max_table_size: u32, max_list_size: usize) -> Self {
        Self {
            table: DynamicTable::new(max_table_size),
            max_list_size,
        }
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
                self.table
                    .set_max_size(size as usize, &mut |_: &[u8], _: &[u8], _| {});
                // Several updates in a row are allowed at the start.
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let idx = decode_int(block, &mut pos, 4)?;
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

    /// Decodes `block` into `list` (cleared first). `list` keeps its capacity between calls,
    /// so in steady state this allocates nothing.
    pub fn decode_into(&mut self, block: &[u8], list: &mut HeaderList) -> Result<(), HeaderError> {
        list.clear();
        self.decode(block, |n, v| list.push(n, v))
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
