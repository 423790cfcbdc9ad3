//! Call status codes (the gRPC set) and the relative deadline carried in `arg`.

use core::time::Duration;

/// The outcome of a call. Same numbers and meanings as gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum StatusCode {
    /// Success.
    Ok = 0,
    /// The caller cancelled the call.
    Cancelled = 1,
    /// An error with no better code (also used for unknown codes received from a peer).
    Unknown = 2,
    /// The request was malformed.
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// The service, method or entity does not exist.
    NotFound = 5,
    /// The entity already exists.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A quota, limit or queue is full; retry later.
    ResourceExhausted = 8,
    /// The system is not in a state that allows this (e.g. incompatible protocol version).
    FailedPrecondition = 9,
    /// The operation was aborted (e.g. a concurrency conflict).
    Aborted = 10,
    /// A value was outside the valid range.
    OutOfRange = 11,
    /// The method is not implemented.
    Unimplemented = 12,
    /// An internal invariant broke.
    Internal = 13,
    /// The service is unavailable (e.g. shutting down, peer gone); retry may succeed.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The caller did not authenticate.
    Unauthenticated = 16,
}

impl StatusCode {
    /// The code for a wire value; unknown values map to [`StatusCode::Unknown`], as gRPC does.
    pub fn from_u16(v: u16) -> StatusCode {
        use StatusCode::*;
        const ALL: [StatusCode; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        ALL.get(v as usize).copied().unwrap_or(Unknown)
    }

    /// The code as sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl core::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

/// Relative deadlines as carried in the `arg` field of Request and StreamOpen frames.
///
/// `0` means no deadline. If bit 31 is clear the value is microseconds (1 µs .. ~35.8 min);
/// if it is set, the low 31 bits are milliseconds (up to ~24.8 days). Relative, so the two
/// clocks need not agree; the receiver adds it to its own clock on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline;

impl Deadline {
    /// Bit 31 selects milliseconds.
    pub const MILLIS_BIT: u32 = 1 << 31;
    /// Largest representable timeout (longer ones saturate to this).
    pub const MAX: Duration = Duration::from_millis((Self::MILLIS_BIT - 1) as u64);

    /// Encodes a remaining time. `None` encodes as 0 (no deadline). A zero or sub-microsecond
    /// remaining time encodes as 1 µs (already expired on arrival, but still a deadline).
    pub fn encode(remaining: Option<Duration>) -> u32 {
        let Some(d) = remaining else { return 0 };
        let us = d.as_micros();
        if us < Self::MILLIS_BIT as u128 {
            us.max(1) as u32
        } else {
            let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
            Self::MILLIS_BIT | (ms.min((Self::MILLIS_BIT - 1) as u128) as u32)
        }
    }

    /// Decodes an `arg` value into the remaining time, `None` for no deadline.
    pub fn decode(arg: u32) -> Option<Duration> {
        match arg {
            0 => None,
            a if a & Self::MILLIS_BIT != 0 => {
                Some(Duration::from_millis((a & !Self::MILLIS_BIT) as u64))
            }
            a => Some(Duration::from_micros(a as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_match_grpc_numbers() {
        assert_eq!(StatusCode::DeadlineExceeded as u16, 4);
        assert_eq!(StatusCode::Unauthenticated as u16, 16);
        for v in 0..=16u16 {
            assert_eq!(StatusCode::from_u16(v).as_u16(), v);
            let g = crate::generated::StatusCode(v);
            assert_eq!(
                g.variant_name().unwrap(),
                format!("{}", StatusCode::from_u16(v))
            );
        }
        assert_eq!(StatusCode::from_u16(17), StatusCode::Unknown);
    }

    #[test]
    fn deadline_encoding() {
        assert_eq!(Deadline::encode(None), 0);
        assert_eq!(Deadline::decode(0), None);
        assert_eq!(Deadline::encode(Some(Duration::ZERO)), 1);
        let d = Duration::from_millis(250);
        assert_eq!(Deadline::decode(Deadline::encode(Some(d))), Some(d));
        let long = Duration::from_secs(3 * 3600) + Duration::from_micros(1);
        let back = Deadline::decode(Deadline::encode(Some(long))).unwrap();
        assert!(back >= long && back - long < Duration::from_millis(1));
        let huge = Deadline::decode(Deadline::encode(Some(Duration::from_secs(u64::MAX)))).unwrap();
        assert_eq!(huge, Deadline::MAX);
    }
}
