//! Prefix integers and raw strings (RFC 7541 §5.1 integers; strings without Huffman).

use crate::HeaderError;

/// Appends `value` as a prefix integer with `prefix_bits` (1..=8) low bits in the first byte;
/// `high` holds the representation's pattern bits above the prefix.
#[inline]
pub(crate) fn encode_int(
    out: &mut (impl crate::OutBuf + ?Sized),
    high: u8,
    prefix_bits: u8,
    value: u32,
) {
    crate::prefix_int::encode(out, high, prefix_bits, value.into());
}

/// Reads a prefix integer at `*pos`. At most 5 continuation bytes; the value must fit in u32.
#[inline]
pub(crate) fn decode_int(buf: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<u32, HeaderError> {
    use crate::prefix_int::{IntError, decode};
    match decode(buf, pos, prefix_bits, u32::MAX.into(), 5) {
        Ok(v) => Ok(v as u32),
        Err(IntError::Truncated) => Err(HeaderError::Truncated),
        Err(IntError::Overflow) => Err(HeaderError::IntegerOverflow),
    }
}

/// Appends a raw string: length as a 7-bit prefix integer with the Huffman bit clear, then bytes.
#[inline]
pub(crate) fn encode_str(out: &mut (impl crate::OutBuf + ?Sized), s: &[u8]) {
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
