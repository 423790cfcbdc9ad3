//! A counting global allocator shows zero heap allocations per frame on the steady-state
//! encode (into a reused batch buffer) and decode paths.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder, HeaderList};
use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not see each other's allocations.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to `System`, only counting; the thread-local is a const-initialised
// `Cell`, whose access never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

const TRACEPARENT: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn encode_batch(batch: &mut BatchEncoder, enc: &mut HeaderEncoder, payload: &[u8], n: u32) {
    batch.clear();
    for id in 0..n {
        batch
            .request(id, Some(Duration::from_millis(100)))
            .unwrap()
            .headers(
                enc,
                &[
                    Header::service(b"orders@2.1.0"),
                    Header::method(b"place"),
                    Header::new(b"traceparent", TRACEPARENT),
                    Header::new(b"tenant", b"acme"),
                ],
            )
            .unwrap()
            .payload(payload)
            .finish()
            .unwrap();
    }
}

#[test]
fn steady_state_encode_allocates_nothing() {
    let mut batch = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let payload = [0x5a; 64];
    // Warm-up: the first batch fills the dynamic table and grows the buffer.
    encode_batch(&mut batch, &mut enc, &payload, 128);
    let before = allocs();
    for _ in 0..100 {
        encode_batch(&mut batch, &mut enc, &payload, 128);
    }
    assert_eq!(
        allocs() - before,
        0,
        "allocations while encoding 12,800 requests"
    );
    assert_eq!(batch.frame_count(), 128);
}

#[test]
fn steady_state_decode_allocates_nothing() {
    let limits = Limits::default();
    let mut batch = BatchEncoder::new(limits);
    let mut enc = HeaderEncoder::new(4096);
    encode_batch(&mut batch, &mut enc, &[1; 64], 128);
    let first = batch.as_slice().to_vec();
    encode_batch(&mut batch, &mut enc, &[1; 64], 128);
    let steady = batch.as_slice().to_vec();

    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    let mut list = HeaderList::default();
    let walk = |wire: &[u8], dec: &mut HeaderDecoder, list: &mut HeaderList| {
        let mut n = 0;
        let mut bytes = 0;
        for f in FrameIter::new(wire, &limits) {
            let f = f.unwrap();
            assert_eq!(f.kind(), FrameKind::Request);
            dec.decode_into(f.header_block(), list).unwrap();
            assert_eq!(list.method(), Some(&b"place"[..]));
            bytes += f.payload().len();
            n += 1;
        }
        (n, bytes)
    };
    walk(&first, &mut dec, &mut list); // warm-up: table and list grow
    let before = allocs();
    for _ in 0..100 {
        assert_eq!(walk(&steady, &mut dec, &mut list), (128, 128 * 64));
    }
    assert_eq!(
        allocs() - before,
        0,
        "allocations while decoding 12,800 requests"
    );
}

/// QPACK (docs/protocol.md §27.4) in steady state: each call's block encoded for a new
/// exchange, decoded, acknowledged on the decoder stream and the acknowledgement applied by
/// the encoder, with every buffer reused: no allocation per block.
#[test]
fn steady_state_qpack_allocates_nothing() {
    use netron_codec::qpack::{Decoded, QpackDecoder, QpackEncoder};
    let fields = [
        Header::service(b"orders@2.1.0"),
        Header::method(b"place"),
        Header::new(b"traceparent", TRACEPARENT),
        Header::new(b"tenant", b"acme"),
        Header::new(b"authorization", b"Bearer x"),
    ];
    let mut enc = QpackEncoder::new(4096);
    let mut dec = QpackDecoder::new(4096, 16 << 10);
    let (mut block, mut enc_stream, mut dec_stream) = (Vec::new(), Vec::new(), Vec::new());
    let mut list = HeaderList::default();
    let mut call = |id: u64, enc: &mut QpackEncoder, dec: &mut QpackDecoder| {
        block.clear();
        enc_stream.clear();
        dec_stream.clear();
        enc.encode(id, &fields, &mut block, &mut enc_stream)
            .unwrap();
        dec.feed_encoder_stream(&enc_stream).unwrap();
        assert_eq!(dec.decode(id, &block, &mut list), Ok(Decoded::Done));
        assert_eq!(list.method(), Some(&b"place"[..]));
        dec.take_instructions(&mut dec_stream);
        enc.feed_decoder_stream(&dec_stream).unwrap();
    };
    // Warm-up: the table fills, buffers and the tracking map grow.
    for id in 0..64 {
        call(2 * id + 1, &mut enc, &mut dec);
    }
    let before = allocs();
    for id in 64..10_064 {
        call(2 * id + 1, &mut enc, &mut dec);
    }
    assert_eq!(
        allocs() - before,
        0,
        "allocations while coding 10,000 QPACK blocks"
    );
    assert_eq!(enc.blocked_streams(), 0);
}

#[test]
fn the_counter_counts() {
    // Guard against a vacuous pass: the allocator does see allocations on this thread.
    let before = allocs();
    let v: Vec<u8> = Vec::with_capacity(10);
    assert!(allocs() > before);
    drop(v);
}
