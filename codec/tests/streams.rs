//! Streams (docs/protocol.md §22) and flow control (§23): the state machines of two honest
//! peers always agree, every deviation from the sequence rules is caught, stream frames
//! survive encode → decode, and window arithmetic holds at the u32 edges.

use netron_codec::stream::{
    CONNECTION_WINDOW_FACTOR, MAX_WINDOW, Received, Role, Stream, StreamError, Window,
    consume_both, initial_connection_window,
};
use netron_codec::{BatchEncoder, Flags, FrameIter, FrameKind, Limits, control};
use proptest::prelude::*;

/// What one honest side tries next (skipped when its state machine says it may not).
#[derive(Debug, Clone, Copy)]
enum Act {
    Data {
        end: bool,
    },
    End {
        error: bool,
    },
    /// Cancel (opener) or Error (callee).
    Abort,
    /// Deliver the other side's next frame.
    Deliver,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire {
    Data(u32, bool),
    End(bool),
    Abort,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        5 => Just(Act::Data { end: false }),
        1 => Just(Act::Data { end: true }),
        1 => any::<bool>().prop_map(|error| Act::End { error }),
        1 => Just(Act::Abort),
        6 => Just(Act::Deliver),
    ]
}

fn send(s: &mut Stream, a: Act) -> Option<Wire> {
    match a {
        Act::Data { end } => s.send_data(end).ok().map(|seq| Wire::Data(seq, end)),
        Act::End { error } => s.send_end(error).ok().map(|()| Wire::End(error)),
        Act::Abort => match s.role() {
            Role::Opener => s.send_cancel().ok().map(|()| Wire::Abort),
            Role::Callee => s.send_error().ok().map(|()| Wire::Abort),
        },
        Act::Deliver => None,
    }
}

/// Delivers `w` to `s`, as a receiver that has forgotten a finished stream would (frames for
/// an id no longer in use are ignored, §14).
fn deliver(s: &mut Stream, w: Wire) -> Option<Result<Received, StreamError>> {
    if s.is_finished() {
        return None;
    }
    Some(match w {
        Wire::Data(seq, end) => s.recv_data(seq, end),
        Wire::End(error) => s.recv_end(error),
        Wire::Abort => match s.role() {
            Role::Opener => s.recv_error(),
            Role::Callee => s.recv_cancel(),
        },
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Two honest peers, frames in order per direction, interleaved arbitrarily: no frame is
    /// ever refused, and once both have nothing left in flight and the callee answered a
    /// cancel, both agree the stream is finished exactly when both halves are done.
    #[test]
    fn honest_peers_never_violate(
        open_end in any::<bool>(),
        acts in prop::collection::vec((any::<bool>(), act()), 0..60),
    ) {
        let mut opener = Stream::new(Role::Opener, open_end);
        let mut callee = Stream::new(Role::Callee, open_end);
        let mut to_callee: Vec<Wire> = Vec::new();
        let mut to_opener: Vec<Wire> = Vec::new();
        for (by_opener, a) in acts {
            let (me, out, inbox) = if by_opener {
                (&mut opener, &mut to_callee, &mut to_opener)
            } else {
                (&mut callee, &mut to_opener, &mut to_callee)
            };
            if let Act::Deliver = a {
                if !inbox.is_empty() {
                    let w = inbox.remove(0);
                    if let Some(r) = deliver(me, w) {
                        prop_assert!(r.is_ok(), "{:?} refused: {:?}", w, r);
                    }
                }
            } else if let Some(w) = send(me, a) {
                out.push(w);
            }
            if callee.must_answer_cancel() {
                callee.send_error().unwrap();
                to_opener.push(Wire::Abort);
            }
        }
        // Drain, then finish both halves the way an engine would.
        for _ in 0..4 {
            for w in std::mem::take(&mut to_callee) {
                if let Some(r) = deliver(&mut callee, w) { prop_assert!(r.is_ok()); }
            }
            if callee.must_answer_cancel() || callee.can_send() {
                if callee.must_answer_cancel() { callee.send_error().unwrap(); to_opener.push(Wire::Abort); }
                else { callee.send_end(false).unwrap(); to_opener.push(Wire::End(false)); }
            }
            for w in std::mem::take(&mut to_opener) {
                if let Some(r) = deliver(&mut opener, w) { prop_assert!(r.is_ok()); }
            }
            if opener.can_send() {
                opener.send_end(false).unwrap();
                to_callee.push(Wire::End(false));
            }
        }
        prop_assert!(opener.is_finished(), "{:?}", opener);
        prop_assert!(callee.is_finished(), "{:?}", callee);
    }

    /// Any StreamData sequence number other than the next one (gap, duplicate, reorder) is
    /// refused and changes nothing.
    #[test]
    fn wrong_sequence_numbers_are_refused(n in 0u32..20, got in any::<u32>()) {
        let mut s = Stream::new(Role::Callee, false);
        for i in 0..n {
            s.recv_data(i, false).unwrap();
        }
        let before = s.clone();
        if got == n {
            prop_assert!(s.recv_data(got, false).is_ok());
        } else {
            prop_assert_eq!(
                s.recv_data(got, false),
                Err(StreamError::Sequence { expected: n, got })
            );
            prop_assert_eq!(s, before);
        }
    }

    /// Window arithmetic against an i128 model, with increments and consumptions drawn from
    /// the edges of u32: a frame is accepted while the credit is positive, the credit never
    /// exceeds 2^31 - 1 and never falls below -(2^32 - 1), a refused operation changes nothing.
    #[test]
    fn window_arithmetic_matches_a_wide_model(
        initial in edge(),
        ops in prop::collection::vec((any::<bool>(), edge()), 0..40),
    ) {
        let mut w = Window::new(initial);
        let mut model = (initial as i128).min(MAX_WINDOW as i128);
        prop_assert_eq!(w.credit() as i128, model);
        for (grant, n) in ops {
            if grant {
                let ok = n != 0 && model + n as i128 <= MAX_WINDOW as i128;
                prop_assert_eq!(w.grant(n).is_ok(), ok);
                if ok { model += n as i128; }
            } else {
                let ok = n == 0 || model > 0;
                prop_assert_eq!(w.consume(n).is_ok(), ok);
                if ok { model -= n as i128; }
            }
            prop_assert_eq!(w.credit() as i128, model);
            prop_assert!(w.credit() <= MAX_WINDOW as i64);
            prop_assert!(w.credit() > -(u32::MAX as i64) - 1);
            prop_assert_eq!(w.available() as i128, model.max(0));
            prop_assert_eq!(w.is_open(), model > 0);
        }
    }

    /// The receiver's update policy restores the target (in steps of at most u32::MAX) and
    /// never overflows.
    #[test]
    fn update_due_restores_the_target(target in edge(), used in prop::collection::vec(edge(), 0..3)) {
        let mut w = Window::new(target);
        for n in used {
            let _ = w.consume(n);
        }
        let target_c = target.min(MAX_WINDOW) as i64;
        for _ in 0..3 {
            match w.update_due(target) {
                Some(inc) => {
                    prop_assert!(w.credit() <= target_c / 2);
                    w.grant(inc).unwrap();
                    prop_assert!(w.credit() <= target_c);
                }
                None => prop_assert!(w.credit() > target_c / 2 || w.credit() == target_c),
            }
        }
        prop_assert!(w.update_due(target).is_none());
        prop_assert!(w.credit() >= target_c / 2);
    }

    /// Stream and connection windows are consumed together or not at all.
    #[test]
    fn consume_both_is_all_or_nothing(s in edge(), c in edge(), pre in edge(), n in edge()) {
        let (mut sw, mut cw) = (Window::new(s), Window::new(c));
        let _ = sw.consume(pre);
        let (s0, c0) = (sw.credit(), cw.credit());
        match consume_both(&mut sw, &mut cw, n) {
            Ok(()) => {
                prop_assert!(n == 0 || (s0 > 0 && c0 > 0));
                prop_assert_eq!(sw.credit(), s0 - n as i64);
                prop_assert_eq!(cw.credit(), c0 - n as i64);
            }
            Err(StreamError::FlowControl { wanted, .. }) => {
                prop_assert_eq!(wanted, n);
                prop_assert!(n > 0 && (s0 <= 0 || c0 <= 0));
                prop_assert_eq!((sw.credit(), cw.credit()), (s0, c0));
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// Stream frames (StreamOpen, StreamData with any sequence number, StreamEnd OK or with an
    /// ErrorBody, WindowUpdate with any credit) survive encode -> decode, field for field.
    #[test]
    fn stream_frames_round_trip(
        id in 1u32..,
        seq in any::<u32>(),
        credit in 1u32..=MAX_WINDOW,
        end in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
        status in 1u16..=16,
    ) {
        let limits = Limits::default();
        let mut batch = BatchEncoder::new(limits);
        let e = if end { Flags::END_STREAM } else { Flags::empty() };
        batch.frame(FrameKind::StreamOpen, id).unwrap().flags(e).arg(250_000).payload(&payload).finish().unwrap();
        batch.frame(FrameKind::StreamData, id).unwrap().flags(e).arg(seq).payload(&payload).finish().unwrap();
        batch.frame(FrameKind::StreamEnd, id).unwrap().finish().unwrap();
        control::ControlEncoder::new()
            .stream_end_error(&mut batch, id, netron_codec::StatusCode::from_u16(status), "boom")
            .unwrap();
        batch.empty_frame(FrameKind::WindowUpdate, id, credit).unwrap();
        let frames: Vec<_> = FrameIter::new(batch.as_slice(), &limits).map(Result::unwrap).collect();
        prop_assert_eq!(frames.len(), 5);
        prop_assert_eq!(frames[0].kind(), FrameKind::StreamOpen);
        prop_assert_eq!(frames[0].flags().contains(Flags::END_STREAM), end);
        prop_assert_eq!(frames[0].payload(), &payload[..]);
        prop_assert_eq!((frames[1].kind(), frames[1].id(), frames[1].arg()), (FrameKind::StreamData, id, seq));
        prop_assert_eq!(frames[1].payload(), &payload[..]);
        prop_assert!(control::read_stream_end(&frames[2]).unwrap().is_none());
        let body = control::read_stream_end(&frames[3]).unwrap().unwrap();
        prop_assert_eq!(body.status().0, status);
        prop_assert_eq!((frames[4].kind(), frames[4].id(), frames[4].arg()), (FrameKind::WindowUpdate, id, credit));
    }
}

fn edge() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(MAX_WINDOW - 1),
        Just(MAX_WINDOW),
        Just(MAX_WINDOW + 1),
        Just(u32::MAX - 1),
        Just(u32::MAX),
        Just(65_535),
        Just(256 << 10),
        any::<u32>(),
    ]
}

#[test]
fn data_after_end_and_cross_role_frames_are_refused() {
    let mut callee = Stream::new(Role::Callee, true);
    assert_eq!(
        callee.recv_data(0, false),
        Err(StreamError::HalfClosed {
            frame: "StreamData"
        })
    );
    assert_eq!(
        callee.recv_end(false),
        Err(StreamError::HalfClosed { frame: "StreamEnd" })
    );
    assert!(matches!(
        callee.recv_error(),
        Err(StreamError::WrongDirection { .. })
    ));
    // A Cancel after the opener's last message is allowed.
    assert_eq!(callee.recv_cancel(), Ok(Received::Cancelled));
    let mut opener = Stream::new(Role::Opener, false);
    assert!(matches!(
        opener.recv_cancel(),
        Err(StreamError::WrongDirection { .. })
    ));
    opener.recv_end(false).unwrap();
    assert_eq!(
        opener.recv_error(),
        Err(StreamError::HalfClosed { frame: "Error" })
    );
    assert_eq!(StreamError::ZeroIncrement.counter(), "zero_window_update");
    assert_eq!(
        StreamError::FlowControl {
            wanted: 1,
            available: 0
        }
        .status(),
        netron_codec::StatusCode::ResourceExhausted
    );
}

#[test]
fn initial_windows() {
    assert_eq!(CONNECTION_WINDOW_FACTOR, 16);
    assert_eq!(initial_connection_window(262_144), 4_194_304);
    assert_eq!(Window::new(u32::MAX).available(), MAX_WINDOW);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A client stream over the wire, with the codec alone: the opener sends messages of
    /// random sizes (up to four times the window) whenever its stream and connection credit
    /// are positive; the callee reads them from the bytes, checks sequence numbers and credit
    /// with its own copies, "consumes" them in random bursts and grants credit back with
    /// WindowUpdate frames decoded by the opener. Nothing is refused, every message arrives in
    /// order, the opener never stalls forever, and the callee never buffers more than its
    /// window plus one frame.
    #[test]
    fn flow_controlled_stream_over_the_wire(
        window in 1u32..4096,
        sizes in prop::collection::vec(0usize..16_384, 1..40),
        bursts in prop::collection::vec(0usize..4, 1..40),
    ) {
        let limits = Limits::default();
        let conn_window = initial_connection_window(window);
        let (mut tx_stream, mut tx_conn) = (Window::new(window), Window::new(conn_window));
        let (mut rx_stream, mut rx_conn) = (Window::new(window), Window::new(conn_window));
        let mut opener = Stream::new(Role::Opener, false);
        let mut callee = Stream::new(Role::Callee, false);
        let mut to_callee = BatchEncoder::new(limits);
        let mut to_opener = BatchEncoder::new(limits);
        let mut buffered: Vec<Vec<u8>> = Vec::new();
        let mut buffered_bytes = 0u64;
        let mut delivered = 0usize;
        let mut next = 0usize;
        let mut burst = bursts.iter().cycle();
        for round in 0..10_000 {
            // Opener: send while both credits are positive.
            while next < sizes.len() && tx_stream.is_open() && tx_conn.is_open() {
                let payload = vec![next as u8; sizes[next]];
                consume_both(&mut tx_stream, &mut tx_conn, payload.len() as u32).unwrap();
                let end = next + 1 == sizes.len();
                let seq = opener.send_data(end).unwrap();
                let flags = if end { Flags::END_STREAM } else { Flags::empty() };
                to_callee.frame(FrameKind::StreamData, 1).unwrap().flags(flags).arg(seq).payload(&payload).finish().unwrap();
                next += 1;
            }
            // Callee: read what arrived, check it against its own copies.
            for f in FrameIter::new(to_callee.as_slice(), &limits) {
                let f = f.unwrap();
                let n = f.payload().len() as u32;
                consume_both(&mut rx_stream, &mut rx_conn, n).expect("the opener respected the credit");
                callee.recv_data(f.arg(), f.flags().contains(Flags::END_STREAM)).unwrap();
                buffered_bytes += n as u64;
                buffered.push(f.payload().to_vec());
            }
            to_callee.clear();
            prop_assert!(buffered_bytes < window as u64 + limits.max_frame_size as u64);
            // The application consumes a burst (at least one message every fourth round, so it
            // never stops reading for good), then the callee grants credit back.
            let n = *burst.next().unwrap();
            let n = if round % 4 == 3 { n.max(1) } else { n };
            for _ in 0..n {
                if buffered.is_empty() { break; }
                let m = buffered.remove(0);
                prop_assert!(m.iter().all(|&b| b == delivered as u8));
                prop_assert_eq!(m.len(), sizes[delivered]);
                buffered_bytes -= m.len() as u64;
                delivered += 1;
            }
            if let Some(inc) = rx_stream.update_due(window) {
                rx_stream.grant(inc).unwrap();
                to_opener.empty_frame(FrameKind::WindowUpdate, 1, inc).unwrap();
            }
            if let Some(inc) = rx_conn.update_due(conn_window) {
                rx_conn.grant(inc).unwrap();
                to_opener.empty_frame(FrameKind::WindowUpdate, 0, inc).unwrap();
            }
            for f in FrameIter::new(to_opener.as_slice(), &limits) {
                let f = f.unwrap();
                let w = if f.id() == 0 { &mut tx_conn } else { &mut tx_stream };
                w.grant(f.arg()).unwrap();
            }
            to_opener.clear();
            prop_assert_eq!(tx_stream, rx_stream);
            prop_assert_eq!(tx_conn, rx_conn);
            if delivered == sizes.len() {
                break;
            }
        }
        prop_assert_eq!(delivered, sizes.len(), "the stream stalled");
        prop_assert!(!callee.can_receive());
    }
}
