//! The receiving side: encoder-stream instructions in, header blocks decoded (or blocked),
//! decoder-stream instructions out.

use super::prefix::{decode_int, decode_str, encode_int};
use super::table::{Table, entry_size};
use super::{MAX_BLOCKED_STREAMS, QpackError, max_entries};
use crate::hpack::{ENTRY_OVERHEAD, HeaderList, STATIC_TABLE};

/// The outcome of [`QpackDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The list was decoded.
    Done,
    /// The block needs insertions that have not arrived on the encoder stream yet. Keep the
    /// block (and everything after it on that stream) and decode it again once
    /// [`QpackDecoder::unblocked`] lists the stream.
    Blocked,
}

/// Decodes header blocks of one direction of a QUIC connection (see the [module](super)).
#[derive(Debug)]
pub struct QpackDecoder {
    table: Table,
    max_capacity: usize,
    max_list_size: usize,
    /// Encoder-stream bytes of an instruction not yet complete.
    pending: Vec<u8>,
    /// Blocked streams and the insert count each waits for.
    blocked: Vec<(u64, u64)>,
    /// Insertions the encoder knows we received (acknowledged or incremented).
    reported: u64,
    /// Decoder-stream bytes to send.
    out: Vec<u8>,
}

struct Prefix {
    ric: u64,
    base: u64,
}

impl QpackDecoder {
    /// A decoder for a dynamic table of at most `max_capacity` bytes (the negotiated
    /// `header_table_size`; the table starts at that capacity), rejecting decoded lists above
    /// `max_list_size` (name + value + 32 per field).
    pub fn new(max_capacity: u32, max_list_size: usize) -> Self {
        Self {
            table: Table::new(max_capacity as usize),
            max_capacity: max_capacity as usize,
            max_list_size,
            pending: Vec::new(),
            blocked: Vec::new(),
            reported: 0,
            out: Vec::new(),
        }
    }

    /// Insertions received so far.
    pub fn insert_count(&self) -> u64 {
        self.table.insert_count()
    }

    /// Bytes held by the dynamic table (by the size rule) and its current capacity.
    pub fn table_size(&self) -> (usize, usize) {
        (self.table.size(), self.table.capacity())
    }

    /// Entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Streams currently blocked.
    pub fn blocked_streams(&self) -> usize {
        self.blocked.len()
    }

    /// Blocked streams whose block can now be decoded.
    pub fn unblocked(&self) -> impl Iterator<Item = u64> + '_ {
        let have = self.table.insert_count();
        self.blocked
            .iter()
            .filter(move |(_, ric)| *ric <= have)
            .map(|(s, _)| *s)
    }

    /// Whether decoder-stream instructions wait for [`QpackDecoder::take_instructions`].
    pub fn has_instructions(&self) -> bool {
        !self.out.is_empty()
    }

    /// Appends the decoder-stream instructions produced so far to `out` (the stream type byte
    /// is the caller's) and forgets them.
    pub fn take_instructions(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    /// Reads encoder-stream bytes (any split: an instruction may span calls), applying every
    /// complete instruction, then queues one Insert Count Increment for the insertions not yet
    /// reported.
    ///
    /// # Errors
    ///
    /// A [`QpackError`] (a connection error) for a malformed instruction, an index out of
    /// range, an entry larger than the capacity or a capacity above the negotiated one. A
    /// partial instruction is kept, bounded by the negotiated capacity.
    pub fn feed_encoder_stream(&mut self, bytes: &[u8]) -> Result<(), QpackError> {
        self.pending.extend_from_slice(bytes);
        let mut pos = 0;
        let result = loop {
            match self.instruction(pos) {
                Ok(Some(next)) => pos = next,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..pos);
        result?;
        let count = self.table.insert_count();
        if count > self.reported {
            encode_int(&mut self.out, 0x00, 6, count - self.reported);
            self.reported = count;
        }
        Ok(())
    }

    /// Applies the instruction at `pos` of `pending`; `None` if it is incomplete.
    fn instruction(&mut self, pos: usize) -> Result<Option<usize>, QpackError> {
        let buf = &self.pending[..];
        let Some(&b) = buf.get(pos) else {
            return Ok(None);
        };
        let mut p = pos;
        let max = self.max_capacity;
        let r = (|| {
            if b & 0x80 != 0 {
                // Insert with name reference: 1 T index(6), value.
                let idx = decode_int(buf, &mut p, 6)?;
                let value = decode_str(buf, &mut p, 7, max)?;
                let name: Box<[u8]> = if b & 0x40 != 0 {
                    let (n, _) = STATIC_TABLE
                        .get(idx as usize)
                        .ok_or(QpackError::IndexOutOfRange)?;
                    n.as_bytes().into()
                } else {
                    let abs = self
                        .table
                        .insert_count()
                        .checked_sub(idx + 1)
                        .ok_or(QpackError::IndexOutOfRange)?;
                    self.table
                        .get(abs)
                        .ok_or(QpackError::IndexOutOfRange)?
                        .0
                        .into()
                };
                Ok(Some(Op::Insert(name, value.into())))
            } else if b & 0x40 != 0 {
                // Insert with literal name: 01 H len(5) name, value.
                let name = decode_str(buf, &mut p, 5, max)?;
                let value = decode_str(buf, &mut p, 7, max)?;
                Ok(Some(Op::Insert(name.into(), value.into())))
            } else if b & 0x20 != 0 {
                let cap = decode_int(buf, &mut p, 5)?;
                if cap > max as u64 {
                    return Err(QpackError::CapacityTooLarge {
                        requested: cap,
                        max,
                    });
                }
                Ok(Some(Op::Capacity(cap as usize)))
            } else {
                // Duplicate: 000 index(5).
                let idx = decode_int(buf, &mut p, 5)?;
                let abs = self
                    .table
                    .insert_count()
                    .checked_sub(idx + 1)
                    .ok_or(QpackError::IndexOutOfRange)?;
                let (n, v) = self.table.get(abs).ok_or(QpackError::IndexOutOfRange)?;
                Ok(Some(Op::Insert(n.into(), v.into())))
            }
        })();
        let op = match r {
            Ok(Some(op)) => op,
            Ok(None) | Err(QpackError::Truncated) => return Ok(None),
            Err(e) => return Err(e),
        };
        match op {
            Op::Insert(name, value) => {
                let size = entry_size(&name, &value);
                if size > self.table.capacity() {
                    return Err(QpackError::EntryTooLarge {
                        size,
                        capacity: self.table.capacity(),
                    });
                }
                self.table.insert(&name, &value);
            }
            Op::Capacity(cap) => self.table.set_capacity(cap),
        }
        Ok(Some(p))
    }

    fn prefix(&self, block: &[u8], pos: &mut usize) -> Result<Prefix, QpackError> {
        let encoded = decode_int(block, pos, 8)?;
        let ric = if encoded == 0 {
            0
        } else {
            // RFC 9204 §4.5.1.1.
            let max_entries = max_entries(self.max_capacity);
            let full = 2 * max_entries;
            if encoded > full {
                return Err(QpackError::BadRequiredInsertCount);
            }
            let max_value = self.table.insert_count() + max_entries;
            let max_wrapped = (max_value / full) * full;
            let mut ric = max_wrapped + encoded - 1;
            if ric > max_value {
                if ric <= full {
                    return Err(QpackError::BadRequiredInsertCount);
                }
                ric -= full;
            }
            if ric == 0 {
                return Err(QpackError::BadRequiredInsertCount);
            }
            ric
        };
        let sign = block.get(*pos).ok_or(QpackError::Truncated)? & 0x80 != 0;
        let delta = decode_int(block, pos, 7)?;
        let base = if sign {
            ric.checked_sub(delta + 1).ok_or(QpackError::BadBase)?
        } else {
            ric.checked_add(delta).ok_or(QpackError::BadBase)?
        };
        Ok(Prefix { ric, base })
    }

    /// Decodes the header block that `stream` carried into `list` (cleared first).
    ///
    /// # Errors
    ///
    /// A [`QpackError`] (a connection error); [`QpackError::BlockedStreamsExceeded`] if the
    /// block is blocked and [`MAX_BLOCKED_STREAMS`] other streams already are.
    pub fn decode(
        &mut self,
        stream: u64,
        block: &[u8],
        list: &mut HeaderList,
    ) -> Result<Decoded, QpackError> {
        list.clear();
        let mut pos = 0;
        let prefix = self.prefix(block, &mut pos)?;
        if prefix.ric > self.table.insert_count() {
            let full = self.blocked.len() >= MAX_BLOCKED_STREAMS;
            match self.blocked.iter_mut().find(|(s, _)| *s == stream) {
                Some(entry) => entry.1 = prefix.ric,
                None if full => return Err(QpackError::BlockedStreamsExceeded),
                None => self.blocked.push((stream, prefix.ric)),
            }
            return Ok(Decoded::Blocked);
        }
        self.blocked.retain(|(s, _)| *s != stream);
        self.lines(block, pos, &prefix, list)?;
        if prefix.ric > 0 {
            encode_int(&mut self.out, 0x80, 7, stream);
            self.reported = self.reported.max(prefix.ric);
        }
        Ok(Decoded::Done)
    }

    /// Decodes a header block carried in a datagram: it may not reference the dynamic table
    /// (Required Insert Count 0), so it never blocks and is never acknowledged.
    ///
    /// # Errors
    ///
    /// [`QpackError::DynamicInDatagram`] for a non-zero Required Insert Count, else as
    /// [`QpackDecoder::decode`].
    pub fn decode_datagram(
        &mut self,
        block: &[u8],
        list: &mut HeaderList,
    ) -> Result<(), QpackError> {
        list.clear();
        let mut pos = 0;
        let prefix = self.prefix(block, &mut pos)?;
        if prefix.ric != 0 {
            return Err(QpackError::DynamicInDatagram);
        }
        self.lines(block, pos, &prefix, list)
    }

    /// The stream was reset or abandoned before its blocks were all decoded: forget it and
    /// queue a Stream Cancellation so the encoder releases what its blocks referenced.
    pub fn cancel_stream(&mut self, stream: u64) {
        self.blocked.retain(|(s, _)| *s != stream);
        if self.max_capacity > 0 {
            encode_int(&mut self.out, 0x40, 6, stream);
        }
    }

    fn dynamic(&self, abs: u64, ric: u64) -> Result<(&[u8], &[u8]), QpackError> {
        if abs >= ric {
            return Err(QpackError::IndexOutOfRange);
        }
        self.table.get(abs).ok_or(QpackError::IndexOutOfRange)
    }

    fn lines(
        &self,
        block: &[u8],
        mut pos: usize,
        prefix: &Prefix,
        list: &mut HeaderList,
    ) -> Result<(), QpackError> {
        let &Prefix { ric, base } = prefix;
        let max = self.max_list_size;
        let mut size = 0usize;
        let mut push = |list: &mut HeaderList, n: &[u8], v: &[u8]| {
            size += n.len() + v.len() + ENTRY_OVERHEAD;
            if size > max {
                return Err(QpackError::ListTooLarge { size, max });
            }
            list.push(n, v);
            Ok(())
        };
        let static_entry = |idx: u64| {
            STATIC_TABLE
                .get(usize::try_from(idx).unwrap_or(usize::MAX))
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .ok_or(QpackError::IndexOutOfRange)
        };
        let relative = |idx: u64| base.checked_sub(idx + 1).ok_or(QpackError::IndexOutOfRange);
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed field line: 1 T index(6).
                let idx = decode_int(block, &mut pos, 6)?;
                let (n, v) = if b & 0x40 != 0 {
                    static_entry(idx)?
                } else {
                    self.dynamic(relative(idx)?, ric)?
                };
                push(list, n, v)?;
            } else if b & 0x40 != 0 {
                // Literal with name reference: 01 N T index(4), value.
                let idx = decode_int(block, &mut pos, 4)?;
                let n = if b & 0x10 != 0 {
                    static_entry(idx)?.0
                } else {
                    self.dynamic(relative(idx)?, ric)?.0
                };
                let v = decode_str(block, &mut pos, 7, max)?;
                push(list, n, v)?;
            } else if b & 0x20 != 0 {
                // Literal with literal name: 001 N H len(3), name, value.
                let n = decode_str(block, &mut pos, 3, max)?;
                let v = decode_str(block, &mut pos, 7, max)?;
                push(list, n, v)?;
            } else if b & 0x10 != 0 {
                // Indexed field line with post-base index: 0001 index(4).
                let idx = decode_int(block, &mut pos, 4)?;
                let abs = base.checked_add(idx).ok_or(QpackError::IndexOutOfRange)?;
                let (n, v) = self.dynamic(abs, ric)?;
                push(list, n, v)?;
            } else {
                // Literal with post-base name reference: 0000 N index(3), value.
                let idx = decode_int(block, &mut pos, 3)?;
                let abs = base.checked_add(idx).ok_or(QpackError::IndexOutOfRange)?;
                let n = self.dynamic(abs, ric)?.0;
                let v = decode_str(block, &mut pos, 7, max)?;
                push(list, n, v)?;
            }
        }
        Ok(())
    }
}

enum Op {
    Insert(Box<[u8]>, Box<[u8]>),
    Capacity(usize),
}
