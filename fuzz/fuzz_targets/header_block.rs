//! One `HeaderDecoder` (table size and list limit from the first 4 input bytes, see
//! `netron_fuzz::header_block_params`; packed traceparents accepted when the table size is
//! odd) decoding the rest as a header block, twice (the second
//! time against the table the first left behind). No panic; the table stays within its size;
//! the decoded list stays within its limit; `decode_into` agrees with `decode`.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::HeaderError;
use netron_codec::hpack::{ENTRY_OVERHEAD, HeaderDecoder, HeaderList};
use netron_fuzz::{HEADER_BLOCK_PREFIX, header_block_params};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, block)) = data.split_first_chunk::<HEADER_BLOCK_PREFIX>() else {
        return;
    };
    let (table_size, max_list) = header_block_params(*prefix);
    let mut dec = HeaderDecoder::new(table_size, max_list);
    let mut twin = HeaderDecoder::new(table_size, max_list);
    dec.set_packed_trace(table_size & 1 == 1);
    twin.set_packed_trace(table_size & 1 == 1);
    let mut list = HeaderList::default();
    for _ in 0..2 {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let r = dec.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())));
        let r2 = twin.decode_into(block, &mut list);
        assert_eq!(r, r2, "decode and decode_into disagree");
        assert!(dec.table_size() <= table_size as usize);
        assert!(dec.table_len() as usize * ENTRY_OVERHEAD <= dec.table_size());
        assert_eq!(dec.table_size(), twin.table_size());
        assert_eq!(dec.table_len(), twin.table_len());
        match r {
            Ok(()) => {
                let size: usize = fields
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD)
                    .sum();
                assert!(
                    size <= max_list,
                    "list of {size} bytes above the limit {max_list}"
                );
                assert_eq!(list.len(), fields.len());
                for (i, (n, v)) in fields.iter().enumerate() {
                    assert_eq!(list.field(i), Some((&n[..], &v[..])));
                }
                assert_eq!(list.iter().count(), fields.len());
                black_box((list.service(), list.method(), list.topic()));
            }
            Err(e) => {
                black_box(e.counter());
                black_box(e.to_string());
                match e {
                    HeaderError::TableSizeTooLarge { requested, max } => {
                        assert!(requested > max);
                        assert_eq!(max, table_size);
                    }
                    HeaderError::ListTooLarge { size, max } => {
                        assert!(size > max);
                        assert_eq!(max, max_list);
                    }
                    HeaderError::BlockTooLarge => panic!("decoder reported an encoder error"),
                    _ => {}
                }
                // A connection error: the table may be partly updated, but stays bounded.
                return;
            }
        }
    }
});
