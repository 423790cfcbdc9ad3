//! Header compression across independent streams (docs/protocol.md §27.4): header blocks on
//! many QUIC streams, delivered in any order and before or after the encoder-stream bytes
//! they need (split anywhere), with decoder-stream feedback at any time. Every block must
//! decode to exactly its header list, never more than 16 streams may be blocked, and nothing
//! may fail.

use std::collections::BTreeMap;

use netron_codec::hpack::{Header, HeaderList, Indexing};
use netron_codec::qpack::{Decoded, MAX_BLOCKED_STREAMS, QpackDecoder, QpackEncoder, QpackError};
use proptest::prelude::*;

type Fields = Vec<(Vec<u8>, Vec<u8>, Indexing)>;

fn headers(f: &Fields) -> Vec<Header<'_>> {
    f.iter()
        .map(|(n, v, i)| Header::new(n, v).with_indexing(*i))
        .collect()
}

fn list_of(list: &HeaderList) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

fn plain(f: &Fields) -> Vec<(Vec<u8>, Vec<u8>)> {
    f.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect()
}

fn field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Indexing)> {
    (
        prop::sample::select(vec![
            ":service",
            ":method",
            ":topic",
            "content-type",
            "authorization",
            "traceparent",
            "x-tenant",
            "x-shard",
        ]),
        prop_oneof![
            4 => prop::sample::select(vec![
                "calc@1.2.0", "add", "sum", "orders.eu", "application/flatbuffers", "a", "",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(b'a'..=b'z', 0..90),
        ],
        prop::sample::select(vec![
            Indexing::Auto,
            Indexing::Auto,
            Indexing::Auto,
            Indexing::Incremental,
            Indexing::No,
            Indexing::Never,
        ]),
    )
        .prop_map(|(n, v, i)| (n.as_bytes().to_vec(), v, i))
}

/// A field that is mostly new to the table: short random names and values, inserted.
fn fresh_field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Indexing)> {
    (
        prop::collection::vec(b'a'..=b'z', 1..6),
        prop::collection::vec(b'a'..=b'z', 0..6),
        prop::sample::select(vec![Indexing::Incremental, Indexing::Auto]),
    )
}

/// Steps where streams are often abandoned and the encoder stream trickles.
fn abandon_heavy_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Encode),
        1 => (1usize..8).prop_map(Step::EncoderBytes),
        2 => any::<usize>().prop_map(Step::Block),
        3 => Just(Step::Feedback),
        4 => any::<usize>().prop_map(Step::Cancel),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// Encode the next header list on a new stream.
    Encode,
    /// Deliver this many bytes of the encoder stream (whatever is in flight, at most).
    EncoderBytes(usize),
    /// Deliver the pending block with this index (modulo the number pending).
    Block(usize),
    /// Deliver the decoder stream to the encoder.
    Feedback,
    /// The receiver abandons the pending or blocked block with this index (a reset stream):
    /// the encoder then forgets it, so nothing pins the entries it inserted.
    Cancel(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Encode),
        2 => (1usize..40).prop_map(Step::EncoderBytes),
        3 => any::<usize>().prop_map(Step::Block),
        1 => Just(Step::Feedback),
        1 => any::<usize>().prop_map(Step::Cancel),
    ]
}

struct Sim {
    enc: QpackEncoder,
    dec: QpackDecoder,
    in_flight: Vec<u8>,
    pending: Vec<(u64, Vec<u8>, Fields)>,
    blocked: BTreeMap<u64, (Vec<u8>, Fields)>,
    next_stream: u64,
    decoded: usize,
    list: HeaderList,
}

impl Sim {
    fn new(capacity: u32) -> Self {
        Self {
            enc: QpackEncoder::new(capacity),
            dec: QpackDecoder::new(capacity, 1 << 20),
            in_flight: Vec::new(),
            pending: Vec::new(),
            blocked: BTreeMap::new(),
            next_stream: 0,
            decoded: 0,
            list: HeaderList::default(),
        }
    }

    fn encode(&mut self, fields: Fields) {
        let stream = self.next_stream;
        self.next_stream += 4;
        let mut block = Vec::new();
        self.enc
            .encode(stream, &headers(&fields), &mut block, &mut self.in_flight)
            .unwrap();
        assert!(self.enc.blocked_streams() <= MAX_BLOCKED_STREAMS);
        self.pending.push((stream, block, fields));
    }

    fn decode(&mut self, stream: u64, block: Vec<u8>, fields: Fields) {
        match self.dec.decode(stream, &block, &mut self.list).unwrap() {
            Decoded::Done => {
                assert_eq!(list_of(&self.list), plain(&fields), "stream {stream}");
                self.decoded += 1;
            }
            Decoded::Blocked => {
                assert!(self.blocked.insert(stream, (block, fields)).is_none());
            }
        }
        assert!(self.dec.blocked_streams() <= MAX_BLOCKED_STREAMS);
        assert_eq!(self.dec.blocked_streams(), self.blocked.len());
    }

    fn encoder_bytes(&mut self, n: usize) {
        let n = n.min(self.in_flight.len());
        let chunk: Vec<u8> = self.in_flight.drain(..n).collect();
        self.dec.feed_encoder_stream(&chunk).unwrap();
        let ready: Vec<u64> = self.dec.unblocked().collect();
        for s in ready {
            let (block, fields) = self.blocked.remove(&s).expect("unblocked a known stream");
            self.decode(s, block, fields);
            assert!(!self.blocked.contains_key(&s), "stream {s} blocked twice");
        }
    }

    /// Abandons the pending or blocked block with index `i` (modulo their number); returns
    /// whether there was one.
    fn cancel(&mut self, i: usize) -> bool {
        let victims: Vec<u64> = self
            .pending
            .iter()
            .map(|p| p.0)
            .chain(self.blocked.keys().copied())
            .collect();
        if victims.is_empty() {
            return false;
        }
        let s = victims[i % victims.len()];
        self.pending.retain(|p| p.0 != s);
        self.blocked.remove(&s);
        self.dec.cancel_stream(s);
        true
    }

    fn feedback(&mut self) {
        let mut ins = Vec::new();
        self.dec.take_instructions(&mut ins);
        self.enc.feed_decoder_stream(&ins).unwrap();
        assert!(self.enc.known_received_count() <= self.dec.insert_count());
    }

    /// Plays `steps`, taking the lists to encode from `lists`; returns how many streams the
    /// receiver abandoned.
    fn run(&mut self, lists: &mut impl Iterator<Item = Fields>, steps: Vec<Step>) -> usize {
        let mut cancelled = 0usize;
        for s in steps {
            match s {
                Step::Encode => {
                    if let Some(f) = lists.next() {
                        self.encode(f);
                    }
                }
                Step::EncoderBytes(n) => self.encoder_bytes(n),
                Step::Block(i) => {
                    if !self.pending.is_empty() {
                        let (st, b, f) = self.pending.remove(i % self.pending.len());
                        self.decode(st, b, f);
                    }
                }
                Step::Feedback => self.feedback(),
                Step::Cancel(i) => cancelled += usize::from(self.cancel(i)),
            }
        }
        cancelled
    }

    fn finish(&mut self) {
        while !self.pending.is_empty() {
            let (s, b, f) = self.pending.remove(0);
            self.decode(s, b, f);
        }
        self.encoder_bytes(usize::MAX);
        assert!(
            self.blocked.is_empty(),
            "blocks left blocked: {:?}",
            self.blocked.keys()
        );
        self.feedback();
        assert_eq!(self.enc.known_received_count(), self.enc.insert_count());
        assert_eq!(self.enc.blocked_streams(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Blocks delivered in any order, before or after their insertions; encoder stream split
    /// anywhere; feedback at any time; streams abandoned by the receiver (every block not
    /// abandoned decodes).
    #[test]
    fn reordered_and_blocked_streams_decode_exactly(
        capacity in prop_oneof![Just(0u32), 64u32..512, Just(4096u32)],
        lists in prop::collection::vec(prop::collection::vec(field(), 0..6), 1..40),
        steps in prop::collection::vec(step(), 0..160),
    ) {
        let mut sim = Sim::new(capacity);
        let mut lists = lists.into_iter();
        let cancelled = sim.run(&mut lists, steps);
        for f in lists {
            sim.encode(f);
        }
        let total = sim.next_stream / 4;
        sim.finish();
        prop_assert_eq!(sim.decoded as u64 + cancelled as u64, total);
    }

    /// Abandon-heavy traffic on small tables with fresh values and a slow encoder stream:
    /// abandoned streams unpin entries the decoder has not received, which must stay anyway
    /// (else a later block's Required Insert Count can run more than MaxEntries ahead).
    #[test]
    fn abandoned_streams_never_make_a_block_undecodable(
        capacity in 64u32..400,
        lists in prop::collection::vec(prop::collection::vec(fresh_field(), 1..5), 1..40),
        steps in prop::collection::vec(abandon_heavy_step(), 0..120),
    ) {
        let mut sim = Sim::new(capacity);
        let mut lists = lists.into_iter();
        let cancelled = sim.run(&mut lists, steps);
        let total = sim.next_stream / 4;
        sim.finish();
        prop_assert_eq!(sim.decoded as u64 + cancelled as u64, total);
    }

    /// The decoder's table always equals the encoder's once the encoder stream is delivered:
    /// a second round of the same lists, after feedback, costs nothing on the encoder stream
    /// and references only acknowledged entries (never blocks).
    #[test]
    fn steady_state_after_acknowledgement(
        lists in prop::collection::vec(prop::collection::vec(field(), 1..6), 1..10),
    ) {
        let mut sim = Sim::new(4096);
        for f in lists.clone() {
            sim.encode(f);
        }
        sim.finish();
        let before = sim.enc.insert_count();
        for f in lists {
            let stream = sim.next_stream;
            sim.next_stream += 4;
            let mut block = Vec::new();
            let mut ins = Vec::new();
            sim.enc.encode(stream, &headers(&f), &mut block, &mut ins).unwrap();
            // Only fields that were never inserted (policy) or evicted could need insertion.
            prop_assert!(ins.is_empty() || sim.enc.insert_count() > before);
            sim.dec.feed_encoder_stream(&ins).unwrap();
            prop_assert_eq!(sim.dec.decode(stream, &block, &mut sim.list).unwrap(), Decoded::Done);
            prop_assert_eq!(list_of(&sim.list), plain(&f));
        }
    }

    /// Datagram blocks never reference the dynamic table and decode without the encoder
    /// stream.
    #[test]
    fn datagram_blocks_are_self_contained(
        warm in prop::collection::vec(field(), 0..8),
        fields in prop::collection::vec(field(), 0..8),
    ) {
        let mut enc = QpackEncoder::new(4096);
        let mut dec = QpackDecoder::new(4096, 1 << 20);
        let mut sink = Vec::new();
        enc.encode(0, &headers(&warm), &mut Vec::new(), &mut sink).unwrap();
        let before = enc.insert_count();
        let mut block = Vec::new();
        enc.encode_datagram(&headers(&fields), &mut block).unwrap();
        prop_assert_eq!(enc.insert_count(), before);
        prop_assert_eq!(&block[..2], &[0u8, 0][..]);
        let mut list = HeaderList::default();
        dec.decode_datagram(&block, &mut list).unwrap();
        prop_assert_eq!(list_of(&list), plain(&fields));
    }

    /// Arbitrary bytes never panic the decoder, on any of its three inputs.
    #[test]
    fn garbage_is_an_error_not_a_panic(
        enc_stream in prop::collection::vec(any::<u8>(), 0..64),
        block in prop::collection::vec(any::<u8>(), 0..64),
        dec_stream in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut dec = QpackDecoder::new(256, 4096);
        let _ = dec.feed_encoder_stream(&enc_stream);
        let _ = dec.decode(0, &block, &mut HeaderList::default());
        let mut enc = QpackEncoder::new(256);
        let _ = enc.feed_decoder_stream(&dec_stream);
        prop_assert!(dec.blocked_streams() <= MAX_BLOCKED_STREAMS);
    }
}

#[test]
fn at_most_sixteen_streams_block_even_without_feedback() {
    // 40 requests with fresh values, encoder stream withheld: the encoder references new
    // entries from at most 16 streams and sends the rest literally.
    let mut sim = Sim::new(4096);
    for i in 0..40u32 {
        let v = format!("tenant-{i}").into_bytes();
        sim.encode(vec![(b"x-tenant".to_vec(), v, Indexing::Auto)]);
    }
    assert_eq!(sim.enc.blocked_streams(), MAX_BLOCKED_STREAMS);
    while !sim.pending.is_empty() {
        let (s, b, f) = sim.pending.remove(0);
        sim.decode(s, b, f);
    }
    assert_eq!(sim.blocked.len(), MAX_BLOCKED_STREAMS);
    assert_eq!(sim.decoded, 40 - MAX_BLOCKED_STREAMS);
    sim.finish();
    assert_eq!(sim.decoded, 40);
}

#[test]
fn a_seventeenth_blocked_stream_is_a_connection_error() {
    // A peer that ignores the limit: 17 blocks, each needing an insertion not yet received.
    let mut dec = QpackDecoder::new(4096, 1 << 20);
    let mut list = HeaderList::default();
    for s in 0..MAX_BLOCKED_STREAMS as u64 {
        // Required Insert Count 1 (encoded 2), Base 1, indexed dynamic relative 0.
        assert_eq!(
            dec.decode(s * 4, &[0x02, 0x00, 0x80], &mut list),
            Ok(Decoded::Blocked)
        );
    }
    assert_eq!(
        dec.decode(64, &[0x02, 0x00, 0x80], &mut list),
        Err(QpackError::BlockedStreamsExceeded)
    );
    assert_eq!(
        QpackError::BlockedStreamsExceeded.counter(),
        "qpack_blocked_streams"
    );
}

#[test]
fn references_at_or_above_the_required_insert_count_are_refused() {
    let mut dec = QpackDecoder::new(4096, 1 << 20);
    // Two insertions: (x-a, 1), (x-b, 2) with literal names.
    dec.feed_encoder_stream(b"\x43x-a\x011\x43x-b\x012")
        .unwrap();
    let mut list = HeaderList::default();
    // RIC 1 (encoded 2), Base 1: post-base index 0 = absolute 1 >= RIC: refused.
    assert_eq!(
        dec.decode(0, &[0x02, 0x00, 0x10], &mut list),
        Err(QpackError::IndexOutOfRange)
    );
    // RIC 2 (encoded 3), Base 1 (sign 1, delta 0): post-base 0 = absolute 1 = (x-b, 2).
    assert_eq!(
        dec.decode(0, &[0x03, 0x80, 0x10], &mut list),
        Ok(Decoded::Done)
    );
    assert_eq!(list.get(b"x-b"), Some(&b"2"[..]));
    // A stream-cancelled block: the encoder forgets it; an ack for it is then an error.
    let mut enc = QpackEncoder::new(4096);
    let mut ins = Vec::new();
    enc.encode(8, &[Header::new(b"x-a", b"1")], &mut Vec::new(), &mut ins)
        .unwrap();
    enc.feed_decoder_stream(&[0x48]).unwrap(); // Stream Cancellation, stream 8
    assert_eq!(
        enc.feed_decoder_stream(&[0x88]),
        Err(QpackError::UnexpectedAck(8))
    );
    // Increment beyond the insertions sent.
    let mut enc = QpackEncoder::new(4096);
    assert_eq!(
        enc.feed_decoder_stream(&[0x01]),
        Err(QpackError::BadIncrement)
    );
}

#[test]
fn a_peer_that_never_acknowledges_costs_compression_not_memory() {
    use netron_codec::qpack::MAX_UNACKED_SECTIONS;
    let mut enc = QpackEncoder::new(4096);
    let mut dec = QpackDecoder::new(4096, 1 << 20);
    let fields = [Header::service(b"calc@1.2.0"), Header::method(b"add")];
    let mut list = HeaderList::default();
    let mut send = |enc: &mut QpackEncoder, dec: &mut QpackDecoder, stream: u64| {
        let (mut block, mut ins) = (Vec::new(), Vec::new());
        enc.encode(stream, &fields, &mut block, &mut ins).unwrap();
        dec.feed_encoder_stream(&ins).unwrap();
        assert_eq!(dec.decode(stream, &block, &mut list), Ok(Decoded::Done));
        assert_eq!(list.method(), Some(&b"add"[..]));
        block.len()
    };
    // The insertions are acknowledged once, so later blocks never block...
    assert_eq!(send(&mut enc, &mut dec, 0), 4);
    let mut ins = Vec::new();
    dec.take_instructions(&mut ins);
    enc.feed_decoder_stream(&ins).unwrap();
    assert_eq!(enc.known_received_count(), 2);
    // ...but their Section Acknowledgements are never delivered.
    let sizes: Vec<usize> = (1..=MAX_UNACKED_SECTIONS as u64 + 2)
        .map(|i| send(&mut enc, &mut dec, i * 4))
        .collect();
    assert!(sizes[..MAX_UNACKED_SECTIONS].iter().all(|&n| n == 4));
    assert!(
        sizes[MAX_UNACKED_SECTIONS..].iter().all(|&n| n > 4),
        "static and literals only"
    );
    assert_eq!(enc.blocked_streams(), 0);
    // Once the acknowledgements arrive, references resume.
    let mut acks = Vec::new();
    dec.take_instructions(&mut acks);
    enc.feed_decoder_stream(&acks).unwrap();
    assert_eq!(send(&mut enc, &mut dec, 1 << 20), 4);
}

#[test]
fn entries_the_decoder_has_not_received_are_never_evicted() {
    // Regression (fuzz qpack_roundtrip, BadRequiredInsertCount): capacity 128, so MaxEntries
    // = 4 and three 36-byte entries fill the table. Each round inserts three fresh entries for
    // a block the receiver then abandons; the Stream Cancellation unpins them although the
    // decoder has received none of the insertions. Were they evictable, round three would
    // reference insertion 9 (RIC 9 > 0 + MaxEntries), which the wrapped encoding cannot
    // express to a decoder that has received fewer than 5 insertions.
    let mut sim = Sim::new(128);
    for round in 0..3u8 {
        let fields: Fields = (0..3u8)
            .map(|i| {
                let name = format!("x-{}", (b'a' + round * 3 + i) as char).into_bytes();
                (name, b"1".to_vec(), Indexing::Incremental)
            })
            .collect();
        sim.encode(fields);
        if round < 2 {
            assert!(sim.cancel(0));
            sim.feedback();
        }
    }
    assert_eq!(sim.dec.insert_count(), 0);
    let unacknowledged = sim.enc.insert_count() - sim.enc.known_received_count();
    // The last block reaches the decoder before any insertion: blocked (or self-contained),
    // never undecodable; then the insertions trickle in one byte at a time (a wrapped RIC
    // would be misread as an earlier one and the block decoded too soon, against the wrong
    // entries) and it decodes exactly.
    let (s, b, f) = sim.pending.remove(0);
    sim.decode(s, b, f);
    while !sim.in_flight.is_empty() {
        sim.encoder_bytes(1);
    }
    sim.finish();
    assert_eq!(sim.decoded, 1);
    assert!(
        unacknowledged <= 4,
        "{unacknowledged} insertions the decoder had not acknowledged, MaxEntries 4"
    );
}

#[test]
fn capacity_cannot_drop_below_unacknowledged_insertions() {
    // set_capacity has the same rule: an insertion the decoder has not acknowledged is kept,
    // referenced or not.
    let mut enc = QpackEncoder::new(4096);
    let mut ins = Vec::new();
    enc.encode(
        0,
        &[Header::new(b"x-a", b"1").with_indexing(Indexing::Incremental)],
        &mut Vec::new(),
        &mut ins,
    )
    .unwrap();
    enc.feed_decoder_stream(&[0x40]).unwrap(); // Stream Cancellation, stream 0
    let before = ins.len();
    assert!(matches!(
        enc.set_capacity(0, &mut ins),
        Err(QpackError::CapacityTooLarge { requested: 0, .. })
    ));
    assert_eq!(ins.len(), before, "nothing appended on error");
    // Once the decoder acknowledges the insertion, it may go.
    enc.feed_decoder_stream(&[0x01]).unwrap(); // Insert Count Increment 1
    enc.set_capacity(0, &mut ins).unwrap();
    assert_eq!(enc.table_size(), 0);
}

#[test]
fn a_block_too_large_is_neither_kept_nor_awaited() {
    // A block above 65 535 bytes is refused and never sent, so the encoder must not wait for
    // its acknowledgement: the stream would count as blocked and the entries it references
    // stay pinned for good. Its insertions are still valid (they go on the encoder stream).
    let mut enc = QpackEncoder::new(4096);
    let mut dec = QpackDecoder::new(4096, 1 << 20);
    let big = vec![b'v'; 700];
    let mut fields = vec![Header::new(b"x-a", b"1").with_indexing(Indexing::Incremental)];
    fields.extend((0..100).map(|_| Header::new(b"x-big", &big).with_indexing(Indexing::No)));
    let (mut block, mut ins) = (b"kept".to_vec(), Vec::new());
    assert_eq!(
        enc.encode(0, &fields, &mut block, &mut ins),
        Err(QpackError::BlockTooLarge)
    );
    assert_eq!(block, b"kept", "block left as it was");
    assert_eq!(enc.insert_count(), 1);
    assert_eq!(enc.blocked_streams(), 0, "the refused block blocks nothing");
    // The insertion reaches the decoder and is acknowledged; then nothing pins it.
    dec.feed_encoder_stream(&ins).unwrap();
    let mut fb = Vec::new();
    dec.take_instructions(&mut fb);
    enc.feed_decoder_stream(&fb).unwrap();
    assert_eq!(enc.known_received_count(), 1);
    enc.set_capacity(0, &mut ins).unwrap();
    assert_eq!(enc.table_size(), 0);
    // The same fields fit a datagram no better; the block is left as it was there too.
    let mut dgram = b"kept".to_vec();
    assert_eq!(
        enc.encode_datagram(&fields, &mut dgram),
        Err(QpackError::BlockTooLarge)
    );
    assert_eq!(dgram, b"kept");
}
