//! Budgets and time bounds of one connection on virtual time: a frame completes within the
//! stall timeout of its first byte, partial frames share the core's buffer budget (at a small
//! and at the default size), a closing connection is closed after the linger bound.

use super::*;

/// Items 12 and 20: a handshake and a frame must complete within the stall timeout of their
/// first byte, however slowly the rest trickles in.
#[test]
fn frames_complete_within_the_stall_timeout_of_their_first_byte() {
    let mut p = Pair::open();
    let stall = p.server.cfg.stall_timeout;
    p.client_sends(request_frame(3, None, &ADD));
    let (buf, _) = p.client.poll_transmit().unwrap();
    let t0 = p.now;
    let mut t = t0;
    let step = stall / 20;
    for (i, byte) in buf[..buf.len() - 1].iter().enumerate() {
        p.now = t;
        p.server
            .handle_input(std::slice::from_ref(byte), &mut conn_env!(p))
            .unwrap();
        let next = p.server.poll_timeout().expect("a frame is pending");
        assert!(
            next <= t0 + stall,
            "byte {i}: deadline moved to {:?}",
            next - t0
        );
        t += step;
        if t >= t0 + stall {
            break;
        }
    }
    p.now = t0 + stall;
    let e = p
        .server
        .handle_timeout(&mut conn_env!(p), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.counter, "stalled");
    // An Error frame saying why goes to the peer before the close.
    assert!(p.server.wants_write());
    // The handshake has its own bound (conn/tests/timers.rs).
}

/// Item 20: all connections of a core share one budget for partial-frame and decompression
/// buffers; a frame that would exceed it is refused with a connection error, and a finished
/// frame's large buffer is given back.
#[test]
fn partial_frames_share_the_cores_buffer_budget() {
    let mut cfg = test_cfg();
    let budget = std::rc::Rc::new(BufferBudget::new(300 << 10));
    cfg.buffers = budget.clone();
    let mut a = Pair::with(cfg.clone());
    a.pump(usize::MAX);
    let mut b = Pair::with(cfg);
    b.pump(usize::MAX);
    // Incompressible, so the frame really is 200 KiB on the wire.
    let big = incompressible(200 << 10);
    let frame = |p: &mut Pair| {
        let slot = Arc::new(Completion::new());
        assert!(slot.arm());
        p.client
            .start_call(&Pair::spec(b"echo", &big), slot.clone(), p.now)
            .unwrap();
        let (buf, _) = p.client.poll_transmit().unwrap();
        (buf, slot)
    };
    let (fa, _sa) = frame(&mut a);
    let (fb, _sb) = frame(&mut b);
    // A's frame arrives all but its last byte: its buffer (the whole frame) is reserved.
    a.server
        .handle_input(&fa[..fa.len() - 1], &mut conn_env!(a))
        .unwrap();
    assert!(budget.used() >= fa.len() - 1);
    // B's partial frame does not fit beside it: B gets a connection error saying why.
    let e = b
        .server
        .handle_input(&fb[..fb.len() - 1], &mut conn_env!(b))
        .unwrap_err();
    assert_eq!(e.counter, "buffer_budget");
    assert_eq!(e.status, StatusCode::ResourceExhausted);
    assert!(e.message.contains("max_buffer_bytes"), "{e:?}");
    // A's frame completes; its large buffer is freed.
    a.server
        .handle_input(&fa[fa.len() - 1..], &mut conn_env!(a))
        .unwrap();
    assert!(budget.used() <= 2 * KEEP_BUFFER, "used {}", budget.used());
    drop(b);
    drop(a);
    assert_eq!(budget.used(), 0, "closed connections give everything back");
}

/// Item 20, at the default budget (256 MiB): fifteen peers may each hold a partial frame of
/// the largest size (16 MiB) at once beside the small buffers of every connection; a
/// seventeenth never fits. Buffers are reserved for the whole frame
/// when they grow, not written, so the test costs address space, not memory.
#[test]
fn the_default_buffer_budget_holds_fifteen_largest_frames() {
    let cfg = test_cfg();
    let budget = cfg.buffers.clone();
    let max = netron_codec::Limits::default().max_frame_size;
    let mut head = Vec::new();
    head.extend_from_slice(&max.to_le_bytes());
    head.extend_from_slice(&[FrameKind::Request as u8, 0, 0, 0]);
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    // More than a receive buffer's worth, so the buffer must grow: to the whole frame.
    head.resize(100 << 10, 0);
    let mut pairs = Vec::new();
    for i in 0..17 {
        let mut p = Pair::with(cfg.clone());
        p.pump(usize::MAX);
        let r = p.server.handle_input(&head, &mut conn_env!(p));
        match i {
            // Fifteen largest frames fit beside every connection's small buffers...
            0..15 => r.unwrap(),
            // ...the sixteenth fits only if those leave room; the seventeenth never does.
            15 => {}
            _ => assert_eq!(r.unwrap_err().counter, "buffer_budget"),
        }
        pairs.push(p);
    }
    assert!(budget.used() >= 15 * max as usize);
    assert!(budget.used() <= crate::ProtocolConfig::default().max_buffer_bytes());
    drop(pairs);
    assert_eq!(budget.used(), 0);
}

/// Item 19, at the default: a connection that is closing is closed `close_linger` after it
/// started closing, whatever the peer does (here: it never reads the Error frame).
#[test]
fn a_closing_connection_is_closed_after_the_linger_bound() {
    let mut p = Pair::open();
    let linger = p.server.cfg.close_linger;
    p.client_sends(|_, b| {
        b.frame(FrameKind::GoAway, 0)?
            .payload(b"junk")
            .finish()
            .map(|_| ())
    });
    let (buf, _) = p.client.poll_transmit().unwrap();
    let t0 = p.now;
    assert!(p.server.handle_input(&buf, &mut conn_env!(p)).is_err());
    p.server.closing_at(t0);
    assert_eq!(p.server.poll_timeout(), Some(t0 + linger));
    p.now = t0 + linger - Duration::from_millis(1);
    assert!(
        p.server
            .handle_timeout(&mut conn_env!(p), &mut Vec::new())
            .is_ok()
    );
    p.now = t0 + linger;
    let e = p
        .server
        .handle_timeout(&mut conn_env!(p), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.counter, "close_linger");
}
