//! Prefix integers up to 2^62 − 1 and raw strings (RFC 9204 §4.1, RFC 7541 §5.1; no Huffman).

use super::QpackError;

/// Largest integer QPACK carries (a QUIC variable-length integer).
pub(crate) const MAX_INT: u64 = (1 << 62) - 1;

/// Appends `value` with `prefix_bits` (1..=8) low bits in the first byte; `high` holds the
/// pattern bits above the prefix.
pub(crate) fn encode_int(
    out: &mut (impl crate::OutBuf + ?Sized),
    high: u8,
    prefix_bits: u8,
    value: u64,
) {
    crate::prefix_int::encode(out, high, prefix_bits, value);
}

/// Reads a prefix integer at `*pos` (the pattern bits of the first byte are ignored).
///
/// `Truncated` if the buffer ends inside it; `IntegerOverflow` above 2^62 − 1 or after more
/// than 9 continuation bytes.
pub(crate) fn decode_int(buf: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<u64, QpackError> {
    use crate::prefix_int::{IntError, decode};
    decode(buf, pos, prefix_bits, MAX_INT, 9).map_err(|e| match e {
        IntError::Truncated => QpackError::Truncated,
        IntError::Overflow => QpackError::IntegerOverflow,
    })
}

/// Appends a raw string: H bit (just above the prefix) clear, length, bytes.
pub(crate) fn encode_str(
    out: &mut (impl crate::OutBuf + ?Sized),
    high: u8,
    prefix_bits: u8,
    s: &[u8],
) {
    encode_int(out, high, prefix_bits, s.len() as u64);
    out.extend_from_slice(s);
}

/// Borrows a raw string at `*pos` whose length has a `prefix_bits` prefix and whose H bit is
/// the bit just above it. The length is checked against `max_len` before the bytes are
/// awaited, so an incremental reader never buffers more than `max_len` bytes for it.
pub(crate) fn decode_str<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    prefix_bits: u8,
    max_len: usize,
) -> Result<&'a [u8], QpackError> {
    let first = *buf.get(*pos).ok_or(QpackError::Truncated)?;
    if first & (1 << prefix_bits) != 0 {
        return Err(QpackError::HuffmanNotSupported);
    }
    let mut p = *pos;
    let len = decode_int(buf, &mut p, prefix_bits)?;
    if len > max_len as u64 {
        return Err(QpackError::StringTooLong { len, max: max_len });
    }
    let end = p + len as usize;
    let s = buf.get(p..end).ok_or(QpackError::Truncated)?;
    *pos = end;
    Ok(s)
}
