//! The QUIC floor for netron-bench (issue 21): bare quinn-proto echo over busy-polled
//! non-blocking std UDP sockets on loopback, no Netron code on the data path (netron-quic only
//! builds the TLS configs). A server thread echoes every stream; the client runs unary round
//! trips (one new bidirectional stream per request, as Netron calls will) and one bulk stream.
//!
//! `cargo run --release -p netron-quic --example quic_floor -- [round_trips] [bulk_mib]`
//! (defaults 20000 and 256). Prints p50/p99 round trip and bulk throughput.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, StreamEvent,
    StreamId,
};

struct Side {
    ep: Endpoint,
    conns: HashMap<ConnectionHandle, Connection>,
    sock: UdpSocket,
    buf: Vec<u8>,
    rbuf: Vec<u8>,
}

impl Side {
    fn new(sock: UdpSocket, server: Option<Arc<quinn_proto::ServerConfig>>) -> Self {
        sock.set_nonblocking(true).unwrap();
        Self {
            ep: Endpoint::new(Arc::new(EndpointConfig::default()), server, false, None),
            conns: HashMap::new(),
            sock,
            buf: Vec::with_capacity(1500),
            rbuf: vec![0; 65536],
        }
    }

    /// One busy-poll turn: receive everything pending, run timers, send everything.
    fn turn(&mut self) {
        let now = Instant::now();
        while let Ok((n, from)) = self.sock.recv_from(&mut self.rbuf) {
            self.buf.clear();
            let data = BytesMut::from(&self.rbuf[..n]);
            match self.ep.handle(now, from, None, None, data, &mut self.buf) {
                Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                    if let Some(c) = self.conns.get_mut(&ch) {
                        c.handle_event(ev);
                    }
                }
                Some(DatagramEvent::NewConnection(inc)) => {
                    self.buf.clear();
                    if let Ok((ch, c)) = self.ep.accept(inc, now, &mut self.buf, None) {
                        self.conns.insert(ch, c);
                    }
                }
                Some(DatagramEvent::Response(t)) => {
                    let _ = self.sock.send_to(&self.buf[..t.size], t.destination);
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
    }

    fn flush(&mut self) {
        let now = Instant::now();
        for c in self.conns.values_mut() {
            loop {
                self.buf.clear();
                let Some(t) = c.poll_transmit(now, 1, &mut self.buf) else {
                    break;
                };
                while self
                    .sock
                    .send_to(&self.buf[..t.size], t.destination)
                    .is_err()
                {}
            }
        }
    }
}

/// Reads everything available on `id` into `out`; true at FIN.
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

fn server(
    sock: UdpSocket,
    cfg: Arc<quinn_proto::ServerConfig>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut side = Side::new(sock, Some(cfg));
    let mut pending: HashMap<StreamId, Vec<u8>> = HashMap::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        side.turn();
        for c in side.conns.values_mut() {
            while let Some(ev) = c.poll() {
                if let Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) = ev {
                    while let Some(id) = c.streams().accept(Dir::Bi) {
                        pending.insert(id, Vec::new());
                    }
                }
            }
            let mut done = Vec::new();
            for (&id, data) in pending.iter_mut() {
                // Echo at FIN (unary) or as bytes arrive (bulk: stream back what was read).
                let fin = read_all(c, id, data);
                if !data.is_empty() {
                    if let Ok(n) = c.send_stream(id).write(data) {
                        data.drain(..n);
                    }
                }
                if fin && data.is_empty() {
                    let _ = c.send_stream(id).finish();
                    done.push(id);
                }
            }
            for id in done {
                pending.remove(&id);
            }
        }
        side.flush();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let bulk_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);

    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = ca.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ca.key_pair.serialize_der().into());
    let scfg = netron_quic::ServerConfig::new(netron_quic::Identity {
        chain: vec![cert.clone()],
        key,
    });
    let server_cfg = scfg.build().unwrap();
    let client_cfg = netron_quic::ClientConfig::new(netron_quic::Trust::Ca(vec![cert]))
        .build()
        .unwrap();

    let ssock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let saddr: SocketAddr = ssock.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = {
        let stop = stop.clone();
        std::thread::spawn(move || server(ssock, server_cfg, stop))
    };

    let mut side = Side::new(UdpSocket::bind("127.0.0.1:0").unwrap(), None);
    let (ch, conn) = side
        .ep
        .connect(Instant::now(), client_cfg, saddr, "localhost")
        .unwrap();
    side.conns.insert(ch, conn);
    loop {
        side.flush();
        side.turn();
        let c = side.conns.get_mut(&ch).unwrap();
        let mut up = false;
        while let Some(ev) = c.poll() {
            up |= matches!(ev, Event::Connected);
        }
        if up {
            break;
        }
    }

    let request = [7u8; 64];
    let mut lat = Vec::with_capacity(rounds);
    let mut reply = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let id = loop {
            if let Some(id) = side.conns.get_mut(&ch).unwrap().streams().open(Dir::Bi) {
                break id;
            }
            side.flush();
            side.turn();
            let _ = side.conns.get_mut(&ch).unwrap().poll();
        };
        let c = side.conns.get_mut(&ch).unwrap();
        c.send_stream(id).write(&request).unwrap();
        c.send_stream(id).finish().unwrap();
        reply.clear();
        loop {
            side.flush();
            side.turn();
            let c = side.conns.get_mut(&ch).unwrap();
            while c.poll().is_some() {}
            if read_all(c, id, &mut reply) {
                break;
            }
        }
        assert_eq!(reply.len(), request.len());
        lat.push(t0.elapsed());
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "quic floor unary (64 B, one stream per call): n={rounds} p50={:?} p99={:?}",
        p(0.5),
        p(0.99)
    );

    // Bulk: one stream, write bulk_mib MiB, read the echo back concurrently.
    let total = bulk_mib << 20;
    let chunk = vec![1u8; 64 << 10];
    let c = side.conns.get_mut(&ch).unwrap();
    let id = c.streams().open(Dir::Bi).unwrap();
    let (mut sent, mut got) = (0usize, 0usize);
    let mut sink = Vec::new();
    let t0 = Instant::now();
    let mut finished = false;
    loop {
        let c = side.conns.get_mut(&ch).unwrap();
        while c.poll().is_some() {}
        while sent < total {
            match c
                .send_stream(id)
                .write(&chunk[..chunk.len().min(total - sent)])
            {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        if sent == total && !finished {
            c.send_stream(id).finish().unwrap();
            finished = true;
        }
        sink.clear();
        let fin = read_all(c, id, &mut sink);
        got += sink.len();
        if fin {
            break;
        }
        side.flush();
        side.turn();
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "bulk stalled at {got} of {total}"
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(got, total);
    println!(
        "quic floor bulk echo: {bulk_mib} MiB each way in {secs:.2} s = {:.0} MiB/s",
        bulk_mib as f64 / secs
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    st.join().unwrap();
}
