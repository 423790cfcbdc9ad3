//! The frame router over real QUIC connections in memory (no sockets): a client and a server
//! router exchange the preface, a Hello and concurrent calls, each call on its own stream, under
//! loss and reordering; a reset reaches the other side as a Cancel.

mod common;

use std::net::SocketAddr;

use common::*;
use netron_codec::handshake::PREFACE;
use netron_codec::{Flags, Frame, FrameHeader, FrameKind, HEADER_LEN, Limits};
use netron_quic::router::{EndpointStreams, Router};
use netron_quic::*;

fn frame(kind: FrameKind, id: u32, payload: &[u8]) -> Vec<u8> {
    let len = (HEADER_LEN + payload.len()) as u32;
    let mut v = FrameHeader::new(len, kind, Flags::empty(), 0, id, 0)
        .as_bytes()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

/// One side: its router and what it delivered to its (absent) connection.
struct Side {
    addr: SocketAddr,
    conn: Option<ConnId>,
    router: Router<StreamId>,
    got: Vec<Vec<u8>>,
}

impl Side {
    fn new(addr: SocketAddr, client: bool, conn: Option<ConnId>) -> Self {
        let mut router = Router::new(client, &Limits::default());
        if !client {
            router.expect_control(netron_quic::router::control_stream_id());
        }
        Self {
            addr,
            conn,
            router,
            got: Vec::new(),
        }
    }

    /// Applies the endpoint's events the way the engine's link does.
    fn turn(&mut self, net: &mut Net) {
        let mut scratch = Vec::new();
        for ev in net.take(self.addr) {
            let ep = net.ep(self.addr);
            match ev {
                QuicEvent::Connected { conn } | QuicEvent::Accepted { conn } => {
                    self.conn.get_or_insert(conn);
                }
                QuicEvent::StreamOpened { conn, stream } | QuicEvent::Readable { conn, stream } => {
                    loop {
                        scratch.clear();
                        match ep.read(conn, stream, &mut scratch, 1 << 16) {
                            Ok(Read::Bytes { fin, .. }) => {
                                let got = &mut self.got;
                                self.router
                                    .on_bytes(stream, &scratch, fin, |f| got.push(f.to_vec()))
                                    .expect("no connection error");
                                if fin {
                                    break;
                                }
                            }
                            Ok(Read::Reset { code }) => {
                                let got = &mut self.got;
                                self.router.on_reset(stream, code, |f| got.push(f.to_vec()));
                                break;
                            }
                            Ok(Read::Blocked) | Err(_) => break,
                        }
                    }
                }
                QuicEvent::Writable { conn, stream } => {
                    let mut io = EndpointStreams { endpoint: ep, conn };
                    self.router.on_writable(&mut io, stream);
                }
                QuicEvent::Stopped { conn, stream, code } => {
                    let mut io = EndpointStreams { endpoint: ep, conn };
                    let got = &mut self.got;
                    self.router
                        .on_stopped(&mut io, stream, code, |f| got.push(f.to_vec()));
                }
                QuicEvent::StreamsAvailable { conn } => {
                    let mut io = EndpointStreams { endpoint: ep, conn };
                    self.router.on_streams_available(&mut io);
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, net: &mut Net, batch: &[u8]) {
        let conn = self.conn.expect("connected");
        let mut io = EndpointStreams {
            endpoint: net.ep(self.addr),
            conn,
        };
        self.router.send(&mut io, batch).expect("routable");
        let got = &mut self.got;
        self.router.take_made(|f| got.push(f.to_vec()));
    }

    /// The frames delivered (a delivery may hold several: those held until the handshake
    /// frame come together), the preface left out.
    fn frames(&self) -> Vec<(FrameKind, u32, Vec<u8>)> {
        let mut out = Vec::new();
        for b in self.got.iter().filter(|b| b[..] != PREFACE[..]) {
            let mut rest = &b[..];
            while !rest.is_empty() {
                let f = Frame::parse(rest, &Limits::default()).expect("whole frames");
                out.push((f.kind(), f.id(), f.payload().to_vec()));
                rest = &rest[f.header().length() as usize..];
            }
        }
        out
    }
}

fn setup(seed: u64) -> (Net, Side, Side) {
    let ca = Ca::new("ca");
    let (mut net, s, c, conn) = pair(
        ServerConfig::new(ca.server()),
        ClientConfig::new(Trust::Ca(vec![ca.cert.clone()])),
        seed,
    );
    net.run_until(10_000, |net| connected(net.seen(c)).is_some());
    (
        net,
        Side::new(s, false, None),
        Side::new(c, true, Some(conn)),
    )
}

fn run(net: &mut Net, srv: &mut Side, cli: &mut Side, mut done: impl FnMut(&Side, &Side) -> bool) {
    net.run_until(200_000, |net| {
        srv.turn(net);
        cli.turn(net);
        done(srv, cli)
    });
}

#[test]
fn calls_travel_on_their_own_streams_under_loss_and_reordering() {
    let (mut net, mut srv, mut cli) = setup(11);
    net.loss = 10;
    net.reorder = 20;
    let hello = frame(FrameKind::Hello, 0, b"hello");
    let mut batch = [&PREFACE[..], &hello].concat();
    let calls: Vec<u32> = (0..20).map(|i| 2 * i + 1).collect();
    for &id in &calls {
        batch.extend(frame(FrameKind::Request, id, &payload(u64::from(id), 3000)));
    }
    cli.send(&mut net, &batch);
    run(&mut net, &mut srv, &mut cli, |s, _| {
        s.frames().len() == 1 + calls.len()
    });
    assert_eq!(srv.got[0], PREFACE, "the preface comes first");
    assert_eq!(srv.got[1], hello, "then the Hello, on the control stream");
    let mut reqs = srv.frames();
    reqs.retain(|f| f.0 == FrameKind::Request);
    assert_eq!(reqs.len(), calls.len());
    for (kind, id, p) in &reqs {
        assert_eq!(*kind, FrameKind::Request);
        assert_eq!(*p, payload(u64::from(*id), 3000), "call {id}'s bytes");
    }
    // The Welcome, then answers in reverse order, each on its caller's stream (those that
    // overtake the Welcome wait for it).
    let mut answers = frame(FrameKind::Welcome, 0, b"welcome");
    for &id in calls.iter().rev() {
        answers.extend(frame(FrameKind::Response, id, &id.to_le_bytes()));
    }
    srv.send(&mut net, &answers);
    run(&mut net, &mut srv, &mut cli, |_, c| {
        c.frames().len() == 1 + calls.len()
    });
    let got = cli.frames();
    assert_eq!(got[0].0, FrameKind::Welcome, "the Welcome comes first");
    for (kind, id, p) in got.into_iter().skip(1) {
        assert_eq!(kind, FrameKind::Response);
        assert_eq!(p, id.to_le_bytes());
    }
    // Every exchange ended on both sides: no stream is left.
    run(&mut net, &mut srv, &mut cli, |s, c| {
        s.router.open_streams() == 0 && c.router.open_streams() == 0
    });
}

#[test]
fn a_cancelled_call_reaches_the_callee_as_a_cancel_and_ends_as_cancelled() {
    let (mut net, mut srv, mut cli) = setup(12);
    let hello = frame(FrameKind::Hello, 0, b"");
    cli.send(
        &mut net,
        &[&PREFACE[..], &hello, &frame(FrameKind::Request, 1, b"slow")].concat(),
    );
    run(&mut net, &mut srv, &mut cli, |s, _| s.got.len() == 3);
    cli.send(&mut net, &frame(FrameKind::Cancel, 1, b""));
    run(&mut net, &mut srv, &mut cli, |s, c| {
        s.frames().iter().any(|f| f.0 == FrameKind::Cancel) && !c.got.is_empty()
    });
    assert_eq!(
        srv.frames().last().map(|f| (f.0, f.1)),
        Some((FrameKind::Cancel, 1))
    );
    let (kind, id, _) = cli.frames()[0].clone();
    assert_eq!((kind, id), (FrameKind::Error, 1), "the caller's call ends");
    // The callee's late answer is dropped by its router.
    srv.send(&mut net, &frame(FrameKind::Response, 1, b"late"));
    assert_eq!(cli.got.len(), 1);
    assert_eq!(cli.router.open_streams(), 0);
    run(&mut net, &mut srv, &mut cli, |s, _| {
        s.router.open_streams() == 0
    });
}
