//! Streams (docs/protocol.md §22–§23): the three shapes, a long bidirectional echo, a slow
//! reader bounding the writer's buffer, cancel from either side, deadlines, a peer killed
//! mid-stream, and raw peers breaking the stream rules.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use netron_codec::handshake::ClientConfig;
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, Flags, FrameKind, Limits};
use netron_engine::{Bytes, CallOptions, Engine, Service, Status, StatusCode};

use super::util::{poll, read_frames, wait_for, within};
use crate::{RawPeer, Transport, block_on};

const SVC: &str = "st@1.0.0";
/// The default stream window (Welcome `initial_stream_window`).
const WINDOW: usize = 256 << 10;

/// What the handlers report to the test that runs them.
#[derive(Default)]
struct Probe {
    /// Handlers whose future was dropped (ended by a deadline, a Cancel or a closed peer).
    dropped: AtomicU64,
    /// Largest `buffered()` a flooding handler saw on its sender.
    peak: AtomicUsize,
}

struct OnDrop(Arc<Probe>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn stream_service(probe: &Arc<Probe>) -> Service {
    let (p1, p2) = (probe.clone(), probe.clone());
    Service::new("st", "1.0.0")
        .unwrap()
        .bidi_stream("echo", move |_, mut rx, mut tx| {
            let guard = OnDrop(p1.clone());
            async move {
                while let Some(m) = rx.recv().await {
                    tx.send(m?).await?;
                }
                std::mem::forget(guard);
                Ok(())
            }
        })
        // Request: u32 LE count of 64 KiB chunks.
        .server_stream("flood", move |_, req, mut tx| {
            let probe = p2.clone();
            async move {
                let n = req
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
                let chunk = Bytes::from(vec![5u8; 64 << 10]);
                for _ in 0..n {
                    tx.send(chunk.clone()).await?;
                    probe.peak.fetch_max(tx.buffered(), Ordering::SeqCst);
                }
                Ok(())
            }
        })
        .client_stream("sum", |_, mut rx| async move {
            let mut sum = 0u64;
            while let Some(m) = rx.recv().await {
                sum += m?.iter().map(|&b| b as u64).sum::<u64>();
            }
            Ok(Bytes::copy_from_slice(&sum.to_le_bytes()))
        })
        // Request: u32 LE count, u32 LE size, u8 kind (0 zeros, 1 incompressible).
        .server_stream("sized", |_, req, mut tx| async move {
            let word = |i: usize| {
                req.get(i..i + 4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            };
            let (n, size) = (word(0), word(4) as usize);
            let chunk = if req.get(8) == Some(&1) {
                Bytes::from(super::util::noise(size))
            } else {
                Bytes::from(vec![0u8; size])
            };
            for _ in 0..n {
                tx.send(chunk.clone()).await?;
            }
            Ok(())
        })
        // Sends back the request's `who` metadata.
        .server_stream("meta", |r, _, mut tx| {
            let who = Bytes::copy_from_slice(r.metadata("who").unwrap_or_default());
            async move {
                tx.send(who).await?;
                Ok(())
            }
        })
        // Never reads, never writes.
        .bidi_stream("hang", |_, rx, tx| async move {
            // Holds both halves (reads nothing: no credit goes back) until dropped.
            let _halves = (rx, tx);
            std::future::pending::<()>().await;
            Ok(())
        })
        // One message, then `StreamSender::fail` (a StreamEnd carrying an ErrorBody).
        .server_stream("sfail", |_, _, mut tx| async move {
            tx.send(Bytes::from_static(b"one")).await?;
            tx.fail(Status::new(StatusCode::Aborted, "server gave up"));
            Ok(())
        })
        // Reads one message and rejects the upload (the rest is in flight).
        .client_stream("reject", |_, mut rx| async move {
            let _ = rx.recv().await;
            Err(Status::new(StatusCode::InvalidArgument, "rejected"))
        })
        // Replies with the status the opener's half ended with ("ok" if it finished).
        .client_stream("seen", |_, mut rx| async move {
            while let Some(m) = rx.recv().await {
                if let Err(st) = m {
                    return Ok(Bytes::from(format!("{:?}: {}", st.code, st.message)));
                }
            }
            Ok(Bytes::from_static(b"ok"))
        })
        // Echoes two messages, then fails the stream with Cancelled: the server cancels.
        .bidi_stream("quit", |_, mut rx, mut tx| async move {
            for _ in 0..2 {
                if let Some(m) = rx.recv().await {
                    tx.send(m?).await?;
                }
            }
            Err(Status::new(
                StatusCode::Cancelled,
                "the server stopped the stream",
            ))
        })
}

fn server(t: &Transport, probe: &Arc<Probe>) -> (Engine, String) {
    crate::engine(
        t,
        netron_engine::CoreConfig::default(),
        &[stream_service(probe)],
        "streams",
    )
}

fn client(t: &Transport, addr: &str) -> (Engine, netron_engine::Channel) {
    let c = crate::builder(t).cores(1).build().unwrap();
    let ch = c.client().connect(addr).unwrap();
    (c, ch)
}

fn opts() -> CallOptions {
    CallOptions::new().deadline(Duration::from_secs(60))
}

/// The three shapes, through a `Channel`.
pub fn server_client_and_bidi_streams_work(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (_s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("the three shapes", move || {
        // Server stream: 3 chunks of 64 KiB.
        let mut rx = ch.open_server_stream(SVC, "flood", 3u32.to_le_bytes().to_vec(), &opts());
        let mut n = 0;
        while let Some(m) = block_on(rx.recv()) {
            assert_eq!(m.unwrap().len(), 64 << 10);
            n += 1;
        }
        assert_eq!(n, 3);
        // A message no frame can carry is TooLarge at once, even before the stream is open.
        let (mut tx, _rx) = ch.open_bidi(SVC, "echo", &opts());
        let e = tx.try_send(vec![0u8; 64 << 20]).unwrap_err();
        assert!(
            matches!(e, netron_engine::TrySendError::TooLarge { .. }),
            "{e:?}"
        );
        // Client stream: one reply.
        let (mut tx, mut rx) = ch.open_client_stream(SVC, "sum", &opts());
        block_on(async {
            for i in 0..100u8 {
                tx.send(vec![i; 2]).await.unwrap();
            }
        });
        tx.finish();
        let reply = block_on(rx.recv()).unwrap().unwrap();
        let want: u64 = (0..100u64).map(|i| 2 * i).sum();
        assert_eq!(reply[..], want.to_le_bytes());
        assert!(block_on(rx.recv()).is_none());
        // Unknown method: the receiver gets the status.
        let (_tx, mut rx) = ch.open_bidi(SVC, "nope", &opts());
        let e = block_on(rx.recv()).unwrap().unwrap_err();
        assert_eq!(e.code, StatusCode::Unimplemented);
    });
}

/// A bidirectional echo of 100k chunks arrives complete and in order (writer and reader on
/// two threads). Runs alone: it keeps both CPUs of a small machine busy for a while, which
/// would starve the bounded waits of timing-sensitive tests beside it.
pub fn a_bidi_echo_of_100k_chunks_arrives_complete_and_in_order(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (_s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    const N: u32 = 100_000;
    within("the echo", move || {
        let (mut tx, mut rx) = ch.open_bidi(SVC, "echo", &opts());
        let writer = std::thread::spawn(move || {
            block_on(async {
                for i in 0..N {
                    tx.send(i.to_le_bytes().to_vec()).await.unwrap();
                }
            });
            tx.finish();
        });
        let mut next = 0u32;
        while let Some(m) = block_on(rx.recv()) {
            let m = m.unwrap();
            assert_eq!(u32::from_le_bytes(m[..].try_into().unwrap()), next);
            next += 1;
        }
        writer.join().unwrap();
        assert_eq!(next, N, "complete");
    });
}

/// A server stream of 256 MiB to a reader that reads slowly: the writer's queued bytes stay
/// under one stream window plus one chunk, however much it writes. Runs alone (like the echo).
pub fn a_slow_reader_bounds_what_the_writer_buffers(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    let chunks = 4096u32; // 4096 * 64 KiB = 256 MiB
    let p = probe.clone();
    within("the flood", move || {
        let mut rx = ch.open_server_stream(SVC, "flood", chunks.to_le_bytes().to_vec(), &opts());
        // The writer runs ahead while nobody reads.
        std::thread::sleep(Duration::from_millis(100));
        let mut total = 0usize;
        let mut i = 0u64;
        while let Some(m) = block_on(rx.recv()) {
            total += m.unwrap().len();
            i += 1;
            if i % 512 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(total, chunks as usize * (64 << 10));
        let peak = p.peak.load(Ordering::SeqCst);
        assert!(
            peak <= WINDOW + (64 << 10),
            "the writer queued {peak} bytes, above the window {WINDOW} plus one chunk"
        );
        assert!(peak > 0);
    });
    assert_eq!(s.total_stats().streams_in(), 1);
}

/// Many streams to a reader that reads none of them: the writers of the connection queue, all
/// together, at most one connection window plus one message (not one stream window each, which
/// a peer could multiply by opening streams); a writer waiting for room in the connection's
/// budget is woken when other streams give theirs back, and nothing stays charged to it.
pub fn a_connection_bounds_what_all_its_streams_queue(t: &Transport) {
    const SMALL: usize = 16 << 10;
    const STREAMS: usize = 64;
    const CHUNK: usize = 1024;
    let conn_window = netron_codec::stream::initial_connection_window(SMALL as u32) as usize;
    assert!(
        STREAMS * SMALL > 2 * conn_window,
        "the test needs more than the bound"
    );
    let probe = Arc::new(Probe::default());
    let cfg = netron_engine::ProtocolConfig::default().with_stream_window(SMALL as u32);
    let (_s, addr) = crate::engine(t, cfg, &[stream_service(&probe)], "streams-budget");
    let (_c, ch) = client(t, &addr);
    within("a connection's stream budget", move || {
        let mut halves: Vec<_> = (0..STREAMS)
            .map(|_| ch.open_bidi(SVC, "hang", &opts()))
            .collect();
        // Queue until no stream takes anything, with pauses for the core to send what the
        // windows allow (the reader grants nothing back).
        let chunk = Bytes::from(vec![0x5au8; CHUNK]);
        let mut quiet = 0;
        while quiet < 3 {
            let mut took = false;
            for (tx, _) in halves.iter_mut() {
                while tx.try_send(chunk.clone()).is_ok() {
                    took = true;
                }
            }
            quiet = if took { 0 } else { quiet + 1 };
            std::thread::sleep(Duration::from_millis(20));
        }
        let queued: usize = halves.iter().map(|(tx, _)| tx.buffered()).sum();
        assert!(
            queued <= conn_window + CHUNK,
            "{STREAMS} streams queue {queued} bytes, above one connection window \
             ({conn_window} B) plus one message"
        );
        // A stream with credit of its own waits for room in the connection's budget...
        let i = halves
            .iter()
            .position(|(tx, _)| tx.credit() > 0)
            .expect("some stream still has credit (the budget ran out first)");
        let (mut tx, _rx) = halves.swap_remove(i);
        let waiter = std::thread::spawn(move || block_on(tx.send(vec![1u8; CHUNK])));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "sent although the budget was spent");
        // ...and gets it when the other streams end (cancelled: their queues are dropped).
        for (_, rx) in halves.drain(..) {
            rx.cancel();
        }
        let sent = waiter.join().unwrap();
        assert!(sent.is_ok(), "the waiting send: {sent:?}");
        // Nothing stays charged: a new stream moves more than a connection window.
        let (mut tx, mut rx) = ch.open_bidi(SVC, "echo", &opts());
        let total = 2 * conn_window;
        let reader = std::thread::spawn(move || {
            let mut got = 0;
            while got < total {
                got += block_on(rx.recv()).unwrap().unwrap().len();
            }
            got
        });
        for _ in 0..total / CHUNK {
            block_on(tx.send(chunk.clone())).unwrap();
        }
        assert_eq!(reader.join().unwrap(), total);
    });
}

/// Streams read one after the other: a reader draining one stream while the others sit unread
/// is never stalled by them (compressible messages held for the unread streams, or their
/// unread bytes filling the connection window), and each stream arrives complete.
pub fn a_reader_of_one_stream_is_not_stalled_by_unread_others(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (_s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("streams read one after the other", move || {
        // (streams, messages, size, kind): zeros (held compressed for the unread streams),
        // then incompressible on as many streams as the connection window holds windows of
        // (16: more can stall, docs/architecture.md "Streams", known limit).
        for (streams, n, size, kind) in [(2u32, 2000u32, 4096u32, 0u8), (16, 100, 16 << 10, 1)] {
            let mut req = n.to_le_bytes().to_vec();
            req.extend_from_slice(&size.to_le_bytes());
            req.push(kind);
            let rxs: Vec<_> = (0..streams)
                .map(|_| ch.open_server_stream(SVC, "sized", req.clone(), &opts()))
                .collect();
            for (i, mut rx) in rxs.into_iter().enumerate() {
                let mut got = 0u32;
                while let Some(m) = block_on(rx.recv()) {
                    let m = m.unwrap_or_else(|e| panic!("stream {i} of {streams}: {e:?}"));
                    assert_eq!(m.len(), size as usize);
                    got += 1;
                }
                assert_eq!(got, n, "stream {i} of {streams}");
            }
        }
    });
}

/// Cancel from the client (the server's handler is dropped) and from the server (the client
/// gets the status), mid-stream.
pub fn cancel_from_either_side_mid_stream(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("cancel", move || {
        let (mut tx, mut rx) = ch.open_bidi(SVC, "echo", &opts());
        block_on(tx.send(&b"one"[..])).unwrap();
        assert_eq!(&block_on(rx.recv()).unwrap().unwrap()[..], b"one");
        rx.cancel();
        // Sending fails once the stream ended (at the latest when the server's answer came).
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while block_on(tx.send(&b"more"[..])).is_ok() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        let e = block_on(tx.send(&b"more"[..]))
            .expect_err("sends still succeed 10 s after the receiver cancelled the stream");
        assert_eq!(e.code, StatusCode::Cancelled, "{e:?}");
        // From the server: the handler fails the stream after two echoes.
        let (mut tx, mut rx) = ch.open_bidi(SVC, "quit", &opts());
        for m in [&b"a"[..], b"b"] {
            block_on(tx.send(m)).unwrap();
            assert_eq!(&block_on(rx.recv()).unwrap().unwrap()[..], m);
        }
        let e = block_on(rx.recv()).unwrap().unwrap_err();
        assert_eq!(e.code, StatusCode::Cancelled);
        assert!(block_on(rx.recv()).is_none());
        assert!(block_on(tx.send(&b"c"[..])).is_err());
    });
    assert!(
        poll(&s, |st| st.cancels_in() >= 1),
        "the server saw the Cancel"
    );
    let p = probe.clone();
    assert!(poll(&s, move |_| p.dropped.load(Ordering::SeqCst) == 1));
}

/// The deadline of the StreamOpen bounds the whole stream: mid-stream it fails the client's
/// halves with DeadlineExceeded and drops the server's handler.
pub fn a_deadline_ends_the_stream_midway(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("deadline", move || {
        let o = CallOptions::new().deadline(Duration::from_millis(300));
        let (mut tx, mut rx) = ch.open_bidi(SVC, "echo", &o);
        block_on(tx.send(&b"x"[..])).unwrap();
        assert_eq!(&block_on(rx.recv()).unwrap().unwrap()[..], b"x");
        let e = block_on(rx.recv()).unwrap().unwrap_err();
        assert_eq!(e.code, StatusCode::DeadlineExceeded, "{e:?}");
        assert!(block_on(tx.send(&b"y"[..])).is_err());
    });
    let p = probe.clone();
    assert!(poll(&s, move |_| p.dropped.load(Ordering::SeqCst) == 1));
}

/// A server that goes away mid-stream fails the client's stream with Unavailable.
pub fn a_peer_killed_mid_stream_fails_it_unavailable(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("peer killed", move || {
        let (mut tx, mut rx) = ch.open_bidi(SVC, "echo", &opts());
        block_on(tx.send(&b"x"[..])).unwrap();
        assert_eq!(&block_on(rx.recv()).unwrap().unwrap()[..], b"x");
        drop(s);
        let e = block_on(rx.recv()).unwrap().unwrap_err();
        assert_eq!(e.code, StatusCode::Unavailable, "{e:?}");
        assert!(block_on(tx.send(&b"y"[..])).is_err());
    });
}

fn stream_open(b: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32, method: &[u8]) {
    b.frame(FrameKind::StreamOpen, id)
        .unwrap()
        .headers(
            enc,
            &[Header::service(SVC.as_bytes()), Header::method(method)],
        )
        .unwrap()
        .finish()
        .unwrap();
}

fn stream_data(b: &mut BatchEncoder, id: u32, seq: u32, len: usize) {
    b.frame(FrameKind::StreamData, id)
        .unwrap()
        .arg(seq)
        .payload(&vec![1u8; len])
        .finish()
        .unwrap();
}

/// Raw peers that break the stream rules get `Error(0)` and a closed connection, each with its
/// counter; a StreamData for a stream that does not exist is ignored and counted.
pub fn bad_stream_input_gets_a_connection_error_and_a_counter(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    let good = s.client().connect(&addr).unwrap();
    type Build = fn(&mut BatchEncoder);
    let cases: [(&str, Build); 5] = [
        ("stream_sequence", |b| stream_data(b, 1, 1, 1)),
        ("flow_control", |b| {
            // 8 * 32 KiB use up the 256 KiB window: the 9th is beyond the credit.
            for seq in 0..9 {
                stream_data(b, 1, seq, 32 << 10);
            }
        }),
        ("stream_half_closed", |b| {
            b.frame(FrameKind::StreamData, 1)
                .unwrap()
                .flags(Flags::END_STREAM)
                .finish()
                .unwrap();
            stream_data(b, 1, 1, 1);
        }),
        ("window_overflow", |b| {
            b.empty_frame(FrameKind::WindowUpdate, 1, 0x7fff_ffff)
                .unwrap();
        }),
        ("zero_window_update", |b| {
            b.empty_frame(FrameKind::WindowUpdate, 0, 0).unwrap();
        }),
    ];
    let limits = Limits::default()
        .with_max_frame_size(1 << 20)
        .with_max_batch_bytes(4 << 20);
    let cfg = ClientConfig::default().with_features(netron_codec::features::STREAMS);
    for (counter, build) in cases {
        if counter == "stream_half_closed" && t.stream_per_exchange() {
            // On QUIC the half ends with the stream's FIN (docs/protocol.md §27.2 rule 3):
            // no frame can follow it on that stream.
            continue;
        }
        let (mut p, settings, _) = RawPeer::handshake_with(t, &addr, cfg.clone());
        let mut enc = HeaderEncoder::new(settings.header_table_size);
        let mut b = BatchEncoder::new(limits);
        stream_open(&mut b, &mut enc, 1, b"hang");
        build(&mut b);
        // One record per frame on record transports (a batch must fit a record).
        for f in netron_codec::FrameIter::new(b.as_slice(), &limits) {
            p.send_frames(f.unwrap().as_bytes()).unwrap();
        }
        let (got, closed) = read_frames(&mut p, |f| f.iter().any(|f| f.0 == FrameKind::Error));
        assert!(
            got.iter().any(|f| (f.0, f.1) == (FrameKind::Error, 0)),
            "{counter}: {:?}",
            got.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>()
        );
        let _ = closed;
        assert_eq!(
            wait_for(&s, counter, Duration::from_secs(10)),
            1,
            "{counter}"
        );
        assert_eq!(
            good.call("st@1.0.0", "echo", &b""[..], Some(Duration::from_secs(5)))
                .unwrap_err()
                .code(),
            StatusCode::Unimplemented,
            "a unary call to a stream method is refused; the good client goes on"
        );
    }
    // StreamData for a stream that does not exist: ignored, counted, connection kept. (On
    // QUIC it has no stream to travel on, §27.2: `Transport::stream_per_exchange`.)
    if t.stream_per_exchange() {
        return;
    }
    let (mut p, _, _) = RawPeer::handshake_with(t, &addr, cfg);
    let mut b = BatchEncoder::new(limits);
    stream_data(&mut b, 41, 0, 1);
    b.empty_frame(FrameKind::Ping, 0, 7).unwrap();
    for f in netron_codec::FrameIter::new(b.as_slice(), &limits) {
        p.send_frames(f.unwrap().as_bytes()).unwrap();
    }
    let (got, closed) = read_frames(&mut p, |f| f.iter().any(|f| f.0 == FrameKind::Pong));
    assert!(!closed);
    assert_eq!(frames_of(&got), vec![(FrameKind::Pong, 0)]);
    assert_eq!(wait_for(&s, "unknown_stream", Duration::from_secs(10)), 1);
}

fn frames_of(f: &[(FrameKind, u32, Vec<u8>)]) -> Vec<(FrameKind, u32)> {
    f.iter().map(|f| (f.0, f.1)).collect()
}

/// A handler opens a stream into the peer that called it (through its `Peer`): the client's
/// engine serves the stream.
pub fn a_handler_streams_into_its_calling_peer(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let back = Service::new("back", "1.0.0")
        .unwrap()
        .unary_async("echo3", |req| async move {
            let (mut tx, mut rx) = req.peer().open_bidi(SVC, "echo", &opts());
            let mut out = Vec::new();
            for m in [&b"a"[..], b"b", b"c"] {
                tx.send(m).await?;
                out.extend_from_slice(&rx.recv().await.unwrap_or(Ok(Bytes::new()))?);
            }
            tx.finish();
            Ok(Bytes::from(out))
        });
    let r = call_back(t, &probe, back, "peerstream", "echo3");
    assert_eq!(r, b"abc");
}

/// Streams take a requirement for the service as calls do: a `Channel` resolves it through the
/// peer's `$sys` (a version that does not exist fails the stream with NotFound naming the ones
/// that do); a handler's `Peer` resolves from what its connection already fetched, and says to
/// `Peer::resolve` first when nothing was.
pub fn streams_open_by_requirement_like_calls(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (_s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("streams by requirement", move || {
        let mut rx = ch.open_server_stream("st@^1", "flood", 2u32.to_le_bytes().to_vec(), &opts());
        let mut total = 0;
        while let Some(m) = block_on(rx.recv()) {
            total += m.unwrap().len();
        }
        assert_eq!(total, 2 * (64 << 10));
        let (mut tx, mut rx) = ch.open_bidi("st", "echo", &opts());
        block_on(tx.send(&b"newest"[..])).unwrap();
        assert_eq!(&block_on(rx.recv()).unwrap().unwrap()[..], b"newest");
        let (_tx, mut rx) = ch.open_bidi("st@^2", "echo", &opts());
        let e = block_on(rx.recv()).unwrap().unwrap_err();
        assert_eq!(e.code, StatusCode::NotFound, "{e:?}");
        assert!(e.message.contains("1.0.0"), "{}", e.message);
        // A reserved metadata name is refused here, as for calls.
        let o = opts().metadata(":service", b"other@1.0.0");
        let (_tx, mut rx) = ch.open_bidi(SVC, "echo", &o);
        let e = block_on(rx.recv()).unwrap().unwrap_err();
        assert_eq!(e.code, StatusCode::InvalidArgument, "{e:?}");
    });
    // From a handler, into the peer that called it.
    let back = Service::new("back", "1.0.0")
        .unwrap()
        .unary_async("req", |req| async move {
            let peer = req.peer();
            let (_tx, mut rx) = peer.open_bidi("st@^1", "echo", &opts());
            let before = match rx.recv().await {
                Some(Err(st)) => format!("{:?}", st.code),
                other => format!("{other:?}"),
            };
            peer.resolve("st@^1", Some(Duration::from_secs(10))).await?;
            let (mut tx, mut rx) = peer.open_bidi("st@^1", "echo", &opts());
            tx.send(&b"after"[..]).await?;
            let after = rx.recv().await.unwrap_or(Ok(Bytes::new()))?;
            Ok(Bytes::from(format!(
                "{before} {}",
                String::from_utf8_lossy(&after)
            )))
        });
    let r = call_back(t, &probe, back, "streamreq", "req");
    assert_eq!(String::from_utf8_lossy(&r), "FailedPrecondition after");
}

/// Serves `back` (whose `method` opens streams into its caller) on a fresh endpoint, and calls
/// `method` from a client engine that serves the stream service: the reply.
fn call_back(t: &Transport, probe: &Arc<Probe>, back: Service, tag: &str, method: &str) -> Vec<u8> {
    let (_s, addr) = crate::engine(t, netron_engine::CoreConfig::default(), &[back], tag);
    let c = crate::builder(t)
        .cores(1)
        .service(stream_service(probe))
        .build()
        .unwrap();
    let ch = c.client().connect(&addr).unwrap();
    ch.call(
        "back@1.0.0",
        method,
        &b""[..],
        Some(Duration::from_secs(10)),
    )
    .unwrap()
}

/// Counts the interceptor hooks and keeps the last outcome `after` saw.
#[derive(Default)]
struct Hooks {
    before: AtomicU64,
    after_ok: AtomicU64,
    after_deadline: AtomicU64,
}

struct Counting(Arc<Hooks>);
impl netron_engine::Interceptor for Counting {
    fn before(&self, _: &mut netron_engine::Before<'_>) -> Result<(), Status> {
        self.0.before.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn after(&self, call: &mut netron_engine::After<'_>) {
        match call.outcome() {
            Ok(()) => self.0.after_ok.fetch_add(1, Ordering::SeqCst),
            // The server's own deadline, or the client's Cancel when its clock ran out first.
            Err(st)
                if matches!(
                    st.code,
                    StatusCode::DeadlineExceeded | StatusCode::Cancelled
                ) =>
            {
                self.0.after_deadline.fetch_add(1, Ordering::SeqCst)
            }
            Err(_) => 0,
        };
    }
}

/// Interceptors run around a stream as a whole: `before` at the StreamOpen, `after` once the
/// server's final frame is out, with its outcome (OK, or the end by the deadline).
pub fn interceptors_run_around_the_whole_stream(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let hooks = Arc::new(Hooks::default());
    let s = crate::builder(t)
        .cores(1)
        .service(stream_service(&probe))
        .interceptor(Counting(hooks.clone()))
        .listen(&(t.listen)("streams-ic"))
        .build()
        .unwrap();
    let addr = crate::dial_of(t, &s).to_string();
    let (_c, ch) = client(t, &addr);
    within("interceptors", move || {
        let (mut tx, mut rx) = ch.open_bidi(SVC, "echo", &opts());
        for _ in 0..3 {
            block_on(tx.send(&b"m"[..])).unwrap();
            block_on(rx.recv()).unwrap().unwrap();
        }
        tx.finish();
        assert!(block_on(rx.recv()).is_none());
        let o = CallOptions::new().deadline(Duration::from_millis(100));
        let (_tx, mut rx) = ch.open_bidi(SVC, "hang", &o);
        assert!(block_on(rx.recv()).unwrap().is_err());
    });
    let h = hooks.clone();
    let done = poll(&s, move |_| {
        h.after_ok.load(Ordering::SeqCst) == 1 && h.after_deadline.load(Ordering::SeqCst) == 1
    });
    assert!(
        done,
        "after: {} ok, {} deadline; before {}",
        hooks.after_ok.load(Ordering::SeqCst),
        hooks.after_deadline.load(Ordering::SeqCst),
        hooks.before.load(Ordering::SeqCst)
    );
    assert_eq!(hooks.before.load(Ordering::SeqCst), 2);
}

/// A caller-driven core streams without waiting: `stream_try_send` says `WouldBlock` once the
/// window is used up (nothing is read meanwhile), and `recv_chunk` reads each echo in place.
pub fn a_caller_driven_core_streams_with_would_block(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (_s, addr) = server(t, &probe);
    let ep: netron_engine::Endpoint = addr.parse().unwrap();
    let configure = t.configure_core;
    within("caller-driven stream", move || {
        let (mut core, conn, s, mut sent) = fill_the_window(configure, &ep, WINDOW);
        let chunk = [7u8; 1024];
        // Read the echoes (credit flows back both ways), sending the rest as credit allows.
        let total = 4 * sent;
        let mut got = 0;
        while got < total {
            if sent < total && core.stream_try_send(&s, &chunk).is_ok() {
                sent += 1;
                continue;
            }
            let len = core.recv_chunk(&s, |c| {
                assert!(c.iter().all(|&b| b == 7));
                c.len()
            });
            assert_eq!(len.unwrap(), Some(1024));
            got += 1;
        }
        core.stream_finish(&s);
        assert_eq!(core.recv_chunk(&s, |c| c.len()).unwrap(), None);
        // Request metadata reaches the handler; a reserved name is refused before sending.
        let o = opts().metadata("who", b"core");
        let s = core
            .open_stream_with(conn, (SVC.as_bytes(), b"meta"), Some(b""), true, &o)
            .unwrap();
        assert_eq!(
            core.recv_chunk(&s, |c| c.to_vec()).unwrap().unwrap(),
            b"core"
        );
        assert_eq!(core.recv_chunk(&s, |c| c.len()).unwrap(), None);
        let o = opts().metadata(":method", b"echo");
        let e = core
            .open_stream_with(conn, (SVC.as_bytes(), b"meta"), None, true, &o)
            .unwrap_err();
        assert!(matches!(e, netron_engine::CallError::Refused(_)), "{e:?}");
        core.close(conn);
    });
}

/// `ProtocolConfig::with_stream_window` sets the window a server offers (a caller-driven
/// client queues exactly that much, then `WouldBlock`), and a `ServerConfig` given with
/// `with_server` (built from its `Default`, no feature bits) leaves streams on.
pub fn a_configured_window_bounds_a_stream_and_with_server_keeps_streams(t: &Transport) {
    const SMALL: usize = 16 << 10;
    let probe = Arc::new(Probe::default());
    let cfg = netron_engine::ProtocolConfig::default()
        .with_server(netron_codec::handshake::ServerConfig::default())
        .with_stream_window(SMALL as u32);
    let (_s, addr) = crate::engine(t, cfg, &[stream_service(&probe)], "streams-window");
    let ep: netron_engine::Endpoint = addr.parse().unwrap();
    let configure = t.configure_core;
    within("a configured window", move || {
        let (mut core, conn, s, sent) = fill_the_window(configure, &ep, SMALL);
        for _ in 0..sent {
            assert_eq!(core.recv_chunk(&s, |c| c.len()).unwrap(), Some(1024));
        }
        core.stream_finish(&s);
        assert_eq!(core.recv_chunk(&s, |c| c.len()).unwrap(), None);
        core.close(conn);
    });
}

/// Empty messages are not free (protocol.md §23.1): each consumes one byte of credit, so a
/// peer that floods empty StreamData into a stream nobody reads meets the window like any other
/// bytes (connection error `flow_control` once past it) instead of filling the receiver's
/// memory one queue entry at a time (HTTP/2's "empty frames flood", CVE-2019-9518). Other
/// connections go on.
pub fn an_empty_message_flood_is_stopped_by_the_window(t: &Transport) {
    const WINDOW: u32 = 1024;
    let probe = Arc::new(Probe::default());
    let cfg = netron_engine::ProtocolConfig::default().with_stream_window(WINDOW);
    let (s, addr) = crate::engine(t, cfg, &[stream_service(&probe)], "empty-flood");
    let good = s.client().connect(&addr).unwrap();
    let cfg = ClientConfig::default().with_features(netron_codec::features::STREAMS);
    let (mut p, settings, _) = RawPeer::handshake_with(t, &addr, cfg);
    let mut enc = HeaderEncoder::new(settings.header_table_size);
    let mut b = BatchEncoder::new(Limits::default().with_max_batch_bytes(1 << 20));
    stream_open(&mut b, &mut enc, 1, b"hang");
    // Four windows' worth: within the window they are queued (unread), past it refused.
    // Batches of 64 frames (a batch holds 128 at most by default); sending stops once the
    // server has closed the connection.
    'flood: for seq in 0..4 * WINDOW {
        if seq % 64 == 63 {
            if p.send_frames(b.as_slice()).is_err() {
                break 'flood;
            }
            b.clear();
        }
        b.frame(FrameKind::StreamData, 1)
            .unwrap()
            .arg(seq)
            .finish()
            .unwrap();
    }
    let _ = p.send_frames(b.as_slice());
    let (got, _) = read_frames(&mut p, |f| f.iter().any(|f| f.0 == FrameKind::Error));
    assert!(
        got.iter().any(|f| (f.0, f.1) == (FrameKind::Error, 0)),
        "empty messages past the window were taken: {:?}",
        got.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>()
    );
    assert_eq!(wait_for(&s, "flow_control", Duration::from_secs(10)), 1);
    assert_eq!(
        good.call("st@1.0.0", "echo", &b""[..], Some(Duration::from_secs(5)))
            .unwrap_err()
            .code(),
        StatusCode::Unimplemented,
        "the good connection goes on"
    );
}

/// The sending side of the same rule: empty messages take one byte of credit each, so a
/// sender queues at most a window of them into a stream whose reader does not read, then
/// `WouldBlock` (they queued without bound before: the credit never moved), on a
/// caller-driven core and through a `Channel`'s `StreamSender`.
pub fn empty_messages_take_credit_when_sent(t: &Transport) {
    const WINDOW: usize = 512;
    let probe = Arc::new(Probe::default());
    let cfg = netron_engine::ProtocolConfig::default().with_stream_window(WINDOW as u32);
    let (_s, addr) = crate::engine(t, cfg, &[stream_service(&probe)], "empty-credit");
    let ep: netron_engine::Endpoint = addr.parse().unwrap();
    let configure = t.configure_core;
    let (_c, ch) = client(t, &addr);
    within("empty messages take credit", move || {
        let mut core =
            netron_engine::Core::new(configure(netron_engine::CoreConfig::default())).unwrap();
        let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
        let s = core
            .open_stream(
                conn,
                SVC.as_bytes(),
                b"hang",
                None,
                false,
                Some(Duration::from_secs(60)),
            )
            .unwrap();
        let mut sent = 0usize;
        loop {
            match core.stream_try_send(&s, &[]) {
                Ok(()) => sent += 1,
                Err(netron_engine::TrySendError::WouldBlock(_)) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(sent <= WINDOW, "queued beyond the window ({WINDOW} B)");
        }
        assert_eq!(sent, WINDOW, "a window of empty messages, then WouldBlock");
        assert_eq!(s.credit(), 0);
        core.stream_cancel(s);
        core.close(conn);

        let (mut tx, _rx) = ch.open_bidi(SVC, "hang", &opts());
        // The first send waits for the stream to open; the rest never wait.
        block_on(tx.send(Vec::new())).unwrap();
        let mut sent = 1usize;
        loop {
            match tx.try_send(Vec::new()) {
                Ok(()) => sent += 1,
                Err(netron_engine::TrySendError::WouldBlock(_)) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(sent <= WINDOW, "queued beyond the window ({WINDOW} B)");
        }
        assert_eq!(sent, WINDOW, "a window of empty messages, then WouldBlock");
    });
}

/// A server that rejects uploads early (its handler fails after one message) keeps serving
/// the client that sent them: the data already in flight when the stream ended arrives late,
/// and late data is no flood (the connection window bounds it). Charging it cut an honest
/// client off after a few rejected uploads (fresh user R12's finding 1).
pub fn rejected_uploads_keep_the_connection(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("rejected uploads", move || {
        for round in 0..20 {
            let (mut tx, mut rx) = ch.open_client_stream(SVC, "reject", &opts());
            // Small messages, as fast as credit allows, until the end is known.
            let mut sent = 0u32;
            while block_on(tx.send(vec![round as u8; 8])).is_ok() {
                sent += 1;
                assert!(sent < 1 << 20, "round {round}: the upload never ended");
            }
            let e = block_on(rx.recv()).unwrap().unwrap_err();
            assert_eq!(e.code, StatusCode::InvalidArgument, "round {round}: {e:?}");
        }
        let (mut tx, mut rx) = ch.open_client_stream(SVC, "sum", &opts());
        block_on(tx.send(vec![1u8, 2])).unwrap();
        tx.finish();
        assert!(
            block_on(rx.recv()).unwrap().is_ok(),
            "the connection still works"
        );
    });
    let st = s.total_stats();
    assert_eq!(st.errors_of("idle_frame_budget"), 0, "{st:?}");
    assert!(st.errors().get("unknown_stream").is_none(), "{st:?}");
}

/// Connects a caller-driven core to `ep`, opens an echo stream and sends 1 KiB chunks until
/// `WouldBlock`, checking that exactly `window` bytes were queued; returns what it made and
/// the chunks sent.
fn fill_the_window(
    configure: fn(netron_engine::CoreConfig) -> netron_engine::CoreConfig,
    ep: &netron_engine::Endpoint,
    window: usize,
) -> (
    netron_engine::Core,
    netron_engine::ConnId,
    netron_engine::CoreStream,
    usize,
) {
    let mut core =
        netron_engine::Core::new(configure(netron_engine::CoreConfig::default())).unwrap();
    let conn = core.connect(ep, Duration::from_secs(5)).unwrap();
    let s = core
        .open_stream(
            conn,
            SVC.as_bytes(),
            b"echo",
            None,
            false,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
    let chunk = [7u8; 1024];
    let mut sent = 0usize;
    loop {
        match core.stream_try_send(&s, &chunk) {
            Ok(()) => sent += 1,
            Err(netron_engine::TrySendError::WouldBlock(_)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(
            sent * 1024 <= window,
            "queued beyond the window ({window} B)"
        );
    }
    assert_eq!(sent * 1024, window, "the window, then WouldBlock");
    (core, conn, s, sent)
}

/// `StreamSender::fail` ends a half with a StreamEnd carrying an ErrorBody: the other side
/// gets that status (code and message), from the server's handler and from the opener.
pub fn a_failed_half_delivers_its_status_both_ways(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (_s, addr) = server(t, &probe);
    let (_c, ch) = client(t, &addr);
    within("failed halves", move || {
        let mut rx = ch.open_server_stream(SVC, "sfail", Vec::new(), &opts());
        assert_eq!(&block_on(rx.recv()).unwrap().unwrap()[..], b"one");
        let st = block_on(rx.recv()).unwrap().unwrap_err();
        assert_eq!(
            (st.code, &*st.message),
            (StatusCode::Aborted, "server gave up")
        );
        let (mut tx, mut rx) = ch.open_client_stream(SVC, "seen", &opts());
        block_on(tx.send(vec![1u8])).unwrap();
        tx.fail(Status::new(StatusCode::Aborted, "client gave up"));
        let reply = block_on(rx.recv()).unwrap().unwrap();
        assert_eq!(
            std::str::from_utf8(&reply).unwrap(),
            "Aborted: client gave up"
        );
    });
}

/// A StreamOpen of `flood` with its request (`chunks` chunks of 64 KiB) and END_STREAM: the
/// client's half is closed at once (a server stream).
fn flood_open(b: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32, chunks: u32) {
    b.frame(FrameKind::StreamOpen, id)
        .unwrap()
        .flags(Flags::END_STREAM)
        .headers(
            enc,
            &[Header::service(SVC.as_bytes()), Header::method(b"flood")],
        )
        .unwrap()
        .payload(&chunks.to_le_bytes())
        .finish()
        .unwrap();
}

/// A raw client's offer: STREAMS, no payload compression (payload sizes on the wire are the
/// messages' sizes).
fn uncompressed_streams() -> ClientConfig {
    let mut cfg = ClientConfig::default().with_features(netron_codec::features::STREAMS);
    cfg.compression = Vec::new();
    cfg
}

/// Sends the frames of `b` (one write, or the records of a conforming sender) and clears it.
fn flush(p: &mut RawPeer, b: &mut BatchEncoder) {
    p.send_frames(b.as_slice()).unwrap();
    b.clear();
}

/// StreamData and a WindowUpdate for a stream that is over at the server (the server sent its
/// final frame and the client's half was closed) are ignored and counted
/// (docs/protocol.md §22.2, §22.5: `late_stream_frame` for the 64 streams that ended last);
/// for an id ended longer ago they are `unknown_stream`. The connection keeps serving.
pub fn frames_for_a_finished_stream_are_ignored_and_counted(t: &Transport) {
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    let cfg = uncompressed_streams();
    let (mut p, settings, _) = RawPeer::handshake_with(t, &addr, cfg);
    let mut enc = HeaderEncoder::new(settings.header_table_size);
    let mut b = BatchEncoder::new(Limits::default());
    let end_of = |id: u32| {
        move |f: &[(FrameKind, u32, Vec<u8>)]| {
            f.iter().any(|f| (f.0, f.1) == (FrameKind::StreamEnd, id))
        }
    };
    // Stream 1: no chunks; the server ends it at once (StreamEnd, its final frame).
    flood_open(&mut b, &mut enc, 1, 0);
    flush(&mut p, &mut b);
    let (got, closed) = read_frames(&mut p, end_of(1));
    assert!(!closed, "{:?}", frames_of(&got));
    // Late frames for it, then a Ping: only the Pong comes back, the connection stays.
    stream_data(&mut b, 1, 0, 10);
    b.empty_frame(FrameKind::WindowUpdate, 1, 1000).unwrap();
    b.empty_frame(FrameKind::Ping, 0, 7).unwrap();
    flush(&mut p, &mut b);
    let pong = |f: &[(FrameKind, u32, Vec<u8>)]| f.iter().any(|f| f.0 == FrameKind::Pong);
    let (got, closed) = read_frames(&mut p, pong);
    assert!(!closed);
    assert_eq!(frames_of(&got), vec![(FrameKind::Pong, 0)]);
    assert!(
        poll(&s, |st| st.errors_of("late_stream_frame") == 2),
        "late_stream_frame: {}",
        s.total_stats().errors_of("late_stream_frame")
    );
    assert_eq!(s.total_stats().errors_of("unknown_stream"), 0);
    // 256 more streams end (8 at a time; the engine remembers 256): stream 1 is now long gone.
    for group in 0..32u32 {
        let ids: Vec<u32> = (0..8).map(|i| 3 + 2 * (group * 8 + i)).collect();
        for &id in &ids {
            flood_open(&mut b, &mut enc, id, 0);
        }
        flush(&mut p, &mut b);
        let all = |f: &[(FrameKind, u32, Vec<u8>)]| {
            ids.iter()
                .all(|id| f.iter().any(|f| (f.0, f.1) == (FrameKind::StreamEnd, *id)))
        };
        let (got, closed) = read_frames(&mut p, all);
        assert!(!closed, "{:?}", frames_of(&got));
    }
    stream_data(&mut b, 1, 0, 10);
    b.empty_frame(FrameKind::Ping, 0, 8).unwrap();
    flush(&mut p, &mut b);
    let (got, closed) = read_frames(&mut p, pong);
    assert!(!closed);
    assert_eq!(frames_of(&got), vec![(FrameKind::Pong, 0)]);
    assert!(
        poll(&s, |st| st.errors_of("unknown_stream") == 1),
        "unknown_stream: {}",
        s.total_stats().errors_of("unknown_stream")
    );
    assert_eq!(s.total_stats().errors_of("late_stream_frame"), 2);
    // The connection still serves streams: two chunks, then the end.
    flood_open(&mut b, &mut enc, 515, 2);
    flush(&mut p, &mut b);
    let (got, closed) = read_frames(&mut p, end_of(515));
    assert!(!closed);
    let data: Vec<usize> = got
        .iter()
        .filter(|f| (f.0, f.1) == (FrameKind::StreamData, 515))
        .map(|f| f.2.len())
        .collect();
    assert_eq!(data, vec![64 << 10, 64 << 10], "{:?}", frames_of(&got));
}

/// Reads whole frames one at a time from a raw peer (kind, id, payload length), without
/// re-parsing what was already read.
struct FrameReader {
    buf: Vec<u8>,
    at: usize,
}

impl FrameReader {
    fn new() -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            at: 0,
        }
    }

    /// The next frame's kind, id and payload length.
    fn next(&mut self, p: &mut RawPeer) -> (FrameKind, u32, usize) {
        self.read(p, |f| (f.kind(), f.id(), f.payload().len()))
    }

    /// Reads the next whole frame and gives it to `f`.
    fn read<T>(&mut self, p: &mut RawPeer, f: impl FnOnce(&netron_codec::Frame<'_>) -> T) -> T {
        let limits = Limits::default();
        loop {
            if let Some(Ok(frame)) =
                netron_codec::FrameIter::new(&self.buf[self.at..], &limits).next()
            {
                self.at += frame.as_bytes().len();
                return f(&frame);
            }
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            let mut chunk = [0u8; 65536];
            let n = p.recv(&mut chunk).expect("read");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Fairness over a real transport: once a unary Request has arrived, its Response goes out
/// with at most one batch of stream bytes ahead of it, while a server stream floods the same
/// connection (64 KiB chunks, a 32 MiB stream window, thousands of chunks queued).
///
/// "After the Request arrived" is made exact on the wire with the connection window: the
/// raw client lets the server send exactly one connection window (4 MiB) and reads all of it,
/// so nothing is in flight and the handler has queued far more than the connection may send.
/// Then one write (one record) carries a connection WindowUpdate *and* the Request: every
/// StreamData read after that write was sent after the server read the Request, and at most
/// one batch of them (the raw client's limits: one 64 KiB chunk) may come before the Response.
/// Three rounds.
pub fn a_response_overtakes_a_flooding_stream(t: &Transport) {
    const CHUNK: usize = 64 << 10;
    const CONN: u32 = 16 * WINDOW as u32; // the default connection window (§23.2)
    let probe = Arc::new(Probe::default());
    let (s, addr) = crate::engine(
        t,
        netron_engine::CoreConfig::default(),
        &[stream_service(&probe), crate::calc()],
        "streams-fair",
    );
    let (mut p, settings, extra) = RawPeer::handshake_with(t, &addr, uncompressed_streams());
    assert_eq!(extra, 0);
    let limits = Limits::default();
    // What one batch of the server holds: its batches follow the raw client's limits.
    let frame = netron_codec::HEADER_LEN + CHUNK;
    let per_batch = (limits.max_batch_bytes as usize)
        .div_ceil(frame)
        .min(limits.max_batch_frames as usize);
    let mut enc = HeaderEncoder::new(settings.header_table_size);
    let mut b = BatchEncoder::new(limits);
    flood_open(&mut b, &mut enc, 1, 1_000_000);
    b.empty_frame(FrameKind::WindowUpdate, 1, 32 << 20).unwrap();
    flush(&mut p, &mut b);
    let mut r = FrameReader::new();
    let read_window = |r: &mut FrameReader, p: &mut RawPeer, mut bytes: usize| {
        while bytes > 0 {
            let (kind, id, len) = r.next(p);
            assert_eq!((kind, id), (FrameKind::StreamData, 1));
            bytes -= len;
        }
    };
    // The first connection window, read entirely: the server is blocked on it.
    read_window(&mut r, &mut p, CONN as usize);
    let pr = probe.clone();
    assert!(
        poll(&s, move |_| pr.peak.load(Ordering::SeqCst) >= 4 << 20),
        "the handler queued only {} bytes",
        probe.peak.load(Ordering::SeqCst)
    );
    for round in 0..3u32 {
        let id = 3 + 2 * round;
        b.empty_frame(FrameKind::WindowUpdate, 0, CONN).unwrap();
        super::util::request(&mut b, &mut enc, id, None, b"add", &[1, 2, 3]);
        // One write, or one record: the server reads both together.
        p.send(b.as_slice()).unwrap();
        b.clear();
        let mut ahead = 0usize;
        let mut bytes = 0usize;
        loop {
            match r.next(&mut p) {
                (FrameKind::Response, i, _) if i == id => break,
                (FrameKind::StreamData, 1, len) => {
                    ahead += 1;
                    bytes += len;
                }
                other => panic!("{}: round {round}: unexpected {other:?}", t.name),
            }
        }
        assert!(
            ahead <= per_batch,
            "{}: round {round}: {ahead} StreamData frames came before the Response, more \
             than one batch ({per_batch})",
            t.name
        );
        // The rest of this connection window: the server is blocked again.
        read_window(&mut r, &mut p, CONN as usize - bytes);
    }
    assert!(poll(&s, |st| st.calls_ok() == 3), "three Responses counted");
}

/// A compressible 64 KiB message (a pattern, not one repeated byte) numbered `i`.
fn compressible(i: u8) -> Vec<u8> {
    (0..64usize << 10)
        .map(|j| (j % 251) as u8 ^ (j >> 12) as u8 ^ i)
        .collect()
}

/// Stream messages are compressed like unary payloads when compression is negotiated and a
/// message reaches the threshold (docs/protocol.md §11.2), in both directions, and arrive
/// intact; flow control counts them as sent (§23.1) without stalling a long stream.
pub fn compressible_stream_messages_go_compressed_and_arrive_intact(t: &Transport) {
    use netron_codec::compress::{Compression, Decompressor};
    const CHUNK: usize = 64 << 10;
    if Compression::supported().is_empty() {
        return; // a build without compression: nothing to negotiate
    }
    let probe = Arc::new(Probe::default());
    let (s, addr) = server(t, &probe);
    // A raw client offering the default algorithms: the server's chunks arrive compressed.
    let cfg = ClientConfig::default().with_features(netron_codec::features::STREAMS);
    let (mut p, settings, extra) = RawPeer::handshake_with(t, &addr, cfg);
    assert_eq!(extra, 0);
    assert_ne!(settings.compression, Compression::None);
    let mut enc = HeaderEncoder::new(settings.header_table_size);
    let mut b = BatchEncoder::new(Limits::default());
    flood_open(&mut b, &mut enc, 1, 3);
    flush(&mut p, &mut b);
    let mut dec = Decompressor::new(settings.compression, settings.limits.max_decompressed_size);
    let mut r = FrameReader::new();
    for seq in 0..3 {
        let (flags, arg, wire, msg) = r.read(&mut p, |f| {
            assert_eq!((f.kind(), f.id()), (FrameKind::StreamData, 1));
            let mut out = Vec::new();
            if f.flags().contains(Flags::COMPRESSED) {
                dec.decompress_into(f.payload(), &mut out).unwrap();
            }
            (f.flags(), f.arg(), f.payload().len(), out)
        });
        assert_eq!(arg, seq);
        assert!(flags.contains(Flags::COMPRESSED), "chunk {seq}: {flags:?}");
        assert!(wire < CHUNK / 8, "chunk {seq}: {wire} bytes on the wire");
        assert_eq!(msg, vec![5u8; CHUNK], "chunk {seq} intact");
    }
    // Through a `Channel` (it negotiates compression by default): a bidirectional echo of
    // 200 compressible 64 KiB messages (12.5 MiB, 50 stream windows if counted uncompressed)
    // arrives complete, intact and in order, and the server read far fewer bytes.
    let (_c, ch) = client(t, &addr);
    let before = s.total_stats().bytes_in();
    const N: u8 = 200;
    within("a compressed echo", move || {
        let (mut tx, mut rx) = ch.open_bidi(SVC, "echo", &opts());
        let writer = std::thread::spawn(move || {
            block_on(async {
                for i in 0..N {
                    tx.send(compressible(i)).await.unwrap();
                }
            });
            tx.finish();
        });
        let mut next = 0u8;
        while let Some(m) = block_on(rx.recv()) {
            assert!(
                m.unwrap()[..] == compressible(next)[..],
                "message {next} intact"
            );
            next += 1;
        }
        writer.join().unwrap();
        assert_eq!(next, N, "complete");
    });
    let st = s.total_stats();
    assert!(st.stream_messages_in() >= N as u64);
    let read = st.bytes_in() - before;
    assert!(
        read < N as u64 * CHUNK as u64 / 8,
        "the server read {read} bytes for {N} compressible 64 KiB messages"
    );
}
