//! netron-codec: the Netron wire format, with no I/O and no threads.
//!
//! A third party can speak the protocol with this crate alone. The normative byte-level
//! description is `docs/protocol.md`; this crate is its reference implementation.
//!
//! - [`FrameHeader`]: the fixed 16-byte header, read in place (zerocopy).
//! - [`Frame`]: a borrowed, validated view of one frame; [`FrameIter`] walks a buffer of many.
//! - [`BatchEncoder`]: encodes frames into one reusable buffer, flushed as one write.
//! - [`hpack`]: header compression (static + bounded dynamic table per direction).
//! - [`compress`]: negotiated payload compression with bounded decompression.
//! - [`control`]: the FlatBuffers control bodies (Hello, Welcome, ...), verified before use.
//! - [`handshake`]: the preface and Hello/Welcome/Reject negotiation as sans-IO state machines.
//! - [`features`]: the capability bits of Hello/Welcome (protocol features and offers).
//! - [`stream`]: stream sequence and half-close rules, flow-control windows.
//! - [`subject`]: event subjects and subscription patterns (`orders.*`, `orders.>`).
//! - [`sys`]: the `$sys` introspection service and `name@^1.2` version requirements.
//! - [`record`]: frames on record transports, with fragmentation of frames larger than a record.
//! - [`qpack`]: header compression across independent streams (QUIC), QPACK-style.
//!
//! ```
//! use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits, hpack};
//!
//! let limits = Limits::default();
//! let mut headers_out = hpack::HeaderEncoder::new(4096);
//! let mut headers_in = hpack::HeaderDecoder::new(4096, 16 * 1024);
//! let mut batch = BatchEncoder::new(limits);
//! for id in 1..=3 {
//!     batch
//!         .request(id, Some(std::time::Duration::from_millis(100)))
//!         .unwrap()
//!         .headers(&mut headers_out, &[hpack::Header::service(b"calc@1.0.0"), hpack::Header::method(b"add")])
//!         .unwrap()
//!         .payload(b"\x01\x02")
//!         .finish()
//!         .unwrap();
//! }
//! let wire = batch.as_slice();
//! let mut list = hpack::HeaderList::default();
//! let mut frames = FrameIter::new(wire, &limits);
//! while let Some(frame) = frames.next() {
//!     let frame = frame.unwrap();
//!     assert_eq!(frame.kind(), FrameKind::Request);
//!     headers_in.decode_into(frame.header_block(), &mut list).unwrap();
//!     assert_eq!(list.method(), Some(&b"add"[..]));
//!     assert_eq!(frame.payload(), b"\x01\x02");
//! }
//! assert_eq!(frames.consumed(), wire.len());
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod batch;
pub mod compress;
pub mod control;
mod error;
pub mod features;
mod frame;
#[allow(unsafe_code)]
pub(crate) mod generated;
pub mod handshake;
mod header;
pub mod hpack;
mod kind;
mod limits;
mod prefix_int;
pub mod qpack;
pub mod record;
mod status;
pub mod stream;
pub mod subject;
pub mod sys;
pub mod txbuf;

pub use batch::{BatchEncoder, FrameBuilder, HeaderBlockEncoder, PayloadBuf};
pub use compress::Compression;
pub use error::{CompressionError, DecodeError, EncodeError, HandshakeError, HeaderError};
pub use frame::{Frame, FrameIter, decode_batch};
pub use header::{FrameHeader, HEADER_LEN};
pub use kind::{Body, Flags, FrameKind};
pub use limits::Limits;
pub use status::{Deadline, StatusCode};
pub use txbuf::{OutBuf, TxBuf};

/// Raw FlatBuffers types generated from `codec/schema/netron.fbs`, for callers that build or
/// read control bodies themselves.
pub mod wire {
    pub use crate::generated::*;
}
