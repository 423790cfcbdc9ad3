//! Stateful header compression: a sequence of header lists (and table size changes) encoded
//! by one `HeaderEncoder` and decoded by one `HeaderDecoder` of the same size, as on one
//! connection direction. Every block decodes to exactly the fields that were encoded, and
//! both tables agree (entries and size) after every block. Raw garbage blocks go to a
//! separate decoder, which must never panic and stay within its size.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::hpack::{
    ENTRY_OVERHEAD, Header, HeaderDecoder, HeaderEncoder, HeaderList, Indexing,
};
use netron_fuzz::{HeaderSequence, HeaderStep, Rep, SCRATCH_LEN, representations};

fuzz_target!(|input: HeaderSequence| {
    let size = input.table_size;
    let mut enc = HeaderEncoder::new(size);
    let mut dec = HeaderDecoder::new(size, usize::MAX);
    let mut garbage = HeaderDecoder::new(size, 16 << 10);
    enc.set_packed_trace(input.packed_trace);
    dec.set_packed_trace(input.packed_trace);
    garbage.set_packed_trace(input.packed_trace);
    let mut garbage_ok = true;
    let mut list = HeaderList::default();
    let mut block = Vec::new();
    // One reused buffer per field position: same address, changing contents.
    let mut scratch = vec![[0u8; SCRATCH_LEN]; 16];
    // Successful size changes since the last block.
    let mut updates_since_block = 0usize;
    for step in &input.steps {
        match step {
            HeaderStep::Block(fields) => {
                for (slot, f) in scratch.iter_mut().zip(fields) {
                    if f.scratch {
                        slot[..f.value.len()].copy_from_slice(&f.value);
                    }
                }
                let headers: Vec<Header<'_>> = fields
                    .iter()
                    .zip(scratch.iter().chain(std::iter::repeat(&[0u8; SCRATCH_LEN])))
                    .map(|(f, slot)| {
                        let value = if f.scratch {
                            &slot[..f.value.len()]
                        } else {
                            &f.value[..]
                        };
                        Header::new(&f.name, value).with_indexing(f.indexing)
                    })
                    .collect();
                block.clear();
                enc.encode(&headers, &mut block)
                    .expect("encoding never fails");
                dec.decode_into(&block, &mut list).unwrap_or_else(|e| {
                    panic!("own block does not decode: {e}; block {block:02x?}")
                });
                assert_eq!(list.len(), fields.len(), "field count; block {block:02x?}");
                for (i, f) in fields.iter().enumerate() {
                    assert_eq!(
                        list.field(i),
                        Some((&f.name[..], &f.value[..])),
                        "field {i}; block {block:02x?}"
                    );
                }
                assert_eq!(enc.table_len(), dec.table_len(), "table entries disagree");
                assert_eq!(enc.table_size(), dec.table_size(), "table sizes disagree");
                // Representations: size updates only first (at most two: RFC 7541 §4.2, the
                // smallest then the last), then one per field; never-indexed fields (explicit,
                // or `authorization` under Auto) are always never-indexed literals.
                let reps = representations(&block).expect("own block is well-formed");
                let updates = reps.iter().take_while(|r| **r == Rep::SizeUpdate).count();
                assert!(updates <= 2);
                assert_eq!(updates > 0, updates_since_block > 0);
                assert_eq!(reps.len() - updates, fields.len());
                for (f, rep) in fields.iter().zip(&reps[updates..]) {
                    let never = f.indexing == Indexing::Never
                        || (f.indexing == Indexing::Auto && &f.name[..] == b"authorization");
                    if never {
                        assert_eq!(*rep, Rep::NeverIndexed, "{f:?} must stay a literal");
                    }
                    if f.indexing == Indexing::No {
                        assert_ne!(*rep, Rep::Incremental, "{f:?} must not be added");
                    }
                }
                assert!(dec.table_size() <= size as usize);
                assert!(enc.table_size() <= size as usize);
                assert!(enc.table_len() as usize * ENTRY_OVERHEAD <= enc.table_size());
                updates_since_block = 0;
            }
            HeaderStep::SetMaxTableSize(s) => {
                let r = enc.set_max_table_size(*s);
                assert_eq!(
                    r.is_err(),
                    *s > size,
                    "set_max_table_size({s}) with limit {size}"
                );
                if r.is_ok() {
                    assert!(enc.table_size() <= *s as usize);
                    updates_since_block += 1;
                }
            }
            HeaderStep::Garbage(bytes) => {
                // After an error a real connection closes; keep feeding to probe the
                // partly-updated table, which must still never panic.
                let r = garbage.decode(bytes, |n, v| {
                    black_box((n, v));
                });
                garbage_ok &= r.is_ok();
                assert!(garbage.table_size() <= size as usize);
                black_box(garbage_ok);
            }
        }
    }
});
