//! The handshake state machines against each other, and against bad peers.

use netron_codec::handshake::*;
use netron_codec::{Compression, FrameIter, FrameKind, HandshakeError, Limits, StatusCode};

fn offer_for(client: ClientConfig) -> (Vec<u8>, ClientHandshake) {
    let mut c = ClientHandshake::new(client);
    let mut out = Vec::new();
    c.start(&mut out).unwrap();
    (out, c)
}

#[test]
fn settings_are_the_minimum_of_both_sides() {
    let client = ClientConfig::default()
        .with_limits(
            Limits::default()
                .with_max_frame_size(1 << 20)
                .with_max_batch_frames(64),
        )
        .with_header_table_size(8192)
        .with_compression(&[Compression::Zstd, Compression::Lz4])
        .with_auth_token(b"secret".to_vec())
        .with_client_name("tests");
    let (hello, mut c) = offer_for(client);
    let mut server = ServerHandshake::new(ServerConfig::default());
    // Byte by byte: the server asks for more until the Hello is complete.
    for cut in 0..hello.len() {
        match server.handle(&hello[..cut]) {
            Ok(ServerProgress::NeedMore { needed }) => assert!(needed > 0),
            other => panic!("at {cut}: {other:?}"),
        }
    }
    let ServerProgress::Offer { offer, consumed } = server.handle(&hello).unwrap() else {
        panic!()
    };
    assert_eq!(consumed, hello.len());
    assert_eq!(offer.auth_token.as_deref(), Some(&b"secret"[..]));
    assert_eq!(offer.client_name.as_deref(), Some("tests"));
    let mut welcome = Vec::new();
    let s = server.try_accept(&offer, &mut welcome).unwrap();
    assert_eq!(s.limits.max_frame_size, 1 << 20);
    assert_eq!(s.limits.max_batch_frames, 64);
    assert_eq!(s.header_table_size, 4096);
    // The client's most preferred algorithm that this build has (both, by default).
    let preferred = [Compression::Zstd, Compression::Lz4]
        .into_iter()
        .find(|a| a.is_available())
        .unwrap_or(Compression::None);
    assert_eq!(s.compression, preferred, "client preference wins");
    // Trailing frames after the Welcome are left for the connection.
    welcome.extend_from_slice(&[0; 5]);
    let ClientProgress::Done { settings, consumed } = c.handle(&welcome).unwrap() else {
        panic!()
    };
    assert_eq!(consumed, welcome.len() - 5);
    assert_eq!(settings, s);
}

#[test]
fn no_common_compression_means_none() {
    let (hello, _) = offer_for(ClientConfig::default().with_compression(&[Compression::Zstd]));
    let mut cfg = ServerConfig::default();
    cfg.compression = vec![Compression::Lz4];
    let mut server = ServerHandshake::new(cfg);
    let ServerProgress::Offer { offer, .. } = server.handle(&hello).unwrap() else {
        panic!()
    };
    assert_eq!(
        server.negotiate(&offer).unwrap().compression,
        Compression::None
    );
}

#[test]
fn bad_preface_is_refused_without_reply() {
    let mut server = ServerHandshake::new(ServerConfig::default());
    let mut out = Vec::new();
    let e = server
        .handle_with_reply(b"GET / HTTP/1.1\r\n", &mut out)
        .unwrap_err();
    assert!(matches!(e, HandshakeError::BadPreface(m) if &m == b"GET / "));
    assert_eq!(e.counter(), "bad_preface");
    assert!(out.is_empty());
    // Wrong from the first byte: refused before the rest arrives.
    assert!(server.handle(b"X").is_err());
}

#[test]
fn a_client_answered_by_a_non_netron_server_says_so() {
    let mut client = ClientHandshake::new(ClientConfig::default());
    let mut out = Vec::new();
    client.start(&mut out).unwrap();
    // "HTTP/1.1 400" reads as a frame header of a 1.3 GB frame: not a size problem.
    let e = client
        .handle(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        .unwrap_err();
    assert!(
        matches!(e, HandshakeError::BadPreface(m) if &m == b"HTTP/1"),
        "{e:?}"
    );
    assert!(e.to_string().contains("does not speak Netron"), "{e}");
    assert_eq!(e.counter(), "bad_preface");
}

#[test]
fn incompatible_major_gets_a_reject_the_client_understands() {
    let mut server = ServerHandshake::new(ServerConfig::default());
    let mut out = Vec::new();
    let mut preface = PREFACE;
    preface[6] = 2;
    let e = server.handle_with_reply(&preface, &mut out).unwrap_err();
    assert_eq!(
        e,
        HandshakeError::IncompatibleVersion { theirs: 2, ours: 1 }
    );
    let mut client = ClientHandshake::new(ClientConfig::default());
    match client.handle(&out).unwrap_err() {
        HandshakeError::Rejected { status, reason, .. } => {
            assert_eq!(status, StatusCode::FailedPrecondition);
            assert!(reason.contains("Netron/1"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unusable_offers_and_welcomes_are_refused() {
    let (hello, _) =
        offer_for(ClientConfig::default().with_limits(Limits::default().with_max_frame_size(100)));
    let mut server = ServerHandshake::new(ServerConfig::default());
    let ServerProgress::Offer { offer, .. } = server.handle(&hello).unwrap() else {
        panic!()
    };
    let mut out = Vec::new();
    assert!(server.try_accept(&offer, &mut out).is_err());
    let f = FrameIter::new(&out, &Limits::default())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(f.kind(), FrameKind::Reject);

    // A server that raises the client's limits is refused by the client.
    let (hello, mut client) =
        offer_for(ClientConfig::default().with_limits(Limits::default().with_max_frame_size(4096)));
    let mut greedy = ServerHandshake::new(ServerConfig::default());
    let ServerProgress::Offer { mut offer, .. } = greedy.handle(&hello).unwrap() else {
        panic!()
    };
    offer.limits.max_frame_size = 1 << 20; // pretend the client asked for more
    let mut welcome = Vec::new();
    greedy.try_accept(&offer, &mut welcome).unwrap();
    assert!(matches!(
        client.handle(&welcome),
        Err(HandshakeError::InvalidSettings(_))
    ));
}

#[test]
fn a_request_before_the_hello_is_unexpected() {
    let mut input = PREFACE.to_vec();
    let mut batch = netron_codec::BatchEncoder::new(Limits::default());
    batch.request(1, None).unwrap().finish().unwrap();
    input.extend_from_slice(batch.as_slice());
    let mut server = ServerHandshake::new(ServerConfig::default());
    assert_eq!(
        server.handle(&input).unwrap_err(),
        HandshakeError::UnexpectedFrame {
            expected: "Hello",
            got: FrameKind::Request
        }
    );
}

#[test]
fn oversized_tokens_are_refused_locally() {
    let mut c = ClientHandshake::new(ClientConfig::default().with_auth_token(vec![0; 70_000]));
    assert!(matches!(
        c.start(&mut Vec::new()),
        Err(HandshakeError::InvalidSettings(_))
    ));
}

#[test]
fn zero_batch_bytes_is_rejected() {
    let (hello, _) =
        offer_for(ClientConfig::default().with_limits(Limits::default().with_max_batch_bytes(0)));
    let mut server = ServerHandshake::new(ServerConfig::default());
    let ServerProgress::Offer { offer, .. } = server.handle(&hello).unwrap() else {
        panic!()
    };
    let mut out = Vec::new();
    assert!(
        matches!(server.try_accept(&offer, &mut out), Err(HandshakeError::InvalidSettings(r)) if r.contains("max_batch_bytes"))
    );
    let f = FrameIter::new(&out, &Limits::default())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(f.kind(), FrameKind::Reject);
}

/// Negotiated batch limits have minimums (docs/protocol.md §17): the exact minimum is
/// accepted, one below is rejected with a Reject saying which limit.
#[test]
fn batch_limits_below_their_minimum_are_rejected() {
    let cases = [
        (
            "max_batch_frames",
            Limits::default().with_max_batch_frames(Limits::MIN_BATCH_FRAMES),
            Limits::default().with_max_batch_frames(Limits::MIN_BATCH_FRAMES - 1),
        ),
        (
            "max_batch_bytes",
            Limits::default().with_max_batch_bytes(Limits::MIN_BATCH_BYTES),
            Limits::default().with_max_batch_bytes(Limits::MIN_BATCH_BYTES - 1),
        ),
    ];
    for (name, ok, low) in cases {
        for (limits, accepted) in [(ok, true), (low, false)] {
            let (hello, _) = offer_for(ClientConfig::default().with_limits(limits));
            let mut server = ServerHandshake::new(ServerConfig::default());
            let ServerProgress::Offer { offer, .. } = server.handle(&hello).unwrap() else {
                panic!()
            };
            let r = server.try_accept(&offer, &mut Vec::new());
            match r {
                Ok(_) => assert!(accepted, "{name} below the minimum was accepted"),
                Err(HandshakeError::InvalidSettings(reason)) => {
                    assert!(!accepted, "{name} at the minimum was rejected");
                    assert!(reason.contains(name), "{reason}");
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
