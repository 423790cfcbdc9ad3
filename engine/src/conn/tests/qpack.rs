//! Header compression on `quic://` (docs/protocol.md §27.4 (c)): two connections configured
//! for QUIC, their header streams carried by hand, so a test decides whether a header block
//! arrives before or after the insertions it needs.

use super::*;
use netron_codec::qpack::HeaderStream;

fn quic_pair(cfg: ConnConfig) -> Pair {
    let mut p = Pair::with(cfg.for_quic(false));
    p.pump(usize::MAX);
    assert!(p.client.is_open() && p.server.is_open());
    p
}

/// Both connections' header streams, as their links would take them.
fn take_streams(c: &mut Connection<Arc<Completion>>) -> (Vec<u8>, Vec<u8>) {
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    c.take_header_streams(&mut enc, &mut dec);
    (enc, dec)
}

impl Pair {
    /// Moves the header streams both ways (encoder stream first, as the link writes it).
    fn pump_header_streams(&mut self) {
        let (enc, dec) = take_streams(&mut self.client);
        let mut env = conn_env!(self);
        self.server
            .on_header_stream(HeaderStream::Encoder, &enc, &mut env)
            .unwrap();
        self.server
            .on_header_stream(HeaderStream::Decoder, &dec, &mut env)
            .unwrap();
        let (enc, dec) = take_streams(&mut self.server);
        let mut env = conn_env!(self);
        self.client
            .on_header_stream(HeaderStream::Encoder, &enc, &mut env)
            .unwrap();
        self.client
            .on_header_stream(HeaderStream::Decoder, &dec, &mut env)
            .unwrap();
    }

    /// A call with the header streams carried before the frames each round (the order the
    /// link writes them in).
    fn quic_call(&mut self, method: &[u8], payload: &[u8]) -> Result<Vec<u8>, Status> {
        let slot = Arc::new(Completion::new());
        assert!(slot.arm());
        let spec = CallSpec {
            deadline: Some(Duration::from_secs(1)),
            ..Pair::spec(method, payload)
        };
        self.client.start_call(&spec, slot.clone(), self.now)?;
        for _ in 0..10 {
            self.pump_header_streams();
            self.pump(usize::MAX);
        }
        self.pump_header_streams();
        assert!(slot.is_done(), "no reply");
        slot.result().unwrap().map(<[u8]>::to_vec)
    }
}

/// The header block of the one frame in `batch`.
fn block_len(batch: &[u8]) -> usize {
    let f = netron_codec::FrameIter::new(batch, &netron_codec::Limits::default())
        .next()
        .unwrap()
        .unwrap();
    f.header_block().len()
}

/// Steady-state requests reference the dynamic table: a 4-byte block (the two-byte prefix
/// and one byte per field, §27.4) and nothing on the encoder stream, where the static table
/// and literals alone (header_table_size 0, §27.4 (a)) repeat `calc@1.2.0` and `add` in every
/// request.
/// A `quic://` connection in `role` on its own (the test configuration's QPACK settings).
fn quic_conn(role: Role, now: Instant) -> Connection<Arc<Completion>> {
    Connection::new(role, &std::rc::Rc::new(test_cfg().for_quic(false)), now)
}

/// The registry and counters the events of connections made with [`quic_conn`] borrow.
struct World {
    registry: Registry,
    stats: CoreStats,
}

impl World {
    fn new() -> Self {
        Self {
            registry: registry(),
            stats: CoreStats::default(),
        }
    }

    fn env(&mut self, now: Instant) -> Env<'_> {
        Env {
            registry: &self.registry,
            now,
            stats: &mut self.stats,
            origin: None,
        }
    }
}

#[test]
fn steady_state_requests_carry_one_byte_per_field() {
    let mut p = quic_pair(test_cfg());
    assert_eq!(p.quic_call(b"add", &[2, 3]).unwrap(), vec![5]);
    assert_eq!(p.quic_call(b"echo", b"hi").unwrap(), b"hi");
    for i in 0..5u8 {
        let slot = Arc::new(Completion::new());
        assert!(slot.arm());
        p.client
            .start_call(&Pair::spec(b"add", &[i, 1]), slot.clone(), p.now)
            .unwrap();
        let (batch, _) = p.client.poll_transmit().unwrap();
        assert_eq!(block_len(&batch), 4, "call {i}");
        let (enc, _) = take_streams(&mut p.client);
        assert!(
            enc.is_empty(),
            "no insertion once the table holds the fields"
        );
        let mut env = conn_env!(p);
        p.server.handle_input(&batch, &mut env).unwrap();
        p.pump(usize::MAX);
        p.pump_header_streams();
        assert_eq!(slot.result().unwrap().unwrap(), vec![i + 1]);
    }

    // The same request without a dynamic table.
    let mut cfg = test_cfg();
    cfg.client.header_table_size = 0;
    let mut p0 = quic_pair(cfg);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    p0.client
        .start_call(&Pair::spec(b"add", &[1, 1]), slot, p0.now)
        .unwrap();
    let (batch, _) = p0.client.poll_transmit().unwrap();
    assert!(block_len(&batch) > 15, "literals: {}", block_len(&batch));
    assert!(!p0.client.header_streams_want_write());
}

/// A block that overtakes its insertions (they travel on another QUIC stream) waits, with
/// the frames of its exchange behind it, and goes on once they arrive; nothing is lost or
/// reordered, and the decoder acknowledges it.
#[test]
fn a_block_that_overtakes_its_insertions_waits_for_them() {
    let mut p = quic_pair(test_cfg());
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    p.client
        .start_call(&Pair::spec(b"echo", b"first"), slot.clone(), p.now)
        .unwrap();
    let (batch, _) = p.client.poll_transmit().unwrap();
    let mut env = conn_env!(p);
    p.server.handle_input(&batch, &mut env).unwrap();
    assert_eq!(p.server.dec.held_exchanges(), 1, "the request waits");
    assert!(p.server.poll_transmit().is_none(), "not answered yet");
    assert!(p.server.charged > 0, "held bytes are charged");
    // Its insertions arrive: the request is served.
    p.pump_header_streams();
    assert_eq!(p.server.dec.held_exchanges(), 0);
    p.pump(usize::MAX);
    assert_eq!(slot.result().unwrap().unwrap(), b"first");
    // The server's decoder acknowledged the block: the client's encoder may now reference
    // those entries without blocking anyone.
    p.pump_header_streams();
    assert_eq!(p.quic_call(b"echo", b"second").unwrap(), b"second");
    assert_eq!(p.stats.errors_of("qpack_blocked_streams"), 0);
}

/// A malformed encoder-stream instruction is a connection error with its `qpack_*` counter,
/// an Error(0) first (§21.3's table); a decoder-stream acknowledgement of nothing too.
#[test]
fn bad_header_instructions_are_connection_errors() {
    // Set Dynamic Table Capacity above the negotiated 4096 (001ccccc, 5-bit prefix).
    let mut p = quic_pair(test_cfg());
    let mut env = conn_env!(p);
    let e = p
        .server
        .on_header_stream(HeaderStream::Encoder, &[0x3f, 0xe1, 0xff, 0x03], &mut env)
        .unwrap_err();
    assert_eq!(e.counter, "qpack_capacity_too_large");
    assert!(p.server.is_closing());
    assert_eq!(p.stats.errors_of("qpack_capacity_too_large"), 1);
    let (out, _) = p.server.poll_transmit().unwrap();
    let f = netron_codec::FrameIter::new(&out, &netron_codec::Limits::default())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((f.kind(), f.id()), (FrameKind::Error, 0));

    // A Section Acknowledgment for exchange 5, which carried no block.
    let mut p = quic_pair(test_cfg());
    let mut env = conn_env!(p);
    let e = p
        .client
        .on_header_stream(HeaderStream::Decoder, &[0x85], &mut env)
        .unwrap_err();
    assert_eq!(e.counter, "qpack_unexpected_ack");
    assert!(p.client.is_closing());
}

/// Held frames share the core's buffer budget with partial frames: one that does not fit is
/// refused naming `max_buffer_bytes`, not kept.
#[test]
fn held_frames_are_charged_to_the_buffer_budget() {
    let cfg = ConnConfig::new(
        &crate::ProtocolConfig::default()
            .with_keepalive(Duration::ZERO, Duration::from_secs(1))
            .with_max_buffer_bytes(64 << 10),
    );
    let mut p = quic_pair(cfg);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    // Bytes that do not compress (a compressed request would be small).
    let big = incompressible(100 << 10);
    p.client
        .start_call(&Pair::spec(b"echo", &big), slot, p.now)
        .unwrap();
    let (batch, _) = p.client.poll_transmit().unwrap();
    let mut env = conn_env!(p);
    let e = p.server.handle_input(&batch, &mut env).unwrap_err();
    assert_eq!(e.counter, "buffer_budget");
    assert!(e.message.contains("max_buffer_bytes"), "{}", e.message);
    assert_eq!(p.server.dec.held_exchanges(), 0);
}

/// The held buffer's growth is what the budget checks: a frame held behind a large one does
/// not let the buffer double past `max_buffer_bytes` (a check on the frame's own length
/// alone let a 16-byte Cancel behind a 40 KiB request grow the held buffer to 80 KiB against
/// a 64 KiB budget).
#[test]
fn held_frames_grow_their_buffer_within_the_budget() {
    let cfg = ConnConfig::new(
        &crate::ProtocolConfig::default()
            .with_keepalive(Duration::ZERO, Duration::from_secs(1))
            .with_max_buffer_bytes(64 << 10),
    );
    let mut p = quic_pair(cfg);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let big = incompressible(40 << 10);
    p.client
        .start_call(&Pair::spec(b"echo", &big), slot, p.now)
        .unwrap();
    let (request, _) = p.client.poll_transmit().unwrap();
    let mut env = conn_env!(p);
    p.server.handle_input(&request, &mut env).unwrap();
    assert_eq!(p.server.dec.held_exchanges(), 1);
    // A Cancel of the same exchange waits behind it.
    let mut b = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
    b.empty_frame(FrameKind::Cancel, 1, 0).unwrap();
    let mut env = conn_env!(p);
    p.server.handle_input(b.as_slice(), &mut env).unwrap();
    let budget = &p.server.cfg.buffers;
    assert!(
        budget.used.get() <= budget.limit,
        "{} bytes charged against a {}-byte budget",
        budget.used.get(),
        budget.limit
    );
    assert!(p.server.is_open());
}

/// Insertions that overtake the Welcome (QUIC streams are independent) are kept until the
/// table size is known, then applied.
#[test]
fn insertions_before_the_handshake_completes_are_applied_after_it() {
    let now = Instant::now();
    let mut server = quic_conn(Role::Server, now);
    let mut client = quic_conn(Role::Client, now);
    let mut world = World::new();
    let mut env = world.env(now);
    let (hello, _) = client.poll_transmit().unwrap();
    server.handle_input(&hello, &mut env).unwrap();
    let (welcome, _) = server.poll_transmit().unwrap();
    // The server's first insertion (here: made by hand) reaches the client first.
    let mut insert = Vec::new();
    let mut enc = netron_codec::qpack::QpackEncoder::new(4096);
    enc.encode(
        2,
        &[netron_codec::hpack::Header::method(b"ping")],
        &mut Vec::new(),
        &mut insert,
    )
    .unwrap();
    assert!(!insert.is_empty());
    client
        .on_header_stream(HeaderStream::Encoder, &insert, &mut env)
        .unwrap();
    assert!(!client.is_open());
    client.handle_input(&welcome, &mut env).unwrap();
    assert!(client.is_open());
    // Applied: the client's decoder counted the insertion (its Insert Count Increment).
    let (_, dec) = take_streams(&mut client);
    assert_eq!(dec, [0x01], "one insertion acknowledged");
}

/// An exchange whose stream was reset (or that we stopped reading) gets a Stream
/// Cancellation, so the peer's encoder unpins what its lost blocks referenced (RFC 9204
/// §4.4.2); one whose frames wait behind a blocked block gets it only after they are decoded
/// (an earlier cancellation would let the encoder evict entries those blocks need).
#[test]
fn a_reset_exchange_is_cancelled_after_its_held_frames() {
    let mut p = quic_pair(test_cfg());
    p.server.on_exchange_reset(7);
    assert_eq!(
        take_streams(&mut p.server).1,
        [0x47],
        "Stream Cancellation 7"
    );

    // Held: the request of exchange 1 waits for its insertions, then its stream is reset.
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    p.client
        .start_call(&Pair::spec(b"echo", b"x"), slot.clone(), p.now)
        .unwrap();
    let (batch, _) = p.client.poll_transmit().unwrap();
    let mut env = conn_env!(p);
    p.server.handle_input(&batch, &mut env).unwrap();
    assert_eq!(p.server.dec.held_exchanges(), 1);
    p.server.on_exchange_reset(1);
    assert!(
        take_streams(&mut p.server).1.is_empty(),
        "no cancellation while its block waits"
    );
    let (enc, _) = take_streams(&mut p.client);
    let mut env = conn_env!(p);
    p.server
        .on_header_stream(HeaderStream::Encoder, &enc, &mut env)
        .unwrap();
    // Decoded (Insert Count Increment 2, Section Acknowledgment 1), then cancelled.
    assert_eq!(take_streams(&mut p.server).1, [0x02, 0x81, 0x41]);
}

/// With `header_table_size` 0 (the client offers 0, §27.4 (a)) no header streams are used:
/// instructions on either one are a connection error that says so, `qpack_no_dynamic_table`
/// (they were `qpack_capacity_too_large` "table capacity 0 exceeds the negotiated 0" and
/// `qpack_bad_increment`, naming neither the setting nor the cause).
#[test]
fn header_instructions_without_a_dynamic_table_are_named_as_such() {
    for stream in [HeaderStream::Encoder, HeaderStream::Decoder] {
        let mut cfg = test_cfg();
        cfg.client = cfg.client.clone().with_header_table_size(0);
        let mut p = quic_pair(cfg);
        let mut env = conn_env!(p);
        // An Insert Count Increment of 1 / an insertion with a literal name.
        let bytes: &[u8] = match stream {
            HeaderStream::Encoder => &[0x41, b'a', 0x01, b'b'],
            HeaderStream::Decoder => &[0x01],
        };
        let e = p
            .server
            .on_header_stream(stream, bytes, &mut env)
            .unwrap_err();
        assert_eq!(e.counter, "qpack_no_dynamic_table", "{stream:?}");
        assert!(e.message.contains("header_table_size 0"), "{}", e.message);
        assert!(p.server.is_closing());
    }
}

/// Encoder-stream bytes that overtake the Welcome are kept up to 64 KiB; more is a connection
/// error naming what it is, `qpack_early_instructions` (ResourceExhausted; it was
/// `qpack_string_too_long`).
#[test]
fn too_many_insertions_before_the_handshake_are_named_as_such() {
    let now = Instant::now();
    let mut client = quic_conn(Role::Client, now);
    let mut world = World::new();
    let mut env = world.env(now);
    let chunk = vec![0u8; 16 << 10];
    for _ in 0..4 {
        client
            .on_header_stream(HeaderStream::Encoder, &chunk, &mut env)
            .unwrap();
    }
    let e = client
        .on_header_stream(HeaderStream::Encoder, &chunk, &mut env)
        .unwrap_err();
    assert_eq!(e.counter, "qpack_early_instructions");
    assert_eq!(e.status, StatusCode::ResourceExhausted);
}
