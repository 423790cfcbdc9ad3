//! The QUIC floor: bare quinn-proto over busy-polled non-blocking std UDP sockets on loopback,
//! no Netron code on the data path (netron-quic only builds the TLS configs, the same as
//! Netron's). A server thread pinned to cpu1 serves every bidirectional stream; the client
//! (this thread) runs unary round trips, one new stream per 64-byte request as Netron calls
//! use one, and a one-way bulk stream, as a Netron server stream sends.
//!
//! Protocol of the floor's server, per stream: a request of 8 bytes `[size u32 LE, count u32
//! LE]` with a non-zero count asks for `count` chunks of `size` bytes (bulk); anything else is
//! echoed back when its FIN arrives (unary).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, StreamEvent,
    StreamId,
};

use crate::pin::pin_to_cpu;
use crate::stats::Samples;

/// One side: an endpoint, its connections and its socket.
struct Side {
    ep: Endpoint,
    conns: HashMap<ConnectionHandle, Connection>,
    sock: UdpSocket,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl Side {
    fn new(sock: UdpSocket, server: Option<Arc<quinn_proto::ServerConfig>>) -> Side {
        sock.set_nonblocking(true).expect("nonblocking");
        Side {
            ep: Endpoint::new(Arc::new(EndpointConfig::default()), server, false, None),
            conns: HashMap::new(),
            sock,
            tx: Vec::with_capacity(1500),
            rx: vec![0; 65536],
        }
    }

    /// One busy-poll turn: every datagram waiting, the timers due, then everything to send.
    fn turn(&mut self) {
        let now = Instant::now();
        while let Ok((n, from)) = self.sock.recv_from(&mut self.rx) {
            self.tx.clear();
            let data = BytesMut::from(&self.rx[..n]);
            match self.ep.handle(now, from, None, None, data, &mut self.tx) {
                Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                    if let Some(c) = self.conns.get_mut(&ch) {
                        c.handle_event(ev);
                    }
                }
                Some(DatagramEvent::NewConnection(incoming)) => {
                    self.tx.clear();
                    if let Ok((ch, c)) = self.ep.accept(incoming, now, &mut self.tx, None) {
                        self.conns.insert(ch, c);
                    }
                }
                Some(DatagramEvent::Response(t)) => {
                    let _ = self.sock.send_to(&self.tx[..t.size], t.destination);
                }
                None => {}
            }
        }
        for (&ch, c) in &mut self.conns {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
            while let Some(ev) = c.poll_endpoint_events() {
                if let Some(back) = self.ep.handle_event(ch, ev) {
                    c.handle_event(back);
                }
            }
        }
        for c in self.conns.values_mut() {
            loop {
                self.tx.clear();
                let Some(t) = c.poll_transmit(now, 1, &mut self.tx) else {
                    break;
                };
                // Loopback: a full socket buffer drains in microseconds.
                while self
                    .sock
                    .send_to(&self.tx[..t.size], t.destination)
                    .is_err()
                {}
            }
        }
    }
}

/// Appends what stream `id` has to `out`; true once its FIN was read.
fn read_all(c: &mut Connection, id: StreamId, out: &mut Vec<u8>) -> bool {
    let mut recv = c.recv_stream(id);
    let Ok(mut chunks) = recv.read(true) else {
        return true;
    };
    let fin = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(ch)) => out.extend_from_slice(&ch.bytes),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    let _ = chunks.finalize();
    fin
}

/// What the server owes a stream.
enum Owed {
    /// Still reading the request.
    Reading(Vec<u8>),
    /// Echoing: what is left to write.
    Echo(Vec<u8>),
    /// Bulk: written in writes of `size` bytes; `left` bytes to go.
    Bulk { size: usize, left: usize },
}

fn serve(sock: UdpSocket, cfg: Arc<quinn_proto::ServerConfig>, stop: Arc<AtomicBool>) {
    pin_to_cpu(1);
    let mut side = Side::new(sock, Some(cfg));
    let mut owed: HashMap<StreamId, Owed> = HashMap::new();
    let mut chunk = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        side.turn();
        for c in side.conns.values_mut() {
            while let Some(ev) = c.poll() {
                if let Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) = ev {
                    while let Some(id) = c.streams().accept(Dir::Bi) {
                        owed.insert(id, Owed::Reading(Vec::new()));
                    }
                }
            }
            owed.retain(|&id, o| {
                if let Owed::Reading(req) = o {
                    if !read_all(c, id, req) {
                        return true;
                    }
                    let word = |i: usize| u32::from_le_bytes(req[i..i + 4].try_into().unwrap());
                    *o = if req.len() == 8 && word(4) > 0 {
                        Owed::Bulk {
                            size: word(0) as usize,
                            left: word(0) as usize * word(4) as usize,
                        }
                    } else {
                        Owed::Echo(std::mem::take(req))
                    };
                }
                match o {
                    Owed::Echo(data) => {
                        if let Ok(n) = c.send_stream(id).write(data) {
                            data.drain(..n);
                        }
                        if data.is_empty() {
                            let _ = c.send_stream(id).finish();
                            return false;
                        }
                    }
                    Owed::Bulk { size, left } => {
                        chunk.resize(*size, 0x5a);
                        // As much as the stream's window takes; the client counts bytes.
                        while *left > 0 {
                            match c.send_stream(id).write(&chunk[..chunk.len().min(*left)]) {
                                Ok(n) if n > 0 => *left -= n,
                                _ => break,
                            }
                        }
                        if *left == 0 {
                            let _ = c.send_stream(id).finish();
                            return false;
                        }
                    }
                    Owed::Reading(_) => {}
                }
                true
            });
        }
    }
}

/// The floor's client: a connected endpoint, its server thread, and the stop flag.
pub(crate) struct Floor {
    side: Side,
    ch: ConnectionHandle,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Floor {
    /// Starts the server thread (cpu1) and connects this thread's endpoint to it.
    pub(crate) fn start(
        server: Arc<quinn_proto::ServerConfig>,
        client: quinn_proto::ClientConfig,
    ) -> Floor {
        let ssock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr: SocketAddr = ssock.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = {
            let stop = stop.clone();
            std::thread::spawn(move || serve(ssock, server, stop))
        };
        let mut side = Side::new(UdpSocket::bind("127.0.0.1:0").expect("bind"), None);
        let (ch, conn) = side
            .ep
            .connect(Instant::now(), client, addr, "127.0.0.1")
            .expect("connect");
        side.conns.insert(ch, conn);
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            side.turn();
            let c = side.conns.get_mut(&ch).expect("conn");
            let mut up = false;
            while let Some(ev) = c.poll() {
                up |= matches!(ev, Event::Connected);
            }
            if up {
                break;
            }
            assert!(Instant::now() < give_up, "the QUIC floor did not connect");
        }
        Floor {
            side,
            ch,
            stop,
            server: Some(st),
        }
    }

    fn conn(&mut self) -> &mut Connection {
        self.side.conns.get_mut(&self.ch).expect("conn")
    }

    /// Opens a bidirectional stream (waiting for the peer's stream limit if need be).
    fn open(&mut self) -> StreamId {
        loop {
            if let Some(id) = self.conn().streams().open(Dir::Bi) {
                return id;
            }
            self.side.turn();
            while self.conn().poll().is_some() {}
        }
    }

    /// `n` unary round trips of `msg` (a new stream each, written and finished, the echo read
    /// to its FIN), after `n / 10` warm-up ones; nanoseconds each.
    pub(crate) fn round_trips(&mut self, msg: &[u8], n: usize) -> Samples {
        let mut s = Samples::with_capacity(n);
        let mut reply = Vec::with_capacity(msg.len());
        for i in 0..n + n / 10 {
            let t = Instant::now();
            let id = self.open();
            let c = self.conn();
            c.send_stream(id).write(msg).expect("write");
            c.send_stream(id).finish().expect("finish");
            reply.clear();
            loop {
                self.side.turn();
                let c = self.conn();
                while c.poll().is_some() {}
                if read_all(c, id, &mut reply) {
                    break;
                }
            }
            assert_eq!(reply.len(), msg.len(), "the floor's echo");
            if i >= n / 10 {
                s.push(t.elapsed().as_nanos() as u64);
            }
        }
        s
    }

    /// One stream of `count` chunks of `size` bytes from the server, read to its FIN; bytes
    /// per second.
    pub(crate) fn bulk(&mut self, size: usize, count: u32) -> f64 {
        let t = Instant::now();
        let id = self.open();
        let mut req = (size as u32).to_le_bytes().to_vec();
        req.extend_from_slice(&count.to_le_bytes());
        let c = self.conn();
        c.send_stream(id).write(&req).expect("write");
        c.send_stream(id).finish().expect("finish");
        let mut sink = Vec::with_capacity(1 << 20);
        let mut got = 0usize;
        loop {
            self.side.turn();
            let c = self.conn();
            while c.poll().is_some() {}
            sink.clear();
            let fin = read_all(c, id, &mut sink);
            got += sink.len();
            if fin {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the floor's bulk stream stalled"
            );
        }
        assert_eq!(got, size * count as usize, "the floor's bulk bytes");
        got as f64 / t.elapsed().as_secs_f64()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}
