//! Every limit at its exact bound (accepted) and one past it (refused).
//!
//! Each test here fails if its check moves by one in either direction (for example
//! `length > max` becoming `length > max + 1` or `length >= max`).

use netron_codec::compress::{Compressor, Decompressor};
use netron_codec::handshake::{
    ClientConfig, ClientHandshake, HANDSHAKE_MAX_FRAME, PREFACE, ServerConfig, ServerHandshake,
    ServerProgress,
};
use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder};
use netron_codec::{
    Compression, CompressionError, DecodeError, Frame, FrameIter, FrameKind, HEADER_LEN,
    HandshakeError, HeaderError, Limits, decode_batch,
};

/// A frame of `length` bytes in total: a Response whose payload is zeros.
fn response(length: u32, id: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&length.to_le_bytes());
    v.push(FrameKind::Response as u8);
    v.push(0);
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.resize(length as usize, 0);
    v
}

#[test]
fn frame_size_at_the_bound_is_accepted_and_one_past_is_refused() {
    for max in [1024u32, 4096, 65_536] {
        let limits = Limits::default().with_max_frame_size(max);
        let at = response(max, 1);
        let f = Frame::parse(&at, &limits).expect("a frame of exactly max_frame_size");
        assert_eq!(f.len(), max as usize);
        let past = response(max + 1, 1);
        assert_eq!(
            Frame::parse(&past, &limits).unwrap_err(),
            DecodeError::FrameTooLarge {
                length: max + 1,
                max
            }
        );
        // The length is judged from the 16 header bytes alone.
        assert_eq!(
            Frame::parse(&past[..HEADER_LEN], &limits).unwrap_err(),
            DecodeError::FrameTooLarge {
                length: max + 1,
                max
            }
        );
        assert!(matches!(
            Frame::parse(&at[..HEADER_LEN], &limits),
            Err(DecodeError::Incomplete { .. })
        ));
        // Stream mode: the same bound.
        let mut it = FrameIter::new(&at, &limits);
        assert_eq!(
            it.next().map(|r| r.map(|f| f.len())),
            Some(Ok(max as usize))
        );
        assert_eq!(it.next(), None);
        let mut it = FrameIter::new(&past, &limits);
        assert_eq!(
            it.next(),
            Some(Err(DecodeError::FrameTooLarge {
                length: max + 1,
                max
            }))
        );
    }
}

#[test]
fn batch_frames_at_the_bound_are_accepted_and_one_past_is_refused() {
    let max = 4u32;
    let limits = Limits::default().with_max_batch_frames(max);
    let mut wire = Vec::new();
    for i in 0..max {
        wire.extend_from_slice(&response(HEADER_LEN as u32, 2 * i + 1));
    }
    let all: Vec<_> = decode_batch(&wire, &limits).collect();
    assert_eq!(all.len(), max as usize);
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    wire.extend_from_slice(&response(HEADER_LEN as u32, 99));
    let all: Vec<_> = decode_batch(&wire, &limits).collect();
    assert_eq!(all.len(), max as usize + 1);
    assert!(all[..max as usize].iter().all(Result::is_ok));
    assert_eq!(all[max as usize], Err(DecodeError::TooManyFrames { max }));
}

#[test]
fn batch_bytes_at_the_bound_are_accepted_and_one_past_is_refused() {
    // A sender starts no new frame once the batch holds max_batch_bytes, so a second frame
    // may start at max - 1 (and run past max), but not at max.
    let max = 100u32;
    let limits = Limits::default().with_max_batch_bytes(max);
    let mut at = response(max - 1, 1);
    at.extend_from_slice(&response(64, 3));
    let all: Vec<_> = decode_batch(&at, &limits).collect();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(Result::is_ok), "{all:?}");

    let mut past = response(max, 1);
    past.extend_from_slice(&response(64, 3));
    let all: Vec<_> = decode_batch(&past, &limits).collect();
    assert_eq!(all.len(), 2);
    assert!(all[0].is_ok());
    assert_eq!(
        all[1],
        Err(DecodeError::BatchTooLarge {
            len: past.len(),
            max
        })
    );
    // A single frame larger than max_batch_bytes is still a valid batch (the first frame).
    let one = response(max * 2, 1);
    assert_eq!(decode_batch(&one, &limits).filter(Result::is_ok).count(), 1);
}

#[test]
fn header_list_at_the_bound_is_accepted_and_one_past_is_refused() {
    // One field costs name + value + 32.
    let max = 100usize;
    let value_at = vec![b'v'; max - 32 - 1];
    let value_past = vec![b'v'; max - 32];
    for (value, ok) in [(&value_at, true), (&value_past, false)] {
        for indexed in [true, false] {
            let mut enc = HeaderEncoder::new(if indexed { 4096 } else { 0 });
            let mut block = Vec::new();
            enc.encode(&[Header::new(b"k", value)], &mut block).unwrap();
            let mut dec = HeaderDecoder::new(if indexed { 4096 } else { 0 }, max);
            let mut got = Vec::new();
            let r = dec.decode(&block, |n, v| got.push((n.to_vec(), v.to_vec())));
            if ok {
                assert_eq!(r, Ok(()));
                assert_eq!(got, vec![(b"k".to_vec(), value.clone())]);
            } else {
                assert_eq!(r, Err(HeaderError::ListTooLarge { size: max + 1, max }));
            }
        }
    }
}

#[test]
fn decompressed_size_at_the_bound_is_accepted_and_one_past_is_refused() {
    let max = 4096u32;
    // The declared size alone, whatever the algorithm.
    let d = Decompressor::new(Compression::None, max);
    let mut p = max.to_le_bytes().to_vec();
    p.extend_from_slice(&[0; 8]);
    assert_eq!(d.declared_size(&p), Ok(max as usize));
    let mut p = (max + 1).to_le_bytes().to_vec();
    p.extend_from_slice(&[0; 8]);
    assert_eq!(
        d.declared_size(&p),
        Err(CompressionError::TooLarge {
            declared: max as u64 + 1,
            max
        })
    );
    // And a real round trip with every algorithm this build has.
    for &algo in Compression::supported() {
        let data = vec![7u8; max as usize];
        let mut c = Compressor::new(algo, 0);
        let mut payload = Vec::new();
        assert!(c.compress_into(&data, &mut payload), "{algo:?}");
        let mut out = Vec::new();
        Decompressor::new(algo, max)
            .decompress_into(&payload, &mut out)
            .unwrap();
        assert_eq!(out, data);
        let mut out = Vec::new();
        assert_eq!(
            Decompressor::new(algo, max - 1).decompress_into(&payload, &mut out),
            Err(CompressionError::TooLarge {
                declared: max as u64,
                max: max - 1
            })
        );
        assert!(out.is_empty());
    }
}

#[test]
fn handshake_frame_at_64_kib_is_accepted_and_one_past_is_refused() {
    assert_eq!(HANDSHAKE_MAX_FRAME, 64 << 10);
    let mut hello = Vec::new();
    ClientHandshake::new(ClientConfig::default())
        .start(&mut hello)
        .unwrap();
    // Pad the Hello (a FlatBuffer ignores trailing bytes) to exactly `len` bytes.
    let padded = |len: u32| {
        let mut v = hello.clone();
        let frame = &mut v[PREFACE.len()..];
        frame[..4].copy_from_slice(&len.to_le_bytes());
        v.resize(PREFACE.len() + len as usize, 0);
        v
    };
    let at = padded(HANDSHAKE_MAX_FRAME);
    let mut server = ServerHandshake::new(ServerConfig::default());
    match server.handle(&at) {
        Ok(ServerProgress::Offer { consumed, .. }) => assert_eq!(consumed, at.len()),
        other => panic!("a 64 KiB Hello must be accepted, got {other:?}"),
    }
    let past = padded(HANDSHAKE_MAX_FRAME + 1);
    let mut server = ServerHandshake::new(ServerConfig::default());
    assert!(
        matches!(
            server.handle(&past),
            Err(HandshakeError::Decode(DecodeError::FrameTooLarge { length, max }))
                if length == HANDSHAKE_MAX_FRAME + 1 && max == HANDSHAKE_MAX_FRAME
        ),
        "{:?}",
        ServerHandshake::new(ServerConfig::default()).handle(&past)
    );
    // The handshake bound holds before the frame's bytes arrived.
    let mut server = ServerHandshake::new(ServerConfig::default());
    assert!(matches!(
        server.handle(&past[..PREFACE.len() + HEADER_LEN]),
        Err(HandshakeError::Decode(DecodeError::FrameTooLarge { .. }))
    ));
    let mut server = ServerHandshake::new(ServerConfig::default());
    assert!(matches!(
        server.handle(&at[..PREFACE.len() + HEADER_LEN]),
        Ok(ServerProgress::NeedMore { .. })
    ));
}
