//! Prefix integers and raw strings (RFC 7541 §5.1 integers; strings without Huffman).

use crate::HeaderError;

/// Appends `value` as a prefix integer with `prefix_bits` (1..=8) low bits in the first byte;
/// `high` holds the representation's pattern bits above the prefix.
#[inline]
pub(crate) fn encode_int(out: &mut Vec<u8>, high: u8, prefix_bits: u8, value: u32) {
    let max = ((1u16 << prefix_bits) - 1) as u32;
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

/// Reads a prefix integer at `*pos`. At most 5 continuation bytes; the value must fit in u32.
#[inline]
pub(crate) fn decode_int(buf: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<u32, HeaderError> {
    let max = ((1u16 << prefix_bits) - 1) as u32;
    let first = *buf.get(*pos).ok_or(HeaderError::Truncated)?;
    *pos += 1;
    let v = first as u32 & max;
    if v < max {
        return Ok(v);
    }
    let mut acc: u64 = max as u64;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(HeaderError::Truncated)?;
        *pos += 1;
        acc += ((b & 0x7f) as u64) << shift;
        if acc > u32::MAX as u64 {
            return Err(HeaderError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(acc as u32);
        }
        shift += 7;
        if shift > 28 {
            return Err(HeaderError::IntegerOverflow);
        }
    }
}

/// Appends a raw string: length as a 7-bit prefix integer with the Huffman bit clear, then bytes.
#[inline]
pub(crate) fn encode_str(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, 0x00, 7, s.len() as u32);
    out.extend_from_slice(s);
}

/// Borrows a raw string at `*pos`. The length is checked against the buffer before use.
#[inline]
pub(crate) fn decode_str<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], HeaderError> {
    let first = *buf.get(*pos).ok_or(HeaderError::Truncated)?;
    if first & 0x80 != 0 {
        return Err(HeaderError::HuffmanNotSupported);
    }
    let len = decode_int(buf, pos, 7)? as usize;
    let end = pos.checked_add(len).ok_or(HeaderError::Truncated)?;
    let s = buf.get(*pos..end).ok_or(HeaderError::Truncated)?;
    *pos = end;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix; C.1.3: 42 with 8 bits.
        let mut out = Vec::new();
        encode_int(&mut out, 0, 5, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        encode_int(&mut out, 0, 8, 42);
        assert_eq!(out, [0x2a]);
    }

    #[test]
    fn overflow_and_truncation_are_errors() {
        let mut p = 0;
        assert_eq!(
            decode_int(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut p, 7),
            Err(HeaderError::IntegerOverflow)
        );
        p = 0;
        assert_eq!(
            decode_int(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &mut p, 7),
            Err(HeaderError::IntegerOverflow)
        );
        p = 0;
        assert_eq!(
            decode_int(&[0x7f, 0x80], &mut p, 7),
            Err(HeaderError::Truncated)
        );
        p = 0;
        assert_eq!(
            decode_str(&[0x05, b'a'], &mut p),
            Err(HeaderError::Truncated)
        );
        p = 0;
        assert_eq!(
            decode_str(&[0x81, b'a'], &mut p),
            Err(HeaderError::HuffmanNotSupported)
        );
    }

    proptest! {
        #[test]
        fn integers_round_trip(v: u32, prefix in 1u8..=8) {
            let mut out = Vec::new();
            encode_int(&mut out, 0, prefix, v);
            let mut p = 0;
            prop_assert_eq!(decode_int(&out, &mut p, prefix), Ok(v));
            prop_assert_eq!(p, out.len());
        }
    }
}
