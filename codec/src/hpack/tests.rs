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

    /// Arbitrary bytes never panic the decoder, and the table never exceeds its limit.
    #[test]
    fn garbage_never_panics(table_size in 0u32..512, block in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut dec = HeaderDecoder::new(table_size, 8192);
        let _ = dec.decode(&block, |_, _| {});
        prop_assert!(dec.table_size() <= table_size as usize);
    }
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
