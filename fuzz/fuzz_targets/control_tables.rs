//! FlatBuffers control bodies and the handshake on arbitrary bytes.
//!
//! The input is used as the payload of a frame of every control kind and read with the
//! matching `control::read_*` (and as a `ServiceList`); whatever verifies has every field
//! read. Then the input drives both handshake state machines: the server with and without a
//! preface in front, the client as the server's answer. When the server accepts an offer,
//! a client configured with that offer must accept the server's Welcome and end with the same
//! settings; strict prefixes of an accepted Hello must ask for more bytes.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::handshake::{
    ClientConfig, ClientHandshake, ClientProgress, PREFACE, ServerConfig, ServerHandshake,
    ServerProgress,
};
use netron_codec::{
    BatchEncoder, Compression, DecodeError, Frame, FrameKind, HandshakeError, Limits, control,
};
use netron_fuzz::*;

fn as_frame<'b>(kind: FrameKind, payload: &[u8], batch: &'b mut BatchEncoder) -> Option<Frame<'b>> {
    batch.clear();
    batch.frame(kind, 0).ok()?.payload(payload).finish().ok()?;
    Some(Frame::parse(batch.as_slice(), batch.limits()).expect("own frame parses"))
}

fn check_body_error(e: &DecodeError) {
    assert!(matches!(e, DecodeError::InvalidBody { .. }), "{e:?}");
    black_box(e.to_string());
}

fn read_bodies(data: &[u8]) {
    let mut batch = BatchEncoder::new(Limits::default());
    macro_rules! body {
        ($kind:expr, $read:path, $touch:path) => {
            if let Some(f) = as_frame($kind, data, &mut batch) {
                match $read(&f) {
                    Ok(t) => $touch(&t),
                    Err(e) => check_body_error(&e),
                }
            }
        };
    }
    body!(FrameKind::Hello, control::read_hello, touch_hello);
    body!(FrameKind::Welcome, control::read_welcome, touch_welcome);
    body!(FrameKind::Reject, control::read_reject, touch_reject);
    body!(FrameKind::Error, control::read_error, touch_error);
    body!(FrameKind::GoAway, control::read_go_away, touch_go_away);
    body!(
        FrameKind::Subscribe,
        control::read_subscribe,
        touch_subscribe
    );
    if let Some(f) = as_frame(FrameKind::StreamEnd, data, &mut batch) {
        match control::read_stream_end(&f) {
            Ok(Some(t)) => touch_error(&t),
            Ok(None) => assert!(data.is_empty()),
            Err(e) => check_body_error(&e),
        }
    }
    // A reader refuses a frame of another kind.
    if let Some(f) = as_frame(FrameKind::Welcome, data, &mut batch) {
        assert!(control::read_hello(&f).is_err());
    }
    match control::read_service_list(data) {
        Ok(l) => touch_service_list(&l),
        Err(e) => check_body_error(&e),
    }
}

fn client_for(offer: &netron_codec::handshake::ClientOffer) -> ClientHandshake {
    let mut c = ClientConfig::default()
        .with_compression(&offer.compression)
        .with_header_table_size(offer.header_table_size);
    c.features = offer.features;
    let mut limits = offer.limits;
    limits.max_header_list_size = Limits::default().max_header_list_size;
    c = c.with_limits(limits);
    ClientHandshake::new(c)
}

fn server(input: &[u8]) {
    let mut server = ServerHandshake::new(ServerConfig::default());
    let mut reply = Vec::new();
    let r = server.handle_with_reply(input, &mut reply);
    if !matches!(r, Err(HandshakeError::IncompatibleVersion { .. })) {
        assert!(reply.is_empty(), "a reply only for an incompatible version");
    }
    match r {
        Ok(ServerProgress::NeedMore { needed }) => assert!(needed > 0),
        Ok(ServerProgress::Offer { offer, consumed }) => {
            assert!(consumed <= input.len());
            assert!(consumed > PREFACE.len());
            black_box(format!("{offer:?}"));
            // Strict prefixes of the preface + Hello ask for more.
            for cut in [0, 1, 7, 8, 9, 23, consumed - 1] {
                if cut < consumed && cut > 0 {
                    let mut s = ServerHandshake::new(ServerConfig::default());
                    match s.handle(&input[..cut]) {
                        Ok(ServerProgress::NeedMore { needed }) => {
                            assert!(needed > 0 && needed <= consumed - cut, "cut {cut}")
                        }
                        other => panic!("prefix of {cut} bytes: {other:?}"),
                    }
                }
            }
            // §13.2 step 2: these offers are rejected; everything else is accepted.
            let unusable = offer.limits.max_frame_size < Limits::MIN_FRAME_SIZE
                || offer.limits.max_batch_frames < Limits::MIN_BATCH_FRAMES
                || offer.limits.max_batch_bytes < Limits::MIN_BATCH_BYTES;
            // Finding F1 (docs/fuzzing.md, fixed): negotiate() used to accept max_batch_bytes = 0.
            let known_gap = false;
            let mut welcome = Vec::new();
            match server.try_accept(&offer, &mut welcome) {
                Ok(settings) if !known_gap => {
                    assert!(!unusable, "server accepted an unusable offer {offer:?}");
                    let mut client = client_for(&offer);
                    match client.handle(&welcome) {
                        Ok(ClientProgress::Done {
                            settings: s,
                            consumed: c,
                        }) => {
                            assert_eq!(c, welcome.len());
                            assert_eq!(s, settings, "client and server settings differ");
                        }
                        other => panic!(
                            "client refused the Welcome for its own offer: {other:?}\noffer {offer:?}\nsettings {settings:?}"
                        ),
                    }
                    assert!(settings.limits.max_frame_size >= Limits::MIN_FRAME_SIZE);
                    assert!(settings.limits.max_batch_frames >= 1);
                    if settings.limits.max_decompressed_size == 0 {
                        assert_eq!(settings.compression, Compression::None);
                    }
                    // The negotiated limits let a sender queue a frame.
                    let mut b = BatchEncoder::new(settings.limits);
                    b.empty_frame(FrameKind::Ping, 1, 2)
                        .expect("negotiated limits admit a Ping");
                }
                Ok(_) => {}
                Err(e) => {
                    assert!(unusable, "server rejected a usable offer: {e}; {offer:?}");
                    // The Reject the server appended is a valid Reject the client reports.
                    black_box(e.counter());
                    let mut client = ClientHandshake::new(ClientConfig::default());
                    assert!(matches!(
                        client.handle(&welcome),
                        Err(HandshakeError::Rejected { .. })
                    ));
                }
            }
            // accept() never panics and yields usable sizes.
            let mut out = Vec::new();
            let s = server.accept(&offer, &mut out);
            assert!(s.limits.max_frame_size >= Limits::MIN_FRAME_SIZE);
            assert!(!out.is_empty());
        }
        Err(HandshakeError::IncompatibleVersion { theirs, ours }) => {
            assert_ne!(theirs, ours);
            let mut client = ClientHandshake::new(ClientConfig::default());
            assert!(matches!(
                client.handle(&reply),
                Err(HandshakeError::Rejected { .. })
            ));
        }
        Err(e) => {
            black_box(e.counter());
            black_box(e.to_string());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read_bodies(data);
    server(data);
    let mut with_preface = PREFACE.to_vec();
    with_preface.extend_from_slice(data);
    server(&with_preface);
    let mut client = ClientHandshake::new(ClientConfig::default());
    match client.handle(data) {
        Ok(ClientProgress::NeedMore { needed }) => assert!(needed > 0),
        Ok(ClientProgress::Done { settings, consumed }) => {
            assert!(consumed <= data.len());
            assert!(settings.limits.max_frame_size >= Limits::MIN_FRAME_SIZE);
            assert!(settings.limits.max_batch_frames >= 1);
            black_box(format!("{settings:?}"));
        }
        Err(e) => {
            black_box(e.counter());
            black_box(e.to_string());
        }
    }
});
