//! A `quic://` connection's header streams (docs/protocol.md §27.4): the peer's encoder stream
//! feeds our decoder (and may release frames held behind blocked header blocks), its decoder
//! stream feeds our encoder, and ours go out through the link ([`Connection::take_header_streams`]).
//! The QUIC link owns the unidirectional streams themselves (netron-quic's router).

use netron_codec::qpack::HeaderStream;
use netron_codec::{DecodeError, Frame, FrameIter};

use super::{Caller, ConnError, Connection, Env};

impl<C: Caller> Connection<C> {
    /// Bytes of the peer's header `stream` (its type byte already taken off). On `Err` the
    /// connection is closing (as [`Connection::handle_input`]).
    pub(crate) fn on_header_stream(
        &mut self,
        stream: HeaderStream,
        bytes: &[u8],
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        if self.is_closing() {
            return Ok(());
        }
        self.last_rx = env.now;
        let result = match stream {
            HeaderStream::Decoder => self
                .enc
                .on_decoder_stream(bytes)
                .map_err(|e| DecodeError::from(e).into()),
            HeaderStream::Encoder => self.on_encoder_stream(bytes, env),
        };
        if let Err(e) = &result {
            if !self.is_closing() {
                self.fail(e.clone(), env);
            }
        }
        self.recharge();
        result
    }

    fn on_encoder_stream(&mut self, bytes: &[u8], env: &mut Env<'_>) -> Result<(), ConnError> {
        let mut released = Vec::new();
        self.dec
            .on_encoder_stream(bytes, &mut released)
            .map_err(DecodeError::from)?;
        let limits = self.limits();
        for (id, frames, cancel) in released {
            // Whole frames that passed the decoder's checks when they came; a later one of
            // them may block again (it is then held again, with those after it).
            for frame in FrameIter::new(&frames, &limits) {
                self.dispatch(frame?, env)?;
                if self.is_closing() {
                    return Ok(());
                }
            }
            if cancel {
                self.dec.on_reset(id);
            }
        }
        Ok(())
    }

    /// Keeps `frame` behind its exchange's blocked header block, within the core's buffer
    /// budget (`ProtocolConfig::max_buffer_bytes`).
    pub(super) fn hold_blocked(&mut self, frame: Frame<'_>) -> Result<(), ConnError> {
        if !self
            .dec
            .hold(frame.id(), frame.as_bytes(), self.budget_room())
        {
            return Err(self.over_budget(format_args!(
                "a {}-byte frame waiting for its header-table insertions (§27.4)",
                frame.len()
            )));
        }
        self.recharge();
        Ok(())
    }

    /// The QUIC stream of exchange `id` was reset by the peer, or we stopped reading it, before
    /// its frames all arrived: header blocks on it may never be decoded, so the peer's encoder
    /// is told to forget the exchange (RFC 9204 §4.4.2).
    pub(crate) fn on_exchange_reset(&mut self, id: u32) {
        self.dec.on_reset(id);
    }

    /// Whether either header stream has bytes for the link.
    #[inline]
    pub(crate) fn header_streams_want_write(&self) -> bool {
        self.enc.has_output() || self.dec.has_output()
    }

    /// Appends what our encoder stream (`encoder`) and decoder stream (`decoder`) have to
    /// send, without their type bytes (the link writes those once).
    pub(crate) fn take_header_streams(&mut self, encoder: &mut Vec<u8>, decoder: &mut Vec<u8>) {
        self.enc.take_output(encoder);
        self.dec.take_output(decoder);
    }
}
