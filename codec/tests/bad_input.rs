//! Bad input: each malformed frame yields its specific error, never a panic, and nothing is
//! allocated in proportion to what a length field claims.

use netron_codec::compress::{Compressor, Decompressor};
use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder};
use netron_codec::{
    BatchEncoder, Compression, CompressionError, DecodeError, Flags, Frame, FrameHeader, FrameIter,
    FrameKind, HeaderError, Limits, decode_batch,
};
use proptest::prelude::*;

fn raw(length: u32, kind: u8, flags: u8, header_len: u16, id: u32, arg: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&length.to_le_bytes());
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&header_len.to_le_bytes());
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&arg.to_le_bytes());
    v
}

fn parse(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    Frame::parse(buf, &Limits::default())
}

#[test]
fn truncated_frames_ask_for_more() {
    let mut f = raw(20, FrameKind::Response as u8, 0, 0, 1, 0);
    f.extend_from_slice(b"abcd");
    for cut in 0..f.len() {
        let needed = if cut < 16 { 16 - cut } else { 20 - cut };
        assert_eq!(
            parse(&f[..cut]).unwrap_err(),
            DecodeError::Incomplete { needed }
        );
    }
    assert!(parse(&f).is_ok());
    // Stream mode stops quietly and reports what is missing; record mode calls it an error.
    let mut it = FrameIter::new(&f[..18], &Limits::default());
    assert!(it.next().is_none());
    assert_eq!((it.consumed(), it.needed()), (0, 2));
    let mut it = decode_batch(&f[..18], &Limits::default());
    assert_eq!(it.next(), Some(Err(DecodeError::Incomplete { needed: 2 })));
    assert_eq!(it.next(), None);
}

#[test]
fn lengths_are_checked_before_waiting_for_bytes() {
    // A frame claiming 4 GiB is refused from its 16 header bytes alone.
    let f = raw(u32::MAX, FrameKind::Response as u8, 0, 0, 1, 0);
    assert_eq!(
        parse(&f).unwrap_err(),
        DecodeError::FrameTooLarge {
            length: u32::MAX,
            max: 16 << 20
        }
    );
    let f = raw(15, FrameKind::Response as u8, 0, 0, 1, 0);
    assert_eq!(
        parse(&f).unwrap_err(),
        DecodeError::LengthTooShort { length: 15 }
    );
    let f = raw(0, FrameKind::Response as u8, 0, 0, 1, 0);
    assert_eq!(
        parse(&f).unwrap_err(),
        DecodeError::LengthTooShort { length: 0 }
    );
}

#[test]
fn unknown_kinds_and_bad_flags() {
    for k in [0u8, 18, 0x7f, 0xff] {
        assert_eq!(
            parse(&raw(16, k, 0, 0, 0, 0)).unwrap_err(),
            DecodeError::UnknownKind(k)
        );
    }
    // Reserved bit.
    assert_eq!(
        parse(&raw(16, FrameKind::Request as u8, 0x80, 0, 1, 0)).unwrap_err(),
        DecodeError::BadFlags {
            kind: FrameKind::Request,
            flags: 0x80
        }
    );
    // COMPRESSED on a control frame.
    assert_eq!(
        parse(&raw(
            16,
            FrameKind::Ping as u8,
            Flags::COMPRESSED.bits(),
            0,
            1,
            0
        ))
        .unwrap_err(),
        DecodeError::BadFlags {
            kind: FrameKind::Ping,
            flags: 1
        }
    );
    // HAS_HEADERS without a header block, and a header block without HAS_HEADERS.
    assert_eq!(
        parse(&raw(
            16,
            FrameKind::Request as u8,
            Flags::HAS_HEADERS.bits(),
            0,
            1,
            0
        ))
        .unwrap_err(),
        DecodeError::BadFlags {
            kind: FrameKind::Request,
            flags: 0x10
        }
    );
    let mut f = raw(17, FrameKind::Request as u8, 0, 1, 1, 0);
    f.push(0x81);
    assert_eq!(
        parse(&f).unwrap_err(),
        DecodeError::BadFlags {
            kind: FrameKind::Request,
            flags: 0
        }
    );
}

#[test]
fn header_blocks_and_payloads_where_they_do_not_belong() {
    let mut f = raw(17, FrameKind::Ping as u8, 0x10, 1, 1, 0);
    f.push(0x81);
    assert_eq!(
        parse(&f).unwrap_err(),
        DecodeError::UnexpectedHeaders(FrameKind::Ping)
    );
    let mut f = raw(17, FrameKind::Cancel as u8, 0, 0, 1, 0);
    f.push(0);
    assert_eq!(
        parse(&f).unwrap_err(),
        DecodeError::UnexpectedPayload(FrameKind::Cancel)
    );
    let f = raw(20, FrameKind::Request as u8, 0x10, 5, 1, 0);
    assert_eq!(
        parse(&f).unwrap_err(),
        DecodeError::HeaderBlockOutOfBounds {
            header_len: 5,
            length: 20
        }
    );
}

#[test]
fn batch_limits_on_records() {
    let limits = Limits::default().with_max_batch_frames(2);
    let mut wire = Vec::new();
    for i in 0..3 {
        wire.extend_from_slice(&raw(16, FrameKind::Ping as u8, 0, 0, i, 0));
    }
    let results: Vec<_> = decode_batch(&wire, &limits).collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[2], Err(DecodeError::TooManyFrames { max: 2 }));
    // The stream decoder has no batch limits.
    assert_eq!(
        FrameIter::new(&wire, &limits).filter(Result::is_ok).count(),
        3
    );
    let limits = Limits::default().with_max_batch_bytes(20);
    let results: Vec<_> = decode_batch(&wire, &limits).collect();
    assert!(matches!(results[2], Err(DecodeError::BatchTooLarge { .. })));
}

#[test]
fn corrupt_header_blocks_are_errors() {
    let limits = Limits::default();
    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    let mut f = raw(18, FrameKind::Request as u8, 0x10, 2, 1, 0);
    f.extend_from_slice(&[0x80 | 0x7f, 0x00]); // index 127: out of range
    let frame = Frame::parse(&f, &limits).unwrap();
    assert_eq!(
        dec.decode(frame.header_block(), |_, _| {}),
        Err(HeaderError::IndexOutOfRange {
            index: 127,
            len: 16
        })
    );
    // A table-size update beyond the negotiated size.
    let mut dec = HeaderDecoder::new(100, 16 << 10);
    assert_eq!(
        dec.decode(&[0x3f, 0x82, 0x01], |_, _| {}),
        Err(HeaderError::TableSizeTooLarge {
            requested: 161,
            max: 100
        })
    );
    // An error maps to a counter label and a status.
    let e = DecodeError::from(HeaderError::ZeroIndex);
    assert_eq!(e.counter(), "header_zero_index");
}

#[test]
fn corrupt_flatbuffers_bodies_are_errors() {
    let limits = Limits::default();
    let mut batch = BatchEncoder::new(limits);
    // An offset pointing far outside the buffer.
    batch
        .frame(FrameKind::Error, 1)
        .unwrap()
        .payload(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0])
        .finish()
        .unwrap();
    let f = Frame::parse(batch.as_slice(), &limits).unwrap();
    let e = netron_codec::control::read_error(&f).unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::InvalidBody {
                table: "ErrorBody",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.counter(), "invalid_body");
    // Reading a body as the wrong kind is refused too.
    assert!(netron_codec::control::read_hello(&f).is_err());
}

#[test]
fn decompression_bombs_are_refused() {
    for &algo in Compression::supported() {
        let mut c = Compressor::new(algo, 0);
        let mut payload = Vec::new();
        assert!(
            c.compress_into(&vec![7u8; 8 << 20], &mut payload),
            "{algo:?}"
        );
        let mut d = Decompressor::new(algo, 1 << 20);
        let mut out = Vec::new();
        assert_eq!(
            d.decompress_into(&payload, &mut out),
            Err(CompressionError::TooLarge {
                declared: 8 << 20,
                max: 1 << 20
            })
        );
        assert_eq!(out.capacity(), 0, "nothing allocated for a refused payload");
    }
}

#[test]
fn a_lying_header_cannot_make_the_encoder_disagree() {
    // Header encoder and decoder built with different table sizes: the decoder refuses the
    // first reference past its table instead of reading garbage.
    let mut enc = HeaderEncoder::new(4096);
    let mut dec = HeaderDecoder::new(0, 16 << 10);
    let mut block = Vec::new();
    enc.encode(&[Header::new(b"k", b"v")], &mut block).unwrap();
    dec.decode(&block, |_, _| {}).unwrap();
    block.clear();
    enc.encode(&[Header::new(b"k", b"v")], &mut block).unwrap();
    assert_eq!(
        dec.decode(&block, |_, _| {}),
        Err(HeaderError::IndexOutOfRange { index: 17, len: 16 })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic either decoder and every frame yielded is self-consistent.
    #[test]
    fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300), max_frame in 16u32..400) {
        let limits = Limits::default().with_max_frame_size(max_frame).with_max_batch_frames(4);
        // Both iterators stop after their first error, so `flatten` sees every frame.
        for f in FrameIter::new(&buf, &limits).chain(decode_batch(&buf, &limits)).flatten() {
            prop_assert!(f.len() <= max_frame as usize);
            prop_assert_eq!(16 + f.header_block().len() + f.payload().len(), f.len());
            let _ = netron_codec::control::read_hello(&f);
            let _ = netron_codec::control::read_stream_end(&f);
        }
    }

    /// Mutating one byte of a valid frame never panics and, if it still parses, stays within bounds.
    #[test]
    fn mutated_frames_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let limits = Limits::default();
        let mut batch = BatchEncoder::new(limits);
        let mut enc = HeaderEncoder::new(4096);
        batch.request(5, None).unwrap()
            .headers(&mut enc, &[Header::service(b"a@1.0.0"), Header::method(b"m")]).unwrap()
            .payload(b"payload").finish().unwrap();
        let mut wire = batch.as_slice().to_vec();
        let i = pos.index(wire.len());
        wire[i] = byte;
        if let Ok(f) = Frame::parse(&wire, &limits) {
            let mut dec = HeaderDecoder::new(4096, 1024);
            let _ = dec.decode(f.header_block(), |_, _| {});
        }
        let _ = FrameHeader::parse(&wire);
    }
}
