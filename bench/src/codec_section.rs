//! The codec section of `netron-bench`: encode/decode cost per small Request, batch decode
//! rate, and bytes on the wire for a unary request next to gRPC over HTTP/2.

use std::hint::black_box;
use std::time::{Duration, Instant};

use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder};
use netron_codec::{BatchEncoder, Frame, FrameIter, HEADER_LEN, Limits};

use crate::Options;
use crate::table::Table;

/// Service and method of the reference request.
const SERVICE: &[u8] = b"calc@1.2.0";
const METHOD: &[u8] = b"add";
/// gRPC's equivalents for the same call.
const GRPC_PATH: &[u8] = b"/calc.Calc/Add";
const GRPC_AUTHORITY: &[u8] = b"localhost:7000";
const TRACEPARENT: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const DEADLINE: Duration = Duration::from_millis(250);
const PAYLOAD: [u8; 64] = [0x5a; 64];
const BATCH: u32 = 128;

/// Runs the codec measurements.
pub fn run(opts: &Options) -> Vec<Table> {
    crate::pin::pin_to_cpu(0);
    let iters: u64 = if opts.quick { 200_000 } else { 4_000_000 };
    vec![speed(iters), wire_bytes()]
}

fn headers() -> [Header<'static>; 2] {
    [Header::service(SERVICE), Header::method(METHOD)]
}

/// Best of `rounds` runs of `f(iters)`, in ns per iteration.
fn best_ns(rounds: u32, iters: u64, mut f: impl FnMut(u64)) -> f64 {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f(iters);
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn speed(iters: u64) -> Table {
    let limits = Limits::default();
    let hs = headers();

    // Encode one small Request (steady state: headers indexed), into a reused batch buffer.
    let mut batch = BatchEncoder::with_capacity(limits, 64 << 10);
    let mut enc = HeaderEncoder::new(4096);
    let mut id = 0u32;
    let mut encode_one = |batch: &mut BatchEncoder, enc: &mut HeaderEncoder| {
        if batch.frame_count() == BATCH {
            batch.clear();
        }
        id = id.wrapping_add(1);
        batch
            .request(id, Some(DEADLINE))
            .and_then(|b| b.headers(enc, &hs))
            .map(|b| b.payload(&PAYLOAD))
            .and_then(|b| b.finish())
            .expect("encode")
    };
    encode_one(&mut batch, &mut enc);
    let encode_ns = best_ns(5, iters, |n| {
        for _ in 0..n {
            black_box(encode_one(&mut batch, &mut enc));
        }
    });

    // A steady-state batch of 128 requests to decode.
    batch.clear();
    for _ in 0..BATCH {
        encode_one(&mut batch, &mut enc);
    }
    let wire = batch.as_slice().to_vec();
    let one = Frame::parse(&wire, &limits)
        .expect("frame")
        .as_bytes()
        .to_vec();
    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    // Warm the decoder's table with the first-call block.
    {
        let mut b = BatchEncoder::new(limits);
        let mut e = HeaderEncoder::new(4096);
        b.request(1, Some(DEADLINE))
            .and_then(|b| b.headers(&mut e, &hs))
            .map(|b| b.payload(&PAYLOAD))
            .and_then(|b| b.finish())
            .expect("encode");
        let f = Frame::parse(b.as_slice(), &limits).expect("frame");
        dec.decode(f.header_block(), |_, _| {}).expect("headers");
    }

    // Decode one small Request: parse + header block (service/method resolved) + payload view.
    let decode_one = |dec: &mut HeaderDecoder, buf: &[u8]| -> usize {
        let f = Frame::parse(buf, &limits).expect("frame");
        let mut hit = 0usize;
        dec.decode(f.header_block(), |n, v| hit += n.len() + v.len())
            .expect("headers");
        hit + f.payload().len() + f.deadline().map_or(0, |d| d.as_micros() as usize)
    };
    let decode_ns = best_ns(5, iters, |n| {
        for _ in 0..n {
            black_box(decode_one(&mut dec, black_box(&one)));
        }
    });

    // Batch decode: walk 128 frames, headers decoded too.
    let batches = (iters / BATCH as u64).max(1);
    let batch_hdr_ns = best_ns(5, batches, |n| {
        for _ in 0..n {
            let mut sum = 0usize;
            for f in FrameIter::new(black_box(&wire), &limits) {
                let f = f.expect("frame");
                dec.decode(f.header_block(), |n, v| sum += n.len() + v.len())
                    .expect("headers");
                sum += f.payload().len();
            }
            black_box(sum);
        }
    }) / BATCH as f64;
    // Batch decode: frame walk only (what the engine does before dispatch).
    let batch_walk_ns = best_ns(5, batches, |n| {
        for _ in 0..n {
            let mut sum = 0usize;
            for f in FrameIter::new(black_box(&wire), &limits) {
                sum += f.expect("frame").payload().len();
            }
            black_box(sum);
        }
    }) / BATCH as f64;

    let mut t = Table::new(
        "codec: speed (one core, 64-byte payload, steady-state headers)",
        &["measure", "result", "target", "vs target"],
    );
    t.row(&[
        "small Request encode".into(),
        format!("{encode_ns:.1} ns"),
        String::new(),
        String::new(),
    ]);
    t.row(&[
        "small Request decode".into(),
        format!("{decode_ns:.1} ns"),
        String::new(),
        String::new(),
    ]);
    let both = encode_ns + decode_ns;
    t.row(&[
        "encode + decode".into(),
        format!("{both:.1} ns"),
        "<= 40 ns".into(),
        format!("{:.2}x of budget", both / 40.0),
    ]);
    t.row(&[
        "batch decode (128 frames, headers decoded)".into(),
        format!("{:.1} M frames/s", 1e3 / batch_hdr_ns),
        ">= 50 M/s".into(),
        format!("{:.2}x", (1e3 / batch_hdr_ns) / 50.0),
    ]);
    t.row(&[
        "batch decode (128 frames, frame walk only)".into(),
        format!("{:.1} M frames/s", 1e3 / batch_walk_ns),
        ">= 50 M/s".into(),
        format!("{:.2}x", (1e3 / batch_walk_ns) / 50.0),
    ]);
    t.note("best of 5 runs; thread pinned to cpu0; allocations per frame on both paths: 0 (codec/tests/alloc.rs)");
    t
}

/// Bytes before the payload: Netron header + header block.
fn netron_overhead(with_trace: bool) -> (usize, usize) {
    let limits = Limits::default();
    let mut enc = HeaderEncoder::new(4096);
    let mut batch = BatchEncoder::new(limits);
    let mut sizes = [0usize; 2];
    for s in &mut sizes {
        batch.clear();
        let mut hs = vec![Header::service(SERVICE), Header::method(METHOD)];
        if with_trace {
            hs.push(Header::new(b"traceparent", TRACEPARENT));
        }
        let len = batch
            .request(1, Some(DEADLINE))
            .and_then(|b| b.headers(&mut enc, &hs))
            .map(|b| b.payload(&PAYLOAD))
            .and_then(|b| b.finish())
            .expect("encode");
        *s = len - PAYLOAD.len();
    }
    (sizes[0], sizes[1])
}

/// Bytes before the payload for gRPC over HTTP/2, measured with a real HPACK encoder
/// (Huffman on, incremental indexing for stable fields, a 4096-byte table): HEADERS frame
/// header (9) + header block + DATA frame header (9) + gRPC message prefix (5).
fn grpc_overhead(with_trace: bool) -> (usize, usize) {
    use httlib_hpack::Encoder;
    let mut enc = Encoder::with_dynamic_size(4096);
    let idx = Encoder::HUFFMAN_VALUE | Encoder::WITH_INDEXING | Encoder::BEST_FORMAT;
    let noidx = Encoder::HUFFMAN_VALUE | Encoder::BEST_FORMAT;
    let mut sizes = [0usize; 2];
    for s in &mut sizes {
        let mut block = Vec::new();
        let mut fields: Vec<(&[u8], &[u8], u8)> = vec![
            (b":method", b"POST", idx),
            (b":scheme", b"http", idx),
            (b":path", GRPC_PATH, idx),
            (b":authority", GRPC_AUTHORITY, idx),
            (b"content-type", b"application/grpc", idx),
            (b"te", b"trailers", idx),
            (b"grpc-timeout", b"250m", noidx),
        ];
        if with_trace {
            fields.push((b"traceparent", TRACEPARENT, noidx));
        }
        for (n, v, f) in fields {
            enc.encode((n.to_vec(), v.to_vec(), f), &mut block)
                .expect("hpack");
        }
        *s = 9 + block.len() + 9 + 5;
    }
    (sizes[0], sizes[1])
}

fn wire_bytes() -> Table {
    let mut t = Table::new(
        "codec: bytes on the wire before a unary request's payload (service, method, 250 ms deadline)",
        &[
            "request",
            "Netron first",
            "Netron steady",
            "gRPC/HTTP2 first",
            "gRPC/HTTP2 steady",
            "steady ratio",
        ],
    );
    for (label, trace) in [("without traceparent", false), ("with traceparent", true)] {
        let (nf, ns) = netron_overhead(trace);
        let (gf, gs) = grpc_overhead(trace);
        t.row(&[
            label.to_owned(),
            format!("{nf} B"),
            format!("{ns} B"),
            format!("{gf} B"),
            format!("{gs} B"),
            format!("{:.2}x", ns as f64 / gs as f64),
        ]);
    }
    t.note(format!(
        "Netron: {HEADER_LEN}-byte frame header (deadline in its arg field) + header block (:service, :method indexed after the first call); target <= 20 B steady"
    ));
    t.note("gRPC: 9 (HEADERS) + HPACK block (:method POST, :scheme, :path /calc.Calc/Add, :authority, content-type, te, grpc-timeout 250m) + 9 (DATA) + 5 (message prefix); HPACK by httlib-hpack with Huffman and a 4 KiB table");
    t.note("traceparent changes every call, so both protocols send it literally (gRPC Huffman-codes it; Netron sends it raw)");
    t
}
