//! Golden bytes: `docs/protocol.md` and the codec cannot drift apart.
//!
//! Every fenced block in the doc whose info string is `hex golden:<name>` is extracted
//! (whitespace-separated two-digit hex bytes, `#` comments to the end of the line). Each
//! block's frames are re-encoded with the codec and must be byte-identical, and the doc's
//! bytes are decoded and every field checked. A missing, unknown, duplicated or different block
//! fails.

use std::collections::BTreeMap;
use std::time::Duration;

use netron_codec::control::{self, ControlEncoder, HelloFields, WelcomeFields};
use netron_codec::handshake::{
    self, ClientConfig, ClientHandshake, ClientProgress, ServerConfig, ServerHandshake,
    ServerProgress,
};
use netron_codec::hpack::{self, Header, HeaderDecoder, HeaderEncoder, HeaderList};
use netron_codec::{
    BatchEncoder, Compression, Flags, Frame, FrameIter, FrameKind, Limits, StatusCode, decode_batch,
};

const DOC: &str = include_str!("../../docs/protocol.md");

/// The golden blocks the doc must hold, no more and no fewer.
const EXPECTED: [&str; 8] = [
    "preface",
    "request-first",
    "request-second",
    "ping",
    "cancel",
    "hello",
    "welcome",
    "error-connection",
];

/// The golden blocks of the sections after §20 (streams, events, `$sys`, capabilities, shared
/// memory, QUIC), checked at the end of this file.
const EXPECTED_EXTENSIONS: [&str; 14] = [
    "features-word",
    "subscribe-datagrams",
    "quic-alpn",
    "stream-open",
    "stream-data-end",
    "stream-end-ok",
    "window-updates",
    "event-delivered",
    "unsubscribe",
    "sys-list-request",
    "shm-fragmented-frame",
    "quic-encoder-stream",
    "quic-request-first",
    "quic-decoder-stream",
];

const FENCE: &str = "```";
const MARKER: &str = "```hex golden:";

/// Extracts every golden block: name -> bytes. Panics on malformed blocks or duplicates.
fn parse_goldens(doc: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut lines = doc.lines().enumerate();
    while let Some((lineno, line)) = lines.next() {
        let Some(name) = line.trim_start().strip_prefix(MARKER) else {
            assert!(
                !line.contains("golden:") || !line.trim_start().starts_with(FENCE),
                "line {}: malformed golden fence {line:?} (expected `{MARKER}<name>`)",
                lineno + 1
            );
            continue;
        };
        let name = name.trim();
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "line {}: bad golden block name {name:?}",
            lineno + 1
        );
        let mut bytes = Vec::new();
        let mut closed = false;
        for (n, l) in lines.by_ref() {
            if l.trim() == FENCE {
                closed = true;
                break;
            }
            let code = l.split('#').next().unwrap_or("");
            for tok in code.split_whitespace() {
                assert!(
                    tok.len() == 2 && tok.bytes().all(|b| b.is_ascii_hexdigit()),
                    "golden block {name:?}, line {}: {tok:?} is not a two-digit hex byte",
                    n + 1
                );
                bytes.push(u8::from_str_radix(tok, 16).unwrap());
            }
        }
        assert!(closed, "golden block {name:?} is not closed");
        assert!(!bytes.is_empty(), "golden block {name:?} is empty");
        assert!(
            out.insert(name.to_owned(), bytes).is_none(),
            "golden block {name:?} appears twice"
        );
    }
    out
}

fn golden(name: &str) -> Vec<u8> {
    parse_goldens(DOC)
        .remove(name)
        .unwrap_or_else(|| panic!("docs/protocol.md has no golden block {name:?}"))
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[track_caller]
fn assert_bytes(name: &str, doc: &[u8], code: &[u8]) {
    assert!(
        doc == code,
        "golden block {name:?} differs from the codec\n doc:   {}\n codec: {}",
        hex(doc),
        hex(code)
    );
}

/// Parses exactly one frame filling `bytes`, with the given limits.
fn one_frame<'a>(bytes: &'a [u8], limits: &Limits) -> Frame<'a> {
    let frame = Frame::parse(bytes, limits).expect("golden frame parses");
    assert_eq!(
        frame.len(),
        bytes.len(),
        "golden block holds exactly one frame"
    );
    assert_eq!(frame.header().length() as usize, bytes.len());
    frame
}

fn fields(list: &HeaderList) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

const SERVICE: &[u8] = b"calc@1.2.0";
const METHOD: &[u8] = b"add";
const PAYLOAD: [u8; 4] = [1, 2, 3, 4];
const DEADLINE: Duration = Duration::from_millis(250);

fn hello_fields() -> HelloFields<'static> {
    HelloFields {
        features: 0,
        compression: &[Compression::Lz4, Compression::Zstd],
        max_frame_size: 16 << 20,
        header_table_size: 4096,
        max_batch_frames: 128,
        max_batch_bytes: 64 << 10,
        max_decompressed_size: 16 << 20,
        auth_token: None,
        client_name: Some("cli"),
    }
}

#[test]
fn doc_holds_exactly_the_expected_golden_blocks() {
    let goldens = parse_goldens(DOC);
    let names: Vec<&str> = goldens.keys().map(String::as_str).collect();
    let mut expected = EXPECTED.to_vec();
    expected.extend(EXPECTED_EXTENSIONS);
    expected.sort_unstable();
    assert_eq!(names, expected, "golden blocks in docs/protocol.md");
}

#[test]
fn the_block_parser_rejects_what_it_should() {
    let ok = "x\n```hex golden:a\n01 ff # c\n  # only a comment\n0A\n```\n";
    assert_eq!(parse_goldens(ok)["a"], vec![0x01, 0xff, 0x0a]);
    for bad in [
        "```hex golden:a\n01 2\n```\n",
        "```hex golden:a\n01\n",
        "```hex golden:a\n```\n",
        "```hex golden:a\n01\n```\n```hex golden:a\n02\n```\n",
        "```hex  golden:a\n01\n```\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_goldens(bad)).is_err(),
            "{bad:?} was accepted"
        );
    }
}

#[test]
fn preface() {
    let doc = golden("preface");
    assert_bytes("preface", &doc, &handshake::PREFACE);
    assert_eq!(&doc[..6], b"NTRN\r\n");
    assert_eq!(doc[6], handshake::VERSION_MAJOR);
    assert_eq!(doc[6], 1);
    assert_eq!(doc[7], handshake::VERSION_MINOR);
    // The client's handshake starts with exactly these bytes.
    let mut out = Vec::new();
    ClientHandshake::new(ClientConfig::default())
        .start(&mut out)
        .unwrap();
    assert_eq!(&out[..8], &doc[..]);
}

/// Encodes the two Requests of the doc with a fresh encoder (table size 4096).
fn encode_requests() -> (Vec<u8>, Vec<u8>) {
    let mut enc = HeaderEncoder::new(4096);
    let mut batch = BatchEncoder::new(Limits::default());
    let headers = [Header::service(SERVICE), Header::method(METHOD)];
    let mut out = Vec::new();
    for id in 1..=2 {
        batch
            .request(id, Some(DEADLINE))
            .unwrap()
            .headers(&mut enc, &headers)
            .unwrap()
            .payload(&PAYLOAD)
            .finish()
            .unwrap();
        out.push(batch.as_slice().to_vec());
        batch.clear();
    }
    assert_eq!(enc.table_len(), 2);
    (out.remove(0), out.remove(0))
}

#[test]
fn requests_encode_to_the_golden_bytes() {
    let (first, second) = encode_requests();
    assert_bytes("request-first", &golden("request-first"), &first);
    assert_bytes("request-second", &golden("request-second"), &second);
    assert_eq!(
        second.len() - 16 - PAYLOAD.len(),
        2,
        "steady state: 2 bytes"
    );
}

#[test]
fn golden_requests_decode() {
    let limits = Limits::default();
    let mut dec = HeaderDecoder::new(4096, limits.max_header_list_size as usize);
    let mut list = HeaderList::default();
    let want = vec![
        (b":service".to_vec(), SERVICE.to_vec()),
        (b":method".to_vec(), METHOD.to_vec()),
    ];
    for (name, id, block_len) in [("request-first", 1, 17), ("request-second", 2, 2)] {
        let bytes = golden(name);
        let f = one_frame(&bytes, &limits);
        assert_eq!(f.kind(), FrameKind::Request, "{name}");
        assert_eq!(f.header().kind_byte(), 4);
        assert_eq!(f.flags(), Flags::HAS_HEADERS, "{name}");
        assert_eq!(f.id(), id, "{name}");
        assert_eq!(f.arg(), 250_000, "{name}: 250 ms in the microsecond form");
        assert_eq!(f.deadline(), Some(DEADLINE), "{name}");
        assert_eq!(f.header().header_len(), block_len, "{name}");
        assert_eq!(f.header_block().len(), block_len as usize);
        assert_eq!(f.payload(), PAYLOAD, "{name}");
        dec.decode_into(f.header_block(), &mut list).unwrap();
        assert_eq!(fields(&list), want, "{name}");
        assert_eq!(list.service(), Some(SERVICE));
        assert_eq!(list.method(), Some(METHOD));
    }
    // Table after both: (:method, add) = 17, (:service, calc@1.2.0) = 18; 42 + 50 bytes.
    assert_eq!(dec.table_len(), 2);
    assert_eq!(dec.table_size(), (7 + 3 + 32) + (8 + 10 + 32));
    assert_eq!(golden("request-second")[16..18], [0x80 | 18, 0x80 | 17]);

    // The two frames back to back: one stream read and one record.
    let mut wire = golden("request-first");
    wire.extend(golden("request-second"));
    let mut it = FrameIter::new(&wire, &limits);
    assert_eq!(it.by_ref().map(Result::unwrap).count(), 2);
    assert_eq!(it.consumed(), wire.len());
    assert_eq!(decode_batch(&wire, &limits).map(Result::unwrap).count(), 2);
    // Cut anywhere inside the second frame: stream mode waits, record mode fails.
    let cut = &wire[..wire.len() - 1];
    let mut it = FrameIter::new(cut, &limits);
    assert_eq!(it.by_ref().count(), 1);
    assert_eq!(it.needed(), 1);
    let errs: Vec<_> = decode_batch(cut, &limits).filter_map(Result::err).collect();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].counter(), "incomplete");
}

#[test]
fn ping_and_cancel() {
    let limits = Limits::default();
    let mut batch = BatchEncoder::new(limits);
    batch.empty_frame(FrameKind::Ping, 7, 0x0102_0304).unwrap();
    assert_bytes("ping", &golden("ping"), batch.as_slice());
    batch.clear();
    batch.empty_frame(FrameKind::Cancel, 1, 0).unwrap();
    assert_bytes("cancel", &golden("cancel"), batch.as_slice());

    let ping = golden("ping");
    let f = one_frame(&ping, &limits);
    assert_eq!(f.kind(), FrameKind::Ping);
    assert_eq!(f.flags(), Flags::empty());
    assert_eq!((f.id(), f.arg()), (7, 0x0102_0304));
    assert!(f.header_block().is_empty() && f.payload().is_empty());
    // The Pong echoes id and arg: same bytes but the kind.
    batch.clear();
    batch.empty_frame(FrameKind::Pong, f.id(), f.arg()).unwrap();
    let mut pong = ping.clone();
    pong[4] = 16;
    assert_eq!(batch.as_slice(), &pong[..]);

    let cancel = golden("cancel");
    let f = one_frame(&cancel, &limits);
    assert_eq!(f.kind(), FrameKind::Cancel);
    assert_eq!(f.flags(), Flags::empty());
    assert_eq!((f.id(), f.arg()), (1, 0));
    assert_eq!(f.deadline(), None);
    assert!(f.header_block().is_empty() && f.payload().is_empty());
}

#[test]
fn hello() {
    let mut batch = BatchEncoder::new(Limits::default());
    ControlEncoder::new()
        .hello(&mut batch, &hello_fields())
        .unwrap();
    let doc = golden("hello");
    assert_bytes("hello", &doc, batch.as_slice());

    let f = one_frame(&doc, &Limits::default().with_max_frame_size(64 << 10));
    assert_eq!(
        (f.kind(), f.flags(), f.id(), f.arg()),
        (FrameKind::Hello, Flags::empty(), 0, 0)
    );
    let h = control::read_hello(&f).unwrap();
    assert_eq!(h.features(), 0);
    let comp: Vec<u8> = h.compression().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(comp, [1, 2]);
    assert_eq!(h.max_frame_size(), 16 << 20);
    assert_eq!(h.header_table_size(), 4096);
    assert_eq!(h.max_batch_frames(), 128);
    assert_eq!(h.max_batch_bytes(), 65536);
    assert_eq!(h.max_decompressed_size(), 16 << 20);
    assert!(h.auth_token().is_none());
    assert_eq!(h.client_name(), Some("cli"));

    // A server reading preface + this Hello sees the same offer.
    let mut wire = golden("preface");
    wire.extend(&doc);
    let mut server = ServerHandshake::new(ServerConfig::default());
    let ServerProgress::Offer { offer, consumed } = server.handle(&wire).unwrap() else {
        panic!("the golden Hello is a complete offer");
    };
    assert_eq!(consumed, wire.len());
    assert_eq!(offer.compression, [Compression::Lz4, Compression::Zstd]);
    assert_eq!(offer.limits.max_frame_size, 16 << 20);
    assert_eq!(offer.header_table_size, 4096);
    assert_eq!(offer.client_name.as_deref(), Some("cli"));
}

#[test]
#[cfg_attr(
    not(feature = "lz4"),
    ignore = "the golden Welcome chooses LZ4, which this build lacks"
)]
fn welcome() {
    // A default server answering the golden Hello sends exactly the golden Welcome.
    let mut wire = golden("preface");
    wire.extend(golden("hello"));
    let mut server = ServerHandshake::new(ServerConfig::default());
    let ServerProgress::Offer { offer, .. } = server.handle(&wire).unwrap() else {
        panic!("the golden Hello is a complete offer");
    };
    let mut out = Vec::new();
    let settings = server.try_accept(&offer, &mut out).unwrap();
    let doc = golden("welcome");
    assert_bytes("welcome", &doc, &out);

    // The same bytes from the explicit fields.
    let mut batch = BatchEncoder::new(Limits::default());
    ControlEncoder::new()
        .welcome(
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
                keepalive_interval_ms: 15_000,
                server_id: "netron",
            },
        )
        .unwrap();
    assert_bytes("welcome", &doc, batch.as_slice());

    let f = one_frame(&doc, &Limits::default().with_max_frame_size(64 << 10));
    assert_eq!(
        (f.kind(), f.flags(), f.id(), f.arg()),
        (FrameKind::Welcome, Flags::empty(), 0, 0)
    );
    let w = control::read_welcome(&f).unwrap();
    assert_eq!(w.version_minor(), 0);
    assert_eq!(w.features(), 0);
    assert_eq!(w.compression().0, 1);
    assert_eq!(w.compression_threshold(), 1024);
    assert_eq!(w.max_frame_size(), 16 << 20);
    assert_eq!(w.header_table_size(), 4096);
    assert_eq!(w.max_batch_frames(), 128);
    assert_eq!(w.max_batch_bytes(), 65536);
    assert_eq!(w.max_decompressed_size(), 16 << 20);
    assert_eq!(w.max_concurrent_calls(), 1024);
    assert_eq!(w.initial_stream_window(), 262_144);
    assert_eq!(w.keepalive_interval_ms(), 15_000);
    assert_eq!(w.server_id(), Some("netron"));

    // A client that offered the golden Hello accepts it, with the settings the server chose.
    let mut client = ClientHandshake::new(
        ClientConfig::default().with_compression(&[Compression::Lz4, Compression::Zstd]),
    );
    client.start(&mut Vec::new()).unwrap();
    let ClientProgress::Done {
        settings: got,
        consumed,
    } = client.handle(&doc).unwrap()
    else {
        panic!("the golden Welcome completes the handshake");
    };
    assert_eq!(consumed, doc.len());
    assert_eq!(got, settings);
    assert_eq!(got.compression, Compression::Lz4);
}

#[test]
fn connection_error() {
    let mut batch = BatchEncoder::new(Limits::default());
    ControlEncoder::new()
        .error(
            &mut batch,
            0,
            StatusCode::ResourceExhausted,
            "frame too large",
            &[],
        )
        .unwrap();
    let doc = golden("error-connection");
    assert_bytes("error-connection", &doc, batch.as_slice());

    let f = one_frame(&doc, &Limits::default());
    assert_eq!(
        (f.kind(), f.flags(), f.id(), f.arg()),
        (FrameKind::Error, Flags::empty(), 0, 0)
    );
    let e = control::read_error(&f).unwrap();
    assert_eq!(control::status(e.status()), StatusCode::ResourceExhausted);
    assert_eq!(e.status().0, 8);
    assert_eq!(e.message(), Some("frame too large"));
    assert!(e.details().is_none());
}

/// The rows of the markdown table whose header row starts with `header`, as trimmed cells.
fn table_rows(header: &str) -> Vec<Vec<String>> {
    let mut lines = DOC.lines().skip_while(|l| !l.starts_with(header));
    assert!(
        lines.next().is_some(),
        "docs/protocol.md has no table {header:?}"
    );
    lines
        .skip(1) // the |---| line
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn kind_table_matches_the_codec() {
    let rows = table_rows("| kind | name | direction |");
    assert_eq!(rows.len(), FrameKind::ALL.len());
    for (row, kind) in rows.iter().zip(FrameKind::ALL) {
        assert_eq!(row[0], (kind as u8).to_string());
        assert_eq!(row[1], kind.name());
        let mask = row.last().unwrap();
        let mask = u8::from_str_radix(mask.trim_start_matches("0x"), 16).unwrap();
        assert_eq!(mask, kind.allowed_flags().bits(), "{}", kind.name());
        assert_eq!(
            row[5] == "yes" || row[5] == "yes (trailers)",
            kind.may_have_headers()
        );
    }
}

#[test]
fn static_table_matches_the_codec() {
    let rows = table_rows("| index | name | value |");
    assert_eq!(rows.len(), hpack::STATIC_TABLE.len());
    for (i, (row, (name, value))) in rows.iter().zip(hpack::STATIC_TABLE).enumerate() {
        assert_eq!(row[0], (i + 1).to_string());
        assert_eq!(row[1], name);
        let doc_value = if row[2] == "(empty)" { "" } else { &row[2] };
        assert_eq!(doc_value, value, "static entry {}", i + 1);
    }
}

#[test]
fn status_table_matches_the_codec() {
    let rows = table_rows("| code | name |");
    assert_eq!(rows.len(), 17);
    for row in rows {
        let code: u16 = row[0].parse().unwrap();
        assert_eq!(StatusCode::from_u16(code).as_u16(), code);
        assert_eq!(row[1], StatusCode::from_u16(code).to_string());
    }
}

#[test]
fn violation_table_matches_counters_and_statuses() {
    use netron_codec::{CompressionError as C, DecodeError as D, HeaderError as H};
    let k = FrameKind::Ping;
    let errors: Vec<(&str, D)> = vec![
        ("LengthTooShort", D::LengthTooShort { length: 0 }),
        ("FrameTooLarge", D::FrameTooLarge { length: 0, max: 0 }),
        ("UnknownKind", D::UnknownKind(0)),
        ("UnexpectedHeaders", D::UnexpectedHeaders(k)),
        ("BadFlags", D::BadFlags { kind: k, flags: 0 }),
        (
            "HeaderBlockOutOfBounds",
            D::HeaderBlockOutOfBounds {
                header_len: 0,
                length: 0,
            },
        ),
        ("UnexpectedPayload", D::UnexpectedPayload(k)),
        ("Incomplete", D::Incomplete { needed: 0 }),
        ("TooManyFrames", D::TooManyFrames { max: 0 }),
        ("BatchTooLarge", D::BatchTooLarge { len: 0, max: 0 }),
        (
            "InvalidBody",
            D::InvalidBody {
                kind: k,
                table: "",
                reason: String::new(),
            },
        ),
        ("Headers(Truncated)", H::Truncated.into()),
        ("Headers(IntegerOverflow)", H::IntegerOverflow.into()),
        ("Headers(ZeroIndex)", H::ZeroIndex.into()),
        (
            "Headers(IndexOutOfRange)",
            H::IndexOutOfRange { index: 0, len: 0 }.into(),
        ),
        (
            "Headers(HuffmanNotSupported)",
            H::HuffmanNotSupported.into(),
        ),
        (
            "Headers(TableSizeTooLarge)",
            H::TableSizeTooLarge {
                requested: 0,
                max: 0,
            }
            .into(),
        ),
        ("Headers(SizeUpdateNotFirst)", H::SizeUpdateNotFirst.into()),
        (
            "Headers(ListTooLarge)",
            H::ListTooLarge { size: 0, max: 0 }.into(),
        ),
        (
            "Compression(Unsupported)",
            C::Unsupported(Compression::None).into(),
        ),
        (
            "Compression(TooLarge)",
            C::TooLarge {
                declared: 0,
                max: 0,
            }
            .into(),
        ),
        ("Compression(Corrupt)", C::Corrupt.into()),
    ];
    let rows = table_rows("| violation | error | counter | status sent |");
    assert_eq!(rows.len(), errors.len());
    for (row, (name, err)) in rows.iter().zip(&errors) {
        assert_eq!(row[1], *name);
        assert_eq!(row[2], err.counter(), "{name}");
        let status = err.status();
        assert_eq!(row[3], format!("{status} ({})", status.as_u16()), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// §21–§28: capabilities, streams, flow control, events, `$sys`, shared memory, QUIC.

/// `codec` computes the bytes of golden block `name`; they must equal the doc's.
#[track_caller]
fn check(name: &str, code: &[u8]) -> Vec<u8> {
    let doc = golden(name);
    assert_bytes(name, &doc, code);
    doc
}

#[test]
fn features_word() {
    use netron_codec::features::*;
    let word = STREAMS | EVENTS | PEER_CALLS | OFFERS_SERVICES | OFFERS_SYS;
    let doc = check("features-word", &word.to_le_bytes());
    let w = u64::from_le_bytes(doc.try_into().unwrap());
    assert_eq!(w & PROTOCOL_MASK, STREAMS | EVENTS | PEER_CALLS);
    assert_eq!(offers(w), OFFERS_SERVICES | OFFERS_SYS);
    // The word travels in Hello.features; a server that serves streams and $sys answers:
    let server = STREAMS | OFFERS_SERVICES | OFFERS_SYS | OFFERS_PUBLISH;
    let welcome = negotiate(w, server);
    assert_eq!(in_force(welcome, w), STREAMS);
    assert_eq!(
        offers(welcome),
        OFFERS_SERVICES | OFFERS_SYS | OFFERS_PUBLISH
    );
    // Through the real handshake: the Welcome carries both halves, each side agrees.
    let mut client = ClientHandshake::new(ClientConfig::default().with_features(w));
    let mut srv = ServerHandshake::new(ServerConfig::default().with_features(server));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    client.start(&mut a).unwrap();
    let ServerProgress::Offer { offer, .. } = srv.handle(&a).unwrap() else {
        panic!()
    };
    assert_eq!(offers(offer.features), OFFERS_SERVICES | OFFERS_SYS);
    let s = srv.accept(&offer, &mut b);
    let ClientProgress::Done { settings, .. } = client.handle(&b).unwrap() else {
        panic!()
    };
    assert_eq!(settings, s);
    assert_eq!(settings.features, STREAMS);
    assert_eq!(
        settings.server_offers,
        OFFERS_SERVICES | OFFERS_SYS | OFFERS_PUBLISH
    );
}

/// StreamOpen, StreamData (END_STREAM), StreamEnd of stream 3 with a fresh header encoder.
fn encode_stream() -> Vec<Vec<u8>> {
    let mut enc = HeaderEncoder::new(4096);
    let mut batch = BatchEncoder::new(Limits::default());
    let mut out = Vec::new();
    batch
        .frame(FrameKind::StreamOpen, 3)
        .unwrap()
        .arg(netron_codec::Deadline::encode(Some(Duration::from_secs(1))))
        .headers(
            &mut enc,
            &[Header::service(SERVICE), Header::method(b"sum")],
        )
        .unwrap()
        .finish()
        .unwrap();
    out.push(batch.as_slice().to_vec());
    batch.clear();
    batch
        .frame(FrameKind::StreamData, 3)
        .unwrap()
        .flags(Flags::END_STREAM)
        .arg(0)
        .payload(&[0x2a])
        .finish()
        .unwrap();
    out.push(batch.as_slice().to_vec());
    batch.clear();
    batch
        .frame(FrameKind::StreamEnd, 3)
        .unwrap()
        .finish()
        .unwrap();
    out.push(batch.as_slice().to_vec());
    out
}

#[test]
fn stream_frames() {
    use netron_codec::stream::{Received, Role, Stream};
    let limits = Limits::default();
    let code = encode_stream();
    let open = check("stream-open", &code[0]);
    let data = check("stream-data-end", &code[1]);
    let end = check("stream-end-ok", &code[2]);
    let f = one_frame(&open, &limits);
    assert_eq!((f.kind(), f.id()), (FrameKind::StreamOpen, 3));
    assert_eq!(f.deadline(), Some(Duration::from_secs(1)));
    assert!(f.payload().is_empty(), "no first message");
    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    let mut list = HeaderList::default();
    dec.decode_into(f.header_block(), &mut list).unwrap();
    assert_eq!(
        (list.service(), list.method()),
        (Some(SERVICE), Some(&b"sum"[..]))
    );
    // The callee's view: the opener's half carries message 0 with END_STREAM, then the
    // callee's StreamEnd (OK) is its final frame.
    let mut callee = Stream::new(Role::Callee, f.flags().contains(Flags::END_STREAM));
    let d = one_frame(&data, &limits);
    assert_eq!((d.kind(), d.id(), d.arg()), (FrameKind::StreamData, 3, 0));
    assert_eq!(d.payload(), [0x2a]);
    assert_eq!(
        callee.recv_data(d.arg(), d.flags().contains(Flags::END_STREAM)),
        Ok(Received::Message { end: true })
    );
    let e = one_frame(&end, &limits);
    assert_eq!((e.kind(), e.id(), e.len()), (FrameKind::StreamEnd, 3, 16));
    assert!(control::read_stream_end(&e).unwrap().is_none());
    callee.send_end(false).unwrap();
    assert!(callee.is_finished());
}

#[test]
fn window_updates() {
    let limits = Limits::default();
    let mut batch = BatchEncoder::new(limits);
    batch
        .empty_frame(FrameKind::WindowUpdate, 3, 65_536)
        .unwrap();
    batch
        .empty_frame(FrameKind::WindowUpdate, 0, 1 << 20)
        .unwrap();
    let doc = check("window-updates", batch.as_slice());
    let frames: Vec<_> = decode_batch(&doc, &limits).map(Result::unwrap).collect();
    assert_eq!(frames.len(), 2);
    let mut w = netron_codec::stream::Window::new(0);
    for (f, (id, credit)) in frames.iter().zip([(3, 65_536), (0, 1 << 20)]) {
        assert_eq!(
            (f.kind(), f.id(), f.arg()),
            (FrameKind::WindowUpdate, id, credit)
        );
        w.grant(f.arg()).unwrap();
    }
    assert_eq!(w.available(), 65_536 + (1 << 20));
}

#[test]
fn events() {
    let limits = Limits::default();
    let mut enc = HeaderEncoder::new(4096);
    let mut batch = BatchEncoder::new(limits);
    batch
        .frame(FrameKind::Event, 5)
        .unwrap()
        .arg(7)
        .headers(&mut enc, &[Header::topic(b"orders.eu.created")])
        .unwrap()
        .payload(&[0x01])
        .finish()
        .unwrap();
    let doc = check("event-delivered", batch.as_slice());
    let f = one_frame(&doc, &limits);
    assert_eq!((f.kind(), f.id(), f.arg()), (FrameKind::Event, 5, 7));
    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    let mut list = HeaderList::default();
    dec.decode_into(f.header_block(), &mut list).unwrap();
    let topic = netron_codec::subject::Subject::parse(list.topic().unwrap()).unwrap();
    let pattern = netron_codec::subject::Pattern::parse(b"orders.*.created").unwrap();
    assert!(pattern.matches(&topic));
    batch.clear();
    batch.empty_frame(FrameKind::Unsubscribe, 5, 0).unwrap();
    let doc = check("unsubscribe", batch.as_slice());
    let f = one_frame(&doc, &limits);
    assert_eq!((f.kind(), f.id(), f.arg()), (FrameKind::Unsubscribe, 5, 0));
}

#[test]
fn sys_list_request() {
    use netron_codec::sys;
    let limits = Limits::default();
    let mut enc = HeaderEncoder::new(4096);
    let mut batch = BatchEncoder::new(limits);
    batch
        .request(1, None)
        .unwrap()
        .headers(
            &mut enc,
            &[
                Header::service(sys::SYS_SERVICE.as_bytes()),
                Header::method(sys::METHOD_LIST.as_bytes()),
            ],
        )
        .unwrap()
        .finish()
        .unwrap();
    let doc = check("sys-list-request", batch.as_slice());
    let f = one_frame(&doc, &limits);
    let mut dec = HeaderDecoder::new(4096, 16 << 10);
    let mut list = HeaderList::default();
    dec.decode_into(f.header_block(), &mut list).unwrap();
    let id = sys::ServiceId::parse(list.service().unwrap()).unwrap();
    assert_eq!((id.name, id.version), (&b"$sys"[..], sys::SYS_VERSION));
    assert_eq!(list.method(), Some(&b"list"[..]));
    assert!(f.payload().is_empty());
}

#[test]
fn shm_fragmented_frame() {
    use netron_codec::record::{Record, RecordReader, fragment_sizes};
    let limits = Limits::default();
    let mut batch = BatchEncoder::new(limits);
    batch
        .response(1)
        .unwrap()
        .payload(&[0x5a; 24])
        .finish()
        .unwrap();
    let doc = check("shm-fragmented-frame", batch.as_slice());
    // Over a ring whose records carry at most 32 bytes: two records, 32 + 8 bytes.
    let sizes: Vec<usize> = fragment_sizes(doc.len(), 32).unwrap().collect();
    assert_eq!(sizes, [32, 8]);
    let mut rx = RecordReader::new(limits, 32);
    assert!(matches!(
        rx.push(&doc[..32]),
        Ok(Record::Fragment { missing: 8 })
    ));
    match rx.push(&doc[32..]).unwrap() {
        Record::Reassembled(f) => {
            assert_eq!((f.kind(), f.id()), (FrameKind::Response, 1));
            assert_eq!(f.payload(), [0x5a; 24]);
        }
        other => panic!("{other:?}"),
    }
    // The same frame over records of 40 bytes or more is one ordinary record.
    let mut rx = RecordReader::new(limits, 40);
    assert!(matches!(rx.push(&doc), Ok(Record::Batch(_))));
}

#[test]
fn quic_header_compression() {
    use netron_codec::qpack::{
        DECODER_STREAM_TYPE, Decoded, ENCODER_STREAM_TYPE, QpackDecoder, QpackEncoder,
    };
    let limits = Limits::default();
    // The caller's first Request on its first call stream (QUIC stream 4; stream 0 is the
    // control stream), with the encoder stream it needs.
    let mut enc = QpackEncoder::new(4096);
    let mut enc_stream = vec![ENCODER_STREAM_TYPE];
    let mut block = Vec::new();
    // Blocks are tracked per exchange: the Request's id, 1 (§27.4).
    enc.encode(
        1,
        &[Header::service(SERVICE), Header::method(METHOD)],
        &mut block,
        &mut enc_stream,
    )
    .unwrap();
    let mut batch = BatchEncoder::new(limits);
    batch
        .request(1, Some(DEADLINE))
        .unwrap()
        .header_block(&block)
        .unwrap()
        .payload(&PAYLOAD)
        .finish()
        .unwrap();
    let frame = batch.as_slice().to_vec();
    let doc_enc = check("quic-encoder-stream", &enc_stream);
    let doc_req = check("quic-request-first", &frame);

    let mut dec = QpackDecoder::new(4096, 16 << 10);
    let mut list = HeaderList::default();
    let f = one_frame(&doc_req, &limits);
    assert_eq!(f.header_block().len(), 4);
    // The request overtook the encoder stream: blocked, then decoded.
    assert_eq!(
        dec.decode(1, f.header_block(), &mut list),
        Ok(Decoded::Blocked)
    );
    assert_eq!(doc_enc[0], ENCODER_STREAM_TYPE);
    dec.feed_encoder_stream(&doc_enc[1..]).unwrap();
    assert_eq!(dec.unblocked().collect::<Vec<_>>(), [1]);
    assert_eq!(
        dec.decode(1, f.header_block(), &mut list),
        Ok(Decoded::Done)
    );
    assert_eq!(list.service(), Some(SERVICE));
    assert_eq!(list.method(), Some(METHOD));
    assert_eq!(f.payload(), PAYLOAD);
    let mut dec_stream = vec![DECODER_STREAM_TYPE];
    dec.take_instructions(&mut dec_stream);
    let doc_dec = check("quic-decoder-stream", &dec_stream);
    enc.feed_decoder_stream(&doc_dec[1..]).unwrap();
    assert_eq!(enc.known_received_count(), 2);
    assert_eq!(enc.blocked_streams(), 0);
}

#[test]
fn feature_table_matches_the_codec() {
    use netron_codec::features::{self, OFFER_BITS, OFFER_MASK, PROTOCOL_BITS};
    let rows = table_rows("| bit | value | name | half |");
    let mut seen = 0u64;
    for row in rows.iter().filter(|r| r[2] != "reserved") {
        let bit: u32 = row[0].parse().unwrap();
        let value =
            u64::from_str_radix(&row[1].trim_start_matches("0x").replace('_', ""), 16).unwrap();
        assert_eq!(value, 1 << bit, "{row:?}");
        let names: Vec<_> = features::names(value).collect();
        assert_eq!(names, [row[2].to_lowercase().as_str()], "{row:?}");
        assert_eq!(row[3] == "offer", value & OFFER_MASK != 0, "{row:?}");
        seen |= value;
    }
    assert_eq!(seen, PROTOCOL_BITS | OFFER_BITS);
}

#[test]
fn added_violations_match_the_codec() {
    use netron_codec::record::RecordError;
    use netron_codec::stream::StreamError as S;
    let rows = table_rows("| violation | counter | status | section |");
    let status_of = |counter: &str| -> String {
        rows.iter()
            .find(|r| r[1] == counter)
            .unwrap_or_else(|| panic!("§21.3 has no row for {counter}"))[2]
            .clone()
    };
    let errors: Vec<(&str, netron_codec::StatusCode)> = vec![
        (
            S::Sequence {
                expected: 0,
                got: 1,
            }
            .counter(),
            S::Sequence {
                expected: 0,
                got: 1,
            }
            .status(),
        ),
        (
            S::HalfClosed { frame: "" }.counter(),
            S::HalfClosed { frame: "" }.status(),
        ),
        (
            S::WrongDirection {
                frame: "",
                role: "",
            }
            .counter(),
            S::WrongDirection {
                frame: "",
                role: "",
            }
            .status(),
        ),
        (
            S::FlowControl {
                wanted: 1,
                available: 0,
            }
            .counter(),
            S::FlowControl {
                wanted: 1,
                available: 0,
            }
            .status(),
        ),
        (S::ZeroIncrement.counter(), S::ZeroIncrement.status()),
        (
            S::WindowOverflow {
                window: 0,
                increment: 0,
            }
            .counter(),
            S::WindowOverflow {
                window: 0,
                increment: 0,
            }
            .status(),
        ),
        (
            RecordError::EmptyFragment.counter(),
            RecordError::EmptyFragment.status(),
        ),
        (
            RecordError::FragmentOverrun { missing: 0, got: 0 }.counter(),
            RecordError::FragmentOverrun { missing: 0, got: 0 }.status(),
        ),
    ];
    for (counter, status) in errors {
        assert_eq!(status_of(counter), status.to_string(), "{counter}");
    }
    let bad = netron_codec::subject::Pattern::parse(b"a..b").unwrap_err();
    assert!(status_of(bad.counter()).starts_with(&bad.status().to_string()));
}

#[test]
fn quic_alpn() {
    let doc = check("quic-alpn", handshake::ALPN);
    assert_eq!(doc, b"netron/1");
    assert_eq!(doc.last(), Some(&(b'0' + handshake::VERSION_MAJOR)));
}

#[test]
fn subscribe_with_datagrams() {
    let limits = Limits::default();
    let mut batch = BatchEncoder::new(limits);
    ControlEncoder::new()
        .subscribe_with(
            &mut batch,
            5,
            &control::SubscribeFields {
                pattern: "orders.>",
                queue_depth: 256,
                datagrams: true,
                on_full: 0,
                queue_group: "",
            },
        )
        .unwrap();
    let doc = check("subscribe-datagrams", batch.as_slice());
    let f = one_frame(&doc, &limits);
    assert_eq!((f.kind(), f.id()), (FrameKind::Subscribe, 5));
    let s = control::read_subscribe(&f).unwrap();
    assert_eq!(s.pattern(), Some("orders.>"));
    assert_eq!(s.queue_depth(), 256);
    assert!(s.datagrams());
    netron_codec::subject::Pattern::parse(s.pattern().unwrap().as_bytes()).unwrap();
}
