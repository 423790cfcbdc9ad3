//! Frames on shared-memory records (`netron_codec::record::RecordReader`), on records cut
//! from the input (`netron_fuzz::RECORDS_PREFIX`: record limit and frame size limit, then
//! length-prefixed records). No panic; every frame yielded is valid under the limits; a
//! reassembled frame is longer than the record limit and no longer than the frame limit;
//! after an error nothing more is read.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::Limits;
use netron_codec::record::{Record, RecordReader};
use netron_fuzz::{RECORDS_PREFIX, check_frame};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, mut rest)) = data.split_first_chunk::<RECORDS_PREFIX>() else {
        return;
    };
    let record_limit = 16 + prefix[0] as u32;
    let limits = Limits::default()
        .with_max_frame_size(16 + 64 * prefix[1] as u32)
        .with_max_batch_frames(8)
        .with_max_batch_bytes(128);
    let mut rx = RecordReader::new(limits, record_limit);
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len()).min(record_limit as usize);
        let (record, tail) = tail.split_at(len);
        rest = tail;
        match rx.push(record) {
            Ok(Record::Batch(frames)) => {
                for f in frames {
                    match f {
                        Ok(f) => check_frame(&f, f.as_bytes(), &limits),
                        Err(e) => {
                            black_box((e.counter(), e.status()));
                            return;
                        }
                    }
                }
            }
            Ok(Record::Fragment { missing }) => {
                assert!(missing > 0);
                assert!(rx.in_fragment());
            }
            Ok(Record::Reassembled(f)) => {
                assert!(f.len() > record_limit as usize);
                assert!(f.len() <= limits.max_frame_size as usize);
                check_frame(&f, f.as_bytes(), &limits);
            }
            Err(e) => {
                black_box((e.counter(), e.status(), e.to_string()));
                return;
            }
        }
    }
});
