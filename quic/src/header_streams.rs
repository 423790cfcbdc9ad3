//! The two unidirectional header streams of each side (docs/protocol.md §27.2, §27.4): our
//! encoder stream (type `0x02`) and decoder stream (type `0x03`), opened on first use, and the
//! peer's, recognised by their first byte. Sans-IO, part of the [`crate::router::Router`].
//!
//! The instructions themselves are the connection's (netron-codec's `QpackEncoder` and
//! `QpackDecoder`); this module only carries their bytes. Both streams are *critical*: one
//! that ends (FIN or RESET_STREAM), or a second one of a type, is a connection error
//! `quic_critical_stream`. A unidirectional stream of another type is read and discarded
//! (RFC 9204 §4.2 leaves unknown types to the application; reading it keeps the peer's
//! flow-control credit moving, and its bytes are never kept).

use std::fmt::Debug;
use std::hash::Hash;

use netron_codec::StatusCode;
pub use netron_codec::qpack::HeaderStream;

use crate::router::{RouteError, StreamIo};

fn index(which: HeaderStream) -> usize {
    match which {
        HeaderStream::Encoder => 0,
        HeaderStream::Decoder => 1,
    }
}

/// One of our header streams: its handle once opened, and the bytes QUIC has not taken
/// (the type byte first, until it is taken).
#[derive(Debug)]
struct Out<S> {
    stream: Option<S>,
    buf: Vec<u8>,
    started: bool,
}

impl<S> Default for Out<S> {
    fn default() -> Self {
        Out {
            stream: None,
            buf: Vec::new(),
            started: false,
        }
    }
}

/// What a peer's unidirectional stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Header(HeaderStream),
    /// Another type: read and discarded.
    Other,
}

/// Both sides' header streams of one connection (see the module documentation).
#[derive(Debug)]
pub(crate) struct HeaderStreams<S> {
    ours: [Out<S>; 2],
    /// The peer's unidirectional streams whose type byte arrived.
    peer: Vec<(S, Peer)>,
    /// Bytes of ours flow control has not taken yet.
    pending: usize,
}

impl<S> Default for HeaderStreams<S> {
    fn default() -> Self {
        HeaderStreams {
            ours: [Out::default(), Out::default()],
            peer: Vec::new(),
            pending: 0,
        }
    }
}

/// Unidirectional streams of other types remembered at most (their bytes are discarded; a
/// peer opening more is bounded by its `max_concurrent_uni_streams`, this only bounds the
/// list).
const MAX_OTHER: usize = 16;

fn critical(what: String) -> RouteError {
    RouteError {
        counter: "quic_critical_stream",
        status: StatusCode::Internal,
        message: what,
    }
}

impl<S: Copy + Eq + Hash + Debug> HeaderStreams<S> {
    /// Bytes of ours QUIC has not taken yet.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending
    }

    /// Our header streams opened so far (they never end while the connection lives).
    pub(crate) fn opened(&self) -> usize {
        self.ours.iter().filter(|o| o.stream.is_some()).count()
    }

    /// Queues `bytes` on our `which` stream (opened on first use, its type byte first) and
    /// writes what flow control takes.
    pub(crate) fn send<I: StreamIo<Stream = S>>(
        &mut self,
        io: &mut I,
        which: HeaderStream,
        bytes: &[u8],
    ) {
        if bytes.is_empty() {
            return;
        }
        let o = &mut self.ours[index(which)];
        if !o.started {
            o.started = true;
            o.buf.push(which.type_byte());
            self.pending += 1;
        }
        o.buf.extend_from_slice(bytes);
        self.pending += bytes.len();
        self.flush(io, which);
    }

    fn flush<I: StreamIo<Stream = S>>(&mut self, io: &mut I, which: HeaderStream) {
        let o = &mut self.ours[index(which)];
        if o.stream.is_none() {
            // `None`: the peer's unidirectional-stream limit is reached; retried when it rises.
            o.stream = io.open_uni();
        }
        let Some(s) = o.stream else {
            return;
        };
        let mut taken = 0;
        while taken < o.buf.len() {
            match io.write(s, &o.buf[taken..]) {
                Some(0) => break,
                Some(n) => taken += n,
                // Stopped by the peer: reported by `on_stopped`; nothing more goes out.
                None => {
                    taken = o.buf.len();
                    break;
                }
            }
        }
        o.buf.drain(..taken);
        self.pending -= taken;
    }

    /// A stream can take bytes again (or the peer allows more streams): returns whether `s`
    /// was one of ours.
    pub(crate) fn on_writable<I: StreamIo<Stream = S>>(&mut self, io: &mut I, s: S) -> bool {
        for which in [HeaderStream::Encoder, HeaderStream::Decoder] {
            if self.ours[index(which)].stream == Some(s) {
                self.flush(io, which);
                return true;
            }
        }
        false
    }

    /// The peer raised its stream limits: opens our header streams that wait for one.
    pub(crate) fn on_streams_available<I: StreamIo<Stream = S>>(&mut self, io: &mut I) {
        for which in [HeaderStream::Encoder, HeaderStream::Decoder] {
            let o = &self.ours[index(which)];
            if o.stream.is_none() && !o.buf.is_empty() {
                self.flush(io, which);
            }
        }
    }

    /// Bytes arrived on the peer's unidirectional stream `s` (`fin`: it ended after them):
    /// header-stream bytes go to `deliver`, without the type byte.
    ///
    /// # Errors
    /// `quic_critical_stream` for a second stream of a header type, or a header stream that
    /// ends.
    pub(crate) fn on_bytes(
        &mut self,
        s: S,
        mut bytes: &[u8],
        fin: bool,
        mut deliver: impl FnMut(HeaderStream, &[u8]),
    ) -> Result<(), RouteError> {
        let kind = match self.peer.iter().find(|(p, _)| *p == s) {
            Some((_, k)) => Some(*k),
            None => match bytes.split_first() {
                None => None,
                Some((&t, rest)) => {
                    let k = HeaderStream::from_type_byte(t).map_or(Peer::Other, Peer::Header);
                    if k != Peer::Other && self.peer.iter().any(|(_, p)| *p == k) {
                        let name = if k == Peer::Header(HeaderStream::Encoder) {
                            "encoder"
                        } else {
                            "decoder"
                        };
                        return Err(critical(format!(
                            "a second header {name} stream (type {t:#04x}) from the peer"
                        )));
                    }
                    let others = self.peer.iter().filter(|(_, p)| *p == Peer::Other).count();
                    if k != Peer::Other || others < MAX_OTHER {
                        self.peer.push((s, k));
                    }
                    bytes = rest;
                    Some(k)
                }
            },
        };
        match kind {
            Some(Peer::Header(which)) => {
                if !bytes.is_empty() {
                    deliver(which, bytes);
                }
                if fin {
                    return Err(critical(format!(
                        "the peer ended its header {which:?} stream (§27.2: it lives as long as \
                         the connection)"
                    )));
                }
            }
            Some(Peer::Other) | None => {
                if fin {
                    self.peer.retain(|(p, _)| *p != s);
                }
            }
        }
        Ok(())
    }

    /// The peer reset its unidirectional stream `s`, or stopped ours.
    ///
    /// # Errors
    /// `quic_critical_stream` if it is a header stream.
    pub(crate) fn on_closed(&mut self, s: S) -> Result<(), RouteError> {
        if let Some(at) = self.peer.iter().position(|(p, _)| *p == s) {
            let (_, k) = self.peer.remove(at);
            if let Peer::Header(which) = k {
                return Err(critical(format!(
                    "the peer reset its header {which:?} stream"
                )));
            }
            return Ok(());
        }
        for which in [HeaderStream::Encoder, HeaderStream::Decoder] {
            if self.ours[index(which)].stream == Some(s) {
                let o = &mut self.ours[index(which)];
                self.pending -= o.buf.len();
                o.buf = Vec::new();
                return Err(critical(format!(
                    "the peer stopped our header {which:?} stream"
                )));
            }
        }
        Ok(())
    }
}
