//! Test support: rcgen certificates and an in-memory datagram shuttle between endpoints with
//! virtual time, seeded loss and reordering.
#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use netron_quic::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::PrivatePkcs8KeyDer;

/// A test CA that signs leaves.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    issuer: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert: cert.der().clone(),
            issuer: cert,
            key,
        }
    }

    fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer, &self.key).unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    pub fn server(&self) -> Identity {
        self.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self, name: &str) -> Identity {
        self.leaf(name, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// splitmix64: a seeded generator for loss and reordering decisions.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A datagram in flight.
struct Flight {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Endpoints at fixed addresses exchanging datagrams in memory, in virtual time.
pub struct Net {
    pub now: Instant,
    pub nodes: Vec<(SocketAddr, QuicEndpoint)>,
    pub events: HashMap<SocketAddr, Vec<QuicEvent>>,
    pub rng: Rng,
    /// Percent of datagrams dropped.
    pub loss: u64,
    /// Percent of datagrams held back and delivered after later ones.
    pub reorder: u64,
    /// Datagrams delivered and bytes sent, per sender.
    pub sent_bytes: HashMap<SocketAddr, usize>,
    held: Vec<Flight>,
    buf: Vec<u8>,
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Net {
    pub fn new(seed: u64) -> Self {
        Self {
            now: Instant::now(),
            nodes: Vec::new(),
            events: HashMap::new(),
            rng: Rng(seed),
            loss: 0,
            reorder: 0,
            sent_bytes: HashMap::new(),
            held: Vec::new(),
            buf: Vec::new(),
        }
    }

    pub fn add(&mut self, port: u16, ep: QuicEndpoint) -> SocketAddr {
        let a = addr(port);
        self.nodes.push((a, ep));
        a
    }

    /// Replaces the endpoint at `port` (a restarted process on the same address).
    pub fn nodes_replace(&mut self, port: u16, ep: QuicEndpoint) {
        let a = addr(port);
        self.nodes.iter_mut().find(|(x, _)| *x == a).unwrap().1 = ep;
    }

    pub fn ep(&mut self, a: SocketAddr) -> &mut QuicEndpoint {
        &mut self.nodes.iter_mut().find(|(x, _)| *x == a).unwrap().1
    }

    /// The events seen by `a` so far.
    pub fn seen(&self, a: SocketAddr) -> &[QuicEvent] {
        self.events.get(&a).map_or(&[], Vec::as_slice)
    }

    /// Takes the events seen by `a` so far.
    pub fn take(&mut self, a: SocketAddr) -> Vec<QuicEvent> {
        self.events.remove(&a).unwrap_or_default()
    }

    fn drain_events(&mut self) {
        for (a, ep) in &mut self.nodes {
            while let Some(e) = ep.poll_event() {
                self.events.entry(*a).or_default().push(e);
            }
        }
    }

    /// Moves every pending datagram once (with loss and reordering). Returns how many moved.
    pub fn step(&mut self) -> usize {
        self.drain_events();
        let mut flights = Vec::new();
        for (a, ep) in &mut self.nodes {
            while let Some(t) = ep.poll_transmit(self.now, &mut self.buf) {
                *self.sent_bytes.entry(*a).or_default() += t.len;
                flights.push(Flight {
                    from: *a,
                    to: t.destination,
                    bytes: self.buf[..t.len].to_vec(),
                });
            }
        }
        let mut deliver = Vec::new();
        for f in flights {
            if self.rng.chance(self.loss) {
                continue;
            }
            if self.rng.chance(self.reorder) {
                self.held.push(f);
            } else {
                deliver.push(f);
            }
        }
        // Held datagrams go after this step's fresh ones: reordered.
        if deliver.is_empty() || self.rng.chance(50) {
            deliver.append(&mut self.held);
        }
        let n = deliver.len();
        self.now += Duration::from_micros(50);
        for f in deliver {
            if let Some((_, ep)) = self.nodes.iter_mut().find(|(x, _)| *x == f.to) {
                ep.handle_datagram(self.now, f.from, None, BytesMut::from(&f.bytes[..]));
            }
        }
        self.drain_events();
        n
    }

    /// Advances virtual time to the earliest timer and fires it. False if no timer is set.
    pub fn tick(&mut self) -> bool {
        let next = self
            .nodes
            .iter_mut()
            .filter_map(|(_, ep)| ep.poll_timeout())
            .min();
        let Some(t) = next else { return false };
        if t > self.now {
            self.now = t;
        }
        for (_, ep) in &mut self.nodes {
            ep.handle_timeout(self.now);
        }
        self.drain_events();
        true
    }

    /// Runs until `done` holds, stepping datagrams and firing timers; panics after `limit`
    /// rounds (a hang is a failure, not a timeout).
    pub fn run_until(&mut self, limit: usize, mut done: impl FnMut(&mut Self) -> bool) {
        for _ in 0..limit {
            if done(self) {
                return;
            }
            if self.step() == 0 && !self.tick() {
                assert!(
                    done(self),
                    "network idle with no timer and the condition unmet: {:?}",
                    self.events
                );
                return;
            }
        }
        panic!("condition unmet after {limit} rounds");
    }
}

pub fn has(events: &[QuicEvent], f: impl Fn(&QuicEvent) -> bool) -> bool {
    events.iter().any(f)
}

/// A server (port 1) trusting `ca` for clients per `auth`, and a client (port 2).
pub fn pair(
    server: ServerConfig,
    client: ClientConfig,
    seed: u64,
) -> (Net, SocketAddr, SocketAddr, ConnId) {
    let mut net = Net::new(seed);
    let s = net.add(1, QuicEndpoint::new(Some(&server), None).unwrap());
    let c = net.add(2, QuicEndpoint::new(None, Some(&client)).unwrap());
    let now = net.now;
    let conn = net.ep(c).connect(now, s, "localhost").unwrap();
    (net, s, c, conn)
}

pub fn connected(events: &[QuicEvent]) -> Option<ConnId> {
    events.iter().find_map(|e| match e {
        QuicEvent::Connected { conn } => Some(*conn),
        _ => None,
    })
}

pub fn closed(events: &[QuicEvent]) -> Option<CloseReason> {
    events.iter().find_map(|e| match e {
        QuicEvent::Closed { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

/// A server application echoing every stream it is given, finishing after the peer's FIN.
#[derive(Default)]
pub struct Echo {
    pub conns: Vec<ConnId>,
    pub log: Vec<QuicEvent>,
    streams: Vec<(ConnId, StreamId, Vec<u8>, bool)>,
    pub resets: Vec<(StreamId, u64)>,
}

impl Echo {
    pub fn turn(&mut self, net: &mut Net, a: SocketAddr) {
        let evs = net.take(a);
        self.apply(net.ep(a), evs);
    }

    pub fn apply(&mut self, ep: &mut QuicEndpoint, evs: Vec<QuicEvent>) {
        for e in &evs {
            match e {
                QuicEvent::Accepted { conn } => self.conns.push(*conn),
                QuicEvent::StreamOpened { conn, stream } => {
                    self.streams.push((*conn, *stream, Vec::new(), false))
                }
                _ => {}
            }
        }
        self.log.extend(evs);
        let mut gone = Vec::new();
        for (i, (conn, stream, pending, fin)) in self.streams.iter_mut().enumerate() {
            while !*fin {
                match ep.read(*conn, *stream, pending, 1 << 16) {
                    Ok(Read::Bytes { fin: f, .. }) => *fin = f,
                    Ok(Read::Blocked) | Err(_) => break,
                    Ok(Read::Reset { code }) => {
                        self.resets.push((*stream, code));
                        let _ = ep.reset(*conn, *stream, code);
                        gone.push(i);
                        break;
                    }
                }
            }
            if !pending.is_empty() {
                match ep.write(*conn, *stream, pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(_) => {
                        gone.push(i);
                        continue;
                    }
                }
            }
            if *fin && pending.is_empty() {
                ep.finish(*conn, *stream).unwrap();
                gone.push(i);
            }
        }
        gone.dedup();
        for i in gone.into_iter().rev() {
            self.streams.remove(i);
        }
    }
}

/// One client stream: sends `data`, finishes, and collects the reply until FIN.
pub struct Call {
    pub stream: Option<StreamId>,
    pub data: Vec<u8>,
    pub sent: usize,
    pub finished: bool,
    pub got: Vec<u8>,
    pub done: bool,
}

/// A client application running calls on one connection, opening streams as limits allow.
pub struct Caller {
    pub conn: ConnId,
    pub calls: Vec<Call>,
    pub log: Vec<QuicEvent>,
    pub max_open_seen: usize,
}

impl Caller {
    pub fn new(conn: ConnId, payloads: Vec<Vec<u8>>) -> Self {
        let calls = payloads
            .into_iter()
            .map(|data| Call {
                stream: None,
                data,
                sent: 0,
                finished: false,
                got: Vec::new(),
                done: false,
            })
            .collect();
        Self {
            conn,
            calls,
            log: Vec::new(),
            max_open_seen: 0,
        }
    }

    pub fn all_done(&self) -> bool {
        self.calls.iter().all(|c| c.done)
    }

    pub fn turn(&mut self, net: &mut Net, a: SocketAddr) {
        let evs = net.take(a);
        self.apply(net.ep(a), evs);
    }

    pub fn apply(&mut self, ep: &mut QuicEndpoint, evs: Vec<QuicEvent>) {
        self.log.extend(evs);
        if connected(&self.log).is_none() {
            return;
        }
        let mut blocked_open = false;
        for call in &mut self.calls {
            if call.done {
                continue;
            }
            if call.stream.is_none() {
                if blocked_open {
                    continue;
                }
                match ep.open_bi(self.conn).unwrap() {
                    Some(s) => call.stream = Some(s),
                    None => {
                        blocked_open = true;
                        continue;
                    }
                }
            }
            let s = call.stream.unwrap();
            if call.sent < call.data.len() {
                call.sent += ep.write(self.conn, s, &call.data[call.sent..]).unwrap();
            }
            if call.sent == call.data.len() && !call.finished {
                ep.finish(self.conn, s).unwrap();
                call.finished = true;
            }
            loop {
                match ep.read(self.conn, s, &mut call.got, 1 << 16).unwrap() {
                    Read::Bytes { fin: true, .. } => {
                        call.done = true;
                        break;
                    }
                    Read::Bytes { .. } => {}
                    Read::Blocked => break,
                    Read::Reset { code } => panic!("stream {s} reset by the server with {code}"),
                }
            }
        }
        let open = self
            .calls
            .iter()
            .filter(|c| c.stream.is_some() && !c.done)
            .count();
        self.max_open_seen = self.max_open_seen.max(open);
    }
}

/// Deterministic payload bytes.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

/// Drives `ep` over a real non-blocking-ish UDP socket until `done` (given the new events)
/// returns true. Panics after 60 s of wall time: a hang guard, not a timing assertion.
pub fn drive_udp(
    ep: &mut QuicEndpoint,
    sock: &std::net::UdpSocket,
    mut done: impl FnMut(&mut QuicEndpoint, Vec<QuicEvent>) -> bool,
) {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut rbuf = vec![0u8; 65536];
    loop {
        assert!(start.elapsed() < Duration::from_secs(60), "UDP drive hung");
        let now = Instant::now();
        while let Some(t) = ep.poll_transmit(now, &mut buf) {
            sock.send_to(&buf[..t.len], t.destination).unwrap();
        }
        let mut evs = Vec::new();
        while let Some(e) = ep.poll_event() {
            evs.push(e);
        }
        if done(ep, evs) {
            while let Some(t) = ep.poll_transmit(Instant::now(), &mut buf) {
                sock.send_to(&buf[..t.len], t.destination).unwrap();
            }
            return;
        }
        while let Some(t) = ep.poll_transmit(Instant::now(), &mut buf) {
            sock.send_to(&buf[..t.len], t.destination).unwrap();
        }
        let wait = ep
            .poll_timeout()
            .map_or(Duration::from_millis(20), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_micros(100), Duration::from_millis(20));
        sock.set_read_timeout(Some(wait)).unwrap();
        match sock.recv_from(&mut rbuf) {
            Ok((n, from)) => {
                ep.handle_datagram(Instant::now(), from, None, BytesMut::from(&rbuf[..n]))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv_from: {e}"),
        }
        ep.handle_timeout(Instant::now());
    }
}
