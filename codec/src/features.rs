//! Capability bits carried in `Hello.features` and `Welcome.features` (docs/protocol.md §21).
//!
//! The 64-bit word has two halves with different negotiation rules:
//!
//! - **Protocol bits** (0–31, [`PROTOCOL_MASK`]) say which optional frame sequences the sender
//!   understands. They are *negotiated*: the server puts `Hello AND server` into the Welcome,
//!   and a feature is in force only if both peers set it. Frames of a feature that is not in
//!   force are never sent.
//! - **Offer bits** (32–63, [`OFFER_MASK`]) say what the sender itself *serves* (services,
//!   `$sys`, subscriptions, publishing). They are *announced*, not negotiated: the client's
//!   offer bits travel in the Hello and the server's own in the Welcome, so each side learns
//!   what the other serves instead of getting `Unimplemented` per call.
//!
//! Unknown bits of either half are ignored (masked off by [`negotiate`] and [`in_force`]).
//!
//! ```
//! use netron_codec::features::{self, *};
//!
//! let hello = STREAMS | EVENTS | PEER_CALLS | OFFERS_SERVICES;
//! let server = STREAMS | EVENTS | OFFERS_SERVICES | OFFERS_SYS;
//! let welcome = features::negotiate(hello, server);
//! assert_eq!(features::in_force(welcome, hello), STREAMS | EVENTS);
//! assert_eq!(features::offers(welcome), OFFERS_SERVICES | OFFERS_SYS); // what the server serves
//! assert_eq!(features::offers(hello), OFFERS_SERVICES); // what the client serves
//! ```

/// Protocol bit 0: streams (StreamOpen, StreamData, StreamEnd) and their flow control
/// (WindowUpdate), §22 and §23.
pub const STREAMS: u64 = 1 << 0;
/// Protocol bit 1: events (Subscribe, Unsubscribe, Event), §24.
pub const EVENTS: u64 = 1 << 1;
/// Protocol bit 2: peer calls: the acceptor may open calls, streams and subscriptions (even
/// ids) toward the initiator over the same connection (§21.3).
pub const PEER_CALLS: u64 = 1 << 2;
/// Protocol bit 3: QUIC only: Event frames may travel in QUIC datagrams (§27.6).
pub const DATAGRAM_EVENTS: u64 = 1 << 3;
/// Protocol bit 4: packed `traceparent` values in header blocks (§9.10): 26 bytes, or 10
/// within the trace of the previous one, instead of a 55-byte literal.
pub const PACKED_TRACE: u64 = 1 << 4;
/// Every protocol bit defined by version 1.
pub const PROTOCOL_BITS: u64 = STREAMS | EVENTS | PEER_CALLS | DATAGRAM_EVENTS | PACKED_TRACE;
/// The half of the word that is negotiated (bits 0–31).
pub const PROTOCOL_MASK: u64 = 0x0000_0000_ffff_ffff;

/// Offer bit 32: the sender exposes application services the peer may call.
pub const OFFERS_SERVICES: u64 = 1 << 32;
/// Offer bit 33: the sender serves the introspection service `$sys@1` (§25).
pub const OFFERS_SYS: u64 = 1 << 33;
/// Offer bit 34: the sender accepts Subscribe (it delivers events to subscribers).
pub const OFFERS_SUBSCRIPTIONS: u64 = 1 << 34;
/// Offer bit 35: the sender accepts published events (Event frames with id 0).
pub const OFFERS_PUBLISH: u64 = 1 << 35;
/// Offer bit 36: the sender re-exposes services of other nodes (a gateway); informative.
pub const OFFERS_GATEWAY: u64 = 1 << 36;
/// Every offer bit defined by version 1.
pub const OFFER_BITS: u64 =
    OFFERS_SERVICES | OFFERS_SYS | OFFERS_SUBSCRIPTIONS | OFFERS_PUBLISH | OFFERS_GATEWAY;
/// The half of the word that is announced, not negotiated (bits 32–63).
pub const OFFER_MASK: u64 = !PROTOCOL_MASK;

/// The `features` word a server puts in its Welcome: the protocol bits both sides set,
/// plus the server's own offer bits (the client's offer bits are not echoed).
#[inline]
pub const fn negotiate(hello: u64, server: u64) -> u64 {
    (hello & server & PROTOCOL_MASK) | (server & OFFER_MASK)
}

/// The protocol features in force, as a client computes them from the Welcome and its own
/// Hello (a server computes the same value as `in_force(hello, server)`).
#[inline]
pub const fn in_force(welcome: u64, own: u64) -> u64 {
    welcome & own & PROTOCOL_MASK
}

/// The offer bits of a Hello or Welcome `features` word: what its sender serves.
#[inline]
pub const fn offers(word: u64) -> u64 {
    word & OFFER_MASK
}

/// Human-readable names of the bits set in `word` that version 1 defines, in bit order.
pub fn names(word: u64) -> impl Iterator<Item = &'static str> {
    const NAMES: [(u64, &str); 10] = [
        (STREAMS, "streams"),
        (EVENTS, "events"),
        (PEER_CALLS, "peer_calls"),
        (DATAGRAM_EVENTS, "datagram_events"),
        (PACKED_TRACE, "packed_trace"),
        (OFFERS_SERVICES, "offers_services"),
        (OFFERS_SYS, "offers_sys"),
        (OFFERS_SUBSCRIPTIONS, "offers_subscriptions"),
        (OFFERS_PUBLISH, "offers_publish"),
        (OFFERS_GATEWAY, "offers_gateway"),
    ];
    NAMES
        .into_iter()
        .filter(move |(bit, _)| word & bit != 0)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_do_not_overlap() {
        assert_eq!(PROTOCOL_MASK & OFFER_MASK, 0);
        assert_eq!(PROTOCOL_MASK | OFFER_MASK, u64::MAX);
        assert_eq!(PROTOCOL_BITS & !PROTOCOL_MASK, 0);
        assert_eq!(OFFER_BITS & !OFFER_MASK, 0);
        assert_eq!(names(u64::MAX).count(), 10);
    }

    #[test]
    fn client_offers_are_not_echoed_and_unknown_bits_are_dropped() {
        let hello = STREAMS | (1 << 20) | OFFERS_SYS;
        let server = STREAMS | EVENTS | (1 << 20) | OFFERS_PUBLISH;
        let w = negotiate(hello, server);
        assert_eq!(w, STREAMS | (1 << 20) | OFFERS_PUBLISH);
        // The client ignores protocol bits it does not know (it did not set them).
        assert_eq!(in_force(w, STREAMS | OFFERS_SYS), STREAMS);
        assert_eq!(offers(w), OFFERS_PUBLISH);
    }
}
