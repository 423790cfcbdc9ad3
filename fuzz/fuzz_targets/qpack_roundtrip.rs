//! QUIC header compression end to end: header lists on many streams, blocks delivered in any
//! order, the encoder stream delivered in arbitrary pieces, feedback at any time, streams
//! abandoned by the receiver, datagram blocks (`netron_fuzz::QpackRun`). Every block that is
//! decoded yields exactly its list; the encoder never makes more than 16 streams block; at
//! the end everything decodes and the encoder knows every insertion was received. A block
//! above 65 535 bytes is refused (only when the fields are that large), never sent, and not
//! awaited by the encoder.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use netron_codec::hpack::{Header, HeaderList};
use netron_codec::qpack::{Decoded, MAX_BLOCKED_STREAMS, QpackDecoder, QpackEncoder, QpackError};
use netron_fuzz::{FieldSpec, QpackRun, QpackStep};

type Expect = Vec<(Vec<u8>, Vec<u8>)>;

fn headers(f: &[FieldSpec]) -> Vec<Header<'_>> {
    f.iter()
        .map(|h| Header::new(&h.name, &h.value).with_indexing(h.indexing))
        .collect()
}

/// The longest block `f` can encode to: two prefix integers, then each field as a literal
/// with a literal name (each integer at most 10 bytes).
fn max_block_len(f: &[FieldSpec]) -> usize {
    f.iter()
        .fold(20, |acc, h| acc + 20 + h.name.len() + h.value.len())
}

/// An encode result: `Ok` unless the fields could not fit 65 535 bytes; a refused block is
/// left untouched.
fn encoded(r: Result<(), QpackError>, f: &[FieldSpec], block: &[u8]) -> bool {
    match r {
        Ok(()) => true,
        Err(QpackError::BlockTooLarge) => {
            assert!(max_block_len(f) > u16::MAX as usize, "small block refused");
            assert!(block.is_empty(), "refused block left in place");
            false
        }
        Err(e) => panic!("encode: {e}"),
    }
}

fn expect(f: &[FieldSpec]) -> Expect {
    f.iter()
        .map(|h| (h.name.to_vec(), h.value.to_vec()))
        .collect()
}

struct Sim {
    enc: QpackEncoder,
    dec: QpackDecoder,
    in_flight: Vec<u8>,
    pending: Vec<(u64, Vec<u8>, Expect)>,
    blocked: BTreeMap<u64, (Vec<u8>, Expect)>,
    list: HeaderList,
}

impl Sim {
    fn decode(&mut self, stream: u64, block: Vec<u8>, want: Expect) {
        match self
            .dec
            .decode(stream, &block, &mut self.list)
            .expect("own block decodes")
        {
            Decoded::Done => {
                let got: Expect = self
                    .list
                    .iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                assert_eq!(got, want, "stream {stream}");
            }
            Decoded::Blocked => {
                assert!(self.blocked.insert(stream, (block, want)).is_none());
            }
        }
        assert!(self.dec.blocked_streams() <= MAX_BLOCKED_STREAMS);
        assert_eq!(self.dec.blocked_streams(), self.blocked.len());
    }

    fn deliver(&mut self, n: usize) {
        let n = n.min(self.in_flight.len());
        let chunk: Vec<u8> = self.in_flight.drain(..n).collect();
        self.dec
            .feed_encoder_stream(&chunk)
            .expect("own encoder stream");
        let ready: Vec<u64> = self.dec.unblocked().collect();
        for s in ready {
            let (b, w) = self.blocked.remove(&s).expect("known blocked stream");
            self.decode(s, b, w);
        }
    }

    fn feedback(&mut self) {
        let mut ins = Vec::new();
        self.dec.take_instructions(&mut ins);
        self.enc
            .feed_decoder_stream(&ins)
            .expect("own decoder stream");
        assert!(self.enc.known_received_count() <= self.dec.insert_count());
    }
}

fuzz_target!(|run: QpackRun| {
    let capacity = run.capacity as u32 * 16;
    let mut sim = Sim {
        enc: QpackEncoder::new(capacity),
        dec: QpackDecoder::new(capacity, 1 << 20),
        in_flight: Vec::new(),
        pending: Vec::new(),
        blocked: BTreeMap::new(),
        list: HeaderList::default(),
    };
    let mut next = 0u64;
    for step in run.steps.iter().take(256) {
        match step {
            QpackStep::Encode(f) => {
                let mut block = Vec::new();
                let r = sim
                    .enc
                    .encode(next, &headers(f), &mut block, &mut sim.in_flight);
                assert!(sim.enc.blocked_streams() <= MAX_BLOCKED_STREAMS);
                // A refused block is never sent; its insertions still are (in flight).
                if encoded(r, f, &block) {
                    sim.pending.push((next, block, expect(f)));
                }
                next += 4;
            }
            QpackStep::EncoderBytes(n) => sim.deliver(*n as usize),
            QpackStep::Block(i) => {
                if !sim.pending.is_empty() {
                    let (s, b, w) = sim.pending.remove(*i as usize % sim.pending.len());
                    sim.decode(s, b, w);
                }
            }
            QpackStep::Feedback => sim.feedback(),
            QpackStep::Cancel(i) => {
                // The receiver abandons a stream whose block it has not decoded.
                let victims: Vec<u64> = sim
                    .pending
                    .iter()
                    .map(|p| p.0)
                    .chain(sim.blocked.keys().copied())
                    .collect();
                if !victims.is_empty() {
                    let s = victims[*i as usize % victims.len()];
                    sim.pending.retain(|p| p.0 != s);
                    sim.blocked.remove(&s);
                    sim.dec.cancel_stream(s);
                }
            }
            QpackStep::Datagram(f) => {
                let before = sim.enc.insert_count();
                let mut block = Vec::new();
                let r = sim.enc.encode_datagram(&headers(f), &mut block);
                assert_eq!(sim.enc.insert_count(), before);
                if !encoded(r, f, &block) {
                    continue;
                }
                sim.dec
                    .decode_datagram(&block, &mut sim.list)
                    .expect("datagram block");
                let got: Expect = sim
                    .list
                    .iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                assert_eq!(got, expect(f));
            }
        }
    }
    while !sim.pending.is_empty() {
        let (s, b, w) = sim.pending.remove(0);
        sim.decode(s, b, w);
    }
    sim.deliver(usize::MAX);
    assert!(
        sim.blocked.is_empty(),
        "still blocked after every insertion arrived"
    );
    sim.feedback();
    assert_eq!(sim.enc.known_received_count(), sim.enc.insert_count());
    assert_eq!(sim.enc.blocked_streams(), 0);
});
