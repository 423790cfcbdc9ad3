//! Frame kinds and flags, and which combinations are legal.

/// The kind of a frame (byte 4 of the header).
///
/// The numbers are part of the wire format and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameKind {
    /// Client → server: settings offer. Body: `Hello` table.
    Hello = 1,
    /// Server → client: settings in force. Body: `Welcome` table.
    Welcome = 2,
    /// Server → client: handshake refused. Body: `Reject` table.
    Reject = 3,
    /// A unary call. Headers: `:service`, `:method`, metadata. Payload: request bytes.
    /// `arg`: deadline (see [`crate::Deadline`]).
    Request = 4,
    /// The successful reply to a Request. Payload: reply bytes.
    Response = 5,
    /// A failed call (id ≠ 0) or a connection error (id = 0). Body: `ErrorBody` table.
    Error = 6,
    /// Opens a stream. Headers like Request; payload: optional first message. `arg`: deadline.
    StreamOpen = 7,
    /// One stream message. `arg`: sequence number (0, 1, 2, ... per stream and direction).
    StreamData = 8,
    /// Ends the sender's half of a stream: empty payload = OK, or an `ErrorBody` table.
    StreamEnd = 9,
    /// Cancels the call or stream `id`. No payload.
    Cancel = 10,
    /// Grants `arg` more bytes of credit for stream `id` (0 = the connection). No payload.
    WindowUpdate = 11,
    /// Subscribes to a topic pattern under subscription id `id`. Body: `Subscribe` table.
    Subscribe = 12,
    /// Ends subscription `id`. No payload.
    Unsubscribe = 13,
    /// A published event. Headers: `:topic`, metadata. `id`: subscription id (0 when
    /// publishing). `arg`: sequence per subscription. Payload: event bytes.
    Event = 14,
    /// Keepalive probe; `id` and `arg` are opaque and echoed in the Pong. No payload.
    Ping = 15,
    /// Answer to a Ping, echoing its `id` and `arg`. No payload.
    Pong = 16,
    /// The sender accepts no new calls. Body: `GoAway` table.
    GoAway = 17,
}

/// What a frame kind carries after its header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Nothing: the payload must be empty.
    Empty,
    /// Opaque application bytes (possibly compressed).
    Opaque,
    /// A FlatBuffers table of the named type, verified before use.
    Table(&'static str),
    /// Either empty or a FlatBuffers table of the named type.
    EmptyOrTable(&'static str),
}

impl FrameKind {
    /// Every kind, in wire order.
    pub const ALL: [FrameKind; 17] = [
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Reject,
        FrameKind::Request,
        FrameKind::Response,
        FrameKind::Error,
        FrameKind::StreamOpen,
        FrameKind::StreamData,
        FrameKind::StreamEnd,
        FrameKind::Cancel,
        FrameKind::WindowUpdate,
        FrameKind::Subscribe,
        FrameKind::Unsubscribe,
        FrameKind::Event,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::GoAway,
    ];

    /// The kind for a wire byte, or `None` if unknown.
    #[inline]
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        if (1..=17).contains(&b) {
            Some(Self::ALL[(b - 1) as usize])
        } else {
            None
        }
    }

    /// The kind's name as used in docs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "Hello",
            FrameKind::Welcome => "Welcome",
            FrameKind::Reject => "Reject",
            FrameKind::Request => "Request",
            FrameKind::Response => "Response",
            FrameKind::Error => "Error",
            FrameKind::StreamOpen => "StreamOpen",
            FrameKind::StreamData => "StreamData",
            FrameKind::StreamEnd => "StreamEnd",
            FrameKind::Cancel => "Cancel",
            FrameKind::WindowUpdate => "WindowUpdate",
            FrameKind::Subscribe => "Subscribe",
            FrameKind::Unsubscribe => "Unsubscribe",
            FrameKind::Event => "Event",
            FrameKind::Ping => "Ping",
            FrameKind::Pong => "Pong",
            FrameKind::GoAway => "GoAway",
        }
    }

    /// What the frame carries after its header block.
    pub const fn body(self) -> Body {
        match self {
            FrameKind::Hello => Body::Table("Hello"),
            FrameKind::Welcome => Body::Table("Welcome"),
            FrameKind::Reject => Body::Table("Reject"),
            FrameKind::Error => Body::Table("ErrorBody"),
            FrameKind::GoAway => Body::Table("GoAway"),
            FrameKind::Subscribe => Body::Table("Subscribe"),
            FrameKind::StreamEnd => Body::EmptyOrTable("ErrorBody"),
            FrameKind::Request
            | FrameKind::Response
            | FrameKind::StreamOpen
            | FrameKind::StreamData
            | FrameKind::Event => Body::Opaque,
            FrameKind::Cancel
            | FrameKind::WindowUpdate
            | FrameKind::Unsubscribe
            | FrameKind::Ping
            | FrameKind::Pong => Body::Empty,
        }
    }

    /// Whether frames of this kind may carry a header block.
    #[inline]
    pub const fn may_have_headers(self) -> bool {
        matches!(
            self,
            FrameKind::Request
                | FrameKind::Response
                | FrameKind::StreamOpen
                | FrameKind::StreamData
                | FrameKind::StreamEnd
                | FrameKind::Event
        )
    }

    /// The flags that may be set on frames of this kind; any other set bit is a protocol error.
    #[inline]
    pub fn allowed_flags(self) -> Flags {
        const TABLE: [Flags; 18] = {
            let mut t = [Flags::empty(); 18];
            let mut i = 0;
            while i < FrameKind::ALL.len() {
                let k = FrameKind::ALL[i];
                t[k as usize] = Flags::from_bits_retain(k.compute_allowed_flags().bits());
                i += 1;
            }
            t
        };
        TABLE[self as usize]
    }

    const fn compute_allowed_flags(self) -> Flags {
        let headers = if self.may_have_headers() {
            Flags::HAS_HEADERS.bits()
        } else {
            0
        };
        let payload = if matches!(self.body(), Body::Opaque) {
            Flags::COMPRESSED.bits()
        } else {
            0
        };
        let specific = match self {
            FrameKind::Request => Flags::IDEMPOTENT.bits() | Flags::HIGH_PRIORITY.bits(),
            FrameKind::StreamOpen => {
                Flags::IDEMPOTENT.bits() | Flags::HIGH_PRIORITY.bits() | Flags::END_STREAM.bits()
            }
            FrameKind::StreamData => Flags::END_STREAM.bits() | Flags::HIGH_PRIORITY.bits(),
            FrameKind::Response | FrameKind::Event => Flags::HIGH_PRIORITY.bits(),
            _ => 0,
        };
        Flags::from_bits_retain(headers | payload | specific)
    }
}

bitflags::bitflags! {
    /// Frame flags (byte 5 of the header).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Flags: u8 {
        /// The payload is compressed with the negotiated algorithm (see docs/protocol.md).
        const COMPRESSED = 0x01;
        /// The sender's half of the stream ends with this frame.
        const END_STREAM = 0x02;
        /// The call has no side effects beyond the first success: it may be retried.
        const IDEMPOTENT = 0x04;
        /// Schedule before normal-priority work.
        const HIGH_PRIORITY = 0x08;
        /// A header block follows the fixed header (set exactly when `header_len > 0`).
        const HAS_HEADERS = 0x10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_byte() {
        for k in FrameKind::ALL {
            assert_eq!(FrameKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(FrameKind::from_u8(0), None);
        assert_eq!(FrameKind::from_u8(18), None);
        assert_eq!(FrameKind::from_u8(255), None);
    }

    #[test]
    fn generated_enum_agrees() {
        for k in FrameKind::ALL {
            assert_eq!(
                crate::generated::FrameKind(k as u8).variant_name(),
                Some(k.name())
            );
        }
    }

    #[test]
    fn control_frames_take_no_compression() {
        assert!(!FrameKind::Hello.allowed_flags().contains(Flags::COMPRESSED));
        assert!(
            FrameKind::Request
                .allowed_flags()
                .contains(Flags::COMPRESSED | Flags::HAS_HEADERS)
        );
        assert!(!FrameKind::Ping.allowed_flags().contains(Flags::HAS_HEADERS));
    }
}
