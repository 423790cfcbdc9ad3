//! Two connections wired back to back, no sockets: the sans-IO state machine alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::CallSpec;
use super::*;
use crate::service::{Registry, Service};
use crate::slot::Completion;
use crate::{Status, StatusCode};

/// The environment of one event on pair `$p` (at `$now`, default the pair's clock); a macro,
/// so the fields are borrowed apart from the pair's connections.
macro_rules! conn_env {
    ($p:expr) => {
        conn_env!($p, $p.now)
    };
    ($p:expr, $now:expr) => {
        Env {
            registry: &$p.registry,
            now: $now,
            stats: &mut $p.stats,
            origin: None,
        }
    };
}

struct Pair {
    server: Connection<Arc<Completion>>,
    client: Connection<Arc<Completion>>,
    registry: Registry,
    stats: CoreStats,
    now: Instant,
    /// Deliver as a hot connection's link does: the rest of a large partial frame is
    /// appended straight to its reassembly buffer (`Connection::pending_frame`).
    direct: bool,
}

/// Delivers `buf` to `conn` in pieces of at most `chunk` bytes (see `Pair::direct`). A direct
/// append never goes past the buffer's capacity (asserted: the buffer does not move).
fn deliver(
    conn: &mut Connection<Arc<Completion>>,
    buf: &[u8],
    chunk: usize,
    direct: bool,
    env: &mut Env<'_>,
) {
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        if direct && let Some(rx) = conn.pending_frame() {
            let n = chunk.min(rx.capacity() - rx.len()).min(rest.len());
            assert!(n > 0, "a pending frame always has room");
            let at = rx.as_ptr();
            rx.extend_from_slice(&rest[..n]);
            assert_eq!(
                rx.as_ptr(),
                at,
                "appending stays within the reserved capacity"
            );
            let _ = conn.handle_appended(n, env);
            off += n;
        } else {
            let n = chunk.min(rest.len());
            let _ = conn.handle_input(&rest[..n], env);
            off += n;
        }
    }
}

/// `len` bytes no compressor shrinks (xorshift32), so a frame carrying them is as long on
/// the wire as its payload.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn registry() -> Registry {
    let mut r = Registry::default();
    r.add(
        Service::new("calc", "1.2.0")
            .unwrap()
            .unary("add", |req, reply| {
                let [a, b]: [u8; 2] = req
                    .payload()
                    .try_into()
                    .map_err(|_| Status::invalid_argument("need two bytes"))?;
                reply.write(&[a.wrapping_add(b)]);
                Ok(())
            })
            .unary("echo", |req, reply| {
                reply.write(req.payload());
                Ok(())
            })
            .unary("slow", |_, reply| {
                std::thread::sleep(Duration::from_millis(5));
                reply.write(b"late");
                Ok(())
            })
            .unary("truncate", |_, reply| {
                // Writes past the frame limit: refused, the connection goes on.
                let chunk = vec![7u8; 1 << 20];
                for _ in 0..17 {
                    reply.write(&chunk);
                }
                Ok(())
            })
            .unary_async("never", |_| std::future::pending()),
    )
    .unwrap();
    r
}

fn test_cfg() -> ConnConfig {
    ConnConfig::new(
        &crate::ProtocolConfig::default().with_keepalive(Duration::ZERO, Duration::from_secs(1)),
    )
}

impl Pair {
    fn new() -> Pair {
        Pair::with(test_cfg())
    }

    fn with(cfg: ConnConfig) -> Pair {
        let now = Instant::now();
        Pair {
            server: Connection::new(Role::Server, &std::rc::Rc::new(cfg.clone()), now),
            client: Connection::new(Role::Client, &std::rc::Rc::new(cfg), now),
            registry: registry(),
            stats: CoreStats::default(),
            now,
            direct: false,
        }
    }

    /// Moves bytes both ways until quiet, delivering in chunks of `chunk` bytes.
    fn pump(&mut self, chunk: usize) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some((buf, _)) = self.client.poll_transmit() {
                moved = true;
                let mut env = conn_env!(self);
                deliver(&mut self.server, &buf, chunk, self.direct, &mut env);
            }
            while let Some((buf, _)) = self.server.poll_transmit() {
                moved = true;
                let mut env = conn_env!(self);
                deliver(&mut self.client, &buf, chunk, self.direct, &mut env);
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    fn call(&mut self, method: &[u8], payload: &[u8], chunk: usize) -> Result<Vec<u8>, Status> {
        let slot = Arc::new(Completion::new());
        assert!(slot.arm());
        let spec = CallSpec {
            service: b"calc@1.2.0",
            method,
            payload,
            deadline: Some(Duration::from_secs(1)),
            idempotent: false,
            metadata: None,
        };
        self.client.start_call(&spec, slot.clone(), self.now)?;
        self.pump(chunk);
        assert!(slot.is_done(), "no reply");
        slot.result().unwrap().map(<[u8]>::to_vec)
    }
}

#[test]
fn handshake_then_calls() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    assert!(p.client.is_open() && p.server.is_open());
    assert_eq!(p.call(b"add", &[2, 3], usize::MAX).unwrap(), vec![5]);
    assert_eq!(p.call(b"echo", b"hello", usize::MAX).unwrap(), b"hello");
    assert_eq!(p.stats.handshakes, 2);
}

#[test]
fn frames_split_anywhere_are_reassembled() {
    let mut p = Pair::new();
    p.pump(1);
    for chunk in [1, 2, 3, 7, 16, 17] {
        let big = vec![chunk as u8; 3000];
        assert_eq!(p.call(b"echo", &big, chunk).unwrap(), big);
    }
}

/// Large frames read as a hot connection reads them (the rest of a frame straight into its
/// reassembly buffer) arrive exactly as through `handle_input`, whatever the cut, including
/// frames that follow each other in one batch and small frames between large ones.
#[test]
fn large_frames_appended_in_place_are_reassembled() {
    let mut p = Pair::new();
    p.direct = true;
    p.pump(usize::MAX);
    for chunk in [1, 5, 4096, 16 << 10, 100_000] {
        for len in [super::reassembly::DIRECT_MIN, 70_000, 300_000] {
            let big: Vec<u8> = (0..len).map(|i| (i * 7 + chunk) as u8).collect();
            assert_eq!(
                p.call(b"echo", &big, chunk).unwrap(),
                big,
                "{len} in {chunk}"
            );
            assert_eq!(p.call(b"add", &[2, 3], chunk).unwrap(), vec![5]);
        }
    }
    // Several large calls in one batch each way.
    let slots: Vec<_> = (0..3usize)
        .map(|i| {
            let slot = Arc::new(Completion::new());
            assert!(slot.arm());
            let payload = vec![i as u8; 50_000 + i];
            let spec = CallSpec {
                service: b"calc@1.2.0",
                method: b"echo",
                payload: &payload,
                deadline: Some(Duration::from_secs(1)),
                idempotent: false,
                metadata: None,
            };
            p.client.start_call(&spec, slot.clone(), p.now).unwrap();
            (slot, payload)
        })
        .collect();
    p.pump(30_000);
    for (slot, payload) in slots {
        assert_eq!(slot.result().unwrap().unwrap(), &payload[..]);
    }
    assert!(p.client.is_open() && p.server.is_open());
}

#[test]
fn errors_carry_status_codes() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    assert_eq!(
        p.call(b"add", &[1], usize::MAX).unwrap_err().code,
        StatusCode::InvalidArgument
    );
    assert_eq!(
        p.call(b"mul", &[1, 2], usize::MAX).unwrap_err().code,
        StatusCode::Unimplemented
    );
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let spec = CallSpec {
        service: b"nope@1.0.0",
        method: b"x",
        payload: b"",
        deadline: None,
        idempotent: false,
        metadata: None,
    };
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    p.pump(usize::MAX);
    assert_eq!(
        slot.result().unwrap().unwrap_err().code,
        StatusCode::NotFound
    );
    assert_eq!(p.stats.errors_of("unknown_service"), 1);
    // The connection is still fine.
    assert_eq!(p.call(b"add", &[1, 1], usize::MAX).unwrap(), vec![2]);
}

#[test]
fn garbage_closes_with_an_error_frame() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    let mut env = conn_env!(p);
    let mut junk = vec![0xffu8; 16];
    junk[4] = 0x7f; // unknown kind, length huge
    let e = p.server.handle_input(&junk, &mut env).unwrap_err();
    assert_eq!(e.counter, "frame_too_large");
    assert!(p.server.is_closing());
    let (buf, _) = p.server.poll_transmit().unwrap();
    let f = netron_codec::Frame::parse(&buf, &netron_codec::Limits::default()).unwrap();
    assert_eq!((f.kind(), f.id()), (netron_codec::FrameKind::Error, 0));
    assert_eq!(p.stats.errors_of("frame_too_large"), 1);
}

#[test]
fn bad_preface_is_rejected() {
    let mut p = Pair::new();
    let mut env = conn_env!(p);
    let e = p
        .server
        .handle_input(b"GET / HTTP/1.1\r\n\r\n", &mut env)
        .unwrap_err();
    assert_eq!(e.counter, "bad_preface");
    assert!(p.server.is_closing());
}

#[test]
fn deadlines_expire_and_cancel() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let spec = CallSpec {
        service: b"calc@1.2.0",
        method: b"add",
        payload: &[1, 2],
        deadline: Some(Duration::from_millis(5)),
        idempotent: false,
        metadata: None,
    };
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    // No pump: the request never reaches the server. Time passes.
    let later = p.now + Duration::from_millis(6);
    let mut env = conn_env!(p, later);
    p.client.handle_timeout(&mut env, &mut Vec::new()).unwrap();
    assert_eq!(
        slot.result().unwrap().unwrap_err().code,
        StatusCode::DeadlineExceeded
    );
    // The id stays reserved until the callee's final frame (docs/protocol.md §14).
    assert_eq!(p.client.calls.len(), 1);
    // The Request and a Cancel are queued; the reply that crosses the Cancel frees the id.
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("late_reply"), 1);
    assert_eq!(p.stats.cancels_in, 1);
    assert_eq!(p.client.calls.len(), 0);
}

#[test]
fn keepalive_detects_a_dead_peer() {
    let mut cfg = test_cfg();
    cfg.keepalive = Duration::from_secs(1);
    cfg.dead_after = Duration::from_secs(1);
    let mut p = Pair::with(cfg);
    p.pump(usize::MAX);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let spec = CallSpec {
        service: b"calc@1.2.0",
        method: b"add",
        payload: &[1, 2],
        deadline: None,
        idempotent: false,
        metadata: None,
    };
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    let t1 = p.now + Duration::from_secs(2);
    let mut env = conn_env!(p, t1);
    p.client.handle_timeout(&mut env, &mut Vec::new()).unwrap();
    assert!(p.client.ping_outstanding.is_some());
    let t2 = t1 + Duration::from_secs(2);
    let mut env = conn_env!(p, t2);
    let e = p
        .client
        .handle_timeout(&mut env, &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.counter, "dead_peer");
    let status = slot.result().unwrap().unwrap_err();
    assert_eq!(status.code, StatusCode::Unavailable);
    // The caller is told what happened and which setting governs it.
    assert!(
        status.message.contains("keepalive") && status.message.contains("dead_after"),
        "{status:?}"
    );
}

#[test]
fn go_away_refuses_new_calls() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    p.server.go_away("test");
    p.pump(usize::MAX);
    assert!(p.client.peer_going_away);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let spec = CallSpec {
        service: b"calc@1.2.0",
        method: b"add",
        payload: &[1, 2],
        deadline: None,
        idempotent: false,
        metadata: None,
    };
    assert_eq!(
        p.client.start_call(&spec, slot, p.now).unwrap_err().code,
        StatusCode::Unavailable
    );
}

#[test]
fn large_frames_leave_no_large_buffers_behind() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    let big = vec![9u8; 2 << 20];
    // Delivered in 16 KiB pieces, as the receive buffer ring would.
    assert_eq!(p.call(b"echo", &big, 16 << 10).unwrap(), big);
    assert!(
        p.server.rx.capacity() <= KEEP_BUFFER,
        "rx kept {}",
        p.server.rx.capacity()
    );
    assert!(p.server.spare.iter().all(|b| b.capacity() <= KEEP_BUFFER));
    // The 2 MiB request went compressed (a few KiB; the sync reply goes raw), so the server
    // decompressed 2 MiB into its scratch buffer: that buffer is freed too.
    assert!(p.stats.bytes_in < 3 << 20, "the request went compressed");
    assert!(p.server.scratch.capacity() <= KEEP_BUFFER);
    assert!(p.client.scratch.capacity() <= KEEP_BUFFER);
    assert!(p.client.spare.iter().all(|b| b.capacity() <= KEEP_BUFFER));
    // Small calls still reuse their buffers.
    assert_eq!(p.call(b"add", &[1, 2], usize::MAX).unwrap(), vec![3]);
}

impl Pair {
    fn open() -> Pair {
        let mut p = Pair::new();
        p.pump(usize::MAX);
        assert!(p.client.is_open() && p.server.is_open());
        p
    }

    /// Queues a raw frame built by `f` on the client side (which may break the rules).
    fn client_sends(
        &mut self,
        f: impl FnMut(
            &mut Connection<Arc<Completion>>,
            &mut netron_codec::BatchEncoder,
        ) -> Result<(), EncodeError>,
    ) {
        self.client.queue(f).unwrap();
    }

    fn spec<'a>(method: &'a [u8], payload: &'a [u8]) -> CallSpec<'a> {
        CallSpec {
            service: b"calc@1.2.0",
            method,
            payload,
            deadline: None,
            idempotent: false,
            metadata: None,
        }
    }
}

fn request_frame<'h>(
    id: u32,
    deadline: Option<Duration>,
    headers: &'h [netron_codec::hpack::Header<'h>],
) -> impl FnMut(
    &mut Connection<Arc<Completion>>,
    &mut netron_codec::BatchEncoder,
) -> Result<(), EncodeError>
+ 'h {
    move |c, b| {
        b.request(id, deadline)?
            .headers(&mut c.enc, headers)?
            .payload(&[1, 2])
            .finish()
            .map(|_| ())
    }
}

const ADD: [netron_codec::hpack::Header<'static>; 2] = [
    netron_codec::hpack::Header::service(b"calc@1.2.0"),
    netron_codec::hpack::Header::method(b"add"),
];

/// Item 4: header blocks are decoded in order whatever becomes of their frames, in both
/// directions (a refused StreamOpen/Subscribe, a reply to an id nobody waits for).
#[test]
fn every_header_block_is_decoded_whatever_becomes_of_its_frame() {
    let mut p = Pair::open();
    // Client -> server: a StreamOpen with a header block (refused: a unary method).
    p.client_sends(|c, b| {
        b.frame(FrameKind::StreamOpen, 1)?
            .headers(&mut c.enc, &ADD)?
            .finish()
            .map(|_| ())
    });
    // Server -> client: a Response with headers for an id the client never opened.
    p.server
        .queue(|c, b| {
            b.response(777)?
                .headers(
                    &mut c.enc,
                    &[netron_codec::hpack::Header::new(b"x-k", b"v")],
                )?
                .finish()
                .map(|_| ())
        })
        .unwrap();
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("not_a_stream_method"), 1);
    // The client also sees the refusal of its raw StreamOpen as a reply to an unknown id.
    assert_eq!(p.stats.errors_of("unknown_id"), 2);
    // Both decoders stayed in step: calls whose headers reference the dynamic table work.
    assert_eq!(p.call(b"add", &[2, 3], usize::MAX).unwrap(), vec![5]);
    assert_eq!(p.call(b"add", &[2, 4], usize::MAX).unwrap(), vec![6]);
    assert!(p.client.is_open() && p.server.is_open());
}

/// Item 6: ids of exchanges the peer opens are checked (docs/protocol.md §14).
#[test]
fn request_ids_are_checked() {
    for (id, counter) in [
        (0u32, "zero_id"),
        (2, "wrong_id_parity"),
        (4, "wrong_id_parity"),
    ] {
        let mut p = Pair::open();
        p.client_sends(request_frame(id, None, &ADD));
        p.pump(usize::MAX);
        assert_eq!(p.stats.errors_of(counter), 1, "id {id}");
        assert!(p.server.is_closing(), "id {id}");
        // The client got the connection error and failed nothing silently.
        assert!(p.client.is_closing(), "id {id}");
    }
    // Two in-flight calls with the same id: the second is a protocol error.
    let mut p = Pair::open();
    let never = [
        netron_codec::hpack::Header::service(b"calc@1.2.0"),
        netron_codec::hpack::Header::method(b"never"),
    ];
    p.client_sends(request_frame(5, None, &never));
    p.pump(usize::MAX);
    assert!(p.server.inflight.contains(&5));
    p.client_sends(request_frame(5, None, &never));
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("duplicate_id"), 1);
    // An id may be reused once its call was answered (sync calls answer at once).
    let mut p = Pair::open();
    for _ in 0..3 {
        p.client_sends(request_frame(7, None, &ADD));
        p.pump(usize::MAX);
    }
    assert!(p.server.is_open());
    assert_eq!(p.stats.calls_ok, 3);
}

/// The caller's ids: odd for the initiator, never 0, never one still in use.
#[test]
fn callers_allocate_ids_by_parity() {
    let mut calls = PendingCalls::<Arc<Completion>>::new(true);
    let mut acceptor = PendingCalls::<Arc<Completion>>::new(false);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let a = calls.allocate_id();
        assert!(a % 2 == 1 && seen.insert(a));
        let b = acceptor.allocate_id();
        assert!(b != 0 && b % 2 == 0);
    }
    // Wrapping skips 0 and ids in use.
    let mut calls = PendingCalls::<Arc<Completion>>::new(false);
    calls.next_id = u32::MAX - 1;
    assert_eq!(calls.allocate_id(), 2);
    assert!(super::client::serial_after(1, u32::MAX));
    assert!(!super::client::serial_after(u32::MAX, 1));
}

/// Item 5 (sync handlers): work whose deadline passed is not started, and a reply that would
/// leave after the deadline becomes DeadlineExceeded.
#[test]
fn callee_enforces_deadlines() {
    let mut p = Pair::open();
    // Arrived long ago (virtual time): the deadline passed while it was queued.
    p.now = Instant::now() - Duration::from_secs(1);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let mut spec = Pair::spec(b"add", &[1, 2]);
    spec.deadline = Some(Duration::from_millis(10));
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    p.pump(usize::MAX);
    let e = slot.result().unwrap().unwrap_err();
    assert_eq!(e.code, StatusCode::DeadlineExceeded);
    assert!(e.message.contains("before the handler started"), "{e:?}");
    // A handler that takes 5 ms against a 1 ms deadline.
    p.now = Instant::now();
    assert!(slot.arm());
    spec.method = b"slow";
    spec.deadline = Some(Duration::from_millis(1));
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    p.pump(usize::MAX);
    let e = slot.result().unwrap().unwrap_err();
    assert_eq!(e.code, StatusCode::DeadlineExceeded);
    assert!(e.message.contains("before the handler finished"), "{e:?}");
    assert_eq!(p.stats.deadline_exceeded, 2);
    assert!(p.server.is_open());
}

/// Item 8: every control body is verified the same way, whatever the kind.
#[test]
fn control_bodies_are_verified_everywhere() {
    for kind in [FrameKind::Subscribe, FrameKind::GoAway, FrameKind::Error] {
        let mut p = Pair::open();
        let id = if kind == FrameKind::GoAway { 0 } else { 9 };
        p.client_sends(|_, b| b.frame(kind, id)?.payload(b"").finish().map(|_| ()));
        p.pump(usize::MAX);
        assert_eq!(p.stats.errors_of("invalid_body"), 1, "{kind:?}");
        assert!(p.server.is_closing(), "{kind:?}");
    }
    // A well-formed Subscribe is taken (events are served; conn/tests/events.rs).
    let mut p = Pair::open();
    p.client_sends(|c, b| c.control.subscribe(b, 11, "orders.*", 16).map(|_| ()));
    p.pump(usize::MAX);
    assert!(p.server.has_served(11));
    assert!(p.server.is_open());
}

/// Item 21: frames that do no work are budgeted; a legitimate caller that cancels half of
/// its calls keeps its connection.
#[test]
fn frames_that_do_no_work_are_budgeted() {
    let burst = crate::FrameBudget::default().burst;
    // A Ping flood far above the burst, all at one instant (no refill).
    let mut p = Pair::open();
    for i in 0..=burst {
        p.client_sends(move |_, b| b.empty_frame(FrameKind::Ping, 0, i));
    }
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("idle_frame_budget"), 1);
    assert!(p.server.is_closing());
    // Unsolicited Pongs and cancels of answered calls cost the same.
    let mut p = Pair::open();
    for i in 0..=burst {
        p.client_sends(move |_, b| b.empty_frame(FrameKind::Cancel, 2 * i + 1, 0));
    }
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("idle_frame_budget"), 1);
    // Pipelined calls, every other one cancelled (its Cancel reaches the server after the
    // answer, as a hedged or short-deadline call's would), far past the burst.
    let mut p = Pair::open();
    for round in 0..(4 * burst) {
        let slot = Arc::new(Completion::new());
        assert!(slot.arm());
        let id = p
            .client
            .start_call(&Pair::spec(b"add", &[1, 2]), slot, p.now)
            .unwrap();
        if round % 2 == 0 {
            p.client
                .cancel_call(id, StatusCode::Cancelled, "hedged elsewhere");
        }
        if round % 64 == 0 {
            p.pump(usize::MAX);
        }
    }
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("idle_frame_budget"), 0);
    assert_eq!(p.stats.cancels_in, u64::from(2 * burst));
    assert!(p.server.is_open() && p.client.is_open());
    assert_eq!(
        p.client.calls.len(),
        0,
        "every id was freed by its final frame"
    );
}

/// Item 11: a message above the negotiated limits fails that call only, before anything is
/// encoded; the connection and its other calls go on.
#[test]
fn oversized_messages_fail_their_call_only() {
    let mut p = Pair::open();
    let max = p.client.settings.as_ref().unwrap().limits.max_frame_size as usize;
    let big = vec![1u8; max];
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let e = p
        .client
        .start_call(&Pair::spec(b"echo", &big), slot.clone(), p.now)
        .unwrap_err();
    assert_eq!(e.code, StatusCode::ResourceExhausted);
    assert!(e.message.contains("max_frame_size"), "{e:?}");
    // The exact bound is accepted: frame = 16 + header block bound + payload.
    let block = netron_codec::hpack::HeaderEncoder::max_encoded_len(&[
        netron_codec::hpack::Header::service(b"calc@1.2.0"),
        netron_codec::hpack::Header::method(b"echo"),
    ]);
    let fits = vec![2u8; max - 16 - block];
    assert_eq!(p.call(b"echo", &fits, 1 << 20).unwrap(), fits);
    // A header block that cannot fit in a frame's u16 length.
    let long = vec![b'm'; 70_000];
    let e = p
        .client
        .start_call(&Pair::spec(&long, b""), slot.clone(), p.now)
        .unwrap_err();
    assert_eq!(e.code, StatusCode::ResourceExhausted);
    assert!(e.message.len() < 300, "errors do not echo user input");
    // A reply above the limit fails its call only (the handler writes 17 MiB).
    let e = p.call(b"truncate", b"", usize::MAX).unwrap_err();
    assert_eq!(e.code, StatusCode::ResourceExhausted);
    assert!(
        e.message.contains("max_frame_size") || e.message.contains("frame"),
        "{e:?}"
    );
    assert_eq!(p.call(b"add", &[1, 2], usize::MAX).unwrap(), vec![3]);
    assert!(p.client.is_open() && p.server.is_open());
}

/// Item 7: GoAway from the initiator is honoured: the acceptor answers with its own, takes
/// no new calls, and both sides drain.
#[test]
fn go_away_from_either_side_drains_both() {
    let mut p = Pair::open();
    assert_eq!(p.call(b"add", &[1, 2], usize::MAX).unwrap(), vec![3]);
    p.client.go_away("client done");
    p.pump(usize::MAX);
    assert!(p.server.peer_going_away && p.server.going_away);
    assert!(p.client.peer_going_away);
    assert!(p.server.drained() && p.client.drained());
    // No new calls on a connection going away.
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let e = p
        .client
        .start_call(&Pair::spec(b"add", &[1, 1]), slot, p.now)
        .unwrap_err();
    assert_eq!(e.code, StatusCode::Unavailable);
}

/// Item 7: a Request followed by the peer's EOF is still answered (half-close).
#[test]
fn replies_queued_before_eof_are_kept() {
    let mut p = Pair::open();
    p.client_sends(request_frame(3, None, &ADD));
    let (buf, _) = p.client.poll_transmit().unwrap();
    let now = p.now;
    p.server.handle_input(&buf, &mut conn_env!(p)).unwrap();
    p.server.handle_eof(now);
    assert!(p.server.wants_write(), "the reply is still queued");
    assert!(p.server.drained());
    assert!(
        !p.server.is_closing(),
        "closing waits for the reply to be written"
    );
}

/// Stall, buffer budget and linger bounds.
mod bounds;
/// Events in QUIC datagrams (docs/protocol.md §27.6).
mod datagrams;
/// The dispatcher: interceptors, metadata both ways, deferred methods without a core.
mod dispatch;
/// GoAway's `last_id` with exchanges arriving out of order (QUIC).
mod go_away;
/// Calls in both directions on one connection (symmetric peers).
mod peers;
/// Header compression on `quic://` (QPACK, docs/protocol.md §27.4).
mod qpack;
/// The same connections over a record transport (docs/protocol.md §26).
mod records;
/// Handshake timeout and keepalive (own and advertised).
mod timers;

/// An idle connection's state stays small (the "memory per idle connection" row of
/// `netron-bench engine`): the configuration is shared by the core's connections and the
/// dispatcher's buffers come with the first request. A change that grows the struct past
/// this bound should say why in docs/architecture.md.
#[test]
#[cfg(target_pointer_width = "64")]
fn an_idle_connection_stays_small() {
    let size = std::mem::size_of::<Connection<Arc<Completion>>>();
    // 1928: +8 (alignment) for `close_code`, the status a QUIC CONNECTION_CLOSE carries
    // (protocol §27.1; ninth session). 1960: +32 for the header decoder's repeated block
    // (docs/architecture.md "Decoder repeats"; eleventh session: 2,922 -> 2,675 instructions
    // per pipelined call). 1968: +8 for the 0-RTT budget of a quic:// client (a boxed
    // `EarlyBudget`, docs/quic.md "0-RTT"; fifteenth session). 2000: +32 for the batch
    // buffer that can be lent ring memory (`TxBuf`, docs/architecture.md "Batches written in
    // place"; seventeenth session).
    assert!(size <= 2000, "Connection is {size} bytes");
}

mod events;
mod streams;
