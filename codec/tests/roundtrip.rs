//! Property tests: every frame kind, and batches of them, survive encode → decode exactly,
//! with header compression state carried across frames.

use netron_codec::compress::{Compressor, Decompressor};
use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder, HeaderList};
use netron_codec::{
    BatchEncoder, Body, Compression, Flags, Frame, FrameIter, FrameKind, Limits, decode_batch,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Spec {
    kind: FrameKind,
    flags: Flags,
    id: u32,
    arg: u32,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    payload: Vec<u8>,
    compress: bool,
}

fn kind() -> impl Strategy<Value = FrameKind> {
    proptest::sample::select(FrameKind::ALL.to_vec())
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        kind(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(
            (
                prop_oneof![
                    Just(b":service".to_vec()),
                    Just(b":method".to_vec()),
                    Just(b"traceparent".to_vec()),
                    "[a-z-]{1,12}".prop_map(String::into_bytes)
                ],
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            0..5,
        ),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (0usize..5000).prop_map(|n| (0..n).map(|i| (i % 7) as u8).collect()),
        ],
        any::<bool>(),
    )
        .prop_map(|(kind, fl, id, arg, headers, payload, compress)| {
            let allowed = kind.allowed_flags() - (Flags::HAS_HEADERS | Flags::COMPRESSED);
            let headers = if kind.may_have_headers() {
                headers
            } else {
                Vec::new()
            };
            let payload = match kind.body() {
                Body::Opaque => payload,
                // Tables are covered by tests/control.rs; here any bytes, the frame layer
                // does not look inside.
                Body::Table(_) | Body::EmptyOrTable(_) => payload,
                Body::Empty => Vec::new(),
            };
            Spec {
                kind,
                flags: Flags::from_bits_truncate(fl) & allowed,
                id,
                arg,
                headers,
                compress: compress && kind.body() == Body::Opaque,
                payload,
            }
        })
}

fn encode(
    batch: &mut BatchEncoder,
    enc: &mut HeaderEncoder,
    comp: &mut Compressor,
    s: &Spec,
) -> Result<usize, netron_codec::EncodeError> {
    let hs: Vec<Header<'_>> = s.headers.iter().map(|(n, v)| Header::new(n, v)).collect();
    let b = batch
        .frame(s.kind, s.id)?
        .flags(s.flags)
        .arg(s.arg)
        .headers(enc, &hs)?;
    let b = if s.compress {
        b.payload_compressed(&s.payload, comp)
    } else {
        b.payload(&s.payload)
    };
    b.finish()
}

fn check(
    frame: &Frame<'_>,
    s: &Spec,
    dec: &mut HeaderDecoder,
    dcomp: &mut Decompressor,
    list: &mut HeaderList,
) {
    assert_eq!(frame.kind(), s.kind);
    assert_eq!(frame.id(), s.id);
    assert_eq!(frame.arg(), s.arg);
    assert_eq!(
        frame.flags() - (Flags::HAS_HEADERS | Flags::COMPRESSED),
        s.flags
    );
    assert_eq!(
        frame.flags().contains(Flags::HAS_HEADERS),
        !s.headers.is_empty()
    );
    dec.decode_into(frame.header_block(), list).unwrap();
    let got: Vec<(Vec<u8>, Vec<u8>)> = list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    assert_eq!(got, s.headers);
    if frame.flags().contains(Flags::COMPRESSED) {
        assert!(s.compress);
        let mut plain = Vec::new();
        dcomp.decompress_into(frame.payload(), &mut plain).unwrap();
        assert_eq!(plain, s.payload);
    } else {
        assert_eq!(frame.payload(), &s.payload[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// One frame of any kind, alone.
    #[test]
    fn every_kind_round_trips(s in spec(), algo in prop_oneof![Just(Compression::Lz4), Just(Compression::Zstd)]) {
        let limits = Limits::default();
        let mut batch = BatchEncoder::new(limits);
        let mut enc = HeaderEncoder::new(4096);
        let mut dec = HeaderDecoder::new(4096, 1 << 20);
        let mut comp = Compressor::new(algo, 64);
        let mut dcomp = Decompressor::new(algo, 1 << 20);
        let len = encode(&mut batch, &mut enc, &mut comp, &s).unwrap();
        prop_assert_eq!(len, batch.len());
        let frame = Frame::parse(batch.as_slice(), &limits).unwrap();
        check(&frame, &s, &mut dec, &mut dcomp, &mut HeaderList::default());
    }

    /// Batches of many frames share header state; split at any byte boundary, the stream
    /// decoder resumes where it stopped.
    #[test]
    fn batches_round_trip_and_resume_at_any_split(
        specs in proptest::collection::vec(spec(), 1..40),
        table in prop_oneof![Just(0u32), 64u32..512, Just(4096u32)],
        split in any::<prop::sample::Index>(),
    ) {
        let limits = Limits::default().with_max_batch_frames(1000).with_max_batch_bytes(1 << 30);
        let mut batch = BatchEncoder::new(limits);
        let mut enc = HeaderEncoder::new(table);
        let mut comp = Compressor::new(Compression::Lz4, 64);
        for s in &specs {
            encode(&mut batch, &mut enc, &mut comp, s).unwrap();
        }
        prop_assert_eq!(batch.frame_count() as usize, specs.len());
        let wire = batch.as_slice().to_vec();

        // Whole batch, record mode.
        let mut dec = HeaderDecoder::new(table, 1 << 20);
        let mut dcomp = Decompressor::new(Compression::Lz4, 1 << 20);
        let mut list = HeaderList::default();
        let mut n = 0;
        for (f, s) in decode_batch(&wire, &limits).zip(&specs) {
            check(&f.unwrap(), s, &mut dec, &mut dcomp, &mut list);
            n += 1;
        }
        prop_assert_eq!(n, specs.len());

        // Stream mode, delivered in two reads split anywhere.
        let cut = split.index(wire.len() + 1);
        let mut dec = HeaderDecoder::new(table, 1 << 20);
        let mut it = FrameIter::new(&wire[..cut], &limits);
        let mut seen = 0;
        for f in it.by_ref() {
            check(&f.unwrap(), &specs[seen], &mut dec, &mut dcomp, &mut list);
            seen += 1;
        }
        let consumed = it.consumed();
        prop_assert!(consumed <= cut);
        if consumed < cut { prop_assert!(it.needed() > 0); }
        for f in FrameIter::new(&wire[consumed..], &limits) {
            check(&f.unwrap(), &specs[seen], &mut dec, &mut dcomp, &mut list);
            seen += 1;
        }
        prop_assert_eq!(seen, specs.len());
    }
}

#[test]
fn batch_limits_are_respected_by_the_encoder() {
    let limits = Limits::default()
        .with_max_batch_frames(3)
        .with_max_batch_bytes(100);
    let mut batch = BatchEncoder::new(limits);
    for i in 0..3 {
        batch.empty_frame(FrameKind::Ping, i, 0).unwrap();
    }
    assert!(batch.is_full());
    assert_eq!(
        batch.empty_frame(FrameKind::Ping, 9, 0),
        Err(netron_codec::EncodeError::BatchFull)
    );
    assert_eq!(batch.frame_count(), 3);
    batch.clear();
    // Byte limit: the frame that crosses 100 bytes is the last one.
    batch
        .frame(FrameKind::Response, 1)
        .unwrap()
        .payload(&[0; 40])
        .finish()
        .unwrap();
    assert!(!batch.is_full());
    batch
        .frame(FrameKind::Response, 2)
        .unwrap()
        .payload(&[0; 90])
        .finish()
        .unwrap();
    assert!(batch.is_full());
    assert!(batch.frame(FrameKind::Response, 3).is_err());
    // And the record decoder accepts exactly that.
    assert_eq!(
        decode_batch(batch.as_slice(), &limits)
            .filter(Result::is_ok)
            .count(),
        2
    );
}

#[test]
fn oversize_frames_are_refused_and_removed() {
    let limits = Limits::default().with_max_frame_size(1024);
    let mut batch = BatchEncoder::new(limits);
    batch.empty_frame(FrameKind::Ping, 1, 0).unwrap();
    let before = batch.len();
    let err = batch
        .response(2)
        .unwrap()
        .payload(&[0; 2000])
        .finish()
        .unwrap_err();
    assert_eq!(
        err,
        netron_codec::EncodeError::FrameTooLarge {
            length: 2016,
            max: 1024,
            headers_encoded: false
        }
    );
    assert_eq!(batch.len(), before, "partial frame removed");
    assert_eq!(batch.frame_count(), 1);
    // Written in place: appends stop at the limit, and the error names the frame the writer
    // wanted (not one byte past the limit).
    let err = batch
        .response(2)
        .unwrap()
        .payload_with(|p| {
            let _ = std::io::Write::write_all(p, &[0; 5000]);
        })
        .finish()
        .unwrap_err();
    assert!(
        matches!(
            err,
            netron_codec::EncodeError::FrameTooLarge {
                length: 5016,
                max: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(batch.len(), before, "partial frame removed");
    // A builder dropped without finish() leaves nothing behind either.
    drop(batch.response(3).unwrap().payload(b"abandoned"));
    assert_eq!(batch.len(), before);
}
