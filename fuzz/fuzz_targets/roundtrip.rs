//! Encode → decode round trip. Arbitrary frames (every kind, only the flags it allows, ids,
//! args, deadlines, header lists, plain or compressed payloads with LZ4/Zstandard) and real
//! control bodies are queued with `BatchEncoder` (flushing when the batch is full or asked
//! to), then each batch is decoded with `FrameIter` (stream mode) and `decode_batch` (batch
//! mode): every field comes back equal, header blocks decode to the fields sent, payloads
//! decompress to the bytes sent, control bodies verify and read back equal, and the header
//! tables of both sides agree after every batch.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::compress::{Compression, Compressor, Decompressor};
use netron_codec::control::{self, ControlEncoder, HelloFields, WelcomeFields};
use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder, HeaderList};
use netron_codec::{
    BatchEncoder, Deadline, EncodeError, Flags, Frame, FrameIter, FrameKind, StatusCode,
    decode_batch,
};
use netron_fuzz::{ControlSpec, FrameSpec, Item, RoundTrip, check_frame};

enum Expected {
    Frame {
        spec: FrameSpec,
        arg: u32,
        payload: Vec<u8>,
        compressed: bool,
    },
    Control(ControlSpec),
}

struct Receiver {
    headers: HeaderDecoder,
    decompressor: Decompressor,
    list: HeaderList,
    plain: Vec<u8>,
}

fn check_control(spec: &ControlSpec, f: &Frame<'_>) {
    match spec {
        ControlSpec::Hello {
            features,
            compression,
            numbers,
            auth_token,
            client_name,
        } => {
            assert_eq!(f.kind(), FrameKind::Hello);
            let h = control::read_hello(f).expect("own Hello verifies");
            assert_eq!(h.features(), *features);
            let got: Vec<u8> = h
                .compression()
                .map(|v| v.iter().map(|c| c.0).collect())
                .unwrap();
            let want: Vec<u8> = compression.iter().map(|c| *c as u8).collect();
            assert_eq!(got, want);
            assert_eq!(
                [
                    h.max_frame_size(),
                    h.header_table_size(),
                    h.max_batch_frames(),
                    h.max_batch_bytes(),
                    h.max_decompressed_size()
                ],
                *numbers
            );
            assert_eq!(h.auth_token().map(|t| t.bytes()), auth_token.as_deref());
            assert_eq!(h.client_name(), client_name.as_deref());
        }
        ControlSpec::Welcome {
            version_minor,
            features,
            compression,
            numbers,
            server_id,
        } => {
            assert_eq!(f.kind(), FrameKind::Welcome);
            let w = control::read_welcome(f).expect("own Welcome verifies");
            assert_eq!(w.version_minor(), *version_minor);
            assert_eq!(w.features(), *features);
            assert_eq!(w.compression().0, *compression as u8);
            assert_eq!(
                [
                    w.compression_threshold(),
                    w.max_frame_size(),
                    w.header_table_size(),
                    w.max_batch_frames(),
                    w.max_batch_bytes(),
                    w.max_decompressed_size(),
                    w.max_concurrent_calls(),
                    w.initial_stream_window(),
                    w.keepalive_interval_ms()
                ],
                *numbers
            );
            assert_eq!(w.server_id(), Some(server_id.as_str()));
        }
        ControlSpec::Reject {
            status,
            reason,
            retry_after_ms,
        } => {
            assert_eq!(f.kind(), FrameKind::Reject);
            let r = control::read_reject(f).expect("own Reject verifies");
            assert_eq!(control::status(r.status()), StatusCode::from_u16(*status));
            assert_eq!(r.reason(), Some(reason.as_str()));
            assert_eq!(r.retry_after_ms(), *retry_after_ms);
        }
        ControlSpec::Error {
            id,
            status,
            message,
            details,
        } => {
            assert_eq!((f.kind(), f.id()), (FrameKind::Error, *id));
            let e = control::read_error(f).expect("own ErrorBody verifies");
            assert_eq!(control::status(e.status()), StatusCode::from_u16(*status));
            assert_eq!(e.message(), Some(message.as_str()));
            assert_eq!(e.details().map_or(&[][..], |d| d.bytes()), &details[..]);
        }
        ControlSpec::StreamEndError {
            id,
            status,
            message,
        } => {
            assert_eq!((f.kind(), f.id()), (FrameKind::StreamEnd, *id));
            let e = control::read_stream_end(f)
                .expect("own StreamEnd verifies")
                .expect("an error body");
            assert_eq!(control::status(e.status()), StatusCode::from_u16(*status));
            assert_eq!(e.message(), Some(message.as_str()));
        }
        ControlSpec::GoAway {
            last_id,
            status,
            reason,
        } => {
            assert_eq!((f.kind(), f.id()), (FrameKind::GoAway, *last_id));
            let g = control::read_go_away(f).expect("own GoAway verifies");
            assert_eq!(g.last_id(), *last_id);
            assert_eq!(control::status(g.status()), StatusCode::from_u16(*status));
            assert_eq!(g.reason(), Some(reason.as_str()));
        }
        ControlSpec::Subscribe {
            id,
            pattern,
            queue_depth,
        } => {
            assert_eq!((f.kind(), f.id()), (FrameKind::Subscribe, *id));
            let s = control::read_subscribe(f).expect("own Subscribe verifies");
            assert_eq!(s.pattern(), Some(pattern.as_str()));
            assert_eq!(s.queue_depth(), *queue_depth);
        }
    }
}

fn check_frame_spec(
    f: &Frame<'_>,
    spec: &FrameSpec,
    arg: u32,
    payload: &[u8],
    compressed: bool,
    rx: &mut Receiver,
) {
    assert_eq!(f.kind(), spec.kind);
    assert_eq!(f.id(), spec.id);
    assert_eq!(f.arg(), arg);
    let mut want = spec.flags;
    if !spec.headers.is_empty() {
        want |= Flags::HAS_HEADERS;
    }
    if compressed {
        want |= Flags::COMPRESSED;
    }
    assert_eq!(f.flags(), want);
    if let Some(Some(d)) = spec.deadline {
        let back = f.deadline().expect("a deadline");
        if d > Deadline::MAX {
            assert_eq!(back, Deadline::MAX);
        } else if d.as_micros() < 1 {
            assert_eq!(back.as_micros(), 1);
        } else {
            let diff = back.abs_diff(d);
            assert!(
                diff.as_micros() < 1000,
                "deadline {d:?} came back as {back:?}"
            );
        }
    }
    rx.headers
        .decode_into(f.header_block(), &mut rx.list)
        .expect("own header block decodes");
    assert_eq!(rx.list.len(), spec.headers.len());
    for (i, h) in spec.headers.iter().enumerate() {
        assert_eq!(rx.list.field(i), Some((&h.name[..], &h.value[..])));
    }
    if compressed {
        rx.plain.clear();
        rx.decompressor
            .decompress_into(f.payload(), &mut rx.plain)
            .expect("own payload decompresses");
        assert_eq!(rx.plain, payload);
    } else {
        assert_eq!(f.payload(), payload);
    }
}

/// Decodes `batch` in both modes and checks it against `expected`; clears both.
fn flush(
    batch: &mut BatchEncoder,
    expected: &mut Vec<Expected>,
    rx: &mut Receiver,
    tx_headers: &HeaderEncoder,
    in_step: bool,
) {
    let wire = batch.as_slice();
    let limits = *batch.limits();
    assert_eq!(batch.frame_count() as usize, expected.len());
    // Batch mode accepts everything the encoder produced (it respects the batch limits).
    let mut n = 0;
    for f in decode_batch(wire, &limits) {
        let f = f.unwrap_or_else(|e| panic!("batch mode rejects an encoded batch: {e}"));
        black_box(f.len());
        n += 1;
    }
    assert_eq!(n, expected.len());
    let mut iter = FrameIter::new(wire, &limits);
    let mut pos = 0;
    for exp in expected.iter() {
        let f = iter
            .next()
            .expect("a frame per queued frame")
            .unwrap_or_else(|e| panic!("stream mode rejects an encoded frame: {e}"));
        check_frame(&f, &wire[pos..], &limits);
        pos += f.len();
        match exp {
            Expected::Frame {
                spec,
                arg,
                payload,
                compressed,
            } => check_frame_spec(&f, spec, *arg, payload, *compressed, rx),
            Expected::Control(spec) => {
                assert!(f.header_block().is_empty());
                check_control(spec, &f);
            }
        }
    }
    assert!(iter.next().is_none());
    assert_eq!(iter.consumed(), wire.len());
    assert_eq!(iter.needed(), 0);
    if in_step {
        assert_eq!(tx_headers.table_len(), rx.headers.table_len());
        assert_eq!(tx_headers.table_size(), rx.headers.table_size());
    }
    batch.clear();
    expected.clear();
}

/// Queues one item. `Ok(false)`: the connection must close (header encoder ahead of the peer).
fn queue(
    item: &Item,
    batch: &mut BatchEncoder,
    tx_headers: &mut HeaderEncoder,
    compressor: &mut Compressor,
    oracle: &mut Compressor,
    ctl: &mut ControlEncoder,
    expected: &mut Vec<Expected>,
) -> Result<bool, EncodeError> {
    match item {
        Item::Flush => unreachable!(),
        Item::Frame(spec) => {
            let mut b = match spec.deadline {
                Some(d) => batch.request(spec.id, d)?,
                None => batch.frame(spec.kind, spec.id)?.arg(spec.arg),
            };
            let arg = match spec.deadline {
                Some(d) => Deadline::encode(d),
                None => spec.arg,
            };
            b = b.flags(spec.flags);
            let fields: Vec<Header<'_>> = spec
                .headers
                .iter()
                .map(|h| Header::new(&h.name, &h.value).with_indexing(h.indexing))
                .collect();
            match b.headers(tx_headers, &fields) {
                Ok(x) => b = x,
                Err(_) => return Ok(false),
            }
            let payload = spec.payload.as_ref().map(|p| p.bytes()).unwrap_or_default();
            let mut compressed = false;
            if spec.compress {
                let mut probe = Vec::new();
                compressed = oracle.compress_into(&payload, &mut probe);
                b = b.payload_compressed(&payload, compressor);
            } else if spec.payload_with {
                b = b.payload_with(|out| out.extend_from_slice(&payload));
            } else {
                b = b.payload(&payload);
            }
            match b.finish() {
                Ok(len) => assert!(len >= 16),
                Err(EncodeError::FrameTooLarge {
                    headers_encoded, ..
                }) => return Ok(!headers_encoded),
                Err(e) => return Err(e),
            }
            expected.push(Expected::Frame {
                spec: spec.clone(),
                arg,
                payload,
                compressed,
            });
        }
        Item::Control(spec) => {
            let r = match spec {
                ControlSpec::Hello {
                    features,
                    compression,
                    numbers,
                    auth_token,
                    client_name,
                } => ctl.hello(
                    batch,
                    &HelloFields {
                        features: *features,
                        compression,
                        max_frame_size: numbers[0],
                        header_table_size: numbers[1],
                        max_batch_frames: numbers[2],
                        max_batch_bytes: numbers[3],
                        max_decompressed_size: numbers[4],
                        auth_token: auth_token.as_deref(),
                        client_name: client_name.as_deref(),
                    },
                ),
                ControlSpec::Welcome {
                    version_minor,
                    features,
                    compression,
                    numbers: n,
                    server_id,
                } => ctl.welcome(
                    batch,
                    &WelcomeFields {
                        version_minor: *version_minor,
                        features: *features,
                        compression: *compression,
                        compression_threshold: n[0],
                        max_frame_size: n[1],
                        header_table_size: n[2],
                        max_batch_frames: n[3],
                        max_batch_bytes: n[4],
                        max_decompressed_size: n[5],
                        max_concurrent_calls: n[6],
                        initial_stream_window: n[7],
                        keepalive_interval_ms: n[8],
                        server_id,
                    },
                ),
                ControlSpec::Reject {
                    status,
                    reason,
                    retry_after_ms,
                } => ctl.reject(
                    batch,
                    StatusCode::from_u16(*status),
                    reason,
                    *retry_after_ms,
                ),
                ControlSpec::Error {
                    id,
                    status,
                    message,
                    details,
                } => ctl.error(batch, *id, StatusCode::from_u16(*status), message, details),
                ControlSpec::StreamEndError {
                    id,
                    status,
                    message,
                } => ctl.stream_end_error(batch, *id, StatusCode::from_u16(*status), message),
                ControlSpec::GoAway {
                    last_id,
                    status,
                    reason,
                } => ctl.go_away(batch, *last_id, StatusCode::from_u16(*status), reason),
                ControlSpec::Subscribe {
                    id,
                    pattern,
                    queue_depth,
                } => ctl.subscribe(batch, *id, pattern, *queue_depth),
            };
            match r {
                Ok(_) => expected.push(Expected::Control(spec.clone())),
                Err(EncodeError::FrameTooLarge { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(true)
}

fuzz_target!(|input: RoundTrip| {
    let limits = input.limits;
    let mut batch = BatchEncoder::new(limits);
    let mut tx_headers = HeaderEncoder::new(input.table_size);
    let mut compressor = Compressor::new(input.compression, input.threshold);
    let mut oracle = Compressor::new(input.compression, input.threshold);
    let mut ctl = ControlEncoder::new();
    let mut rx = Receiver {
        headers: HeaderDecoder::new(input.table_size, limits.max_header_list_size as usize),
        decompressor: Decompressor::new(input.compression, limits.max_decompressed_size),
        list: HeaderList::default(),
        plain: Vec::new(),
    };
    let mut expected = Vec::new();
    let mut in_step = true;
    for item in &input.items {
        if let Item::Flush = item {
            flush(&mut batch, &mut expected, &mut rx, &tx_headers, true);
            continue;
        }
        let mut r = queue(
            item,
            &mut batch,
            &mut tx_headers,
            &mut compressor,
            &mut oracle,
            &mut ctl,
            &mut expected,
        );
        if let Err(EncodeError::BatchFull) = r {
            assert!(batch.is_full());
            flush(&mut batch, &mut expected, &mut rx, &tx_headers, true);
            r = queue(
                item,
                &mut batch,
                &mut tx_headers,
                &mut compressor,
                &mut oracle,
                &mut ctl,
                &mut expected,
            );
        }
        match r {
            Ok(true) => {}
            // The header encoder moved ahead of the peer: a real connection closes here.
            Ok(false) => {
                in_step = false;
                break;
            }
            Err(e) => panic!("unexpected encode error on an empty batch: {e}"),
        }
    }
    flush(&mut batch, &mut expected, &mut rx, &tx_headers, in_step);
    black_box(Compression::supported());
});
