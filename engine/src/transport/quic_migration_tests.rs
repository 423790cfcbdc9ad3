//! Connection migration on `quic://` servers (docs/quic.md "Connection migration"): a client
//! behind a NAT whose mapping changes mid-call (its datagrams come from a new port) keeps its
//! connection and its calls. The NAT and the server here are shared with the review-16 tests
//! (quic_review16_tests.rs).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netron_quic::{ClientConfig, ServerConfig, Trust};
use rcgen::ExtendedKeyUsagePurpose;

use super::{Ca, DL, quic_addr};
use crate::{Bytes, Engine, ProtocolConfig, Service};

// ---------------------------------------------------------------------------------------
// A NAT that can rebind, report the connection ID, and replay a datagram from another port.
// ---------------------------------------------------------------------------------------

pub(super) const REBIND: u8 = 1;
/// Send the next short-header datagram of the client first from a fresh socket, which is
/// then closed (its port answers with ICMP port unreachable), then the original.
pub(super) const REPLAY: u8 = 2;
/// Send the next short-header datagram of the client first from `Nat::spoof_as` (another
/// host's address: IP source spoofing), then the original.
pub(super) const SPOOF: u8 = 3;
/// Rebind onto `Nat::spoof_as` (a port another NAT mapping used before).
pub(super) const REBIND_TO: u8 = 4;
/// Like `SPOOF`, for every short-header datagram until told otherwise.
pub(super) const SPOOF_ALL: u8 = 5;

/// A UDP socket on `addr` that another socket may share (SO_REUSEADDR), non-blocking.
pub(super) fn shared_socket(addr: SocketAddr) -> UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )
    .unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.set_nonblocking(true).unwrap();
    s.into()
}

pub(super) struct Nat {
    pub(super) addr: SocketAddr,
    pub(super) cmd: Arc<AtomicU8>,
    pub(super) cid: Arc<Mutex<Option<[u8; netron_quic::CID_LEN]>>>,
    /// The current upstream socket's address.
    pub(super) up: Arc<Mutex<Option<SocketAddr>>>,
    /// Where `SPOOF` sends from.
    pub(super) spoof_as: Arc<Mutex<Option<SocketAddr>>>,
    pub(super) from_server: Arc<AtomicU64>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Nat {
    pub(super) fn start(server: SocketAddr) -> Nat {
        let ip = server.ip();
        let inside = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        inside.set_nonblocking(true).unwrap();
        let addr = inside.local_addr().unwrap();
        let cmd = Arc::new(AtomicU8::new(0));
        let cid = Arc::new(Mutex::new(None));
        let (from_server, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, id, fs, halt) = (cmd.clone(), cid.clone(), from_server.clone(), stop.clone());
        let (up_addr, spoof_as) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
        let (ua, sa) = (up_addr.clone(), spoof_as.clone());
        let thread = std::thread::spawn(move || {
            let upstream = || {
                let s = shared_socket(SocketAddr::new(ip, 0));
                *ua.lock().unwrap() = Some(s.local_addr().unwrap());
                s
            };
            let (mut up, mut old) = (upstream(), Vec::new());
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_535];
            while !halt.load(Ordering::Acquire) {
                if c.load(Ordering::Acquire) == REBIND {
                    old.push(std::mem::replace(&mut up, upstream()));
                    fs.store(0, Ordering::Release);
                    c.store(0, Ordering::Release);
                }
                if c.load(Ordering::Acquire) == REBIND_TO {
                    let to = shared_socket(sa.lock().unwrap().unwrap());
                    *ua.lock().unwrap() = Some(to.local_addr().unwrap());
                    old.push(std::mem::replace(&mut up, to));
                    fs.store(0, Ordering::Release);
                    c.store(0, Ordering::Release);
                }
                let mut idle = true;
                while let Ok((n, from)) = inside.recv_from(&mut buf) {
                    idle = false;
                    client = Some(from);
                    if n > 1 + netron_quic::CID_LEN && buf[0] & 0x80 == 0 {
                        *id.lock().unwrap() =
                            Some(buf[1..1 + netron_quic::CID_LEN].try_into().unwrap());
                        if c.load(Ordering::Acquire) == REPLAY {
                            let y = upstream();
                            let _ = y.send_to(&buf[..n], server);
                            drop(y);
                            std::thread::sleep(Duration::from_millis(2));
                            c.store(0, Ordering::Release);
                        }
                        if c.load(Ordering::Acquire) == SPOOF_ALL {
                            let y = shared_socket(sa.lock().unwrap().unwrap());
                            let _ = y.send_to(&buf[..n], server);
                        }
                        if c.load(Ordering::Acquire) == SPOOF {
                            let y = shared_socket(sa.lock().unwrap().unwrap());
                            let _ = y.send_to(&buf[..n], server);
                            drop(y);
                            std::thread::sleep(Duration::from_millis(2));
                            c.store(0, Ordering::Release);
                        }
                    }
                    let _ = up.send_to(&buf[..n], server);
                }
                while let Ok((n, _)) = up.recv_from(&mut buf) {
                    idle = false;
                    fs.fetch_add(1, Ordering::AcqRel);
                    if let Some(c) = client {
                        let _ = inside.send_to(&buf[..n], c);
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        });
        Nat {
            addr,
            cmd,
            cid,
            up: up_addr,
            spoof_as,
            from_server,
            stop,
            thread: Some(thread),
        }
    }

    pub(super) fn order(&self, what: u8) {
        self.cmd.store(what, Ordering::Release);
        let until = Instant::now() + Duration::from_secs(10);
        while self.cmd.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < until, "the NAT did not do {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(super) fn url(&self) -> String {
        format!("quic://{}", self.addr)
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.take().map(std::thread::JoinHandle::join);
    }
}

pub(super) type Held = Arc<Mutex<Vec<(crate::DeferredReply, Vec<u8>)>>>;

pub(super) fn server(ca: &Ca, listen: &str, name: &str, held: &Held) -> Engine {
    server_with(ca, listen, name, held, true)
}

pub(super) fn server_with(
    ca: &Ca,
    listen: &str,
    name: &str,
    held: &Held,
    migration: bool,
) -> Engine {
    let h = held.clone();
    let gate = Service::new("gate", "1.0.0")
        .unwrap()
        .unary_deferred("wait", move |req, reply| {
            h.lock().unwrap().push((reply, req.payload().to_vec()));
        });
    let mut sc = ServerConfig::new(ca.leaf(name, ExtendedKeyUsagePurpose::ServerAuth));
    sc.migration = migration;
    Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(super::echo())
        .service(gate)
        .listen(listen)
        .build()
        .unwrap()
}

pub(super) fn client(ca: &Ca) -> Engine {
    Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default()
                .with_quic_client(ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]))),
        )
        .build()
        .unwrap()
}

pub(super) fn wait_held(held: &Held, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while held.lock().unwrap().len() < n {
        assert!(Instant::now() < until, "the held call did not arrive");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(super) fn answer(held: &Held) {
    for (reply, payload) in held.lock().unwrap().drain(..) {
        reply.answer(Ok(Bytes::from(payload)));
    }
}

/// Mid-call, the client's NAT maps it to a new port: the server routes the datagrams from
/// the new address to the connection (its socket is connected to the old one), quinn-proto
/// validates the new path, and both the held call and a new one complete, their replies sent
/// to the new address. Before migration was handled, the listener's gate answered the first
/// datagram from the new port with a stateless reset, which ended the connection.
#[test]
fn a_client_whose_nat_rebinds_mid_call_keeps_its_calls() {
    let ca = Ca::new("ca");
    let held: Held = Arc::default();
    let s = server(&ca, "quic://127.0.0.1:0", "127.0.0.1", &held);
    let nat = Nat::start(quic_addr(&s));
    let c = client(&ca);
    let ch = c.client().connect(&nat.url()).unwrap();
    assert_eq!(
        ch.call("echo@1.0.0", "say", &b"before"[..], DL).unwrap(),
        b"before"
    );
    let waiting = {
        let ch = ch.clone();
        std::thread::spawn(move || ch.call("gate@1.0.0", "wait", &b"held"[..], DL))
    };
    wait_held(&held, 1);
    nat.order(REBIND);
    // A call after the rebinding: its datagrams come from the new port.
    for i in 0..20u8 {
        let p = vec![i; 1 + usize::from(i) * 3_000];
        assert_eq!(ch.call("echo@1.0.0", "say", p.clone(), DL).unwrap(), p);
    }
    assert!(
        nat.from_server.load(Ordering::Acquire) > 0,
        "the server answers on the new path"
    );
    // The call held across the rebinding completes too.
    answer(&held);
    assert_eq!(waiting.join().unwrap().unwrap(), b"held");
    let st = s.total_stats();
    assert_eq!(st.closed(), 0, "{st:?}");
    assert!(st.errors().is_empty(), "{:?}", st.errors());
    // Only the datagrams until QUIC moved the connection came through the listener: then the
    // connection's socket was connected to the new address (20 calls of up to 57 KB sent
    // hundreds of datagrams).
    let d = *st.driver();
    eprintln!(
        "routed {} of {} datagrams received",
        d.udp_datagrams_routed, d.udp_datagrams_received
    );
    assert!(
        d.udp_datagrams_routed >= 1 && d.udp_datagrams_routed <= 32,
        "{d:?}"
    );
}

/// With `ServerConfig::migration` off, the same rebinding ends the connection (quinn-proto
/// drops packets from a new address; the client's calls fail when the connection goes):
/// the switch does what it says.
#[test]
fn with_migration_off_a_rebound_client_loses_its_connection() {
    let ca = Ca::new("ca");
    let held: Held = Arc::default();
    let s = server_with(&ca, "quic://127.0.0.1:0", "127.0.0.1", &held, false);
    let nat = Nat::start(quic_addr(&s));
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.settings.idle_timeout = Duration::from_secs(2);
    let c = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .unwrap();
    let ch = c.client().connect(&nat.url()).unwrap();
    assert_eq!(
        ch.call("echo@1.0.0", "say", &b"before"[..], DL).unwrap(),
        b"before"
    );
    nat.order(REBIND);
    let got = ch.call(
        "echo@1.0.0",
        "say",
        &b"after"[..],
        Some(Duration::from_secs(5)),
    );
    assert!(got.is_err(), "a call over the new port succeeded: {got:?}");
}
