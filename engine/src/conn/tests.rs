//! Two connections wired back to back, no sockets: the sans-IO state machine alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::CallSpec;
use super::*;
use crate::service::{Registry, Service};
use crate::slot::CallSlot;
use crate::{Status, StatusCode};

struct Pair {
    server: Connection,
    client: Connection,
    registry: Registry,
    stats: CoreStats,
    now: Instant,
}

fn registry() -> Registry {
    let mut r = Registry::default();
    r.add(
        Service::new("calc", "1.2.0")
            .unwrap()
            .unary("add", |req, reply| {
                let [a, b]: [u8; 2] = req
                    .payload
                    .try_into()
                    .map_err(|_| Status::invalid_argument("need two bytes"))?;
                reply.write(&[a.wrapping_add(b)]);
                Ok(())
            })
            .unary("echo", |req, reply| {
                reply.write(req.payload);
                Ok(())
            }),
    )
    .unwrap();
    r
}

impl Pair {
    fn new() -> Pair {
        let cfg = ConnConfig {
            server: Default::default(),
            client: Default::default(),
        };
        let now = Instant::now();
        Pair {
            server: Connection::new(Role::Server, &cfg, now),
            client: Connection::new(Role::Client, &cfg, now),
            registry: registry(),
            stats: CoreStats::default(),
            now,
        }
    }

    /// Moves bytes both ways until quiet, delivering in chunks of `chunk` bytes.
    fn pump(&mut self, chunk: usize) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some((buf, _)) = self.client.take_batch() {
                moved = true;
                for c in buf.chunks(chunk) {
                    let mut env = Env {
                        registry: &self.registry,
                        now: self.now,
                        stats: &mut self.stats,
                    };
                    let _ = self.server.on_recv(c, &mut env);
                }
            }
            while let Some((buf, _)) = self.server.take_batch() {
                moved = true;
                for c in buf.chunks(chunk) {
                    let mut env = Env {
                        registry: &self.registry,
                        now: self.now,
                        stats: &mut self.stats,
                    };
                    let _ = self.client.on_recv(c, &mut env);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    fn call(&mut self, method: &[u8], payload: &[u8], chunk: usize) -> Result<Vec<u8>, Status> {
        let slot = Arc::new(CallSlot::new());
        slot.arm();
        let spec = CallSpec {
            service: b"calc@1.2.0",
            method,
            payload,
            deadline: Some(Duration::from_secs(1)),
            idempotent: false,
        };
        self.client.start_call(&spec, slot.clone(), self.now)?;
        self.pump(chunk);
        assert!(slot.is_done(), "no reply");
        slot.result().map(<[u8]>::to_vec)
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
    let slot = Arc::new(CallSlot::new());
    slot.arm();
    let spec = CallSpec {
        service: b"nope@1.0.0",
        method: b"x",
        payload: b"",
        deadline: None,
        idempotent: false,
    };
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    p.pump(usize::MAX);
    assert_eq!(slot.result().unwrap_err().code, StatusCode::NotFound);
    assert_eq!(p.stats.errors_of("unknown_service"), 1);
    // The connection is still fine.
    assert_eq!(p.call(b"add", &[1, 1], usize::MAX).unwrap(), vec![2]);
}

#[test]
fn garbage_closes_with_an_error_frame() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    let mut env = Env {
        registry: &p.registry,
        now: p.now,
        stats: &mut p.stats,
    };
    let mut junk = vec![0xffu8; 16];
    junk[4] = 0x7f; // unknown kind, length huge
    let e = p.server.on_recv(&junk, &mut env).unwrap_err();
    assert_eq!(e.counter, "frame_too_large");
    assert!(p.server.is_closing());
    let (buf, _) = p.server.take_batch().unwrap();
    let f = netron_codec::Frame::parse(&buf, &netron_codec::Limits::default()).unwrap();
    assert_eq!((f.kind(), f.id()), (netron_codec::FrameKind::Error, 0));
    assert_eq!(p.stats.errors_of("frame_too_large"), 1);
}

#[test]
fn bad_preface_is_rejected() {
    let mut p = Pair::new();
    let mut env = Env {
        registry: &p.registry,
        now: p.now,
        stats: &mut p.stats,
    };
    let e = p
        .server
        .on_recv(b"GET / HTTP/1.1\r\n\r\n", &mut env)
        .unwrap_err();
    assert_eq!(e.counter, "bad_preface");
    assert!(p.server.is_closing());
}

#[test]
fn deadlines_expire_and_cancel() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    let slot = Arc::new(CallSlot::new());
    slot.arm();
    let spec = CallSpec {
        service: b"calc@1.2.0",
        method: b"add",
        payload: &[1, 2],
        deadline: Some(Duration::from_millis(5)),
        idempotent: false,
    };
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    // No pump: the request never reaches the server. Time passes.
    let later = p.now + Duration::from_millis(6);
    let mut env = Env {
        registry: &p.registry,
        now: later,
        stats: &mut p.stats,
    };
    p.client
        .on_timer(&mut env, Duration::ZERO, Duration::ZERO)
        .unwrap();
    assert_eq!(
        slot.result().unwrap_err().code,
        StatusCode::DeadlineExceeded
    );
    assert_eq!(p.client.calls.len(), 0);
    // The Request and a Cancel are queued; a late reply is ignored.
    p.pump(usize::MAX);
    assert_eq!(p.stats.errors_of("late_reply"), 1);
    assert_eq!(p.stats.cancels_in, 1);
}

#[test]
fn keepalive_detects_a_dead_peer() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    let slot = Arc::new(CallSlot::new());
    slot.arm();
    let spec = CallSpec {
        service: b"calc@1.2.0",
        method: b"add",
        payload: &[1, 2],
        deadline: None,
        idempotent: false,
    };
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    let t1 = p.now + Duration::from_secs(2);
    let mut env = Env {
        registry: &p.registry,
        now: t1,
        stats: &mut p.stats,
    };
    p.client
        .on_timer(&mut env, Duration::from_secs(1), Duration::from_secs(1))
        .unwrap();
    assert!(p.client.ping_outstanding.is_some());
    let t2 = t1 + Duration::from_secs(2);
    let mut env = Env {
        registry: &p.registry,
        now: t2,
        stats: &mut p.stats,
    };
    let e = p
        .client
        .on_timer(&mut env, Duration::from_secs(1), Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(e.counter, "dead_peer");
    assert_eq!(slot.result().unwrap_err().code, StatusCode::Unavailable);
}

#[test]
fn go_away_refuses_new_calls() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    p.server.go_away(0);
    p.pump(usize::MAX);
    assert!(p.client.peer_going_away);
    let slot = Arc::new(CallSlot::new());
    slot.arm();
    let spec = CallSpec {
        service: b"calc@1.2.0",
        method: b"add",
        payload: &[1, 2],
        deadline: None,
        idempotent: false,
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
    assert!(p.client.spare.iter().all(|b| b.capacity() <= KEEP_BUFFER));
    // Small calls still reuse their buffers.
    assert_eq!(p.call(b"add", &[1, 2], usize::MAX).unwrap(), vec![3]);
}
