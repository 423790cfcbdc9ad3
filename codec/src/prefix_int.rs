//! Prefix integers (RFC 7541 §5.1), shared by HPACK (`hpack/`, values up to 2^32 − 1) and the
//! QPACK-style scheme (`qpack/`, RFC 9204 §4.1.1 uses the same representation, values up to
//! 2^62 − 1). Each caller maps [`IntError`] to its own error type.

/// Why a prefix integer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntError {
    /// The buffer ends inside the integer.
    Truncated,
    /// Above the caller's maximum, or more continuation bytes than it allows.
    Overflow,
}

/// Appends `value` with `prefix_bits` (1..=8) low bits in the first byte; `high` holds the
/// representation's pattern bits above the prefix.
#[inline]
pub(crate) fn encode(
    out: &mut (impl crate::OutBuf + ?Sized),
    high: u8,
    prefix_bits: u8,
    value: u64,
) {
    let max = (1u64 << prefix_bits) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a prefix integer at `*pos` (the pattern bits of the first byte are ignored) and
/// advances `*pos` past it on success. The value must not exceed `max`, and at most
/// `max_continuation` bytes may follow the first.
#[inline]
pub(crate) fn decode(
    buf: &[u8],
    pos: &mut usize,
    prefix_bits: u8,
    max: u64,
    max_continuation: u32,
) -> Result<u64, IntError> {
    let mask = (1u64 << prefix_bits) - 1;
    let first = *buf.get(*pos).ok_or(IntError::Truncated)?;
    let mut p = *pos + 1;
    let v = first as u64 & mask;
    if v < mask {
        *pos = p;
        return Ok(v);
    }
    let mut acc = mask;
    for i in 0..max_continuation {
        let b = *buf.get(p).ok_or(IntError::Truncated)?;
        p += 1;
        acc += ((b & 0x7f) as u64) << (7 * i);
        if acc > max {
            return Err(IntError::Overflow);
        }
        if b & 0x80 == 0 {
            *pos = p;
            return Ok(acc);
        }
    }
    Err(IntError::Overflow)
}
