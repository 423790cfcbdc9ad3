//! The QUIC header-compression decoder on raw bytes (`netron_fuzz::qpack_parts` cuts the
//! input into an encoder stream, one header block and a decoder stream). The encoder stream
//! is fed in two pieces to one decoder and whole to a twin: both must end in the same state
//! with the same result (instructions split anywhere mean the same). The block is decoded on
//! a stream and as a datagram; the decoder stream goes to an encoder that sent a few blocks.
//! No panic; tables within capacity; at most 16 blocked streams.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::hpack::{Header, HeaderList};
use netron_codec::qpack::{Decoded, MAX_BLOCKED_STREAMS, QpackDecoder, QpackEncoder};
use netron_fuzz::{QPACK_PREFIX, qpack_parts};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, rest)) = data.split_first_chunk::<QPACK_PREFIX>() else {
        return;
    };
    let (capacity, enc_stream, block, dec_stream) = qpack_parts(*prefix, rest);
    let mut dec = QpackDecoder::new(capacity, 4096);
    let mut twin = QpackDecoder::new(capacity, 4096);
    let cut = enc_stream.len() / 2;
    let split = dec
        .feed_encoder_stream(&enc_stream[..cut])
        .and_then(|()| dec.feed_encoder_stream(&enc_stream[cut..]));
    let whole = twin.feed_encoder_stream(enc_stream);
    assert_eq!(split.is_ok(), whole.is_ok(), "{split:?} vs {whole:?}");
    if whole.is_ok() {
        assert_eq!(dec.insert_count(), twin.insert_count());
        assert_eq!(dec.table_size(), twin.table_size());
        assert_eq!(dec.table_len(), twin.table_len());
    }
    let (size, cap) = twin.table_size();
    assert!(size <= cap && cap <= capacity as usize);
    let mut list = HeaderList::default();
    for stream in [0u64, 4, 8] {
        match twin.decode(stream, block, &mut list) {
            Ok(Decoded::Done) => {
                assert!(
                    list.iter()
                        .map(|(n, v)| n.len() + v.len() + 32)
                        .sum::<usize>()
                        <= 4096
                );
            }
            Ok(Decoded::Blocked) => assert!(twin.blocked_streams() <= MAX_BLOCKED_STREAMS),
            Err(e) => {
                black_box((e.counter(), e.status(), e.to_string()));
            }
        }
    }
    let _ = twin.decode_datagram(block, &mut list);
    black_box(twin.unblocked().count());
    twin.cancel_stream(4);
    let mut out = Vec::new();
    twin.take_instructions(&mut out);

    // The encoder side reads a decoder stream.
    let mut enc = QpackEncoder::new(capacity);
    let mut ins = Vec::new();
    for s in 0..3u64 {
        let _ = enc.encode(
            s * 4,
            &[Header::service(b"calc@1.2.0"), Header::method(b"add")],
            &mut Vec::new(),
            &mut ins,
        );
    }
    if let Err(e) = enc.feed_decoder_stream(dec_stream) {
        black_box((e.counter(), e.to_string()));
    }
    assert!(enc.known_received_count() <= enc.insert_count());
    assert!(enc.blocked_streams() <= MAX_BLOCKED_STREAMS);
});
