//! The fixed 16-byte frame header, read in place.
//!
//! It has the layout of the FlatBuffers struct `netron.wire.FrameHeader` (see
//! `codec/schema/netron.fbs`): little-endian, no vtable, no alignment requirement.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{Flags, FrameKind};

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;

/// The fixed frame header, as it lies on the wire.
///
/// Borrow one from received bytes with [`FrameHeader::parse`] (no copy), or build one with
/// [`FrameHeader::new`]. Fields are little-endian wrappers; the accessors convert.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    length: U32,
    kind: u8,
    flags: u8,
    header_len: U16,
    id: U32,
    arg: U32,
}

const _: () = assert!(core::mem::size_of::<FrameHeader>() == HEADER_LEN);

impl FrameHeader {
    /// A header with the given fields.
    pub fn new(
        length: u32,
        kind: FrameKind,
        flags: Flags,
        header_len: u16,
        id: u32,
        arg: u32,
    ) -> Self {
        Self {
            length: U32::new(length),
            kind: kind as u8,
            flags: flags.bits(),
            header_len: U16::new(header_len),
            id: U32::new(id),
            arg: U32::new(arg),
        }
    }

    /// Borrows the header at the start of `buf` without copying, or `None` if `buf` is
    /// shorter than [`HEADER_LEN`]. No field is validated here: see
    /// [`crate::Frame::parse`] for that.
    #[inline]
    pub fn parse(buf: &[u8]) -> Option<&FrameHeader> {
        FrameHeader::ref_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Total frame length in bytes, this header included.
    #[inline]
    pub fn length(&self) -> u32 {
        self.length.get()
    }

    /// The raw kind byte (not validated).
    #[inline]
    pub fn kind_byte(&self) -> u8 {
        self.kind
    }

    /// The raw flags byte (not validated).
    #[inline]
    pub fn flags_byte(&self) -> u8 {
        self.flags
    }

    /// Length of the header block that follows this header.
    #[inline]
    pub fn header_len(&self) -> u16 {
        self.header_len.get()
    }

    /// Request, stream or subscription id.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id.get()
    }

    /// The kind-specific argument (deadline, sequence, credit, ...).
    #[inline]
    pub fn arg(&self) -> u32 {
        self.arg.get()
    }

    /// The header's 16 bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; HEADER_LEN] {
        zerocopy::transmute_ref!(self)
    }

    pub(crate) fn set_length(&mut self, length: u32) {
        self.length = U32::new(length);
    }

    pub(crate) fn set_header_len(&mut self, len: u16) {
        self.header_len = U16::new(len);
    }

    pub(crate) fn set_arg(&mut self, arg: u32) {
        self.arg = U32::new(arg);
    }

    pub(crate) fn set_flags(&mut self, flags: Flags) {
        self.flags = flags.bits();
    }
}

impl core::fmt::Debug for FrameHeader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameHeader")
            .field("length", &self.length())
            .field("kind", &FrameKind::from_u8(self.kind))
            .field("flags", &Flags::from_bits_retain(self.flags))
            .field("header_len", &self.header_len())
            .field("id", &self.id())
            .field("arg", &self.arg())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_flatbuffers_struct() {
        let h = FrameHeader::new(
            0x0102_0304,
            FrameKind::Request,
            Flags::IDEMPOTENT,
            0x0506,
            0x0708_090a,
            0x0b0c_0d0e,
        );
        let fb = crate::generated::FrameHeader::new(
            0x0102_0304,
            FrameKind::Request as u8,
            Flags::IDEMPOTENT.bits(),
            0x0506,
            0x0708_090a,
            0x0b0c_0d0e,
        );
        assert_eq!(h.as_bytes(), &fb.0);
        let parsed = FrameHeader::parse(&fb.0).unwrap();
        assert_eq!(parsed.length(), 0x0102_0304);
        assert_eq!(parsed.header_len(), 0x0506);
        assert_eq!(parsed.arg(), 0x0b0c_0d0e);
    }

    #[test]
    fn parse_needs_sixteen_bytes() {
        assert!(FrameHeader::parse(&[0u8; 15]).is_none());
        assert!(FrameHeader::parse(&[0u8; 16]).is_some());
    }
}
