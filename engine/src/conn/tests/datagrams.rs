//! Events in QUIC datagrams at the connection (docs/protocol.md §27.6): what a datagram may
//! carry, and that events of a subscription that accepts loss leave as datagrams.

use super::*;
use crate::conn::events::EventApp;

fn quic_pair(datagrams: bool) -> Pair {
    let mut p = Pair::with(test_cfg().for_quic(datagrams));
    p.pump(usize::MAX);
    assert!(p.client.is_open() && p.server.is_open());
    p
}

/// QPACK blocks for datagrams (RIC 0), as a peer's encoder writes them.
struct DatagramBlocks(netron_codec::qpack::QpackEncoder);

impl netron_codec::HeaderBlockEncoder for DatagramBlocks {
    fn encode_block<B: netron_codec::OutBuf + ?Sized>(
        &mut self,
        _id: u32,
        headers: &[netron_codec::hpack::Header<'_>],
        out: &mut B,
    ) -> Result<(), netron_codec::HeaderError> {
        self.0
            .encode_datagram(headers, out)
            .map_err(|_| netron_codec::HeaderError::BlockTooLarge)
    }
}

fn event_datagram(id: u32, seq: u32) -> Vec<u8> {
    let mut b = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
    let mut enc = DatagramBlocks(netron_codec::qpack::QpackEncoder::new(4096));
    b.frame(FrameKind::Event, id)
        .unwrap()
        .arg(seq)
        .headers(&mut enc, &[netron_codec::hpack::Header::topic(b"a.b")])
        .unwrap()
        .payload(b"x")
        .finish()
        .unwrap();
    b.as_slice().to_vec()
}

/// A datagram is Event frames only (§27.6); anything else, or any datagram while
/// DATAGRAM_EVENTS is not in force, is a connection error `quic_unexpected_frame`.
#[test]
fn a_datagram_carries_event_frames_only() {
    let mut p = quic_pair(true);
    let mut ping = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
    ping.empty_frame(FrameKind::Ping, 0, 1).unwrap();
    let mut env = conn_env!(p);
    let e = p.server.on_datagram(ping.as_slice(), &mut env).unwrap_err();
    assert_eq!(e.counter, "quic_unexpected_frame");
    assert!(e.message.contains("Event frames only"), "{}", e.message);
    assert!(p.server.is_closing());

    let mut p = quic_pair(false);
    let mut env = conn_env!(p);
    let e = p
        .server
        .on_datagram(&event_datagram(0, 0), &mut env)
        .unwrap_err();
    assert_eq!(e.counter, "quic_unexpected_frame");
    assert!(e.message.contains("DATAGRAM_EVENTS"), "{}", e.message);
}

/// A header block in a datagram that references the dynamic table (a Required Insert Count:
/// here a QPACK block made for a stream after an insertion) is `qpack_dynamic_in_datagram`:
/// datagrams may be lost, so nothing may depend on them.
#[test]
fn a_datagram_block_may_not_reference_the_dynamic_table() {
    let mut p = quic_pair(true);
    let mut enc = netron_codec::qpack::QpackEncoder::new(4096);
    let (mut block, mut inserts) = (Vec::new(), Vec::new());
    let topic = [netron_codec::hpack::Header::topic(b"a.b")];
    enc.encode(2, &topic, &mut block, &mut inserts).unwrap();
    block.clear();
    enc.encode(4, &topic, &mut block, &mut inserts).unwrap();
    let mut b = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
    b.frame(FrameKind::Event, 0)
        .unwrap()
        .header_block(&block)
        .unwrap()
        .payload(b"x")
        .finish()
        .unwrap();
    let mut env = conn_env!(p);
    let e = p.server.on_datagram(b.as_slice(), &mut env).unwrap_err();
    assert_eq!(e.counter, "qpack_dynamic_in_datagram");
}

/// Events delivered: (lost before it, payload).
type Delivered = std::rc::Rc<std::cell::RefCell<Vec<(u32, Vec<u8>)>>>;

#[derive(Debug)]
struct Sink(Delivered);

impl EventApp for Sink {
    fn deliver(&mut self, lost: u32, _topic: &[u8], payload: &[u8]) {
        self.0.borrow_mut().push((lost, payload.to_vec()));
    }
    fn ended(&mut self, _end: Result<(), Status>) {}
}

/// Events of one subscription arriving in datagrams out of order: a gap is reported as lost
/// on the next event, and one that comes after a later one (overtaken) is dropped (§24.3).
#[test]
fn overtaken_datagram_events_are_dropped_and_gaps_counted() {
    let mut p = quic_pair(true);
    let got: Delivered = std::rc::Rc::default();
    let id = p
        .client
        .subscribe(
            "a.>",
            &crate::SubscribeOptions::new().datagrams(true),
            Box::new(Sink(std::rc::Rc::clone(&got))),
        )
        .unwrap();
    p.pump(usize::MAX);
    let mut env = conn_env!(p);
    for seq in [0u32, 2, 1, 3, 7] {
        p.client
            .on_datagram(&event_datagram(id, seq), &mut env)
            .unwrap();
    }
    let lost: Vec<u32> = got.borrow().iter().map(|e| e.0).collect();
    // 0; 2 (1 lost); 1 dropped (overtaken); 3; 7 (4, 5, 6 lost).
    assert_eq!(lost, [0, 1, 0, 3]);
}
