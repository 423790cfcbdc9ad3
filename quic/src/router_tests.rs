//! The router alone: a fake set of QUIC streams, no sockets, no QUIC.

use std::collections::{HashMap, HashSet};

use netron_codec::control::read_error;
use netron_codec::handshake::PREFACE;
use netron_codec::{Flags, Frame, FrameHeader, FrameKind, HEADER_LEN, Limits, StatusCode};

use super::{CANCELLED, Router, StreamIo};

/// Streams as byte logs. `limit`: streams that may be opened; `credit`: bytes flow control
/// takes until the test gives more (as QUIC's windows: each write spends it, and a write with
/// none left takes 0 bytes).
#[derive(Debug, Default)]
struct Fake {
    next: u64,
    limit: u64,
    credit: Option<usize>,
    written: HashMap<u64, Vec<u8>>,
    fins: Vec<u64>,
    stops: Vec<(u64, u64)>,
    resets: Vec<(u64, u64)>,
    stopped: HashSet<u64>,
    /// Streams a write found without credit (quinn-proto wakes these with `Writable`).
    blocked: HashSet<u64>,
    /// Unidirectional streams that may still be opened, and how many were.
    uni_limit: u64,
    next_uni: u64,
}

impl Fake {
    fn new() -> Self {
        Self {
            limit: 100,
            uni_limit: 3,
            ..Self::default()
        }
    }
    fn on(&self, s: u64) -> &[u8] {
        self.written.get(&s).map_or(&[], Vec::as_slice)
    }
}

impl StreamIo for Fake {
    type Stream = u64;
    fn open_bi(&mut self) -> Option<u64> {
        if self.next >= self.limit {
            return None;
        }
        self.next += 1;
        Some((self.next - 1) * 4)
    }
    fn open_uni(&mut self) -> Option<u64> {
        if self.uni_limit == 0 {
            return None;
        }
        self.uni_limit -= 1;
        self.next_uni += 1;
        // Client-initiated unidirectional stream ids: 2, 6, 10, ...
        Some((self.next_uni - 1) * 4 + 2)
    }
    fn write(&mut self, s: u64, bytes: &[u8]) -> Option<usize> {
        if self.stopped.contains(&s) {
            return None;
        }
        assert!(!self.fins.contains(&s), "write after FIN on {s}");
        let n = self.credit.map_or(bytes.len(), |c| c.min(bytes.len()));
        if let Some(c) = &mut self.credit {
            *c -= n;
        }
        if n == 0 && !bytes.is_empty() {
            self.blocked.insert(s);
        }
        self.written
            .entry(s)
            .or_default()
            .extend_from_slice(&bytes[..n]);
        Some(n)
    }
    fn finish(&mut self, s: u64) {
        assert!(!self.fins.contains(&s), "second FIN on {s}");
        self.fins.push(s);
    }
    fn stop(&mut self, s: u64, code: u64) {
        self.stops.push((s, code));
    }
    fn reset(&mut self, s: u64, code: u64) {
        self.resets.push((s, code));
    }
}

fn frame(kind: FrameKind, flags: Flags, id: u32, payload: &[u8]) -> Vec<u8> {
    let len = (HEADER_LEN + payload.len()) as u32;
    let mut v = FrameHeader::new(len, kind, flags, 0, id, 0)
        .as_bytes()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

fn f(kind: FrameKind, id: u32) -> Vec<u8> {
    frame(kind, Flags::empty(), id, b"")
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn kinds(delivered: &[Vec<u8>]) -> Vec<(FrameKind, u32)> {
    delivered
        .iter()
        .filter(|d| d.len() >= HEADER_LEN)
        .map(|d| {
            let fr = Frame::parse(d, &Limits::default()).expect("a whole valid frame");
            (fr.kind(), fr.id())
        })
        .collect()
}

fn client() -> Router<u64> {
    Router::new(true, &Limits::default())
}

fn server() -> Router<u64> {
    Router::new(false, &Limits::default())
}

/// A server that has received the preface and a Hello on the control stream (stream 0).
fn server_after_hello() -> Router<u64> {
    let mut r = server();
    let hello = frame(FrameKind::Hello, Flags::empty(), 0, b"x");
    r.on_bytes(0, &cat(&[&PREFACE, &hello]), false, |_| {})
        .expect("a preface and a Hello are fine");
    r
}

/// The client `c` (its control stream opened, stream 0) receives the server's Welcome.
fn welcome(c: &mut Router<u64>) {
    let w = frame(FrameKind::Welcome, Flags::empty(), 0, b"w");
    c.on_bytes(0, &w, false, |_| {}).expect("a Welcome is fine");
}

/// With QUIC 0-RTT a client's call may arrive before its Hello, and the reply before the
/// Welcome (docs/protocol.md §27.3): exchange frames wait for the handshake frame, then
/// follow it in arrival order, and a reset's made-up frame waits with them.
#[test]
fn exchange_frames_wait_for_the_handshake_frame() {
    let mut r = server();
    r.expect_control(0);
    let mut got = Vec::new();
    r.on_bytes(4, &f(FrameKind::Request, 1), false, |d| {
        got.push(d.to_vec())
    })
    .unwrap();
    r.on_bytes(8, &f(FrameKind::StreamOpen, 3), false, |d| {
        got.push(d.to_vec())
    })
    .unwrap();
    r.on_reset(8, CANCELLED, |d| got.push(d.to_vec()));
    assert!(
        got.is_empty(),
        "delivered before the Hello: {:?}",
        kinds(&got)
    );
    assert!(r.buffered_bytes() > 0, "held frames are counted");
    let hello = frame(FrameKind::Hello, Flags::empty(), 0, b"x");
    r.on_bytes(0, &cat(&[&PREFACE, &hello]), false, |d| {
        got.push(d.to_vec())
    })
    .unwrap();
    let mut frames = Vec::new();
    for d in &got[1..] {
        let mut rest = &d[..];
        while let Some(h) = netron_codec::FrameHeader::parse(rest) {
            let n = h.length() as usize;
            frames.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
    }
    assert_eq!(got[0], PREFACE.to_vec());
    assert_eq!(
        kinds(&frames),
        vec![
            (FrameKind::Hello, 0),
            (FrameKind::Request, 1),
            (FrameKind::StreamOpen, 3),
            (FrameKind::Cancel, 3)
        ]
    );
    // Only the control stream's kept buffer is left, as after a Hello alone.
    assert_eq!(r.buffered_bytes(), server_after_hello().buffered_bytes());
    // Later frames pass at once.
    let mut later = Vec::new();
    r.on_bytes(12, &f(FrameKind::Request, 5), false, |d| {
        later.push(d.to_vec())
    })
    .unwrap();
    assert_eq!(kinds(&later), vec![(FrameKind::Request, 5)]);

    // The client: a reply overtaking the Welcome waits for it.
    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &cat(&[&PREFACE, &f(FrameKind::Request, 1)]))
        .unwrap();
    let mut got = Vec::new();
    c.on_bytes(4, &f(FrameKind::Response, 1), false, |d| {
        got.push(d.to_vec())
    })
    .unwrap();
    assert!(got.is_empty());
    let w = frame(FrameKind::Welcome, Flags::empty(), 0, b"w");
    c.on_bytes(0, &w, false, |d| got.push(d.to_vec())).unwrap();
    assert_eq!(
        kinds(&got),
        vec![(FrameKind::Welcome, 0), (FrameKind::Response, 1)]
    );
}

#[test]
fn the_client_puts_connection_frames_on_control_and_each_call_on_its_own_stream() {
    let mut io = Fake::new();
    let mut r = client();
    let hello = frame(FrameKind::Hello, Flags::empty(), 0, b"hi");
    let batch = cat(&[
        &PREFACE,
        &hello,
        &f(FrameKind::Request, 1),
        &f(FrameKind::Request, 3),
        &f(FrameKind::Ping, 0),
    ]);
    r.send(&mut io, &batch).expect("routable");
    assert_eq!(io.on(0), cat(&[&PREFACE, &hello, &f(FrameKind::Ping, 0)]));
    assert_eq!(io.on(4), f(FrameKind::Request, 1));
    assert_eq!(io.on(8), f(FrameKind::Request, 3));
    assert_eq!(
        io.fins,
        vec![4, 8],
        "each caller's half ends after its Request"
    );
    assert_eq!(r.stats().opened, 2);
    assert_eq!(r.open_streams(), 2);
}

#[test]
fn the_preface_may_be_cut_anywhere_on_both_sides() {
    let mut io = Fake::new();
    let mut r = client();
    r.send(&mut io, &PREFACE[..3]).unwrap();
    r.send(&mut io, &cat(&[&PREFACE[3..], &f(FrameKind::Ping, 0)]))
        .unwrap();
    assert_eq!(io.on(0), cat(&[&PREFACE, &f(FrameKind::Ping, 0)]));

    let mut s = server();
    let mut got = Vec::new();
    s.on_bytes(0, &PREFACE[..5], false, |b| got.push(b.to_vec()))
        .unwrap();
    assert!(got.is_empty(), "a partial preface is held");
    s.on_bytes(0, &PREFACE[5..], false, |b| got.push(b.to_vec()))
        .unwrap();
    assert_eq!(got, vec![PREFACE.to_vec()]);
}

#[test]
fn a_callee_answers_on_the_callers_stream_and_finishes_it() {
    let mut io = Fake::new();
    let mut r = server_after_hello();
    let mut got = Vec::new();
    r.on_bytes(4, &f(FrameKind::Request, 1), true, |b| got.push(b.to_vec()))
        .unwrap();
    assert_eq!(kinds(&got), vec![(FrameKind::Request, 1)]);
    assert_eq!(r.stats().accepted, 1);
    r.send(&mut io, &f(FrameKind::Response, 1)).unwrap();
    assert_eq!(io.on(4), f(FrameKind::Response, 1));
    assert_eq!(io.fins, vec![4]);
    assert_eq!(
        r.open_streams(),
        0,
        "both halves ended: the stream is forgotten"
    );
    // A frame for the finished exchange is dropped, not written.
    r.send(&mut io, &f(FrameKind::Response, 1)).unwrap();
    assert_eq!(r.stats().dropped, 1);
}

#[test]
fn frames_cut_at_every_byte_are_delivered_whole_and_in_order() {
    let mut r = server_after_hello();
    let open = frame(FrameKind::StreamOpen, Flags::empty(), 1, b"open");
    let data = frame(FrameKind::StreamData, Flags::END_STREAM, 1, b"data!");
    let bytes = cat(&[&open, &data]);
    let mut got = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        let fin = i + 1 == bytes.len();
        r.on_bytes(4, std::slice::from_ref(b), fin, |d| got.push(d.to_vec()))
            .unwrap();
    }
    assert_eq!(got, vec![open, data]);
}

#[test]
fn a_partial_frame_is_dated_by_its_first_byte_and_forgotten_when_whole() {
    // The link cuts off a frame not completed within the stall timeout of its first byte
    // (the router holds partial frames, so the connection's own stall clock never sees them).
    use std::time::{Duration, Instant};
    let mut r = server_after_hello();
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let open = frame(FrameKind::StreamOpen, Flags::empty(), 1, b"open");
    let data = frame(FrameKind::StreamData, Flags::empty(), 1, b"data!");
    assert_eq!(r.oldest_partial(), None);
    // Half of a frame at 0 ms, the rest of it trickled until 50 ms: dated 0 ms throughout.
    r.set_now(at(0));
    r.on_bytes(4, &open[..5], false, |_| {}).unwrap();
    assert!(r.take_partial_started());
    assert!(!r.take_partial_started(), "taken");
    r.set_now(at(50));
    r.on_bytes(4, &open[5..9], false, |_| {}).unwrap();
    assert!(!r.take_partial_started(), "the same frame still");
    assert_eq!(
        r.oldest_partial(),
        Some((at(0), HEADER_LEN - 9)),
        "the header first"
    );
    // Completed together with the start of the next frame at 80 ms: that one is dated 80 ms.
    r.set_now(at(80));
    let rest = cat(&[&open[9..], &data[..3]]);
    r.on_bytes(4, &rest, false, |_| {}).unwrap();
    assert!(r.take_partial_started());
    assert_eq!(r.oldest_partial(), Some((at(80), HEADER_LEN - 3)));
    // An older partial frame on another stream is the oldest.
    r.set_now(at(90));
    let other = frame(FrameKind::StreamOpen, Flags::empty(), 3, b"other");
    r.on_bytes(8, &other[..2], false, |_| {}).unwrap();
    assert_eq!(r.oldest_partial(), Some((at(80), HEADER_LEN - 3)));
    // Whole again: nothing partial on stream 4, stream 8's remains.
    r.set_now(at(100));
    r.on_bytes(4, &data[3..], false, |_| {}).unwrap();
    assert_eq!(r.oldest_partial(), Some((at(90), HEADER_LEN - 2)));
    let before = r.received_bytes();
    r.on_bytes(8, &other[2..], false, |_| {}).unwrap();
    assert_eq!(r.oldest_partial(), None);
    assert_eq!(r.received_bytes() - before, (other.len() - 2) as u64);
    // Control-stream frames (stream 0: Pings) are no progress of the peer's exchanges.
    let before = r.received_bytes();
    r.on_bytes(0, &f(FrameKind::Ping, 0), false, |_| {})
        .unwrap();
    assert_eq!(r.received_bytes(), before, "a Ping is not counted");
}

fn error_of(r: &mut Router<u64>, s: u64, bytes: &[u8]) -> &'static str {
    r.on_bytes(s, bytes, false, |_| {})
        .expect_err("a connection error")
        .counter
}

#[test]
fn rule_2_first_frame_parity_id_and_connection_kinds_are_enforced() {
    // Not an opening frame first.
    let mut r = server_after_hello();
    assert_eq!(
        error_of(&mut r, 4, &f(FrameKind::Response, 1)),
        "quic_unexpected_frame"
    );
    // The wrong parity: the client opens odd ids.
    let mut r = server_after_hello();
    assert_eq!(
        error_of(&mut r, 4, &f(FrameKind::Request, 2)),
        "quic_unexpected_frame"
    );
    // A later frame with another id.
    let mut r = server_after_hello();
    let b = cat(&[&f(FrameKind::StreamOpen, 1), &f(FrameKind::StreamData, 3)]);
    assert_eq!(error_of(&mut r, 4, &b), "quic_stream_id_mismatch");
    assert_eq!(r.stats().stream_id_mismatch, 1);
    // A connection-level kind on an exchange stream.
    let mut r = server_after_hello();
    let b = cat(&[&f(FrameKind::StreamOpen, 1), &f(FrameKind::Ping, 0)]);
    assert_eq!(error_of(&mut r, 4, &b), "quic_unexpected_frame");
    // An exchange frame on the control stream.
    let mut r = server_after_hello();
    assert_eq!(
        error_of(&mut r, 0, &f(FrameKind::Request, 1)),
        "quic_unexpected_frame"
    );
    assert_eq!(r.stats().unexpected_frame, 1);
    // On the client: a server stream must open with an even id.
    let mut c = client();
    c.send(&mut Fake::new(), &PREFACE).unwrap();
    welcome(&mut c);
    assert_eq!(
        error_of(&mut c, 1, &f(FrameKind::Subscribe, 1)),
        "quic_unexpected_frame"
    );
    let mut got = Vec::new();
    c.on_bytes(5, &f(FrameKind::Subscribe, 2), false, |d| {
        got.push(d.to_vec())
    })
    .expect("even ids are the server's");
    assert_eq!(kinds(&got), vec![(FrameKind::Subscribe, 2)]);
}

#[test]
fn a_frame_cut_by_fin_or_with_a_bad_length_is_a_connection_error() {
    let mut r = server_after_hello();
    let req = frame(FrameKind::Request, Flags::empty(), 1, b"payload");
    let err = r.on_bytes(4, &req[..20], true, |_| {}).unwrap_err();
    assert_eq!(err.counter, "quic_truncated_frame");
    let mut r = server_after_hello();
    let mut short = f(FrameKind::Request, 1);
    short[0] = 5;
    // §27.2 rule 1: the byte-stream decoder's errors, as on every transport.
    assert_eq!(error_of(&mut r, 4, &short), "length_too_short");
    let mut limits = Limits::default();
    limits.max_frame_size = 64;
    let mut r = Router::<u64>::new(false, &limits);
    r.on_bytes(0, &PREFACE, false, |_| {}).unwrap();
    let big = frame(FrameKind::Request, Flags::empty(), 1, &[0; 64]);
    let err = r
        .on_bytes(4, &big[..HEADER_LEN], false, |_| {})
        .unwrap_err();
    assert_eq!(
        err.counter, "frame_too_large",
        "refused before its bytes arrive"
    );
    assert_eq!(err.status, StatusCode::ResourceExhausted);
    assert!(err.message.contains("max_frame_size"), "{}", err.message);
}

#[test]
fn a_reset_from_the_opener_is_a_cancel_and_from_the_callee_an_unavailable_error() {
    let mut r = server_after_hello();
    r.on_bytes(4, &f(FrameKind::StreamOpen, 1), false, |_| {})
        .unwrap();
    let mut got = Vec::new();
    r.on_reset(4, CANCELLED, |d| got.push(d.to_vec()));
    assert_eq!(kinds(&got), vec![(FrameKind::Cancel, 1)]);

    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &cat(&[&PREFACE, &f(FrameKind::StreamOpen, 1)]))
        .unwrap();
    welcome(&mut c);
    let mut got = Vec::new();
    c.on_reset(4, 99, |d| got.push(d.to_vec()));
    assert_eq!(kinds(&got), vec![(FrameKind::Error, 1)]);
    let fr = Frame::parse(&got[0], &Limits::default()).unwrap();
    let body = read_error(&fr).expect("a valid ErrorBody");
    assert_eq!(
        netron_codec::control::status(body.status()),
        StatusCode::Unavailable
    );
    assert!(body.message().unwrap_or("").contains("99"));
    assert_eq!(c.stats().resets, 1);
}

#[test]
fn a_cancel_after_the_request_half_ended_stops_the_stream_and_ends_as_cancelled() {
    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &cat(&[&PREFACE, &f(FrameKind::Request, 1)]))
        .unwrap();
    c.send(&mut io, &f(FrameKind::Cancel, 1)).unwrap();
    assert_eq!(io.stops, vec![(4, CANCELLED)]);
    assert_eq!(io.on(4), f(FrameKind::Request, 1), "no frame after the FIN");
    // The reply's header blocks will not be decoded: the exchange is handed over for the
    // header decoder to cancel (§27.4), once.
    let mut abandoned = Vec::new();
    c.take_abandoned(|id| abandoned.push(id));
    c.take_abandoned(|id| abandoned.push(id));
    assert_eq!(abandoned, [1]);
    let mut got = Vec::new();
    c.take_made(|d| got.push(d.to_vec()));
    let fr = Frame::parse(&got[0], &Limits::default()).unwrap();
    let status = netron_codec::control::status(read_error(&fr).unwrap().status());
    assert_eq!(status, StatusCode::Cancelled);
    assert_eq!(c.open_streams(), 0);

    // When the Response arrived first, the reset makes up nothing.
    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &cat(&[&PREFACE, &f(FrameKind::Request, 1)]))
        .unwrap();
    c.on_bytes(4, &f(FrameKind::Response, 1), false, |_| {})
        .unwrap();
    c.send(&mut io, &f(FrameKind::Cancel, 1)).unwrap();
    let mut got = Vec::new();
    c.take_made(|d| got.push(d.to_vec()));
    c.on_reset(4, CANCELLED, |d| got.push(d.to_vec()));
    assert!(got.is_empty(), "the call already had its final frame");
}

#[test]
fn stop_sending_from_the_opener_cancels_and_later_frames_are_dropped() {
    let mut io = Fake::new();
    let mut r = server_after_hello();
    r.on_bytes(4, &f(FrameKind::Request, 1), true, |_| {})
        .unwrap();
    let mut got = Vec::new();
    io.stopped.insert(4);
    r.on_stopped(&mut io, 4, CANCELLED, |d| got.push(d.to_vec()));
    assert_eq!(kinds(&got), vec![(FrameKind::Cancel, 1)]);
    assert_eq!(
        io.resets,
        vec![(4, CANCELLED)],
        "STOP_SENDING is answered by a reset"
    );
    assert_eq!(r.open_streams(), 0);
    r.send(&mut io, &f(FrameKind::Error, 1)).unwrap();
    assert!(io.on(4).is_empty());
}

#[test]
fn stop_sending_before_the_opening_frame_still_cancels_the_exchange() {
    // A Request and the STOP_SENDING that cancels it can come in one packet, and quinn
    // applies the STOP_SENDING first: the router heard of a stream it did not know yet and
    // dropped it, so the call ran on, never cancelled (rapid reset over quic: 1,024 calls
    // started, no cancel counted).
    let mut io = Fake::new();
    let mut r = server_after_hello();
    r.on_stopped(&mut io, 4, CANCELLED, |_| panic!("nothing to deliver yet"));
    assert_eq!(
        io.resets,
        vec![(4, CANCELLED)],
        "answered by a reset at once"
    );
    let mut got = Vec::new();
    r.on_bytes(4, &f(FrameKind::Request, 1), true, |d| got.push(d.to_vec()))
        .unwrap();
    assert_eq!(
        kinds(&got),
        vec![(FrameKind::Request, 1), (FrameKind::Cancel, 1)]
    );
    assert_eq!(r.open_streams(), 0, "both halves ended");
    // The callee's answer is dropped, as after any STOP_SENDING.
    r.send(&mut io, &f(FrameKind::Error, 1)).unwrap();
    assert!(io.on(4).is_empty());
    // Another new stream is not affected.
    let mut got = Vec::new();
    r.on_bytes(8, &f(FrameKind::Request, 3), true, |d| got.push(d.to_vec()))
        .unwrap();
    assert_eq!(kinds(&got), vec![(FrameKind::Request, 3)]);
}

#[test]
fn bytes_flow_control_refuses_wait_and_the_fin_follows_them() {
    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &PREFACE).unwrap();
    io.credit = Some(10);
    let open = frame(FrameKind::StreamOpen, Flags::END_STREAM, 1, &[7; 40]);
    c.send(&mut io, &open).unwrap();
    assert!(c.pending_bytes() > 0 && c.pending_bytes() < open.len());
    assert!(io.fins.is_empty(), "no FIN before the bytes");
    while c.pending_bytes() > 0 {
        io.credit = Some(10);
        c.on_writable(&mut io, 4);
    }
    assert_eq!(io.on(4), open);
    assert_eq!(io.fins, vec![4]);
}

#[test]
fn an_exchange_waits_for_stream_credit_with_its_later_frames() {
    let mut io = Fake::new();
    io.limit = 1;
    let mut c = client();
    let open = f(FrameKind::StreamOpen, 1);
    let data = frame(FrameKind::StreamData, Flags::END_STREAM, 1, b"d");
    c.send(&mut io, &cat(&[&PREFACE, &open, &data])).unwrap();
    assert_eq!(c.pending_bytes(), open.len() + data.len());
    c.on_streams_available(&mut io);
    assert_eq!(
        c.pending_bytes(),
        open.len() + data.len(),
        "still no credit"
    );
    io.limit = 2;
    c.on_streams_available(&mut io);
    assert_eq!(io.on(4), cat(&[&open, &data]));
    assert_eq!(io.fins, vec![4]);
    assert_eq!(c.pending_bytes(), 0);
}

#[test]
fn an_id_reused_before_the_old_streams_fin_gets_a_new_stream() {
    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &cat(&[&PREFACE, &f(FrameKind::Request, 1)]))
        .unwrap();
    c.on_bytes(4, &f(FrameKind::Response, 1), false, |_| {})
        .unwrap();
    c.send(&mut io, &f(FrameKind::Request, 1)).unwrap();
    assert_eq!(io.on(8), f(FrameKind::Request, 1));
    // The old stream's FIN arrives late: the id keeps naming the new stream.
    c.on_bytes(4, &[], true, |_| {}).unwrap();
    c.send(&mut io, &f(FrameKind::Cancel, 1)).unwrap();
    assert_eq!(io.stops, vec![(8, CANCELLED)]);
    assert_eq!(
        c.open_streams(),
        0,
        "the cancelled call's stream is done too"
    );
}

#[test]
fn calls_await_the_peer_and_subscriptions_do_not() {
    // The engine's link probes a silent peer (a QUIC PING) only while `awaiting_peer`: a
    // call waits for its reply, an idle subscription may wait for events for ever and must
    // not cost a PING a second (fresh user R10's finding B).
    let mut io = Fake::new();
    let mut r = client();
    let hello = frame(FrameKind::Hello, Flags::empty(), 0, b"hi");
    r.send(
        &mut io,
        &cat(&[&PREFACE, &hello, &f(FrameKind::Subscribe, 1)]),
    )
    .expect("routable");
    assert!(!r.awaiting_peer(), "a subscription alone");
    r.send(&mut io, &f(FrameKind::Request, 3))
        .expect("routable");
    assert!(r.awaiting_peer(), "a call waits for its reply");
    let reply = frame(FrameKind::Response, Flags::END_STREAM, 3, b"ok");
    r.on_bytes(8, &reply, true, |_| {}).expect("the reply");
    assert!(!r.awaiting_peer(), "the call was answered");
}

#[test]
fn a_flush_writes_until_flow_control_takes_nothing() {
    // quinn-proto wakes a stream with `Writable` only if a write found no credit at all
    // (`Fake::blocked`), so a flush must write until QUIC takes 0 bytes: one that stopped
    // after a partial write was never woken again (a graceful shutdown's last 512 KiB reply
    // stayed held until the drain's bound).
    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &PREFACE).unwrap();
    io.credit = Some(0);
    let open = frame(FrameKind::StreamOpen, Flags::END_STREAM, 1, &[7; 100]);
    c.send(&mut io, &open).unwrap();
    assert_eq!(c.pending_bytes(), open.len());
    // Wake only what QUIC would wake, until everything went out.
    let mut credit = [40, 30, 1000].into_iter();
    while c.pending_bytes() > 0 {
        assert!(
            io.blocked.remove(&4),
            "the stream waits with bytes but QUIC would never wake it"
        );
        io.credit = credit.next();
        c.on_writable(&mut io, 4);
    }
    assert_eq!(io.on(4), open);
    assert_eq!(io.fins, vec![4]);
}

#[test]
fn ending_the_control_stream_queues_its_fin_after_its_bytes_once() {
    let mut io = Fake::new();
    let mut c = client();
    assert!(
        !c.end_control(&mut io),
        "no control stream yet: nothing to wait for"
    );
    let hello = frame(FrameKind::Hello, Flags::empty(), 0, b"hi");
    c.send(&mut io, &cat(&[&PREFACE, &hello])).unwrap();
    io.credit = Some(5);
    let error0 = frame(FrameKind::Error, Flags::empty(), 0, &[1; 30]);
    c.send(&mut io, &error0).unwrap();
    assert!(c.pending_bytes() > 0);
    assert_eq!(c.control_stream(), Some(0));
    assert!(c.end_control(&mut io), "a FIN is queued");
    assert!(io.fins.is_empty(), "not before the Error(0)'s bytes");
    while c.pending_bytes() > 0 {
        io.credit = Some(5);
        c.on_writable(&mut io, 0);
    }
    assert_eq!(io.on(0), cat(&[&PREFACE, &hello, &error0]));
    assert_eq!(io.fins, vec![0]);
    assert!(!c.end_control(&mut io), "a second end queues nothing");
    assert_eq!(io.fins, vec![0]);
}

#[test]
fn unended_sends_count_exchange_halves_still_open() {
    let mut io = Fake::new();
    let mut c = client();
    c.send(&mut io, &PREFACE).unwrap();
    // A call's half ends with its Request; a stream's half stays open until END_STREAM.
    c.send(&mut io, &f(FrameKind::Request, 1)).unwrap();
    c.send(&mut io, &f(FrameKind::StreamOpen, 3)).unwrap();
    assert_eq!(c.unended_sends(), 1);
    c.send(
        &mut io,
        &frame(FrameKind::StreamData, Flags::END_STREAM, 3, b"x"),
    )
    .unwrap();
    assert_eq!(c.unended_sends(), 0);
}

#[test]
fn partial_frames_are_counted_in_buffered_bytes_until_delivered_or_reset() {
    let mut r = server_after_hello();
    let base = r.buffered_bytes();
    let big = frame(FrameKind::Request, Flags::empty(), 1, &[9; 200 << 10]);
    let small = frame(FrameKind::Request, Flags::empty(), 3, &[9; 100]);
    r.on_bytes(4, &big[..150 << 10], false, |_| {}).unwrap();
    r.on_bytes(8, &small[..50], false, |_| {}).unwrap();
    assert!(
        r.buffered_bytes() >= base + (150 << 10) + 50,
        "both partial frames are held: {}",
        r.buffered_bytes()
    );
    let mut got = 0;
    r.on_bytes(4, &big[150 << 10..], false, |_| got += 1)
        .unwrap();
    assert_eq!(got, 1);
    assert!(
        r.buffered_bytes() < base + (64 << 10) + 200,
        "the large frame's buffer is freed once delivered: {}",
        r.buffered_bytes()
    );
    r.on_reset(8, CANCELLED, |_| {});
    r.on_bytes(4, &[], true, |_| {}).unwrap();
    assert_eq!(r.buffered_bytes(), base, "a reset stream holds nothing");
    // A call whose Request came whole in pieces keeps no buffer while it waits for its
    // reply (its peer sends nothing more on the stream).
    let call = frame(FrameKind::Request, Flags::empty(), 5, &[1; 1000]);
    r.on_bytes(12, &call[..500], false, |_| {}).unwrap();
    r.on_bytes(12, &call[500..], false, |_| {}).unwrap();
    assert_eq!(
        r.buffered_bytes(),
        base,
        "nothing kept for a call waiting for its reply"
    );
}

#[path = "router_buffer_tests.rs"]
mod buffers;

/// Our header streams (§27.4): opened on first use as unidirectional streams, their type byte
/// first, bytes flow control does not take kept (and counted as pending) until the stream is
/// writable; a connection whose peer allows no unidirectional stream yet opens them when it
/// does.
#[test]
fn header_streams_open_on_first_use_with_their_type_byte() {
    let mut io = Fake::new();
    let mut r = client();
    r.send_header_streams(&mut io, &[0xc0, 0x01, b'x'], &[]);
    assert_eq!(io.on(2), [0x02, 0xc0, 0x01, b'x']);
    assert_eq!(r.pending_bytes(), 0);
    assert_eq!(r.unended_sends(), 1, "a header stream never ends");
    // Flow control takes 2 bytes of the decoder stream's 4: the rest waits for Writable.
    io.credit = Some(2);
    r.send_header_streams(&mut io, &[], &[0x01, 0x81, 0x83]);
    assert_eq!(io.on(6), [0x03, 0x01]);
    assert_eq!(r.pending_bytes(), 2);
    io.credit = None;
    r.on_writable(&mut io, 6);
    assert_eq!(io.on(6), [0x03, 0x01, 0x81, 0x83]);
    assert_eq!(r.pending_bytes(), 0);

    // No unidirectional stream allowed yet: kept, then opened when the peer allows it.
    let mut io = Fake::new();
    io.uni_limit = 0;
    let mut r = client();
    r.send_header_streams(&mut io, &[0xc1, 0x00], &[]);
    assert_eq!(r.pending_bytes(), 3);
    io.uni_limit = 1;
    r.on_streams_available(&mut io);
    assert_eq!(io.on(2), [0x02, 0xc1, 0x00]);
    assert_eq!(r.pending_bytes(), 0);
}

/// The peer's header streams: recognised by their type byte (which may come alone), their
/// bytes delivered without it; a second stream of a type, or one that ends or is reset, is
/// `quic_critical_stream`; a stream of another type is read and dropped.
#[test]
fn the_peers_header_streams_are_critical() {
    use crate::header_streams::HeaderStream;
    let mut r = server();
    let mut got: Vec<(HeaderStream, Vec<u8>)> = Vec::new();
    r.on_uni_bytes(2, &[0x02], false, |w, b| got.push((w, b.to_vec())))
        .unwrap();
    r.on_uni_bytes(2, &[0xc0, 0x01], false, |w, b| got.push((w, b.to_vec())))
        .unwrap();
    r.on_uni_bytes(6, &[0x03, 0x81], false, |w, b| got.push((w, b.to_vec())))
        .unwrap();
    // Another type: dropped, ending it is no error.
    r.on_uni_bytes(10, &[0x21, 1, 2, 3], false, |w, b| {
        got.push((w, b.to_vec()))
    })
    .unwrap();
    r.on_uni_bytes(10, &[4], true, |w, b| got.push((w, b.to_vec())))
        .unwrap();
    assert_eq!(
        got,
        [
            (HeaderStream::Encoder, vec![0xc0, 0x01]),
            (HeaderStream::Decoder, vec![0x81]),
        ]
    );
    let e = r
        .on_uni_bytes(14, &[0x02, 0xc0], false, |_, _| {})
        .unwrap_err();
    assert_eq!(e.counter, "quic_critical_stream");
    assert_eq!(e.status, StatusCode::Internal);
    let e = r.on_uni_bytes(6, &[], true, |_, _| {}).unwrap_err();
    assert_eq!(e.counter, "quic_critical_stream");
    let e = r.on_uni_closed(2).unwrap_err();
    assert_eq!(e.counter, "quic_critical_stream");
    // Unidirectional bytes are no progress for a partial frame.
    assert_eq!(r.received_bytes(), 0);
}

/// A reset that cuts a frame of an exchange off names the exchange (its header block is
/// lost: the connection's decoder cancels it, §27.4); one between frames names none.
#[test]
fn a_reset_names_the_exchange_whose_frames_it_may_have_cut() {
    let mut r = server_after_hello();
    let req = f(FrameKind::Request, 1);
    let mut got = Vec::new();
    r.on_bytes(4, &req, false, |d| got.push(d.to_vec()))
        .unwrap();
    assert_eq!(r.on_reset(4, CANCELLED, |_| {}), None);
    let req = frame(FrameKind::StreamOpen, Flags::empty(), 3, &[1, 2, 3]);
    r.on_bytes(8, &req[..req.len() - 1], false, |_| {}).unwrap();
    assert_eq!(r.on_reset(8, CANCELLED, |_| {}), Some(3));
    // Whole frames, but the peer's half had not ended: later frames may be lost.
    let open = frame(FrameKind::StreamOpen, Flags::empty(), 5, &[1]);
    r.on_bytes(12, &open, false, |_| {}).unwrap();
    assert_eq!(r.on_reset(12, CANCELLED, |_| {}), Some(5));
}
