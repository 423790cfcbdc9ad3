use netron_codec::control::{ControlEncoder, HelloFields, WelcomeFields};
use netron_codec::{BatchEncoder, Compression, FrameKind, Limits, StatusCode, handshake, hpack};
use std::time::Duration;

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn dump() {
    println!("preface: {}", hex(&handshake::PREFACE));
    let mut enc = hpack::HeaderEncoder::new(4096);
    let mut batch = BatchEncoder::new(Limits::default());
    let h = [
        hpack::Header::service(b"calc@1.2.0"),
        hpack::Header::method(b"add"),
    ];
    for id in 1..=2 {
        batch
            .request(id, Some(Duration::from_millis(250)))
            .unwrap()
            .headers(&mut enc, &h)
            .unwrap()
            .payload(&[1, 2, 3, 4])
            .finish()
            .unwrap();
        println!("req{id}: {}", hex(batch.as_slice()));
        batch.clear();
    }
    batch.empty_frame(FrameKind::Ping, 7, 0x01020304).unwrap();
    println!("ping: {}", hex(batch.as_slice()));
    batch.clear();
    batch.empty_frame(FrameKind::Cancel, 1, 0).unwrap();
    println!("cancel: {}", hex(batch.as_slice()));
    batch.clear();
    let mut c = ControlEncoder::new();
    c.hello(
        &mut batch,
        &HelloFields {
            features: 0,
            compression: &[Compression::Lz4, Compression::Zstd],
            max_frame_size: 16 << 20,
            header_table_size: 4096,
            max_batch_frames: 128,
            max_batch_bytes: 64 << 10,
            max_decompressed_size: 16 << 20,
            auth_token: None,
            client_name: Some("cli"),
        },
    )
    .unwrap();
    println!("hello: {}", hex(batch.as_slice()));
    batch.clear();
    c.welcome(
        &mut batch,
        &WelcomeFields {
            version_minor: 0,
            features: 0,
            compression: Compression::Lz4,
            compression_threshold: 1024,
            max_frame_size: 16 << 20,
            header_table_size: 4096,
            max_batch_frames: 128,
            max_batch_bytes: 64 << 10,
            max_decompressed_size: 16 << 20,
            max_concurrent_calls: 1024,
            initial_stream_window: 256 << 10,
            keepalive_interval_ms: 15000,
            server_id: "netron",
        },
    )
    .unwrap();
    println!("welcome: {}", hex(batch.as_slice()));
    batch.clear();
    c.error(&mut batch, 0, StatusCode::ResourceExhausted, "too big", &[])
        .unwrap();
    println!("error: {}", hex(batch.as_slice()));
    batch.clear();
    c.reject(&mut batch, StatusCode::FailedPrecondition, "v", 0)
        .unwrap();
    println!("reject: {}", hex(batch.as_slice()));
}

#[test]
fn probes() {
    use netron_codec::handshake::*;
    // 1. max_batch_bytes = 0
    let l = Limits::default().with_max_batch_bytes(0);
    let mut b = BatchEncoder::new(l);
    println!("mbb0 encode: {:?}", b.empty_frame(FrameKind::Ping, 1, 0));
    let ping = [16u8, 0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    println!(
        "mbb0 decode: {:?}",
        netron_codec::decode_batch(&ping, &l).next()
    );
    // 2. BlockTooLarge after table update
    let mut enc = hpack::HeaderEncoder::new(4096);
    let big = vec![b'x'; 70000];
    let mut b = BatchEncoder::new(Limits::default());
    let r = b
        .request(1, None)
        .unwrap()
        .headers(
            &mut enc,
            &[
                hpack::Header::new(b"k", b"v"),
                hpack::Header::new(b"big", &big),
            ],
        )
        .map(|_| ());
    println!(
        "block too large: {:?}, enc table_len after = {}",
        r,
        enc.table_len()
    );
    // 4. negotiate with max_batch_bytes 0
    let mut client = ClientHandshake::new(
        ClientConfig::default().with_limits(Limits::default().with_max_batch_bytes(0)),
    );
    let mut server = ServerHandshake::new(ServerConfig::default());
    let (mut ts, mut tc) = (Vec::new(), Vec::new());
    client.start(&mut ts).unwrap();
    let ServerProgress::Offer { offer, .. } = server.handle(&ts).unwrap() else {
        panic!()
    };
    let s = server.try_accept(&offer, &mut tc);
    println!(
        "server settings mbb={:?}",
        s.map(|s| s.limits.max_batch_bytes)
    );
    println!(
        "client: {:?}",
        client.handle(&tc).map(|p| match p {
            ClientProgress::Done { settings, .. } => settings.limits.max_batch_bytes,
            _ => 99,
        })
    );
    // 5. minor version 7 in preface, and header table size update sequence
    let mut ts2 = ts.clone();
    ts2[7] = 7;
    let mut server = ServerHandshake::new(ServerConfig::default());
    println!(
        "minor 7: {:?}",
        server
            .handle(&ts2)
            .map(|p| matches!(p, ServerProgress::Offer { .. }))
    );
    let mut enc = hpack::HeaderEncoder::new(4096);
    let mut blk = Vec::new();
    enc.encode(&[hpack::Header::new(b"a", b"b")], &mut blk)
        .unwrap();
    enc.set_max_table_size(0).unwrap();
    enc.set_max_table_size(4096).unwrap();
    blk.clear();
    enc.encode(&[hpack::Header::new(b"c", b"d")], &mut blk)
        .unwrap();
    println!("size updates: {}", hex(&blk));
    // 6. Never-indexed authorization after explicit incremental
    let mut enc = hpack::HeaderEncoder::new(4096);
    blk.clear();
    enc.encode(
        &[hpack::Header::new(b"authorization", b"t").with_indexing(hpack::Indexing::Incremental)],
        &mut blk,
    )
    .unwrap();
    blk.clear();
    enc.encode(
        &[hpack::Header::new(b"authorization", b"t").with_indexing(hpack::Indexing::Never)],
        &mut blk,
    )
    .unwrap();
    println!("never after incr: {}", hex(&blk));
    // 7. deadline edge
    println!(
        "0x80000000 -> {:?}",
        netron_codec::Deadline::decode(0x8000_0000)
    );
    println!(
        "enc 36min -> {:#x}",
        netron_codec::Deadline::encode(Some(Duration::from_secs(36 * 60)))
    );
    println!(
        "enc 2^31-1 us -> {:#x}",
        netron_codec::Deadline::encode(Some(Duration::from_micros((1 << 31) - 1)))
    );
    // 8. empty header list on StreamEnd etc / header block with zero fields
    let mut dec = hpack::HeaderDecoder::new(4096, 16384);
    println!("empty block: {:?}", dec.decode(&[0x20], |_, _| {}));
    // 9. ServerHandshake with empty hello payload
    let mut bad = PREFACE.to_vec();
    bad.extend_from_slice(&[16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut out = Vec::new();
    let mut server = ServerHandshake::new(ServerConfig::default());
    println!(
        "empty hello: {:?} reply {}",
        server.handle_with_reply(&bad, &mut out),
        out.len()
    );
    let mut bad = PREFACE.to_vec();
    bad[6] = 2;
    println!(
        "major 2: {:?} reply {}",
        server.handle_with_reply(&bad, &mut out),
        hex(&out)
    );
    // 10. version_minor of welcome from client side with config minor
    // 11. GoAway
    let mut c = ControlEncoder::new();
    let mut b = BatchEncoder::new(Limits::default());
    c.go_away(&mut b, 9, StatusCode::Unavailable, "bye")
        .unwrap();
    println!("goaway: {}", hex(b.as_slice()));
}
