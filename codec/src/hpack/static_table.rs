//! The static table: entries 1..=16 of every header index space. Part of the wire format.

/// The static table, index 1 first. An empty value means the entry names a key only.
pub const STATIC_TABLE: [(&str, &str); 16] = [
    (":service", ""),
    (":method", ""),
    (":topic", ""),
    ("traceparent", ""),
    ("tracestate", ""),
    ("baggage", ""),
    ("authorization", ""),
    ("content-type", ""),
    ("content-type", "application/flatbuffers"),
    ("content-type", "application/octet-stream"),
    ("content-type", "application/json"),
    ("content-type", "application/protobuf"),
    ("user-agent", ""),
    ("x-request-id", ""),
    ("idempotency-key", ""),
    ("x-retry-attempt", ""),
];

/// Number of static entries; dynamic entries start at index `STATIC_LEN + 1`.
pub const STATIC_LEN: u32 = STATIC_TABLE.len() as u32;

/// The static index whose name and value both match.
#[inline]
pub(crate) fn find_field(name: &[u8], value: &[u8]) -> Option<u32> {
    if name == b"content-type" {
        return match value {
            b"application/flatbuffers" => Some(9),
            b"application/octet-stream" => Some(10),
            b"application/json" => Some(11),
            b"application/protobuf" => Some(12),
            _ => None,
        };
    }
    None
}

/// The first static index with this name.
#[inline]
pub(crate) fn find_name(name: &[u8]) -> Option<u32> {
    Some(match name {
        b":service" => 1,
        b":method" => 2,
        b":topic" => 3,
        b"traceparent" => 4,
        b"tracestate" => 5,
        b"baggage" => 6,
        b"authorization" => 7,
        b"content-type" => 8,
        b"user-agent" => 13,
        b"x-request-id" => 14,
        b"idempotency-key" => 15,
        b"x-retry-attempt" => 16,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree_with_the_table() {
        for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
            let idx = i as u32 + 1;
            let first = STATIC_TABLE.iter().position(|(m, _)| m == n).unwrap() as u32 + 1;
            assert_eq!(find_name(n.as_bytes()), Some(first), "{n}");
            if !v.is_empty() {
                assert_eq!(find_field(n.as_bytes(), v.as_bytes()), Some(idx));
            }
        }
        assert_eq!(find_name(b"x-unknown"), None);
    }
}
