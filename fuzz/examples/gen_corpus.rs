//! Writes the seed corpora under `fuzz/corpus/<target>/` (see docs/fuzzing.md).
//!
//! `cargo run --release --example gen-corpus` from `fuzz/`. Deterministic: running it again
//! rewrites the same files. Every seed is produced by the codec's own encoders, so seeds are
//! valid inputs the fuzzer mutates from (the structured targets get byte strings chosen so
//! that `arbitrary` decodes them into rich sequences).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use netron_codec::compress::{Compression, Compressor};
use netron_codec::control::{ControlEncoder, HelloFields};
use netron_codec::handshake::{
    ClientConfig, ClientHandshake, ServerConfig, ServerHandshake, ServerProgress,
};
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, Flags, FrameKind, Limits, StatusCode, wire};
use netron_fuzz::{
    HeaderSequence, HeaderStep, Item, QpackRun, QpackStep, RoundTrip, ShmLayoutInput, ShmRing,
    batch_prefix,
};

struct Corpus {
    root: PathBuf,
    total: usize,
}

impl Corpus {
    fn target(&mut self, target: &str) -> PathBuf {
        let dir = self.root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        dir
    }
    fn write(&mut self, dir: &Path, name: &str, bytes: &[u8]) {
        assert!(bytes.len() <= 4096, "{name}: seeds stay small");
        fs::write(dir.join(name), bytes).unwrap();
        self.total += bytes.len();
    }
}

fn compressible(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b"{\"sum\": 42, \"ok\": true} "[i % 24])
        .collect()
}

/// Named sample frames and batches, all from the codec's encoders.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let limits = Limits::default();
    let mut out = Vec::new();
    let mut ctl = ControlEncoder::new();
    let mut batch = BatchEncoder::new(limits);
    fn take(out: &mut Vec<(&'static str, Vec<u8>)>, name: &'static str, batch: &mut BatchEncoder) {
        out.push((name, batch.as_slice().to_vec()));
        batch.clear();
    }

    // Handshake frames.
    let hello = HelloFields {
        features: 0b101,
        compression: &[Compression::Lz4, Compression::Zstd],
        max_frame_size: 1 << 20,
        header_table_size: 4096,
        max_batch_frames: 128,
        max_batch_bytes: 64 << 10,
        max_decompressed_size: 16 << 20,
        auth_token: Some(b"token-123"),
        client_name: Some("gen-corpus"),
    };
    ctl.hello(&mut batch, &hello).unwrap();
    take(&mut out, "hello", &mut batch);
    let mut server = ServerHandshake::new(ServerConfig::default());
    let mut preface_hello = Vec::new();
    ClientHandshake::new(ClientConfig::default().with_client_name("cli"))
        .start(&mut preface_hello)
        .unwrap();
    let ServerProgress::Offer { offer, .. } = server.handle(&preface_hello).unwrap() else {
        unreachable!()
    };
    let mut welcome = Vec::new();
    server.accept(&offer, &mut welcome);
    out.push(("welcome", welcome));
    let mut reject = Vec::new();
    server.reject(StatusCode::Unauthenticated, "bad token", 500, &mut reject);
    out.push(("reject", reject));

    // A batch of Requests with headers (literal first, indexed after), and a Response.
    let mut tx = HeaderEncoder::new(4096);
    for (id, method) in [(1, &b"add"[..]), (3, b"add"), (5, b"mul")] {
        batch
            .request(id, Some(Duration::from_millis(250)))
            .unwrap()
            .flags(Flags::IDEMPOTENT)
            .headers(
                &mut tx,
                &[
                    Header::service(b"calc@1.0.0"),
                    Header::method(method),
                    Header::new(b"content-type", b"application/flatbuffers"),
                    Header::new(b"x-tenant", b"acme"),
                ],
            )
            .unwrap()
            .payload(&[1, 2, 3, 4])
            .finish()
            .unwrap();
    }
    take(&mut out, "requests", &mut batch);
    batch
        .response(1)
        .unwrap()
        .payload(b"\x07")
        .finish()
        .unwrap();
    take(&mut out, "response", &mut batch);

    // Compressed Responses.
    for (name, algo) in [
        ("response_lz4", Compression::Lz4),
        ("response_zstd", Compression::Zstd),
    ] {
        let mut c = Compressor::new(algo, 64);
        batch
            .response(9)
            .unwrap()
            .flags(Flags::HIGH_PRIORITY)
            .payload_compressed(&compressible(600), &mut c)
            .finish()
            .unwrap();
        take(&mut out, name, &mut batch);
    }

    // A stream, an event, and the empty-bodied kinds.
    let mut tx = HeaderEncoder::new(256);
    batch
        .frame(FrameKind::StreamOpen, 7)
        .unwrap()
        .flags(Flags::HIGH_PRIORITY)
        .headers(
            &mut tx,
            &[Header::service(b"feed@2.1.0"), Header::method(b"watch")],
        )
        .unwrap()
        .finish()
        .unwrap();
    for seq in 0..2 {
        batch
            .frame(FrameKind::StreamData, 7)
            .unwrap()
            .arg(seq)
            .payload(b"tick")
            .finish()
            .unwrap();
    }
    batch
        .frame(FrameKind::StreamEnd, 7)
        .unwrap()
        .finish()
        .unwrap();
    ctl.stream_end_error(&mut batch, 9, StatusCode::Aborted, "conflict")
        .unwrap();
    take(&mut out, "stream", &mut batch);
    batch
        .frame(FrameKind::Event, 0)
        .unwrap()
        .arg(41)
        .headers(
            &mut tx,
            &[
                Header::topic(b"orders.created"),
                Header::new(b"authorization", b"Bearer x"),
            ],
        )
        .unwrap()
        .payload(b"{\"id\":1}")
        .finish()
        .unwrap();
    take(&mut out, "event", &mut batch);
    batch.empty_frame(FrameKind::Ping, 1, 0xdead_beef).unwrap();
    batch.empty_frame(FrameKind::Pong, 1, 0xdead_beef).unwrap();
    batch.empty_frame(FrameKind::Cancel, 3, 0).unwrap();
    batch
        .empty_frame(FrameKind::WindowUpdate, 0, 65536)
        .unwrap();
    batch.empty_frame(FrameKind::Unsubscribe, 4, 0).unwrap();
    take(&mut out, "empty_kinds", &mut batch);
    ctl.error(
        &mut batch,
        5,
        StatusCode::NotFound,
        "no such method",
        b"\x01\x02",
    )
    .unwrap();
    ctl.go_away(&mut batch, 5, StatusCode::Unavailable, "shutting down")
        .unwrap();
    ctl.subscribe(&mut batch, 4, "orders.*", 64).unwrap();
    take(&mut out, "control", &mut batch);
    out
}

fn service_list() -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut services = Vec::new();
    for (svc, ver, methods) in [
        ("calc", "1.0.0", &["add", "mul"][..]),
        ("feed", "2.1.0", &["watch"][..]),
    ] {
        let ms: Vec<_> = methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let name = Some(fbb.create_string(m));
                wire::MethodDescriptor::create(
                    &mut fbb,
                    &wire::MethodDescriptorArgs {
                        name,
                        kind: wire::MethodKind(i as u8),
                    },
                )
            })
            .collect();
        let methods = Some(fbb.create_vector(&ms));
        let name = Some(fbb.create_string(svc));
        let version = Some(fbb.create_string(ver));
        services.push(wire::ServiceDescriptor::create(
            &mut fbb,
            &wire::ServiceDescriptorArgs {
                name,
                version,
                methods,
            },
        ));
    }
    let services = Some(fbb.create_vector(&services));
    let l = wire::ServiceList::create(
        &mut fbb,
        &wire::ServiceListArgs {
            services,
            features: 0,
        },
    );
    fbb.finish_minimal(l);
    fbb.finished_data().to_vec()
}

/// Deterministic byte strings (xorshift), kept if `keep` likes what `arbitrary` makes of them.
fn structured<T: for<'a> Arbitrary<'a>>(
    seed: u64,
    want: usize,
    len: usize,
    keep: impl Fn(&T) -> bool,
) -> Vec<Vec<u8>> {
    let mut x = seed;
    let mut found = Vec::new();
    for _ in 0..200_000 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        if let Ok(v) = T::arbitrary_take_rest(Unstructured::new(&bytes)) {
            if keep(&v) {
                found.push(bytes);
                if found.len() == want {
                    break;
                }
            }
        }
    }
    assert_eq!(found.len(), want, "not enough structured seeds");
    found
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut c = Corpus { root, total: 0 };
    let samples = samples();
    let get = |name: &str| samples.iter().find(|(n, _)| *n == name).unwrap().1.clone();

    let dir = c.target("frame_decode");
    for (name, bytes) in &samples {
        c.write(&dir, name, bytes);
    }
    let requests = get("requests");
    c.write(&dir, "partial", &requests[..requests.len() - 3]);
    c.write(&dir, "short", &requests[..9]);

    let dir = c.target("batch_decode");
    for name in [
        "requests",
        "stream",
        "empty_kinds",
        "control",
        "response_lz4",
    ] {
        let mut seed = batch_prefix(128, u16::MAX, 0xff).to_vec();
        seed.extend_from_slice(&get(name));
        c.write(&dir, name, &seed);
    }
    // Tight limits: too many frames, a batch past max_batch_bytes, a frame above the max size.
    for (name, prefix) in [
        ("too_many_frames", batch_prefix(2, u16::MAX, 0xff)),
        ("too_many_bytes", batch_prefix(128, 40, 0xff)),
        ("frame_too_large", batch_prefix(128, u16::MAX, 1)),
    ] {
        let mut seed = prefix.to_vec();
        seed.extend_from_slice(&get("stream"));
        c.write(&dir, name, &seed);
    }

    let dir = c.target("header_block");
    let mut tx = HeaderEncoder::new(4096);
    let lists: [&[Header<'_>]; 4] = [
        &[
            Header::service(b"calc@1.0.0"),
            Header::method(b"add"),
            Header::new(b"content-type", b"application/json"),
            Header::new(
                b"traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
        &[
            Header::service(b"calc@1.0.0"),
            Header::method(b"mul"),
            Header::new(b"authorization", b"Bearer dG9rZW4"),
            Header::new(b"x-tenant", b"acme"),
        ],
        &[Header::topic(b"orders.created"), Header::new(b"", b"")],
        &[Header::new(b"user-agent", b"netron-rust/0.1")],
    ];
    for (i, list) in lists.iter().enumerate() {
        if i == 3 {
            tx.set_max_table_size(100).unwrap();
        }
        let mut block = Vec::new();
        tx.encode(*list, &mut block).unwrap();
        let mut seed = 4096u16.to_le_bytes().to_vec();
        seed.extend_from_slice(&4096u16.to_le_bytes()); // 16 KiB list limit
        seed.extend_from_slice(&block);
        c.write(&dir, &format!("block{i}"), &seed);
    }
    // Hand-made: an indexed field past the table, Huffman, a size update too large.
    for (name, block) in [
        ("index_out_of_range", &[0x80 | 0x7f, 0x05][..]),
        ("huffman", &[0x40, 0x83, b'a', b'b', b'c', 0x01, b'v'][..]),
        ("size_update_too_large", &[0x3f, 0xe1, 0x3f][..]),
    ] {
        let mut seed = vec![0x00, 0x01, 0x00, 0x10];
        seed.extend_from_slice(block);
        c.write(&dir, name, &seed);
    }

    let dir = c.target("header_sequence");
    let seqs = structured::<HeaderSequence>(1, 6, 384, |s| {
        let blocks = s
            .steps
            .iter()
            .filter(|x| matches!(x, HeaderStep::Block(f) if f.len() >= 2))
            .count();
        let sizes = s
            .steps
            .iter()
            .filter(|x| matches!(x, HeaderStep::SetMaxTableSize(_)))
            .count();
        s.table_size >= 64 && blocks >= 4 && sizes >= 1
    });
    for (i, s) in seqs.iter().enumerate() {
        c.write(&dir, &format!("sequence{i}"), s);
    }

    let dir = c.target("control_tables");
    c.write(&dir, "preface_hello", &preface_hello());
    for name in ["welcome", "reject", "hello"] {
        c.write(&dir, &format!("{name}_frame"), &get(name));
    }
    for name in ["hello", "welcome", "reject"] {
        c.write(&dir, &format!("{name}_body"), &get(name)[16..]);
    }
    let control = get("control");
    let mut pos = 0;
    for name in ["error_body", "go_away_body", "subscribe_body"] {
        let len = u32::from_le_bytes(control[pos..pos + 4].try_into().unwrap()) as usize;
        c.write(&dir, name, &control[pos + 16..pos + len]);
        pos += len;
    }
    c.write(&dir, "service_list", &service_list());
    // Finding F1 (docs/fuzzing.md): an offer of max_batch_bytes = 0.
    let mut zero = Vec::new();
    ClientHandshake::new(
        ClientConfig::default().with_limits(Limits::default().with_max_batch_bytes(0)),
    )
    .start(&mut zero)
    .unwrap();
    c.write(&dir, "preface_hello_zero_batch_bytes", &zero);
    let mut bad_major = preface_hello();
    bad_major[6] = 2;
    c.write(&dir, "preface_major_2", &bad_major);

    let dir = c.target("roundtrip");
    let trips = structured::<RoundTrip>(2, 6, 512, |r| {
        let frames = r
            .items
            .iter()
            .filter(|i| matches!(i, Item::Frame(f) if !f.headers.is_empty()))
            .count();
        let compressed = r
            .items
            .iter()
            .any(|i| matches!(i, Item::Frame(f) if f.compress));
        let control = r.items.iter().any(|i| matches!(i, Item::Control(_)));
        r.compression != Compression::None && frames >= 2 && compressed && control
    });
    for (i, t) in trips.iter().enumerate() {
        c.write(&dir, &format!("trip{i}"), t);
    }

    let dir = c.target("decompress");
    for (name, algo, code) in [
        ("lz4", Compression::Lz4, 0u8),
        ("zstd", Compression::Zstd, 1),
    ] {
        for (size, max_shift) in [(600usize, 12u8), (3000, 12)] {
            let mut payload = Vec::new();
            assert!(Compressor::new(algo, 0).compress_into(&compressible(size), &mut payload));
            let mut seed = vec![code, max_shift];
            seed.extend_from_slice(&payload);
            c.write(&dir, &format!("{name}_{size}"), &seed);
        }
        // A bomb: 256 KiB of zeros against a 64 KiB limit.
        let mut payload = Vec::new();
        assert!(Compressor::new(algo, 0).compress_into(&vec![0; 256 << 10], &mut payload));
        let mut seed = vec![code, 16];
        seed.extend_from_slice(&payload);
        c.write(&dir, &format!("{name}_bomb"), &seed);
    }

    // netron-shm: honest runs (long enough to wrap small rings) and runs with a tampering
    // peer; segment headers with a few words overwritten.
    let dir = c.target("shm_ring");
    let honest = structured::<ShmRing>(3, 4, 384, |r| r.honest() && r.ops.len() >= 6);
    let tampered = structured::<ShmRing>(4, 4, 384, |r| !r.honest() && r.ops.len() >= 12);
    for (i, seed) in honest.iter().enumerate() {
        c.write(&dir, &format!("honest_{i}"), seed);
    }
    for (i, seed) in tampered.iter().enumerate() {
        c.write(&dir, &format!("tampered_{i}"), seed);
    }
    let dir = c.target("shm_layout");
    c.write(&dir, "untouched", &[3, 5, 0, 0, 0, 0, 0]);
    for (i, seed) in structured::<ShmLayoutInput>(5, 4, 24, |l| (1..=2).contains(&l.writes.len()))
        .iter()
        .enumerate()
    {
        c.write(&dir, &format!("overwritten_{i}"), seed);
    }

    // QUIC header compression: the first request of protocol.md §28.7 (encoder stream, block,
    // decoder stream) cut as `qpack_parts` expects, and structured runs.
    let dir = c.target("qpack_decode");
    {
        use netron_codec::qpack::{QpackDecoder, QpackEncoder};
        let mut enc = QpackEncoder::new(4096);
        let (mut ins, mut block) = (Vec::new(), Vec::new());
        let fields = [Header::service(b"calc@1.2.0"), Header::method(b"add")];
        enc.encode(0, &fields, &mut block, &mut ins).unwrap();
        let mut dec = QpackDecoder::new(4096, 1 << 14);
        dec.feed_encoder_stream(&ins).unwrap();
        dec.decode(0, &block, &mut Default::default()).unwrap();
        let mut acks = Vec::new();
        dec.take_instructions(&mut acks);
        let rest: Vec<u8> = [&ins[..], &block[..], &acks[..]].concat();
        // Split points as fractions of 255 of the rest (rounded down by qpack_parts).
        let a = (ins.len() * 255).div_ceil(rest.len()) as u8;
        let b = (block.len() * 255).div_ceil(rest.len() - ins.len()) as u8;
        let mut seed = vec![128, a, b];
        seed.extend_from_slice(&rest);
        c.write(&dir, "first_request", &seed);
        let mut seed = vec![128, 0, 255];
        seed.extend_from_slice(&block);
        c.write(&dir, "blocked", &seed);
        let mut seed = vec![2, 255, 0];
        seed.extend_from_slice(b"\x3f\xe1\x1f\x43x-a\x011\x00");
        c.write(&dir, "small_table", &seed);
    }
    let dir = c.target("qpack_roundtrip");
    for (i, seed) in structured::<QpackRun>(6, 6, 512, |r| {
        r.steps.len() >= 8
            && r.steps
                .iter()
                .any(|s| matches!(s, QpackStep::Encode(f) if f.len() >= 2))
            && r.steps.iter().any(|s| matches!(s, QpackStep::Block(_)))
    })
    .iter()
    .enumerate()
    {
        c.write(&dir, &format!("run_{i}"), seed);
    }
    // Regression F2 (docs/fuzzing.md): the crash input, minimised. Insertions for a block the
    // receiver abandons, then more insertions that evicted them before the decoder had any.
    c.write(
        &dir,
        "unacked_eviction_after_cancel",
        &[
            18, 155, 65, 20, 48, 18, 155, 244, 195, 49, 138, 225, 225, 225, 225, 225, 31, 224, 225,
            225, 225, 93, 225, 225, 225, 225, 225, 225, 225, 0, 0, 225, 225, 225, 3, 73, 124, 68,
            56, 157, 58, 109, 101, 116, 104, 133, 33, 73, 126, 133, 10, 2, 220, 209, 197, 49, 97,
            247, 25, 146, 249, 232, 150, 255, 20, 67, 97, 70, 182, 42, 244, 202, 73, 124, 121, 138,
            225, 225, 225, 225, 225, 225, 225, 225, 225, 225, 225,
        ],
    );
    // Regression F3: a block of 101 fields (one inserted, 100 literal values of 700 bytes) is
    // above 65 535 bytes and refused, as a stream block and as a datagram; then a small block.
    // Bytes as `arbitrary` 1.x reads a `QpackRun`: capacity, then per step a continue byte,
    // a u32 variant selector (0 = Encode, u32::MAX = Datagram) and the fields, each behind a
    // continue byte: name (ratio byte 0 = from NAMES, index), value kind (0 = from VALUES,
    // index; 5 = repeated byte, byte, length as 2 bytes), indexing (1 = Incremental, 2 = No),
    // scratch (1 = no).
    {
        let small = [0, 1, 0, 1, 1, 1]; // :method = calc@1.0.0, Incremental
        let big = [0, 0, 5, b'v', 0x02, 0xbc, 2, 1]; // :service = 700 x 'v', No
        let fields = |first: bool| {
            let mut b = Vec::new();
            if first {
                b.push(1);
                b.extend_from_slice(&small);
            }
            for _ in 0..100 {
                b.push(1);
                b.extend_from_slice(&big);
            }
            b.push(0);
            b
        };
        let mut seed = vec![255];
        seed.extend_from_slice(&[1, 0, 0, 0, 0]);
        seed.extend(fields(true));
        seed.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff]);
        seed.extend(fields(false));
        seed.extend_from_slice(&[1, 0, 0, 0, 0, 1]);
        seed.extend_from_slice(&small);
        seed.push(0);
        c.write(&dir, "block_too_large", &seed);
    }

    // Records: a batch, a frame in three fragments, an overrun.
    let dir = c.target("shm_records");
    {
        let stream = get("stream");
        let one = &get("requests")[..];
        let mut seed = vec![240, 255];
        seed.push(one.len().min(255) as u8);
        seed.extend_from_slice(&one[..one.len().min(255)]);
        c.write(&dir, "batch", &seed);
        let limit = 32usize;
        let mut seed = vec![(limit - 16) as u8, 255];
        for chunk in stream.chunks(limit) {
            seed.push(chunk.len() as u8);
            seed.extend_from_slice(chunk);
        }
        c.write(&dir, "fragments", &seed);
        let mut seed = vec![(limit - 16) as u8, 255, limit as u8];
        seed.extend_from_slice(&stream[..limit]);
        seed.push(limit as u8);
        seed.extend_from_slice(&stream[limit..2 * limit]);
        c.write(&dir, "partial", &seed);
    }

    let dir = c.target("subjects_versions");
    for (name, seed) in [
        ("star", &b"orders.*.created\x00orders.eu.created"[..]),
        ("tail", b"orders.>\x00orders.eu"),
        ("literal", b"a.b\x00a.b"),
        ("caret", b"calc@^1.2"),
        ("exact", b"calc@=1.2.3"),
        ("version", b"1.2.3"),
    ] {
        c.write(&dir, name, seed);
    }

    let dir = c.target("stream_state");
    // Opener/callee data, ends, a cancel and window events (see the target's encoding).
    c.write(
        &dir,
        "exchange",
        &[
            0, 1, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0x89, 0, 0, 0, 0, 10, 0, 0, 0, 0,
        ],
    );
    c.write(
        &dir,
        "cancel",
        &[1, 14, 0, 0, 0, 0, 7, 0, 0, 0, 0, 13, 0, 0, 0, 0],
    );
    c.write(
        &dir,
        "windows",
        &[
            9, 16, 0, 0, 1, 0, 18, 0, 0, 0, 0x80, 0x90, 0xff, 0xff, 0xff, 0x7f,
        ],
    );

    println!(
        "wrote {} bytes of seeds under {}",
        c.total,
        c.root.display()
    );
}

fn preface_hello() -> Vec<u8> {
    let mut out = Vec::new();
    ClientHandshake::new(
        ClientConfig::default()
            .with_client_name("gen-corpus")
            .with_auth_token(b"token-123".to_vec()),
    )
    .start(&mut out)
    .unwrap();
    out
}
