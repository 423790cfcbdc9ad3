//! Packed `traceparent` values (docs/protocol.md §9.10), in force when both peers set the
//! protocol bit [`crate::features::PACKED_TRACE`].
//!
//! A W3C Trace Context `traceparent` (W3C Recommendation "Trace Context", §3.2) is 55
//! characters of lower-case hex: `version "-" trace-id "-" parent-id "-" trace-flags`
//! (2 + 32 + 16 + 2 digits). HPACK can only send it literally (57 bytes a call: the span id
//! changes on every call, so the dynamic table never helps). Netron sends the same field, in
//! the same "literal without indexing" representation with the static name index 4, with the
//! value's H bit set (Netron never uses Huffman coding, RFC 7541 §5.2) meaning *packed*:
//!
//! | packed length | bytes                                            | text rebuilt         |
//! |---------------|--------------------------------------------------|----------------------|
//! | 26            | version, trace-id (16), parent-id (8), flags     | all of it            |
//! | 10            | version, parent-id (8), flags                    | trace-id = the last one this direction packed |
//!
//! The decoder rebuilds exactly the text the encoder was given (only canonical values, lower
//! -case hex with the dashes in place, are packed; anything else goes literally), so
//! applications and intermediaries see an ordinary `traceparent`. Like the dynamic table,
//! "the last trace-id" is state of one connection direction, updated only by packed values.
//! A call within one trace (every call a service makes while it handles one request) costs
//! 12 bytes instead of 57; a new trace, 28.

/// Length of a version-00 `traceparent` in text.
pub(crate) const TEXT_LEN: usize = 55;
/// Packed length with the trace-id.
pub(crate) const FULL_LEN: usize = 26;
/// Packed length that reuses the last trace-id.
pub(crate) const SHORT_LEN: usize = 10;
/// The field name, whose static-table index is [`NAME_INDEX`].
pub(crate) const NAME: &[u8] = b"traceparent";
/// `traceparent`'s index in the static table.
pub(crate) const NAME_INDEX: u32 = 4;

/// A `traceparent` in binary: what the text's hex digits say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub version: u8,
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

#[inline]
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[inline]
fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_digit(s[2 * i])? << 4 | hex_digit(s[2 * i + 1])?;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline]
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
}

impl TraceParent {
    /// The binary form of `text` if it is canonical: 55 bytes, lower-case hex, dashes at 2,
    /// 35 and 52. Anything else (upper case, another length, a future version's extra
    /// fields) is `None` and goes literally, so the round trip is always exact.
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        if text.len() != TEXT_LEN || text[2] != b'-' || text[35] != b'-' || text[52] != b'-' {
            return None;
        }
        Some(Self {
            version: hex_bytes::<1>(&text[0..2])?[0],
            trace_id: hex_bytes(&text[3..35])?,
            parent_id: hex_bytes(&text[36..52])?,
            flags: hex_bytes::<1>(&text[53..55])?[0],
        })
    }

    /// The canonical text.
    pub(crate) fn text(&self) -> [u8; TEXT_LEN] {
        let mut t = [b'-'; TEXT_LEN];
        put_hex(&mut t[0..2], &[self.version]);
        put_hex(&mut t[3..35], &self.trace_id);
        put_hex(&mut t[36..52], &self.parent_id);
        put_hex(&mut t[53..55], &[self.flags]);
        t
    }

    /// Appends the packed bytes (26, or 10 when `reuse_trace_id`).
    pub(crate) fn pack(&self, reuse_trace_id: bool, out: &mut (impl crate::OutBuf + ?Sized)) {
        out.push(self.version);
        if !reuse_trace_id {
            out.extend_from_slice(&self.trace_id);
        }
        out.extend_from_slice(&self.parent_id);
        out.push(self.flags);
    }

    /// Reads packed bytes; a 10-byte value takes `last` as its trace-id.
    pub(crate) fn unpack(
        packed: &[u8],
        last: Option<[u8; 16]>,
    ) -> Result<Self, crate::HeaderError> {
        use crate::HeaderError::PackedValue;
        let (trace_id, rest) = match packed.len() {
            FULL_LEN => {
                let mut t = [0u8; 16];
                t.copy_from_slice(&packed[1..17]);
                (t, &packed[17..])
            }
            SHORT_LEN => (
                last.ok_or(PackedValue(
                    "a 10-byte packed traceparent before any trace-id on this connection",
                ))?,
                &packed[1..],
            ),
            _ => {
                return Err(PackedValue(
                    "a packed traceparent is 26 or 10 bytes (docs/protocol.md §9.10)",
                ));
            }
        };
        let mut parent_id = [0u8; 8];
        parent_id.copy_from_slice(&rest[..8]);
        Ok(Self {
            version: packed[0],
            trace_id,
            parent_id,
            flags: rest[8],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W3C: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_packs_and_rebuilds() {
        let tp = TraceParent::parse(W3C).expect("canonical");
        assert_eq!(tp.version, 0);
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(
            tp.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(tp.flags, 1);
        assert_eq!(&tp.text()[..], W3C);
        let mut full = Vec::new();
        tp.pack(false, &mut full);
        assert_eq!(full.len(), FULL_LEN);
        assert_eq!(TraceParent::unpack(&full, None), Ok(tp));
        let mut short = Vec::new();
        tp.pack(true, &mut short);
        assert_eq!(short.len(), SHORT_LEN);
        assert_eq!(TraceParent::unpack(&short, Some(tp.trace_id)), Ok(tp));
        assert!(TraceParent::unpack(&short, None).is_err());
        assert!(TraceParent::unpack(&full[..20], None).is_err());
    }

    #[test]
    fn non_canonical_values_are_not_packed() {
        let upper = W3C.to_ascii_uppercase();
        assert_eq!(TraceParent::parse(&upper), None);
        assert_eq!(TraceParent::parse(&W3C[..54]), None);
        let mut longer = W3C.to_vec();
        longer.extend_from_slice(b"-00");
        assert_eq!(TraceParent::parse(&longer), None);
        let mut dash = W3C.to_vec();
        dash[35] = b'x';
        assert_eq!(TraceParent::parse(&dash), None);
        let mut digit = W3C.to_vec();
        digit[10] = b'g';
        assert_eq!(TraceParent::parse(&digit), None);
    }

    proptest! {
        #[test]
        fn any_value_either_rebuilds_exactly_or_is_not_packed(v in proptest::collection::vec(
            prop_oneof![Just(b'-'), Just(b'a'), Just(b'f'), Just(b'0'), Just(b'9'), Just(b'A'), any::<u8>()],
            50..60,
        )) {
            if let Some(tp) = TraceParent::parse(&v) {
                prop_assert_eq!(&tp.text()[..], &v[..]);
            }
        }

        #[test]
        fn binary_values_round_trip(version: u8, trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) {
            let tp = TraceParent { version, trace_id, parent_id, flags };
            prop_assert_eq!(TraceParent::parse(&tp.text()), Some(tp));
        }
    }
}
