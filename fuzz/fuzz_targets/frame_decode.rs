//! `Frame::parse` and stream-mode `FrameIter` on arbitrary bytes, under several limits.
//! No panic; every frame satisfies `netron_fuzz::check_frame`; the iterator's bookkeeping
//! (consumed, remaining, needed, frames) agrees with the frames it yielded.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::{DecodeError, Frame, FrameIter, Limits};
use netron_fuzz::{check_frame, check_parse_error};

fuzz_target!(|data: &[u8]| {
    let limits = [
        Limits::default(),
        Limits::default().with_max_frame_size(Limits::MIN_FRAME_SIZE),
        Limits::default().with_max_frame_size(64),
        Limits::default().with_max_frame_size(0),
        Limits::default().with_max_frame_size(u32::MAX),
    ];
    for limits in &limits {
        match Frame::parse(data, limits) {
            Ok(frame) => {
                check_frame(&frame, data, limits);
                black_box(format!("{frame:?}"));
            }
            Err(e) => check_parse_error(&e, data, limits),
        }

        let mut iter = FrameIter::new(data, limits);
        let mut pos = 0usize;
        let mut count = 0u32;
        let mut error = None;
        for item in iter.by_ref() {
            match item {
                Ok(frame) => {
                    assert_eq!(frame.as_bytes().as_ptr(), data[pos..].as_ptr());
                    check_frame(&frame, &data[pos..], limits);
                    pos += frame.len();
                    count += 1;
                    black_box(frame.payload());
                }
                Err(e) => {
                    assert!(
                        !matches!(e, DecodeError::Incomplete { .. }),
                        "stream mode reports a partial frame by stopping, not as an error"
                    );
                    check_parse_error(&e, &data[pos..], limits);
                    assert_eq!(
                        Frame::parse(&data[pos..], limits).err().as_ref(),
                        Some(&e),
                        "the iterator reports what Frame::parse says"
                    );
                    error = Some(e);
                }
            }
        }
        assert_eq!(iter.consumed(), pos);
        assert!(iter.consumed() <= data.len());
        assert_eq!(iter.frames(), count);
        assert_eq!(iter.remaining(), &data[pos..]);
        // After the end (or the first error) the iterator stays exhausted.
        assert!(iter.next().is_none());
        if error.is_none() {
            if pos == data.len() {
                assert_eq!(iter.needed(), 0);
            } else {
                // Stopped at a partial frame: it says how much more it needs, exactly what
                // Frame::parse says.
                assert!(iter.needed() > 0);
                assert_eq!(
                    Frame::parse(&data[pos..], limits).err(),
                    Some(DecodeError::Incomplete {
                        needed: iter.needed()
                    })
                );
            }
        }
    }
});
