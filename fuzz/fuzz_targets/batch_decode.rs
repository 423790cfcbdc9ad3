//! `decode_batch` (batch mode: shared-memory records, datagrams) with limits taken from the
//! first 4 input bytes (see `netron_fuzz::batch_limits`). No panic; at most
//! `max_batch_frames` frames, each but the first starting below `max_batch_bytes`; a batch that decodes
//! without error is made of whole frames only; batch mode yields a prefix of what stream mode
//! yields.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::{DecodeError, FrameIter, decode_batch};
use netron_fuzz::{BATCH_PREFIX, batch_limits, check_frame};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, buf)) = data.split_first_chunk::<BATCH_PREFIX>() else {
        return;
    };
    let limits = batch_limits(*prefix);
    let mut batch = decode_batch(buf, &limits);
    let mut stream = FrameIter::new(buf, &limits);
    let mut pos = 0usize;
    let mut frames = 0u32;
    let mut error = None;
    for item in batch.by_ref() {
        match item {
            Ok(frame) => {
                assert!(
                    frames < limits.max_batch_frames,
                    "more than max_batch_frames"
                );
                assert!(
                    frames == 0 || pos < limits.max_batch_bytes as usize,
                    "a frame other than the first starts at or past max_batch_bytes"
                );
                check_frame(&frame, &buf[pos..], &limits);
                let same = stream
                    .next()
                    .expect("stream mode yields the same frame")
                    .expect("stream mode yields the same frame");
                assert_eq!(same.as_bytes(), frame.as_bytes());
                pos += frame.len();
                frames += 1;
                black_box(frame.header_block());
            }
            Err(e) => {
                black_box(e.counter());
                black_box(e.status());
                match e {
                    DecodeError::TooManyFrames { max } => {
                        assert_eq!(max, limits.max_batch_frames);
                        assert_eq!(frames, max);
                    }
                    DecodeError::BatchTooLarge { len, max } => {
                        assert_eq!(len, buf.len());
                        assert!(pos > 0 && pos >= max as usize);
                    }
                    DecodeError::Incomplete { needed } => assert!(needed > 0),
                    _ => {}
                }
                error = Some(e);
            }
        }
    }
    assert!(
        batch.next().is_none(),
        "nothing after the end or the first error"
    );
    assert_eq!(batch.consumed(), pos);
    assert_eq!(batch.frames(), frames);
    assert!(frames <= limits.max_batch_frames);
    if error.is_none() {
        assert_eq!(pos, buf.len(), "a clean batch is whole frames only");
    }
});
