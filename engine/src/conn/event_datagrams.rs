//! Events in QUIC datagrams (docs/protocol.md §27.6): a subscription whose Subscribe set
//! `datagrams` (the subscriber accepts loss, `SubscribeOptions::datagrams`) gets its Event
//! frames in QUIC datagrams when DATAGRAM_EVENTS is in force, each datagram one record of one
//! whole Event frame whose header block references no dynamic table (Required Insert Count 0),
//! so it never blocks and is never acknowledged. An event larger than the path's datagram
//! limit goes on the subscription's stream. Losses show as sequence gaps (§24.3), reordering
//! drops the late event.
//!
//! The connection keeps the encoded datagrams in its events state
//! ([`Connection::take_datagram`]); the QUIC link sends them after each transmit and hands
//! the datagrams it receives to [`Connection::on_datagram`].

use bytes::{Bytes, BytesMut};
use netron_codec::hpack::Header;
use netron_codec::{FrameKind, HeaderBlockEncoder, HeaderError};

use super::header_coding::HeaderSend;
use super::*;

/// Bytes of encoded datagrams a connection keeps for its link at most; events beyond are
/// dropped (their numbers spent: the subscriber sees the gap), as a full datagram queue in
/// quinn-proto drops its oldest.
pub(crate) const MAX_DATAGRAM_BYTES: usize = 1 << 20;

/// The datagram side of a connection's events state.
#[derive(Debug, Default)]
pub(crate) struct Datagrams {
    /// The largest datagram the peer takes on the path now (the link sets it before each
    /// transmit); 0: none (the peer accepts no datagrams, or not a QUIC connection).
    pub(crate) max: usize,
    /// Served subscriptions whose events go in datagrams.
    pub(crate) served: usize,
    /// Encoded datagrams for the link, oldest first, and their bytes.
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Where datagrams are kept (split off as they are queued: one allocation per few
    /// datagrams, not one each).
    arena: BytesMut,
    /// Where a datagram's frame is encoded (made on first use, reused).
    batch: Option<BatchEncoder>,
}

/// The connection's header encoder, coding blocks for datagrams (RIC 0, §27.6).
struct DatagramBlocks<'a>(&'a mut HeaderSend);

impl HeaderBlockEncoder for DatagramBlocks<'_> {
    fn encode_block<B: netron_codec::OutBuf + ?Sized>(
        &mut self,
        _id: u32,
        headers: &[Header<'_>],
        out: &mut B,
    ) -> Result<(), HeaderError> {
        self.0.encode_datagram(headers, out)
    }
}

impl<C: Caller> Connection<C> {
    /// Whether DATAGRAM_EVENTS is in force on this connection (§21, §27.6).
    pub(super) fn datagram_events_in_force(&self) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|s| s.features & netron_codec::features::DATAGRAM_EVENTS != 0)
    }

    /// Whether a served subscription takes its events in datagrams (only then does a QUIC
    /// link look up the path's datagram limit before a transmit).
    pub(crate) fn serves_datagrams(&self) -> bool {
        self.events.as_ref().is_some_and(|e| e.datagrams.served > 0)
    }

    /// The largest datagram the peer takes on the path now (`None`: none): set by a QUIC
    /// link before each transmit.
    pub(crate) fn set_max_datagram(&mut self, max: Option<usize>) {
        if let Some(e) = self.events.as_mut() {
            e.datagrams.max = max.unwrap_or(0);
        }
    }

    /// The next encoded datagram for the link.
    pub(crate) fn take_datagram(&mut self) -> Option<Bytes> {
        let d = &mut self.events.as_mut()?.datagrams;
        let b = d.out.pop_front()?;
        d.out_bytes -= b.len();
        Some(b)
    }

    /// Encodes Event `seq` of subscription `id` as a datagram, if it fits the path's limit.
    /// `false`: it does not fit (or datagrams are off): send it on the stream.
    pub(super) fn encode_datagram_event(
        &mut self,
        id: u32,
        seq: u32,
        topic: &[u8],
        payload: &[u8],
    ) -> bool {
        let max = self.events.as_ref().map_or(0, |e| e.datagrams.max);
        // The frame's header and payload alone already exceed the limit.
        if max == 0 || 16 + payload.len() + topic.len() > max {
            return false;
        }
        let Some(e) = self.events.as_mut() else {
            return false;
        };
        let d = &mut e.datagrams;
        let b = d
            .batch
            .get_or_insert_with(|| BatchEncoder::new(Limits::default()));
        b.clear();
        let r = b.frame(FrameKind::Event, id).and_then(|f| {
            f.arg(seq)
                .headers(&mut DatagramBlocks(&mut self.enc), &[Header::topic(topic)])?
                .payload(payload)
                .finish()
        });
        let frame = b.as_slice();
        if r.is_err() || frame.len() > max {
            return false;
        }
        if d.out_bytes + frame.len() <= MAX_DATAGRAM_BYTES {
            if d.arena.capacity() < frame.len() {
                d.arena.reserve(frame.len().max(64 << 10));
            }
            d.arena.extend_from_slice(frame);
            let bytes = d.arena.split().freeze();
            d.out_bytes += bytes.len();
            d.out.push_back(bytes);
        }
        // Else the link has not taken what was queued: this event is lost (its number is
        // spent, the subscriber sees the gap), as in a full datagram queue.
        true
    }

    /// A QUIC datagram from the peer (§27.6): one record of whole Event frames, delivered as
    /// those frames are on a stream, except that an event whose number is not after the
    /// highest seen on its subscription (a reordered datagram) is dropped.
    ///
    /// # Errors
    /// A connection error: datagrams without DATAGRAM_EVENTS in force or any frame other than
    /// Event (`quic_unexpected_frame`), a malformed frame or header block (the decoder's own
    /// errors, `qpack_dynamic_in_datagram` for a block that references the dynamic table).
    pub(crate) fn on_datagram(&mut self, bytes: &[u8], env: &mut Env<'_>) -> Result<(), ConnError> {
        let r = self.datagram_frames(bytes, env);
        if let Err(e) = &r
            && !self.is_closing()
        {
            self.fail(e.clone(), env);
        }
        r
    }

    fn datagram_frames(&mut self, bytes: &[u8], env: &mut Env<'_>) -> Result<(), ConnError> {
        if !self.is_open() || self.is_closing() {
            return Ok(());
        }
        env.stats.bytes_in += bytes.len() as u64;
        let unexpected = |why: String| ConnError {
            counter: "quic_unexpected_frame",
            status: StatusCode::Internal,
            message: why,
        };
        if !self.datagram_events_in_force() {
            return Err(unexpected(
                "a QUIC datagram without DATAGRAM_EVENTS in force (docs/protocol.md §27.6)".into(),
            ));
        }
        let limits = self.limits();
        for frame in netron_codec::decode_batch(bytes, &limits) {
            let frame = frame?;
            env.stats.frames_in += 1;
            if frame.kind() != FrameKind::Event {
                return Err(unexpected(format!(
                    "a {:?} frame in a QUIC datagram, which carries Event frames only \
                     (docs/protocol.md §27.6)",
                    frame.kind()
                )));
            }
            self.dec
                .decode_datagram(frame.header_block(), &mut self.headers)?;
            netron_codec::control::verify_body(&frame)?;
            self.on_event_frame(frame, env)?;
        }
        Ok(())
    }
}
