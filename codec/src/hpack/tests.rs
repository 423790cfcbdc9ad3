use super::*;
use crate::HeaderError;
use proptest::prelude::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn decode_all(dec: &mut HeaderDecoder, block: &[u8]) -> Result<Fields, HeaderError> {
    let mut out = Vec::new();
    dec.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
    Ok(out)
}

#[test]
fn steady_state_request_is_two_bytes() {
    let mut enc = HeaderEncoder::new(4096);
    let mut dec = HeaderDecoder::new(4096, 64 * 1024);
    let fields = [
        Header::service(b"orders@2.1.0"),
        Header::method(b"place"),
        Header::new(b"tenant", b"acme"),
    ];
    let mut block = Vec::new();
    enc.encode(&fields, &mut block).unwrap();
    let first = block.len();
    assert_eq!(decode_all(&mut dec, &block).unwrap().len(), 3);
    block.clear();
    enc.encode(&fields, &mut block).unwrap();
    assert_eq!(
        block.len(),
        3,
        "three indexed fields, one byte each (first block was {first})"
    );
    let got = decode_all(&mut dec, &block).unwrap();
    assert_eq!(got[0], (b":service".to_vec(), b"orders@2.1.0".to_vec()));
    assert_eq!(got[2], (b"tenant".to_vec(), b"acme".to_vec()));
}

#[test]
fn volatile_and_secret_fields_are_not_indexed() {
    let mut enc = HeaderEncoder::new(4096);
    let mut block = Vec::new();
    let tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    enc.encode(
        &[
            Header::new(b"traceparent", tp),
            Header::new(b"authorization", b"Bearer x"),
        ],
        &mut block,
    )
    .unwrap();
    assert_eq!(enc.table_len(), 0);
    // traceparent: 0000 + static name index 4; authorization: 0001 + index 7.
    assert_eq!(block[0], 0x04);
    assert_eq!(block[2 + tp.len()], 0x17);
}

#[test]
fn bad_blocks_give_specific_errors() {
    let mut dec = HeaderDecoder::new(256, 4096);
    assert_eq!(decode_all(&mut dec, &[0x80]), Err(HeaderError::ZeroIndex));
    assert_eq!(
        decode_all(&mut dec, &[0x80 | 17]),
        Err(HeaderError::IndexOutOfRange { index: 17, len: 16 })
    );
    assert_eq!(
        decode_all(&mut dec, &[0x44, 0x03, b'a']),
        Err(HeaderError::Truncated)
    );
    assert_eq!(
        decode_all(&mut dec, &[0x40, 0x81, b'a', 0x00]),
        Err(HeaderError::HuffmanNotSupported)
    );
    // Size update to 257 > 256: 001 11111 + (257 - 31 = 226 -> 0xe2 0x01).
    assert_eq!(
        decode_all(&mut dec, &[0x3f, 0xe2, 0x01]),
        Err(HeaderError::TableSizeTooLarge {
            requested: 257,
            max: 256
        })
    );
    assert_eq!(
        decode_all(&mut dec, &[0x81, 0x20]),
        Err(HeaderError::SizeUpdateNotFirst)
    );
    assert_eq!(
        decode_all(&mut dec, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        Err(HeaderError::IntegerOverflow)
    );
    // Literal name index out of range in a non-indexed literal.
    assert_eq!(
        decode_all(&mut dec, &[0x0f, 0x10, 0x00]),
        Err(HeaderError::IndexOutOfRange { index: 31, len: 16 })
    );
}

#[test]
fn header_list_limit_is_enforced() {
    let mut dec = HeaderDecoder::new(0, 100);
    let mut enc = HeaderEncoder::new(0);
    let mut block = Vec::new();
    let big = vec![b'x'; 80];
    enc.encode(&[Header::new(b"k", &big)], &mut block).unwrap();
    assert!(matches!(
        decode_all(&mut dec, &block),
        Err(HeaderError::ListTooLarge { .. })
    ));
}

#[test]
fn size_update_shrinks_both_tables_in_step() {
    let mut enc = HeaderEncoder::new(1024);
    let mut dec = HeaderDecoder::new(1024, 64 * 1024);
    let mut block = Vec::new();
    let fields: Vec<(Vec<u8>, Vec<u8>)> = (0..10)
        .map(|i| (format!("k{i}").into_bytes(), vec![b'v'; 20]))
        .collect();
    let hs: Vec<Header<'_>> = fields.iter().map(|(n, v)| Header::new(n, v)).collect();
    enc.encode(&hs, &mut block).unwrap();
    decode_all(&mut dec, &block).unwrap();
    assert_eq!(enc.table_len(), dec.table_len());
    enc.set_max_table_size(100).unwrap();
    assert!(enc.set_max_table_size(2000).is_err());
    block.clear();
    enc.encode(&hs[..1], &mut block).unwrap();
    assert_eq!(block[0] & 0xe0, 0x20, "block starts with a size update");
    decode_all(&mut dec, &block).unwrap();
    assert_eq!(enc.table_size(), dec.table_size());
    assert!(dec.table_size() <= 100);
}

fn header_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, u8)> {
    let names = prop_oneof![
        Just(b":service".to_vec()),
        Just(b":method".to_vec()),
        Just(b"traceparent".to_vec()),
        Just(b"authorization".to_vec()),
        Just(b"content-type".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
        "[a-z]{1,6}".prop_map(String::into_bytes),
    ];
    let values = prop_oneof![
        Just(b"application/json".to_vec()),
        "[a-z0-9@.]{0,10}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..300),
    ];
    (names, values, 0u8..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Long sequences of blocks: every block decodes to exactly what was encoded, and the two
    /// tables stay in step (same size and entry count) after every block.
    #[test]
    fn blocks_round_trip_and_tables_stay_in_step(
        table_size in prop_oneof![Just(0u32), 32u32..200, 200u32..5000],
        blocks in proptest::collection::vec(proptest::collection::vec(header_strategy(), 0..8), 1..40),
        shrink_at in proptest::option::of(0usize..40),
    ) {
        let mut enc = HeaderEncoder::new(table_size);
        let mut dec = HeaderDecoder::new(table_size, 1 << 20);
        let mut block = Vec::new();
        for (i, fields) in blocks.iter().enumerate() {
            if shrink_at == Some(i) {
                enc.set_max_table_size(table_size / 2).unwrap();
            }
            let hs: Vec<Header<'_>> = fields.iter().map(|(n, v, ix)| {
                let ix = [Indexing::Auto, Indexing::Incremental, Indexing::No, Indexing::Never][*ix as usize];
                Header::new(n, v).with_indexing(ix)
            }).collect();
            block.clear();
            enc.encode(&hs, &mut block).unwrap();
            // The pre-encoding bound a sender checks limits with really bounds the block.
            prop_assert!(block.len() <= HeaderEncoder::max_encoded_len(&hs));
            let got = decode_all(&mut dec, &block).unwrap();
            let want: Vec<(Vec<u8>, Vec<u8>)> = fields.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(enc.table_len(), dec.table_len());
            prop_assert_eq!(enc.table_size(), dec.table_size());
        }
    }

    /// `decode_into` with one list kept across blocks (where a repeated block may be
    /// recognised and left in place) gives what a fresh decode of the same block gives,
    /// whatever happens to the list or the decoder in between: fields pushed or removed, the
    /// list cloned and the clone decoded into, table size updates, insertions.
    #[test]
    fn a_repeated_block_left_in_place_is_what_a_fresh_decode_gives(
        table_size in prop_oneof![Just(0u32), 64u32..400, 4096u32..4097],
        steps in proptest::collection::vec((0usize..4, 0u8..6), 1..80),
        pool in proptest::collection::vec(proptest::collection::vec(header_strategy(), 0..4), 1..4),
    ) {
        let mut enc = HeaderEncoder::new(table_size);
        let mut kept = HeaderDecoder::new(table_size, 1 << 20);
        let mut fresh = HeaderDecoder::new(table_size, 1 << 20);
        let mut list = HeaderList::default();
        let mut block = Vec::new();
        for (pick, action) in steps {
            let fields = &pool[pick % pool.len()];
            let hs: Vec<Header<'_>> = fields.iter().map(|(n, v, ix)| {
                let ix = [Indexing::Auto, Indexing::Incremental, Indexing::No, Indexing::Never][*ix as usize];
                Header::new(n, v).with_indexing(ix)
            }).collect();
            match action {
                0 => list.push(b"x-changed", b"1"),
                1 => list.remove(b":method"),
                2 => list = list.clone(),
                3 => enc.set_max_table_size(table_size / 2).unwrap(),
                _ => {}
            }
            block.clear();
            enc.encode(&hs, &mut block).unwrap();
            kept.decode_into(&block, &mut list).unwrap();
            let want = decode_all(&mut fresh, &block).unwrap();
            let got: Fields = list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(&got, &want);
        }
    }

    /// Arbitrary bytes never panic the decoder, and the table never exceeds its limit.
    #[test]
    fn garbage_never_panics(table_size in 0u32..512, block in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut dec = HeaderDecoder::new(table_size, 8192);
        let _ = dec.decode(&block, |_, _| {});
        prop_assert!(dec.table_size() <= table_size as usize);
    }
}

#[test]
fn a_repeated_steady_state_block_is_recognised_and_not_decoded_again() {
    let mut enc = HeaderEncoder::new(4096);
    let mut dec = HeaderDecoder::new(4096, 64 * 1024);
    let fields = [Header::service(b"calc@1.2.0"), Header::method(b"add")];
    let mut list = HeaderList::default();
    let mut block = Vec::new();
    // The first block inserts both fields: it changed the table, so it is not remembered.
    enc.encode(&fields, &mut block).unwrap();
    dec.decode_into(&block, &mut list).unwrap();
    let first = list.stamp();
    block.clear();
    enc.encode(&fields, &mut block).unwrap();
    assert_eq!(block.len(), 2, "two indexed fields");
    dec.decode_into(&block, &mut list).unwrap();
    let second = list.stamp();
    assert_ne!(second, first, "decoded");
    // The same bytes again: left in place (a decode would seal the list with a new stamp).
    dec.decode_into(&block, &mut list).unwrap();
    assert_eq!(list.stamp(), second, "recognised");
    assert_eq!(list.service(), Some(&b"calc@1.2.0"[..]));
    assert_eq!(list.method(), Some(&b"add"[..]));
    // A list changed in between is decoded again, and comes out right.
    list.remove(b":method");
    dec.decode_into(&block, &mut list).unwrap();
    assert_ne!(list.stamp(), second);
    assert_eq!(list.method(), Some(&b"add"[..]));
    // The same bytes after a table change mean something else: an indexed reference to the
    // newest entry, decoded again after another block (into another list) inserted a newer one.
    let mut newest = Vec::new();
    let tenant = [Header::new(b"tenant", b"acme")];
    enc.encode(&tenant, &mut newest).unwrap();
    dec.decode_into(&newest, &mut HeaderList::default())
        .unwrap();
    newest.clear();
    enc.encode(&tenant, &mut newest).unwrap();
    assert_eq!(newest.len(), 1, "the newest dynamic entry, indexed");
    dec.decode_into(&newest, &mut list).unwrap();
    assert_eq!(list.get(b"tenant"), Some(&b"acme"[..]));
    let mut other = Vec::new();
    enc.encode(&[Header::new(b"region", b"eu")], &mut other)
        .unwrap();
    // (Decoded with `decode`, which keeps no list: the remembered block is only outdated by
    // the table's change.)
    decode_all(&mut dec, &other).unwrap();
    dec.decode_into(&newest, &mut list).unwrap();
    assert_eq!(list.get(b"tenant"), None, "not the remembered meaning");
    assert_eq!(list.get(b"region"), Some(&b"eu"[..]));
}

#[test]
fn shrink_then_grow_signals_both_sizes() {
    let mut enc = HeaderEncoder::new(4096);
    let mut dec = HeaderDecoder::new(4096, 64 * 1024);
    let mut block = Vec::new();
    enc.encode(&[Header::new(b"k", b"v")], &mut block).unwrap();
    decode_all(&mut dec, &block).unwrap();
    enc.set_max_table_size(0).unwrap();
    enc.set_max_table_size(4096).unwrap();
    block.clear();
    enc.encode(&[Header::new(b"k", b"v")], &mut block).unwrap();
    assert_eq!(&block[..4], &[0x20, 0x3f, 0xe1, 0x1f], "size 0 then 4096");
    decode_all(&mut dec, &block).unwrap();
    assert_eq!(
        (enc.table_len(), dec.table_len()),
        (1, 1),
        "the flush reached the peer"
    );
}

#[test]
fn never_indexed_stays_literal_even_if_indexed_before() {
    let mut enc = HeaderEncoder::new(4096);
    let mut block = Vec::new();
    let f = Header::new(b"x-secret", b"s3cr3t");
    enc.encode(&[f.with_indexing(Indexing::Incremental)], &mut block)
        .unwrap();
    block.clear();
    enc.encode(&[f.with_indexing(Indexing::Never)], &mut block)
        .unwrap();
    assert_eq!(block[0] & 0xf0, 0x10, "never-indexed literal, not an index");
}

/// A traced call's `traceparent`: trace `trace`, span `span`.
fn traceparent(trace: u8, span: u64) -> Vec<u8> {
    format!(
        "00-{:032x}-{span:016x}-01",
        u128::from(trace) * 0x0101_0101_0101_0101_0101_0101_0101_0101
    )
    .into_bytes()
}

fn packed_pair() -> (HeaderEncoder, HeaderDecoder) {
    let mut enc = HeaderEncoder::new(4096);
    let mut dec = HeaderDecoder::new(4096, 64 * 1024);
    enc.set_packed_trace(true);
    dec.set_packed_trace(true);
    (enc, dec)
}

#[test]
fn packed_traceparents_cost_28_then_12_bytes_and_rebuild_the_text() {
    let (mut enc, mut dec) = packed_pair();
    let mut block = Vec::new();
    let mut sizes = Vec::new();
    for (trace, span) in [(1, 7), (1, 8), (1, 9), (2, 10), (2, 11), (1, 12)] {
        let tp = traceparent(trace, span);
        let fields = [Header::method(b"get"), Header::new(b"traceparent", &tp)];
        block.clear();
        enc.encode(&fields, &mut block).unwrap();
        let got = decode_all(&mut dec, &block).unwrap();
        assert_eq!(got[1], (b"traceparent".to_vec(), tp));
        sizes.push(block.len());
    }
    // `:method` costs 5 bytes literally, then 1 indexed; the traceparent 28 with its
    // trace-id, 12 within the trace of the previous one (57 as a literal).
    assert_eq!(sizes, [5 + 28, 1 + 12, 1 + 12, 1 + 28, 1 + 12, 1 + 28]);
}

#[test]
fn traceparents_that_are_not_canonical_or_not_negotiated_go_literally() {
    let tp = traceparent(0xab, 0xcd);
    let upper = tp.to_ascii_uppercase();
    let (mut enc, mut dec) = packed_pair();
    for v in [&upper[..], &tp[..tp.len() - 1], b"garbage"] {
        let mut block = Vec::new();
        enc.encode(&[Header::new(b"traceparent", v)], &mut block)
            .unwrap();
        assert_eq!(block.len(), 2 + v.len(), "literal for {v:?}");
        assert_eq!(decode_all(&mut dec, &block).unwrap()[0].1, v);
    }
    // Never-indexed and explicitly indexed fields keep their representation.
    for h in [
        Header::new(b"traceparent", &tp).with_indexing(Indexing::Never),
        Header::new(b"traceparent", &tp).with_indexing(Indexing::Incremental),
    ] {
        let mut block = Vec::new();
        enc.encode(&[h], &mut block).unwrap();
        assert_eq!(block.len(), 2 + tp.len());
        assert_eq!(decode_all(&mut dec, &block).unwrap()[0].1, tp);
    }
    // Without the feature, the encoder sends the literal.
    let mut plain = HeaderEncoder::new(4096);
    let mut block = Vec::new();
    plain
        .encode(&[Header::new(b"traceparent", &tp)], &mut block)
        .unwrap();
    assert_eq!(block.len(), 57);
}

#[test]
fn bad_packed_values_are_connection_errors_that_say_why() {
    let (mut enc, _) = packed_pair();
    let tp = traceparent(5, 6);
    let mut full = Vec::new();
    enc.encode(&[Header::new(b"traceparent", &tp)], &mut full)
        .unwrap();
    let mut short = Vec::new();
    enc.encode(&[Header::new(b"traceparent", &tp)], &mut short)
        .unwrap();
    assert_eq!((full.len(), short.len()), (28, 12));

    // Not negotiated: refused, not read as Huffman or skipped.
    let mut off = HeaderDecoder::new(4096, 64 * 1024);
    let e = decode_all(&mut off, &full).unwrap_err();
    assert!(
        matches!(e, HeaderError::PackedValue(m) if m.contains("PACKED_TRACE")),
        "{e}"
    );
    assert_eq!(e.counter(), "header_packed_value");
    // A short form with no trace-id before it.
    let (_, mut dec) = packed_pair();
    let e = decode_all(&mut dec, &short).unwrap_err();
    assert!(
        matches!(e, HeaderError::PackedValue(m) if m.contains("before any trace-id")),
        "{e}"
    );
    // A length that is neither 26 nor 10, and a truncated value.
    let (_, mut dec) = packed_pair();
    let mut odd = full.clone();
    odd[1] = 0x80 | 25;
    odd.pop();
    assert!(matches!(
        decode_all(&mut dec, &odd),
        Err(HeaderError::PackedValue(_))
    ));
    assert_eq!(
        decode_all(&mut dec, &full[..20]),
        Err(HeaderError::Truncated)
    );
    // The packed value counts against the header list limit as its 55-byte text.
    let mut small = HeaderDecoder::new(4096, 11 + 55 + 31);
    small.set_packed_trace(true);
    assert!(matches!(
        decode_all(&mut small, &full),
        Err(HeaderError::ListTooLarge { size: 98, max: 97 })
    ));
}

proptest! {
    #[test]
    fn packed_and_plain_fields_interleave_and_round_trip(
        calls in proptest::collection::vec((0u8..3, any::<u64>(), any::<bool>()), 1..40)
    ) {
        let (mut enc, mut dec) = packed_pair();
        for (trace, span, tenant) in calls {
            let tp = traceparent(trace, span);
            let mut fields = vec![Header::service(b"svc@1.0.0"), Header::new(b"traceparent", &tp)];
            if tenant {
                fields.push(Header::new(b"tenant", b"acme"));
            }
            let mut block = Vec::new();
            enc.encode(&fields, &mut block).unwrap();
            let got = decode_all(&mut dec, &block).unwrap();
            prop_assert_eq!(got.len(), fields.len());
            for (g, f) in got.iter().zip(&fields) {
                prop_assert_eq!(&g.0[..], f.name);
                prop_assert_eq!(&g.1[..], f.value);
            }
        }
    }
}

#[test]
fn packed_traceparent_golden_bytes_of_protocol_md_9_10() {
    let (mut enc, mut dec) = packed_pair();
    let mut block = Vec::new();
    let first = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    enc.encode(&[Header::new(b"traceparent", first)], &mut block)
        .unwrap();
    assert_eq!(
        block,
        [
            0x04, 0x9a, 0x00, 0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92,
            0x9d, 0x0e, 0x0e, 0x47, 0x36, 0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7, 0x01
        ]
    );
    assert_eq!(decode_all(&mut dec, &block).unwrap()[0].1, first);
    block.clear();
    let next = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01";
    enc.encode(&[Header::new(b"traceparent", next)], &mut block)
        .unwrap();
    assert_eq!(
        block,
        [
            0x04, 0x8a, 0x00, 0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb8, 0x01
        ]
    );
    assert_eq!(decode_all(&mut dec, &block).unwrap()[0].1, next);
}
