//! Streams on two connections back to back (conn/stream.rs): no core, no sockets; handler
//! futures are polled here, and the core's `StreamWork` commands are replaced by calling
//! `stream_work` on every stream after each round.

use std::cell::Cell;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::*;
use crate::conn::StreamSpec;
use crate::streams::{AppHandle, Shared};
use crate::{StreamReceiver, StreamSender};

thread_local! {
    /// Largest `buffered()` a flooding handler saw on its sender.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

const CHUNK: usize = 1000;

fn stream_registry() -> Registry {
    let mut r = registry();
    r.add(
        Service::new("st", "1.0.0")
            .unwrap()
            .bidi_stream("echo", |_, mut rx, mut tx| async move {
                while let Some(m) = rx.recv().await {
                    tx.send(m?).await?;
                }
                Ok(())
            })
            .server_stream("flood", |_, req, mut tx| async move {
                let n = req.first().copied().unwrap_or(0) as usize * 1000;
                let chunk = Bytes::from(vec![7u8; CHUNK]);
                for _ in 0..n {
                    tx.send(chunk.clone()).await?;
                    PEAK.set(PEAK.get().max(tx.buffered()));
                }
                Ok(())
            })
            .client_stream("sum", |_, mut rx| async move {
                let mut sum = 0u64;
                while let Some(m) = rx.recv().await {
                    sum += m?.iter().map(|&b| b as u64).sum::<u64>();
                }
                Ok(Bytes::copy_from_slice(&sum.to_le_bytes()))
            })
            .bidi_stream("hang", |_, rx, tx| async move {
                // Holds both halves (reads nothing: no credit goes back) until dropped.
                let _halves = (rx, tx);
                std::future::pending::<()>().await;
                Ok(())
            })
            // Request: [n]: n messages of 64 KiB of zeros (each a few hundred bytes
            // compressed).
            // [n, 1]: then fails its half (a StreamEnd with an error).
            .server_stream("zeros", |_, req, mut tx| async move {
                let zeros = Bytes::from(vec![0u8; 64 << 10]);
                for _ in 0..req.first().copied().unwrap_or(0) {
                    tx.send(zeros.clone()).await?;
                }
                if req.get(1) == Some(&1) {
                    tx.fail(Status::new(StatusCode::Aborted, "after the zeros"));
                }
                Ok(())
            })
            .bidi_stream("fail", |_, _rx, _tx| async move {
                Err(Status::new(StatusCode::PermissionDenied, "no"))
            }),
    )
    .unwrap();
    r
}

struct S {
    p: Pair,
    tasks: Vec<(u32, crate::service::HandlerFuture)>,
}

impl S {
    fn new() -> S {
        let mut p = Pair::open();
        p.registry = stream_registry();
        S {
            p,
            tasks: Vec::new(),
        }
    }

    fn open_with(
        &mut self,
        method: &[u8],
        first: Option<Bytes>,
        end: bool,
        deadline: Option<Duration>,
    ) -> (u32, StreamSender, StreamReceiver) {
        let shared = Shared::new(None);
        let spec = StreamSpec {
            service: b"st@1.0.0",
            method,
            deadline,
            metadata: None,
            first,
            end,
        };
        let id = self
            .p
            .client
            .open_stream(&spec, Box::new(AppHandle(shared.clone())), self.p.now)
            .expect("opened");
        (
            id,
            StreamSender::new(shared.clone(), true),
            StreamReceiver::new(shared, true),
        )
    }

    fn open(&mut self, method: &[u8]) -> (u32, StreamSender, StreamReceiver) {
        self.open_with(method, None, false, None)
    }

    /// Moves bytes, runs handlers and stream work until nothing changes.
    fn run(&mut self) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..200 {
            self.p.pump(usize::MAX);
            while let Some(ev) = self.p.server.poll_event() {
                match ev {
                    Event::Spawn(sp) => self.tasks.push((sp.id, sp.future.expect("async"))),
                    Event::Cancel(id) => {
                        self.tasks.retain(|t| t.0 != id);
                        self.p.server.abandon_async(
                            id,
                            StatusCode::Cancelled,
                            "cancelled by the caller",
                            &self.p.registry,
                        );
                    }
                }
            }
            let mut done = Vec::new();
            self.tasks
                .retain_mut(|(id, f)| match f.as_mut().poll(&mut cx) {
                    Poll::Ready(r) => {
                        done.push((*id, r));
                        false
                    }
                    Poll::Pending => true,
                });
            for (id, r) in done {
                let mut env = conn_env!(self.p);
                self.p.server.complete_async(id, r, None, &mut env);
            }
            for id in self.p.server.stream_ids() {
                self.p.server.stream_work(id);
            }
            for id in self.p.client.stream_ids() {
                self.p.client.stream_work(id);
            }
            if !self.p.client.wants_write() && !self.p.server.wants_write() {
                return;
            }
        }
    }
}

/// Polls `rx` once.
fn try_recv(rx: &mut StreamReceiver) -> Poll<Option<Result<Bytes, Status>>> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(rx.recv()).poll(&mut cx)
}

fn recv_all(s: &mut S, rx: &mut StreamReceiver) -> (Vec<Bytes>, Option<Status>) {
    let mut got = Vec::new();
    let mut idle = 0;
    loop {
        match try_recv(rx) {
            Poll::Ready(Some(Ok(m))) => got.push(m),
            Poll::Ready(Some(Err(st))) => return (got, Some(st)),
            Poll::Ready(None) => return (got, None),
            Poll::Pending if idle < 3 => {
                idle += 1;
                s.run();
            }
            Poll::Pending => panic!("the stream did not end"),
        }
    }
}

#[test]
fn bidi_echo_arrives_complete_and_in_order() {
    let mut s = S::new();
    let (id, mut tx, mut rx) = s.open(b"echo");
    assert_eq!(id % 2, 1, "the initiator opens odd ids");
    let mut got = Vec::new();
    let n = 20_000u32;
    let mut sent = 0u32;
    while got.len() < n as usize {
        while sent < n {
            match tx.try_send(Bytes::copy_from_slice(&sent.to_le_bytes())) {
                Ok(()) => sent += 1,
                Err(crate::TrySendError::WouldBlock(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        s.run();
        while let Poll::Ready(Some(m)) = try_recv(&mut rx) {
            got.push(u32::from_le_bytes(m.unwrap()[..].try_into().unwrap()));
        }
    }
    drop(tx);
    s.run();
    assert!(matches!(try_recv(&mut rx), Poll::Ready(None)));
    assert!(got.iter().copied().eq(0..n), "complete and in order");
    s.run();
    assert!(s.p.client.stream_ids().is_empty() && s.p.server.stream_ids().is_empty());
    assert_eq!(s.p.stats.stream_messages_in, 2 * n as u64);
    // Credit came back as the messages were read.
    assert!(s.p.client.connection_credit() > 0 && s.p.server.connection_credit() > 0);
}

/// Whether each stream is queued for sending at most once (`Streams::ready` and `blocked`).
fn queued_once(c: &Connection<Arc<Completion>>) -> bool {
    let s = c.streams.as_ref().expect("streams");
    let mut ids: Vec<u32> = s.ready.iter().chain(&s.blocked).copied().collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    ids.len() == n
}

#[test]
fn many_streams_on_one_connection_each_queue_once_and_all_finish() {
    let mut s = S::new();
    let mut streams: Vec<_> = (0..64).map(|_| s.open(b"echo")).collect();
    let n = 300u32;
    let mut sent = vec![0u32; streams.len()];
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); streams.len()];
    for _ in 0..10_000 {
        if got.iter().all(|g| g.len() == n as usize) {
            break;
        }
        for (i, (_, tx, _)) in streams.iter_mut().enumerate() {
            // A few at a time per stream, so they interleave and grants come back often.
            for _ in 0..4 {
                if sent[i] == n {
                    break;
                }
                match tx.try_send(Bytes::copy_from_slice(&sent[i].to_le_bytes())) {
                    Ok(()) => sent[i] += 1,
                    Err(crate::TrySendError::WouldBlock(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        s.run();
        assert!(queued_once(&s.p.client) && queued_once(&s.p.server));
        for (i, (_, _, rx)) in streams.iter_mut().enumerate() {
            while let Poll::Ready(Some(m)) = try_recv(rx) {
                got[i].push(u32::from_le_bytes(m.unwrap()[..].try_into().unwrap()));
            }
        }
    }
    for g in &got {
        assert!(
            g.iter().copied().eq(0..n),
            "every stream complete and in order"
        );
    }
    streams.clear();
    s.run();
    assert!(s.p.client.stream_ids().is_empty() && s.p.server.stream_ids().is_empty());
}

#[test]
fn a_slow_reader_bounds_what_the_writer_queues() {
    let mut s = S::new();
    PEAK.set(0);
    // 200 * 1000 messages of 1000 bytes: 200 MB if nothing held the writer back.
    let mut rx = {
        let (_, tx, rx) = s.open_with(b"flood", Some(Bytes::from_static(&[200])), true, None);
        drop(tx);
        rx
    };
    let window = 256 << 10;
    let mut read = 0usize;
    for round in 0..50 {
        s.run();
        // The writer never holds more than the window plus one message, and the reader's
        // buffer never more than its window plus one message.
        assert!(PEAK.get() <= window + CHUNK, "writer queued {}", PEAK.get());
        let mut unread = 0;
        let mut msgs = Vec::new();
        while let Poll::Ready(Some(Ok(m))) = try_recv(&mut rx) {
            unread += m.len();
            msgs.push(m);
            if round % 2 == 0 && msgs.len() == 10 {
                break; // read slowly on even rounds
            }
        }
        read += unread;
        let _ = msgs;
    }
    assert!(read > window, "the stream made progress: {read}");
    assert!(PEAK.get() > 0);
}

#[test]
fn client_stream_gets_one_reply() {
    let mut s = S::new();
    let (_, mut tx, mut rx) = s.open(b"sum");
    for i in 0..100u8 {
        tx.try_send(vec![i; 3]).unwrap();
    }
    tx.finish();
    s.run();
    let (got, err) = recv_all(&mut s, &mut rx);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got.len(), 1);
    let sum: u64 = (0..100u64).map(|i| 3 * i).sum();
    assert_eq!(got[0][..], sum.to_le_bytes());
}

#[test]
fn cancel_from_the_opener_stops_the_handler() {
    let mut s = S::new();
    let (_, _tx, rx) = s.open(b"hang");
    s.run();
    assert_eq!(s.tasks.len(), 1);
    rx.cancel();
    s.run();
    assert!(s.tasks.is_empty(), "the handler's future was dropped");
    assert!(s.p.server.stream_ids().is_empty());
    assert!(
        s.p.client.stream_ids().is_empty(),
        "the final frame freed the id"
    );
    assert_eq!(s.p.stats.cancels_in, 1);
}

#[test]
fn handler_failure_ends_the_whole_stream() {
    let mut s = S::new();
    let (_, mut tx, mut rx) = s.open(b"fail");
    s.run();
    match try_recv(&mut rx) {
        Poll::Ready(Some(Err(st))) => assert_eq!(st.code, StatusCode::PermissionDenied),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        tx.try_send(&b"x"[..]),
        Err(crate::TrySendError::Closed(_))
    ));
    assert!(s.p.client.stream_ids().is_empty() && s.p.server.stream_ids().is_empty());
}

#[test]
fn deadline_bounds_the_whole_stream() {
    let mut s = S::new();
    let (_, _tx, mut rx) = s.open_with(b"hang", None, false, Some(Duration::from_millis(50)));
    s.run();
    assert_eq!(s.tasks.len(), 1);
    s.p.now += Duration::from_millis(60);
    let mut expired = Vec::new();
    // Both sides notice on their own clock.
    let mut env = conn_env!(s.p);
    s.p.client.handle_timeout(&mut env, &mut expired).unwrap();
    let mut env = conn_env!(s.p);
    s.p.server.handle_timeout(&mut env, &mut expired).unwrap();
    s.run();
    match try_recv(&mut rx) {
        Poll::Ready(Some(Err(st))) => assert_eq!(st.code, StatusCode::DeadlineExceeded),
        other => panic!("{other:?}"),
    }
    assert!(s.tasks.is_empty());
    assert!(s.p.client.stream_ids().is_empty() && s.p.server.stream_ids().is_empty());
}

#[test]
fn connection_death_fails_open_streams_unavailable() {
    let mut s = S::new();
    let (_, mut tx, mut rx) = s.open(b"hang");
    s.run();
    s.p.client.handle_closed("the socket broke");
    match try_recv(&mut rx) {
        Poll::Ready(Some(Err(st))) => assert_eq!(st.code, StatusCode::Unavailable),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        tx.try_send(&b"x"[..]),
        Err(crate::TrySendError::Closed(_))
    ));
}

/// Raw frames from the client that break the stream rules, each with its counter.
#[test]
fn bad_stream_input_is_a_connection_error() {
    type Build = fn(&mut Connection<Arc<Completion>>, &mut netron_codec::BatchEncoder, u32);
    fn data(b: &mut netron_codec::BatchEncoder, id: u32, seq: u32, len: usize) {
        b.frame(FrameKind::StreamData, id)
            .unwrap()
            .arg(seq)
            .payload(&vec![1u8; len])
            .finish()
            .unwrap();
    }
    let cases: [(&str, Build); 5] = [
        ("stream_sequence", |_, b, id| {
            data(b, id, 1, 1); // 0 expected
        }),
        ("flow_control", |_, b, id| {
            // 256 KiB of credit: the first frame may overdraw it, the next is refused.
            for seq in 0..2 {
                data(b, id, seq, 300_000);
            }
        }),
        ("stream_half_closed", |_, b, id| {
            b.frame(FrameKind::StreamData, id)
                .unwrap()
                .flags(netron_codec::Flags::END_STREAM)
                .finish()
                .unwrap();
            data(b, id, 1, 1);
        }),
        ("window_overflow", |_, b, id| {
            b.empty_frame(FrameKind::WindowUpdate, id, 0x7fff_ffff)
                .unwrap();
        }),
        ("zero_window_update", |_, b, _| {
            b.empty_frame(FrameKind::WindowUpdate, 0, 0).unwrap();
        }),
    ];
    for (counter, build) in cases {
        let mut s = S::new();
        let (id, _tx, _rx) = s.open(b"hang");
        s.run();
        let mut raw = netron_codec::BatchEncoder::new(
            netron_codec::Limits::default()
                .with_max_frame_size(1 << 20)
                .with_max_batch_bytes(4 << 20),
        );
        build(&mut s.p.client, &mut raw, id);
        let bytes = raw.as_slice().to_vec();
        let mut env = conn_env!(s.p);
        let e = s.p.server.handle_input(&bytes, &mut env).unwrap_err();
        assert_eq!(e.counter, counter, "{e:?}");
        assert_eq!(s.p.stats.errors_of(counter), 1, "{counter}");
        assert!(s.p.server.is_closing());
    }
}

#[test]
fn data_for_an_unknown_stream_is_ignored_and_counted() {
    let mut s = S::new();
    s.p.client_sends(|_, b| {
        b.frame(FrameKind::StreamData, 41)?
            .payload(b"x")
            .finish()
            .map(|_| ())
    });
    s.run();
    assert_eq!(s.p.stats.errors_of("unknown_stream"), 1);
    assert!(s.p.server.is_open());
    // A Cancel from the callee's side on a stream the client opened: wrong direction.
    let (id, _tx, _rx) = s.open(b"hang");
    s.run();
    s.p.server
        .queue(|_, b| b.empty_frame(FrameKind::Cancel, id, 0))
        .unwrap();
    s.p.pump(usize::MAX);
    assert_eq!(s.p.stats.errors_of("stream_wrong_direction"), 1);
}

/// Fairness: a Response is queued behind at most the batch being written, however much a
/// stream has to send; streams share batches round-robin.
#[test]
fn responses_and_streams_share_batches_fairly() {
    let mut s = S::new();
    // Two floods, 200 MB each if unbounded.
    let (a, _, _rxa) = s.open_with(b"flood", Some(Bytes::from_static(&[200])), true, None);
    let (b, _, _rxb) = s.open_with(b"flood", Some(Bytes::from_static(&[200])), true, None);
    s.p.pump(usize::MAX);
    // Start the handlers without moving their output yet.
    while let Some(ev) = s.p.server.poll_event() {
        if let Event::Spawn(sp) = ev {
            s.tasks.push((sp.id, sp.future.unwrap()));
        }
    }
    let mut cx = Context::from_waker(Waker::noop());
    for (_, f) in &mut s.tasks {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    for id in s.p.server.stream_ids() {
        s.p.server.stream_work(id);
    }
    // The first batch: stream data of both streams, alternating.
    let (first, _) = s.p.server.poll_transmit().expect("stream data");
    let ids: Vec<u32> = netron_codec::FrameIter::new(&first, &netron_codec::Limits::default())
        .map(|f| f.unwrap().id())
        .collect();
    assert!(ids.len() >= 2, "{ids:?}");
    for w in ids.windows(2) {
        assert_ne!(w[0], w[1], "round-robin: {ids:?}");
        assert!([a, b].contains(&w[0]));
    }
    // A request arrives while that batch is being written.
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    s.p.client
        .start_call(&Pair::spec(b"add", &[1, 2]), slot.clone(), s.p.now)
        .unwrap();
    let (req, _) = s.p.client.poll_transmit().unwrap();
    let mut env = conn_env!(s.p);
    s.p.server.handle_input(&req, &mut env).unwrap();
    // The next batch starts with the Response.
    let (next, _) = s.p.server.poll_transmit().unwrap();
    let first_kind = netron_codec::FrameIter::new(&next, &netron_codec::Limits::default())
        .next()
        .unwrap()
        .unwrap()
        .kind();
    assert_eq!(first_kind, FrameKind::Response);
}

/// The send credit of stream `id` on `c` (bytes).
fn stream_credit(c: &Connection<Arc<Completion>>, id: u32) -> i64 {
    c.streams.as_ref().map_or(0, |s| s.map[&id].send.credit())
}

#[test]
fn compressed_messages_go_compressed_and_are_flow_controlled_as_sent() {
    let mut s = S::new();
    let (id, mut tx, mut rx) = s.open(b"echo");
    // 1000 compressible messages of 4 KiB (above the 1 KiB threshold): 4 MB, 16 stream
    // windows if they were counted uncompressed.
    let msg = |i: u32| -> Bytes { (0..4096u32).map(|j| (j % 97) as u8 ^ i as u8).collect() };
    let n = 1000u32;
    let window = 256 << 10;
    let (mut sent, mut got) = (0u32, 0u32);
    while got < n {
        while sent < n {
            match tx.try_send(msg(sent)) {
                Ok(()) => sent += 1,
                Err(crate::TrySendError::WouldBlock(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        s.run();
        while let Poll::Ready(Some(m)) = try_recv(&mut rx) {
            assert_eq!(m.unwrap(), msg(got), "message {got} intact");
            got += 1;
        }
        // Credit is granted back as sent, not as delivered: it never exceeds the window.
        assert!(stream_credit(&s.p.client, id) <= window);
        assert!(stream_credit(&s.p.server, id) <= window);
    }
    assert!(
        s.p.stats.bytes_in < (n as u64 * 4096) / 4,
        "the messages went compressed: {} bytes read",
        s.p.stats.bytes_in
    );
    drop(tx);
    s.run();
    assert!(matches!(try_recv(&mut rx), Poll::Ready(None)));
    s.run();
    assert!(s.p.client.stream_ids().is_empty() && s.p.server.stream_ids().is_empty());
    let conn = netron_codec::stream::initial_connection_window(window as u32) as i64;
    assert!(s.p.client.connection_credit() <= conn && s.p.client.connection_credit() > 0);
    assert!(s.p.server.connection_credit() <= conn && s.p.server.connection_credit() > 0);
}

/// The decompression surplus (decompressed bytes delivered and not read, beyond their wire
/// size) of all the streams of a connection.
fn surplus(c: &Connection<Arc<Completion>>) -> u64 {
    c.streams.as_ref().map_or(0, |s| s.surplus)
}

#[test]
fn compressed_messages_a_reader_does_not_read_are_held_as_they_came() {
    let mut s = S::new();
    // 200 messages of 64 KiB of zeros: 12.5 MiB decompressed, about 50 KiB on the wire (all
    // within one stream window, so the server sends them all while nobody reads).
    const N: usize = 200;
    let (_, tx, mut rx) = s.open_with(b"zeros", Some(Bytes::from_static(&[N as u8])), true, None);
    drop(tx);
    s.run();
    let conn_window = netron_codec::stream::initial_connection_window(256 << 10) as u64;
    let held = surplus(&s.p.client);
    assert!(
        held <= conn_window + (64 << 10),
        "the reader holds {held} decompressed bytes it has not read, above one connection \
         window ({conn_window} B) plus one message"
    );
    assert!(held > 0);
    assert!(
        s.p.stats.stream_messages_held > 0,
        "some messages were held"
    );
    // Read as they come: complete, intact, in order, then the end.
    let (got, end) = recv_all(&mut s, &mut rx);
    assert!(end.is_none(), "{end:?}");
    assert_eq!(got.len(), N);
    assert!(
        got.iter()
            .all(|m| m.len() == 64 << 10 && m.iter().all(|&b| b == 0))
    );
    s.run();
    assert!(s.p.client.stream_ids().is_empty() && s.p.server.stream_ids().is_empty());
    assert_eq!(surplus(&s.p.client), 0);
    let conn = conn_window as i64;
    assert!(s.p.server.connection_credit() <= conn && s.p.server.connection_credit() > 0);
}

#[test]
fn a_failure_after_held_messages_arrives_after_them() {
    let mut s = S::new();
    const N: usize = 200;
    let req = Bytes::from_static(&[N as u8, 1]);
    let (_, tx, mut rx) = s.open_with(b"zeros", Some(req), true, None);
    drop(tx);
    s.run();
    assert!(
        s.p.stats.stream_messages_held > 0,
        "some messages were held"
    );
    let (got, end) = recv_all(&mut s, &mut rx);
    assert_eq!(got.len(), N, "every message before the failure");
    let end = end.expect("the failure");
    assert_eq!(
        (end.code, &end.message[..]),
        (StatusCode::Aborted, "after the zeros")
    );
    s.run();
    assert!(s.p.client.stream_ids().is_empty() && s.p.server.stream_ids().is_empty());
    assert_eq!(surplus(&s.p.client), 0);
}
