//! Frames on shared-memory records (docs/protocol.md §26.3): batches of whole frames, and
//! frames larger than a record in fragments of any size, reassembled exactly.

use netron_codec::record::{Record, RecordError, RecordReader, fragment_sizes};
use netron_codec::{BatchEncoder, DecodeError, FrameKind, Limits};
use proptest::prelude::*;

fn encode(kind: FrameKind, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = BatchEncoder::new(Limits::default());
    b.frame(kind, id)
        .unwrap()
        .payload(payload)
        .finish()
        .unwrap();
    b.as_slice().to_vec()
}

proptest! {
    #[test]
    fn frames_survive_any_fragmentation(
        record_limit in 16usize..300,
        sizes in prop::collection::vec(0usize..900, 1..12),
        cuts in prop::collection::vec(1usize..300, 64),
        group in prop::collection::vec(any::<bool>(), 12),
    ) {
        let limits = Limits::default();
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| encode(FrameKind::Response, i as u32 + 1, &vec![i as u8; n]))
            .collect();
        // Sender: frames that fit go whole (several per record when `group` says so and the
        // record stays within the limit); larger ones in fragments of 1..=record_limit bytes.
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut cut = cuts.iter().cycle();
        let mut open: Option<Vec<u8>> = None;
        for (i, f) in frames.iter().enumerate() {
            if f.len() <= record_limit {
                match open.as_mut() {
                    Some(r) if group[i] && r.len() + f.len() <= record_limit => r.extend_from_slice(f),
                    _ => {
                        records.extend(open.take());
                        open = Some(f.clone());
                    }
                }
            } else {
                records.extend(open.take());
                // The first fragment must hold the 16-byte header.
                let mut at = 0;
                while at < f.len() {
                    let max = if at == 0 { record_limit } else { record_limit.min(f.len() - at) };
                    let min = if at == 0 { 16 } else { 1 };
                    let n = (min + cut.next().unwrap() % (max - min + 1)).min(f.len() - at);
                    let n = if at == 0 { n.min(f.len() - 1) } else { n };
                    records.push(f[at..at + n].to_vec());
                    at += n;
                }
            }
        }
        records.extend(open.take());
        let mut rx = RecordReader::new(limits, record_limit as u32);
        let mut got: Vec<Vec<u8>> = Vec::new();
        for r in &records {
            prop_assert!(r.len() <= record_limit);
            match rx.push(r).unwrap() {
                Record::Batch(it) => {
                    for f in it {
                        got.push(f.unwrap().as_bytes().to_vec());
                    }
                }
                Record::Fragment { missing } => prop_assert!(missing > 0),
                Record::Reassembled(f) => got.push(f.as_bytes().to_vec()),
            }
        }
        prop_assert!(!rx.in_fragment());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn fragment_sizes_cover_the_frame(len in 0usize..10_000, limit in 16usize..3000) {
        let sizes: Vec<usize> = fragment_sizes(len, limit).unwrap().collect();
        prop_assert_eq!(sizes.iter().sum::<usize>(), len);
        prop_assert!(sizes.iter().all(|&s| s <= limit));
        prop_assert_eq!(sizes.len(), len.div_ceil(limit).max(1));
    }

    /// Arbitrary records never panic the reader, and its buffer never exceeds the frame limit.
    #[test]
    fn garbage_records_are_errors(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..8)) {
        let limits = Limits::default().with_max_frame_size(4096);
        let mut rx = RecordReader::new(limits, 32);
        for r in &records {
            match rx.push(r) {
                Ok(Record::Batch(it)) => { for f in it { if f.is_err() { break; } } }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

#[test]
fn fragmentation_rules() {
    let limits = Limits::default();
    let small = encode(FrameKind::Response, 1, &[1; 10]); // 26 bytes
    let big = encode(FrameKind::Response, 2, &[2; 100]); // 116 bytes
    // A partial frame that would have fitted a record is still Incomplete (§10.2).
    let mut rx = RecordReader::new(limits, 64);
    assert!(matches!(
        rx.push(&small[..20]),
        Err(RecordError::Decode(DecodeError::Incomplete { .. }))
    ));
    // A fragment may not share its record with another frame.
    let mut rx = RecordReader::new(limits, 64);
    assert!(matches!(
        rx.push(&big[..64]),
        Ok(Record::Fragment { missing: 52 })
    ));
    let mut tail = big[64..].to_vec();
    tail.extend_from_slice(&small);
    assert_eq!(
        rx.push(&tail).unwrap_err(),
        RecordError::FragmentOverrun {
            missing: 52,
            got: 78
        }
    );
    let mut rx = RecordReader::new(limits, 64);
    rx.push(&big[..64]).unwrap();
    assert_eq!(rx.push(&[]).unwrap_err(), RecordError::EmptyFragment);
    assert_eq!(RecordError::EmptyFragment.counter(), "fragment_empty");
    // The announced length is checked against max_frame_size before anything is buffered.
    let mut rx = RecordReader::new(limits.with_max_frame_size(100), 64);
    assert!(matches!(
        rx.push(&big[..64]),
        Err(RecordError::Decode(DecodeError::FrameTooLarge {
            length: 116,
            max: 100
        }))
    ));
    // An empty record outside a fragment holds zero frames.
    let mut rx = RecordReader::new(limits, 64);
    match rx.push(&[]) {
        Ok(Record::Batch(it)) => assert_eq!(it.count(), 0),
        other => panic!("{other:?}"),
    }
}
