//! Criterion benches of the codec's hot paths: one small Request, a batch of 128, header
//! blocks in steady state, and the compression paths.
//!
//! `cargo bench -p netron-bench --bench codec`

#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netron_codec::compress::{Compressor, Decompressor};
use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder, HeaderList};
use netron_codec::{BatchEncoder, Compression, Frame, FrameIter, Limits};

const SERVICE: &[u8] = b"calc@1.2.0";
const METHOD: &[u8] = b"add";
const PAYLOAD: [u8; 64] = [0x5a; 64];
const DEADLINE: Option<Duration> = Some(Duration::from_millis(250));

fn encode_request(batch: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32) -> usize {
    batch
        .request(id, DEADLINE)
        .and_then(|b| b.headers(enc, &[Header::service(SERVICE), Header::method(METHOD)]))
        .map(|b| b.payload(&PAYLOAD))
        .and_then(|b| b.finish())
        .expect("encode")
}

/// A steady-state batch of `n` requests and a decoder whose table already holds its entries.
fn steady_batch(n: u32) -> (Vec<u8>, HeaderDecoder) {
    let limits = Limits::default();
    let mut batch = BatchEncoder::new(limits);
    let mut enc = HeaderEncoder::new(4096);
    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    encode_request(&mut batch, &mut enc, 0);
    for f in FrameIter::new(batch.as_slice(), &limits) {
        dec.decode(f.expect("frame").header_block(), |_, _| {})
            .expect("headers");
    }
    batch.clear();
    for id in 0..n {
        encode_request(&mut batch, &mut enc, id);
    }
    (batch.as_slice().to_vec(), dec)
}

fn small_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("small_request");
    g.throughput(Throughput::Elements(1));
    let limits = Limits::default();
    let mut batch = BatchEncoder::with_capacity(limits, 64 << 10);
    let mut enc = HeaderEncoder::new(4096);
    encode_request(&mut batch, &mut enc, 0);
    g.bench_function("encode", |b| {
        let mut id = 0;
        b.iter(|| {
            if batch.is_full() {
                batch.clear();
            }
            id += 1;
            black_box(encode_request(&mut batch, &mut enc, id))
        })
    });
    let (wire, mut dec) = steady_batch(1);
    let mut list = HeaderList::default();
    g.bench_function("decode", |b| {
        b.iter(|| {
            let f = Frame::parse(black_box(&wire), &limits).expect("frame");
            dec.decode_into(f.header_block(), &mut list)
                .expect("headers");
            black_box((f.payload().len(), f.deadline(), list.len()))
        })
    });
    g.finish();
}

fn batch_of_128(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_128");
    g.throughput(Throughput::Elements(128));
    let limits = Limits::default();
    let mut batch = BatchEncoder::with_capacity(limits, 64 << 10);
    let mut enc = HeaderEncoder::new(4096);
    encode_request(&mut batch, &mut enc, 0);
    g.bench_function("encode", |b| {
        b.iter(|| {
            batch.clear();
            for id in 0..128 {
                encode_request(&mut batch, &mut enc, id);
            }
            black_box(batch.len())
        })
    });
    let (wire, mut dec) = steady_batch(128);
    g.bench_function("decode_frames", |b| {
        b.iter(|| {
            let mut sum = 0;
            for f in FrameIter::new(black_box(&wire), &limits) {
                sum += f.expect("frame").payload().len();
            }
            black_box(sum)
        })
    });
    g.bench_function("decode_frames_and_headers", |b| {
        b.iter(|| {
            let mut sum = 0;
            for f in FrameIter::new(black_box(&wire), &limits) {
                let f = f.expect("frame");
                dec.decode(f.header_block(), |n, v| sum += n.len() + v.len())
                    .expect("headers");
            }
            black_box(sum)
        })
    });
    g.finish();
}

fn header_blocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_block_steady");
    let fields = [
        Header::service(SERVICE),
        Header::method(METHOD),
        Header::new(b"tenant", b"acme"),
        Header::new(b"content-type", b"application/flatbuffers"),
    ];
    let mut enc = HeaderEncoder::new(4096);
    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    let mut block = Vec::with_capacity(256);
    enc.encode(&fields, &mut block).expect("encode");
    dec.decode(&block, |_, _| {}).expect("decode");
    g.bench_function("encode_4_fields", |b| {
        b.iter(|| {
            block.clear();
            enc.encode(black_box(&fields), &mut block).expect("encode");
            black_box(block.len())
        })
    });
    block.clear();
    enc.encode(&fields, &mut block).expect("encode");
    let mut list = HeaderList::default();
    g.bench_function("decode_4_fields", |b| {
        b.iter(|| {
            dec.decode_into(black_box(&block), &mut list)
                .expect("decode");
            black_box(list.len())
        })
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression_4k");
    let data: Vec<u8> = (0..4096)
        .map(|i| b"netron compresses repeated text "[i % 32])
        .collect();
    g.throughput(Throughput::Bytes(data.len() as u64));
    for algo in [Compression::Lz4, Compression::Zstd] {
        let mut comp = Compressor::new(algo, 1024);
        let mut out = Vec::with_capacity(8192);
        g.bench_with_input(
            BenchmarkId::new("compress", format!("{algo:?}")),
            &data,
            |b, d| {
                b.iter(|| {
                    out.clear();
                    black_box(comp.compress_into(d, &mut out))
                })
            },
        );
        out.clear();
        assert!(comp.compress_into(&data, &mut out));
        let mut dcomp = Decompressor::new(algo, 1 << 20);
        let mut plain = Vec::with_capacity(8192);
        g.bench_with_input(
            BenchmarkId::new("decompress", format!("{algo:?}")),
            &out,
            |b, z| {
                b.iter(|| {
                    plain.clear();
                    dcomp.decompress_into(z, &mut plain).expect("decompress");
                    black_box(plain.len())
                })
            },
        );
    }
    // Below the threshold: the cost of deciding not to compress.
    let mut comp = Compressor::new(Compression::Lz4, 1024);
    let mut out = Vec::new();
    g.bench_function("skip_below_threshold", |b| {
        b.iter(|| black_box(comp.compress_into(black_box(&PAYLOAD), &mut out)))
    });
    g.finish();
}

criterion_group!(
    benches,
    small_request,
    batch_of_128,
    header_blocks,
    compression
);
criterion_main!(benches);
