//! Stream sequence and half-close rules, and flow-control window arithmetic (docs/protocol.md
//! §22 and §23), as sans-IO state a connection keeps per stream.
//!
//! - [`Stream`] tracks one stream as seen by one peer: its two halves (what it sends, what it
//!   receives), the sequence numbers of StreamData in each direction, and the final frames that
//!   decide when the stream's id may be reused.
//! - [`Window`] is one flow-control window (per stream and direction, or per connection and
//!   direction): credit in bytes, consumed by StreamOpen/StreamData payloads (a frame may be
//!   sent while the credit is positive) and raised by WindowUpdate, with every edge of the
//!   `u32` arithmetic checked.
//!
//! The codec checks frames one at a time; these types check sequences. A violation is a
//! [`StreamError`], which a receiver treats as a connection error (`Error` with id 0, the
//! status of [`StreamError::status`], then close).
//!
//! ```
//! use netron_codec::stream::{Role, Stream, Received, Window, MAX_WINDOW};
//!
//! // The callee's view of a stream opened with StreamOpen (no END_STREAM).
//! let mut s = Stream::new(Role::Callee, false);
//! assert_eq!(s.recv_data(0, false), Ok(Received::Message { end: false }));
//! assert_eq!(s.recv_data(1, true), Ok(Received::Message { end: true }));
//! assert!(s.recv_data(2, false).is_err()); // the opener's half is closed
//! assert_eq!(s.send_data(true), Ok(0)); // the callee's last message, sequence 0
//! assert!(s.is_finished());
//!
//! let mut w = Window::new(65_536);
//! w.consume(100_000).unwrap(); // allowed: the credit was positive
//! assert_eq!(w.credit(), -34_464);
//! assert!(w.consume(1).is_err()); // beyond its credit
//! w.grant(34_465).unwrap();
//! w.consume(1).unwrap();
//! w.grant(MAX_WINDOW).unwrap();
//! assert!(w.grant(1).is_err()); // above 2^31 - 1
//! ```

use crate::StatusCode;

/// Largest flow-control window (and so largest WindowUpdate increment): 2^31 − 1 bytes, as in
/// HTTP/2 (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = 0x7fff_ffff;

/// The connection window of each direction starts at this many times the stream window.
pub const CONNECTION_WINDOW_FACTOR: u32 = 16;

/// The initial connection-level window for a negotiated `initial_stream_window`:
/// `min(16 × initial_stream_window, 2^31 − 1)`.
pub const fn initial_connection_window(initial_stream_window: u32) -> u32 {
    let w = initial_stream_window as u64 * CONNECTION_WINDOW_FACTOR as u64;
    if w > MAX_WINDOW as u64 {
        MAX_WINDOW
    } else {
        w as u32
    }
}

/// A stream or flow-control rule was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A frame for a half that is already closed (after END_STREAM, StreamEnd or Cancel).
    #[error("{frame} on a stream half that is already closed")]
    HalfClosed {
        /// Which frame arrived (or was to be sent).
        frame: &'static str,
    },
    /// A StreamData sequence number other than the next one (a gap, a duplicate or a
    /// reordering; every transport is ordered per stream, so this is a broken peer).
    #[error("stream sequence number {got}, expected {expected}")]
    Sequence {
        /// The next sequence number.
        expected: u32,
        /// The one received.
        got: u32,
    },
    /// A frame kind that only the other role may send on a stream (Cancel from the callee,
    /// Error from the opener).
    #[error("{frame} is not sent by the stream's {role}")]
    WrongDirection {
        /// The frame.
        frame: &'static str,
        /// The role of the sender.
        role: &'static str,
    },
    /// Flow-controlled bytes while the credit the receiver granted was used up.
    #[error("{wanted} flow-controlled bytes with {available} bytes of credit left")]
    FlowControl {
        /// Bytes the frame carries.
        wanted: u32,
        /// Credit left.
        available: u32,
    },
    /// A WindowUpdate that would raise a window above 2^31 − 1.
    #[error("window update of {increment} on a window of {window} exceeds 2^31 - 1")]
    WindowOverflow {
        /// The window before the update.
        window: u32,
        /// The increment.
        increment: u32,
    },
    /// A WindowUpdate with an increment of 0.
    #[error("window update with an increment of 0")]
    ZeroIncrement,
}

impl StreamError {
    /// A stable label for counters.
    pub fn counter(&self) -> &'static str {
        match self {
            StreamError::HalfClosed { .. } => "stream_half_closed",
            StreamError::Sequence { .. } => "stream_sequence",
            StreamError::WrongDirection { .. } => "stream_wrong_direction",
            StreamError::FlowControl { .. } => "flow_control",
            StreamError::WindowOverflow { .. } => "window_overflow",
            StreamError::ZeroIncrement => "zero_window_update",
        }
    }

    /// The status of the connection error a receiver sends.
    pub fn status(&self) -> StatusCode {
        match self {
            StreamError::FlowControl { .. } => StatusCode::ResourceExhausted,
            _ => StatusCode::Internal,
        }
    }
}

/// One flow-control window (§23): the sender's credit in bytes; the receiver keeps an
/// identical copy of what it granted.
///
/// A frame with `n > 0` flow-controlled bytes may be sent while the credit is **positive**
/// (at least 1 byte), whatever `n` is; the credit then drops by `n` and may become negative,
/// and nothing more is sent until WindowUpdates bring it above 0 again. So a message larger
/// than the window never deadlocks, and a receiver buffers at most
/// `granted + max_frame_size − 1` bytes. The credit never exceeds [`MAX_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    credit: i64,
}

impl Window {
    /// A window with `initial` bytes of credit, clamped to [`MAX_WINDOW`].
    pub const fn new(initial: u32) -> Self {
        Self {
            credit: if initial > MAX_WINDOW {
                MAX_WINDOW as i64
            } else {
                initial as i64
            },
        }
    }

    /// The credit: bytes granted and not yet used; negative after a frame larger than what
    /// was left.
    pub const fn credit(&self) -> i64 {
        self.credit
    }

    /// Credit left, 0 if it is negative.
    pub const fn available(&self) -> u32 {
        if self.credit > 0 {
            self.credit as u32
        } else {
            0
        }
    }

    /// Whether a frame with flow-controlled bytes may be sent now (the credit is positive).
    pub const fn is_open(&self) -> bool {
        self.credit > 0
    }

    /// Consumes `n` flow-controlled bytes (a StreamOpen or StreamData payload as sent).
    /// `n = 0` is always allowed.
    ///
    /// # Errors
    ///
    /// [`StreamError::FlowControl`] if `n > 0` and the credit is not positive; the window is
    /// unchanged.
    pub fn consume(&mut self, n: u32) -> Result<(), StreamError> {
        if n > 0 && self.credit <= 0 {
            return Err(StreamError::FlowControl {
                wanted: n,
                available: 0,
            });
        }
        self.credit -= n as i64;
        Ok(())
    }

    /// Adds `increment` bytes of credit (a WindowUpdate).
    ///
    /// # Errors
    ///
    /// [`StreamError::ZeroIncrement`] for 0, [`StreamError::WindowOverflow`] if the credit
    /// would exceed [`MAX_WINDOW`]; the window is unchanged.
    pub fn grant(&mut self, increment: u32) -> Result<(), StreamError> {
        if increment == 0 {
            return Err(StreamError::ZeroIncrement);
        }
        let sum = self.credit + increment as i64;
        if sum > MAX_WINDOW as i64 {
            return Err(StreamError::WindowOverflow {
                window: self.available(),
                increment,
            });
        }
        self.credit = sum;
        Ok(())
    }

    /// The receiver's WindowUpdate policy (**SHOULD**, §23.4): once the credit has fallen to
    /// half of `target` or less, grant what brings it back to `target` (clamped to
    /// [`MAX_WINDOW`]; at most `u32::MAX` at once). Returns the increment to send, or `None`
    /// while more than half is left. The caller sends a WindowUpdate with the increment and
    /// calls [`Window::grant`] with it.
    pub fn update_due(&self, target: u32) -> Option<u32> {
        let target = target.min(MAX_WINDOW) as i64;
        (self.credit <= target / 2 && self.credit < target)
            .then(|| (target - self.credit).min(u32::MAX as i64) as u32)
    }
}

/// The credit one StreamData message consumes (docs/protocol.md §23.1): its payload length as
/// sent, and at least 1 byte, so that an empty message is not free. Without the floor, empty
/// messages could be sent without any credit and each one costs its receiver a queue entry
/// until the application reads it: a peer could fill a receiver's memory with them (HTTP/2's
/// "empty frames flood", CVE-2019-9518). With it, a window of `w` bytes bounds the messages a
/// receiver holds to `w` as well as their bytes.
///
/// ```
/// use netron_codec::stream::message_credit;
/// assert_eq!(message_credit(0), 1);
/// assert_eq!(message_credit(1), 1);
/// assert_eq!(message_credit(4096), 4096);
/// ```
pub const fn message_credit(payload_len: usize) -> u32 {
    if payload_len == 0 {
        1
    } else if payload_len > u32::MAX as usize {
        u32::MAX
    } else {
        payload_len as u32
    }
}

/// Consumes `n` flow-controlled bytes from a stream window and the connection window
/// together: both or neither (§23.3).
///
/// # Errors
///
/// [`StreamError::FlowControl`] if `n > 0` and either credit is not positive; neither
/// window changes.
pub fn consume_both(
    stream: &mut Window,
    connection: &mut Window,
    n: u32,
) -> Result<(), StreamError> {
    if n > 0 && !(stream.is_open() && connection.is_open()) {
        return Err(StreamError::FlowControl {
            wanted: n,
            available: 0,
        });
    }
    stream.credit -= n as i64;
    connection.credit -= n as i64;
    Ok(())
}

/// Which side of a stream this state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The peer that sent StreamOpen.
    Opener,
    /// The peer that received it.
    Callee,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Opener => "opener",
            Role::Callee => "callee",
        }
    }
}

/// What a received stream frame meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A message (StreamData); `end`: it was the peer's last (END_STREAM).
    Message {
        /// END_STREAM was set.
        end: bool,
    },
    /// The peer closed its half with StreamEnd; `error`: with an ErrorBody. A StreamEnd with
    /// an error from the callee ends the whole stream (the opener stops sending).
    Ended {
        /// The StreamEnd carried an ErrorBody.
        error: bool,
    },
    /// The callee ended the stream with `Error(id)`: both halves are closed.
    Aborted,
    /// The opener cancelled (Cancel): the callee stops and, if it has not sent its final
    /// frame, answers `Error(id, Cancelled)` ([`Stream::must_answer_cancel`]).
    Cancelled,
}

/// One stream as seen by one peer (§22).
///
/// The opener's half is opened by StreamOpen (closed at once if it carries END_STREAM); each
/// half then carries StreamData numbered 0, 1, 2, … (modulo 2^32) and is closed by END_STREAM,
/// StreamEnd or, for the opener, Cancel. The callee sends exactly one *final frame*: the frame
/// that closes its half (StreamData with END_STREAM or StreamEnd) or `Error(id)`. The stream is
/// finished, and its id free (§14), when [`Stream::is_finished`] says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    role: Role,
    send_open: bool,
    recv_open: bool,
    send_seq: u32,
    recv_seq: u32,
    /// The callee's final frame was sent (callee) or received (opener).
    final_done: bool,
    /// The final frame ended the whole stream (an error or a cancel).
    aborted: bool,
    cancelled: bool,
}

impl Stream {
    /// The state right after StreamOpen was sent (`Role::Opener`) or received
    /// (`Role::Callee`); `open_end`: the StreamOpen carried END_STREAM.
    pub fn new(role: Role, open_end: bool) -> Self {
        let opener_half_open = !open_end;
        Self {
            role,
            send_open: match role {
                Role::Opener => opener_half_open,
                Role::Callee => true,
            },
            recv_open: match role {
                Role::Opener => true,
                Role::Callee => opener_half_open,
            },
            send_seq: 0,
            recv_seq: 0,
            final_done: false,
            aborted: false,
            cancelled: false,
        }
    }

    /// This peer's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this peer may still send on the stream.
    pub fn can_send(&self) -> bool {
        self.send_open
    }

    /// Whether the peer may still send on the stream.
    pub fn can_receive(&self) -> bool {
        self.recv_open
    }

    /// The sequence number the next received StreamData must carry.
    pub fn next_recv_seq(&self) -> u32 {
        self.recv_seq
    }

    /// Whether the stream is over for this peer, so its id may be reused (opener) or forgotten
    /// (callee): the callee's final frame was sent/received and the opener's half is closed
    /// (or the stream was aborted).
    pub fn is_finished(&self) -> bool {
        self.final_done && (self.aborted || !self.send_open && !self.recv_open)
    }

    /// Callee only: the opener cancelled and the callee has not sent its final frame yet, so it
    /// must answer `Error(id, Cancelled)` ([`Stream::send_error`]).
    pub fn must_answer_cancel(&self) -> bool {
        self.role == Role::Callee && self.cancelled && !self.final_done
    }

    fn recv_half(&self, frame: &'static str) -> Result<(), StreamError> {
        if self.recv_open {
            Ok(())
        } else {
            Err(StreamError::HalfClosed { frame })
        }
    }

    fn peer_final(&mut self, aborted: bool) {
        // Opener: the callee's final frame arrived.
        self.final_done = true;
        self.recv_open = false;
        if aborted {
            self.aborted = true;
            self.send_open = false;
        }
    }

    /// A StreamData with sequence number `seq` arrived; `end`: END_STREAM.
    ///
    /// # Errors
    ///
    /// [`StreamError::HalfClosed`] if the peer's half is closed, [`StreamError::Sequence`] if
    /// `seq` is not the next number. The state is unchanged on error.
    pub fn recv_data(&mut self, seq: u32, end: bool) -> Result<Received, StreamError> {
        self.recv_half("StreamData")?;
        if seq != self.recv_seq {
            return Err(StreamError::Sequence {
                expected: self.recv_seq,
                got: seq,
            });
        }
        self.recv_seq = self.recv_seq.wrapping_add(1);
        if end {
            match self.role {
                Role::Opener => self.peer_final(false),
                Role::Callee => self.recv_open = false,
            }
        }
        Ok(Received::Message { end })
    }

    /// A StreamEnd arrived; `error`: it carried an ErrorBody.
    ///
    /// # Errors
    ///
    /// [`StreamError::HalfClosed`] if the peer's half is already closed.
    pub fn recv_end(&mut self, error: bool) -> Result<Received, StreamError> {
        self.recv_half("StreamEnd")?;
        match self.role {
            Role::Opener => self.peer_final(error),
            Role::Callee => self.recv_open = false,
        }
        Ok(Received::Ended { error })
    }

    /// `Error(id)` arrived (the callee's final frame: the stream is over).
    ///
    /// # Errors
    ///
    /// [`StreamError::WrongDirection`] at the callee (the opener cancels with Cancel);
    /// [`StreamError::HalfClosed`] if the callee's final frame already arrived.
    pub fn recv_error(&mut self) -> Result<Received, StreamError> {
        if self.role == Role::Callee {
            return Err(StreamError::WrongDirection {
                frame: "Error",
                role: Role::Opener.name(),
            });
        }
        if self.final_done {
            return Err(StreamError::HalfClosed { frame: "Error" });
        }
        self.peer_final(true);
        Ok(Received::Aborted)
    }

    /// `Cancel(id)` arrived. Allowed whether or not the opener's half is already closed (an
    /// opener may abandon a stream after its last message); it closes that half.
    ///
    /// # Errors
    ///
    /// [`StreamError::WrongDirection`] at the opener (the callee ends with Error).
    pub fn recv_cancel(&mut self) -> Result<Received, StreamError> {
        if self.role == Role::Opener {
            return Err(StreamError::WrongDirection {
                frame: "Cancel",
                role: Role::Callee.name(),
            });
        }
        self.recv_open = false;
        self.cancelled = true;
        Ok(Received::Cancelled)
    }

    fn send_half(&self, frame: &'static str) -> Result<(), StreamError> {
        if self.send_open {
            Ok(())
        } else {
            Err(StreamError::HalfClosed { frame })
        }
    }

    fn own_final(&mut self, aborted: bool) {
        // Callee: its final frame goes out.
        self.final_done = true;
        self.send_open = false;
        if aborted {
            self.aborted = true;
            self.recv_open = false;
        }
    }

    /// Sends a StreamData (`end`: with END_STREAM); returns the sequence number to put in
    /// `arg`.
    ///
    /// # Errors
    ///
    /// [`StreamError::HalfClosed`] if this peer's half is closed.
    pub fn send_data(&mut self, end: bool) -> Result<u32, StreamError> {
        self.send_half("StreamData")?;
        let seq = self.send_seq;
        self.send_seq = self.send_seq.wrapping_add(1);
        if end {
            match self.role {
                Role::Opener => self.send_open = false,
                Role::Callee => self.own_final(false),
            }
        }
        Ok(seq)
    }

    /// Sends a StreamEnd (`error`: with an ErrorBody; from the callee that ends the stream).
    ///
    /// # Errors
    ///
    /// [`StreamError::HalfClosed`] if this peer's half is closed.
    pub fn send_end(&mut self, error: bool) -> Result<(), StreamError> {
        self.send_half("StreamEnd")?;
        match self.role {
            Role::Opener => self.send_open = false,
            Role::Callee => self.own_final(error),
        }
        Ok(())
    }

    /// Callee: sends `Error(id)`, its final frame (e.g. `Cancelled` after a Cancel).
    ///
    /// # Errors
    ///
    /// [`StreamError::WrongDirection`] at the opener; [`StreamError::HalfClosed`] if the final
    /// frame was already sent.
    pub fn send_error(&mut self) -> Result<(), StreamError> {
        if self.role == Role::Opener {
            return Err(StreamError::WrongDirection {
                frame: "Error",
                role: Role::Opener.name(),
            });
        }
        if self.final_done {
            return Err(StreamError::HalfClosed { frame: "Error" });
        }
        self.own_final(true);
        Ok(())
    }

    /// Opener: sends `Cancel(id)`, which closes its half (if still open). Allowed until the
    /// callee's final frame has arrived.
    ///
    /// # Errors
    ///
    /// [`StreamError::WrongDirection`] at the callee; [`StreamError::HalfClosed`] if the
    /// stream is already finished.
    pub fn send_cancel(&mut self) -> Result<(), StreamError> {
        if self.role == Role::Callee {
            return Err(StreamError::WrongDirection {
                frame: "Cancel",
                role: Role::Callee.name(),
            });
        }
        if self.is_finished() {
            return Err(StreamError::HalfClosed { frame: "Cancel" });
        }
        self.send_open = false;
        self.cancelled = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_window_saturates() {
        assert_eq!(initial_connection_window(256 << 10), 4 << 20);
        assert_eq!(initial_connection_window(0), 0);
        assert_eq!(initial_connection_window(u32::MAX), MAX_WINDOW);
        assert_eq!(initial_connection_window(MAX_WINDOW / 16 + 1), MAX_WINDOW);
    }

    #[test]
    fn cancel_then_error_cancelled_finishes_both_sides() {
        let mut opener = Stream::new(Role::Opener, false);
        let mut callee = Stream::new(Role::Callee, false);
        opener.send_cancel().unwrap();
        assert_eq!(callee.recv_cancel(), Ok(Received::Cancelled));
        assert!(callee.must_answer_cancel());
        callee.send_error().unwrap();
        assert!(!callee.must_answer_cancel());
        assert!(callee.is_finished());
        assert!(!opener.is_finished());
        assert_eq!(opener.recv_error(), Ok(Received::Aborted));
        assert!(opener.is_finished());
    }

    #[test]
    fn early_ok_final_keeps_the_opener_half_open() {
        let mut opener = Stream::new(Role::Opener, false);
        assert_eq!(
            opener.recv_data(0, true),
            Ok(Received::Message { end: true })
        );
        assert!(!opener.is_finished(), "opener still sending");
        assert_eq!(opener.send_data(false), Ok(0));
        assert_eq!(opener.send_data(true), Ok(1));
        assert!(opener.is_finished());
    }

    #[test]
    fn error_end_from_callee_stops_the_opener() {
        let mut opener = Stream::new(Role::Opener, false);
        assert_eq!(opener.recv_end(true), Ok(Received::Ended { error: true }));
        assert!(opener.is_finished());
        assert_eq!(
            opener.send_data(false),
            Err(StreamError::HalfClosed {
                frame: "StreamData"
            })
        );
    }
}
