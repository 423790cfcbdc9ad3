//! Stream and datagram operations of [`QuicEndpoint`]: open, read, write, finish, reset and
//! stop (cancellation, §27.2 rule 4). After any of them, drain `poll_transmit` and `poll_event`.

use bytes::Bytes;
use quinn_proto::{
    Dir, FinishError, ReadError, ReadableError, SendDatagramError, StreamId, VarInt, WriteError,
};

use crate::endpoint::{ConnId, QuicEndpoint};
use crate::error::QuicError;

/// What one [`QuicEndpoint::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `len` bytes were appended; `fin`: the peer finished the stream and everything is read
    /// (the stream is then gone: do not read it again).
    Bytes {
        /// Bytes appended to the output.
        len: usize,
        /// The stream's end was reached.
        fin: bool,
    },
    /// Nothing to read now; a [`crate::QuicEvent::Readable`] follows when there is.
    Blocked,
    /// The peer reset the stream (RESET_STREAM with this code): the opener's reset is a Cancel,
    /// the callee's an `Error(Unavailable)` (§27.2 rule 4). The stream is gone.
    Reset {
        /// The peer's application error code.
        code: u64,
    },
}

fn code(c: u64) -> VarInt {
    VarInt::from_u64(c).unwrap_or(VarInt::MAX)
}

impl QuicEndpoint {
    /// Opens a bidirectional stream (a call, a Netron stream, a subscription, or the control
    /// stream). `Ok(None)`: the peer's concurrent-stream limit is reached; wait for
    /// [`crate::QuicEvent::StreamsAvailable`].
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn open_bi(&mut self, conn: ConnId) -> Result<Option<StreamId>, QuicError> {
        Ok(self.slot(conn)?.conn.streams().open(Dir::Bi))
    }

    /// Opens a unidirectional stream (the header encoder and decoder streams, §27.2).
    /// `Ok(None)`: the peer's limit is reached.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn open_uni(&mut self, conn: ConnId) -> Result<Option<StreamId>, QuicError> {
        Ok(self.slot(conn)?.conn.streams().open(Dir::Uni))
    }

    /// Writes as much of `data` as flow control allows; `Ok(0)` means blocked (a
    /// [`crate::QuicEvent::Writable`] follows). Bytes are copied into quinn-proto's send buffer.
    ///
    /// # Errors
    /// [`QuicError::Stopped`] if the peer sent STOP_SENDING; [`QuicError::ClosedStream`] after
    /// finish/reset; [`QuicError::NoConnection`].
    pub fn write(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        data: &[u8],
    ) -> Result<usize, QuicError> {
        match self.slot(conn)?.conn.send_stream(stream).write(data) {
            Ok(n) => Ok(n),
            Err(WriteError::Blocked) => Ok(0),
            Err(WriteError::Stopped(c)) => Err(QuicError::Stopped {
                stream,
                code: c.into_inner(),
            }),
            Err(WriteError::ClosedStream) => Err(QuicError::ClosedStream(stream)),
        }
    }

    /// Finishes our sending side (FIN after the last frame, §27.2 rule 3).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn finish(&mut self, conn: ConnId, stream: StreamId) -> Result<(), QuicError> {
        match self.slot(conn)?.conn.send_stream(stream).finish() {
            Ok(()) => Ok(()),
            Err(FinishError::Stopped(c)) => Err(QuicError::Stopped {
                stream,
                code: c.into_inner(),
            }),
            Err(FinishError::ClosedStream) => Err(QuicError::ClosedStream(stream)),
        }
    }

    /// Abandons our sending side with RESET_STREAM (`code`, at most 2^62 − 1): cancellation.
    ///
    /// # Errors
    /// [`QuicError::ClosedStream`] if already finished-and-acknowledged or reset;
    /// [`QuicError::NoConnection`].
    pub fn reset(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        error_code: u64,
    ) -> Result<(), QuicError> {
        self.slot(conn)?
            .conn
            .send_stream(stream)
            .reset(code(error_code))
            .map_err(|_| QuicError::ClosedStream(stream))
    }

    /// Asks the peer to stop sending on `stream` (STOP_SENDING with `code`) and discards what
    /// arrives on it.
    ///
    /// # Errors
    /// [`QuicError::ClosedStream`] if our receiving side is already gone;
    /// [`QuicError::NoConnection`].
    pub fn stop(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        error_code: u64,
    ) -> Result<(), QuicError> {
        self.slot(conn)?
            .conn
            .recv_stream(stream)
            .stop(code(error_code))
            .map_err(|_| QuicError::ClosedStream(stream))
    }

    /// Appends up to `max` in-order bytes of `stream` to `out` (what the engine's connection
    /// gets as `Input::Bytes`, §27.2 rule 1).
    ///
    /// # Errors
    /// [`QuicError::ClosedStream`] for a stream already read to its end or reset, or never
    /// opened; [`QuicError::NoConnection`].
    pub fn read(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<Read, QuicError> {
        let slot = self.slot(conn)?;
        let mut recv = slot.conn.recv_stream(stream);
        let mut chunks = match recv.read(true) {
            Ok(c) => c,
            Err(ReadableError::ClosedStream | ReadableError::IllegalOrderedRead) => {
                return Err(QuicError::ClosedStream(stream));
            }
        };
        let mut len = 0;
        let outcome = loop {
            if len >= max {
                break Read::Bytes { len, fin: false };
            }
            match chunks.next(max - len) {
                Ok(Some(chunk)) => {
                    out.extend_from_slice(&chunk.bytes);
                    len += chunk.bytes.len();
                }
                Ok(None) => break Read::Bytes { len, fin: true },
                Err(ReadError::Blocked) if len > 0 => break Read::Bytes { len, fin: false },
                Err(ReadError::Blocked) => break Read::Blocked,
                Err(ReadError::Reset(c)) => {
                    break Read::Reset {
                        code: c.into_inner(),
                    };
                }
            }
        };
        // Whether flow-control credit must be sent is picked up by the next poll_transmit.
        let _ = chunks.finalize();
        Ok(outcome)
    }

    /// Sends a QUIC datagram (events only, §27.6), dropping the oldest queued one if the queue
    /// is full.
    ///
    /// # Errors
    /// [`QuicError::Datagram`] if datagrams are off (`QuicSettings::datagrams`, ours or the
    /// peer's) or `data` exceeds the path's limit; [`QuicError::NoConnection`].
    pub fn send_datagram(&mut self, conn: ConnId, data: Bytes) -> Result<(), QuicError> {
        self.slot(conn)?
            .conn
            .datagrams()
            .send(data, true)
            .map_err(|e| match e {
                SendDatagramError::UnsupportedByPeer => {
                    QuicError::Datagram("the peer accepts no datagrams".into())
                }
                SendDatagramError::Disabled => {
                    QuicError::Datagram("QuicSettings::datagrams is off".into())
                }
                SendDatagramError::TooLarge => {
                    QuicError::Datagram("larger than the path's datagram limit".into())
                }
                other => QuicError::Datagram(other.to_string()),
            })
    }

    /// The largest datagram the peer takes on the connection's path now; `None` if it accepts
    /// none (it did not enable datagrams, RFC 9221) or ours are off.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn max_datagram_size(&mut self, conn: ConnId) -> Result<Option<usize>, QuicError> {
        Ok(self.slot(conn)?.conn.datagrams().max_size())
    }

    /// The next received QUIC datagram, if any.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn recv_datagram(&mut self, conn: ConnId) -> Result<Option<Bytes>, QuicError> {
        Ok(self.slot(conn)?.conn.datagrams().recv())
    }
}
