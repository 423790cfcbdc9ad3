//! Connection migration on `quic://` servers (docs/quic.md "Connection migration"): a client
//! behind a NAT whose mapping changes mid-call (its datagrams come from a new port) keeps its
//! connection and its calls.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netron_quic::{ClientConfig, ServerConfig, Trust};
use rcgen::ExtendedKeyUsagePurpose;

use super::{Ca, DL, quic_addr};
use crate::{Bytes, Engine, ProtocolConfig, Service};

/// A NAT on loopback: the client talks to `port`; its datagrams leave for the server from an
/// upstream socket, which [`Nat::rebind`] replaces by one on a new port (the old mapping
/// then drops what reaches it, silently, as an expired NAT mapping does).
struct Nat {
    port: u16,
    rebind: Arc<AtomicBool>,
    /// Datagrams from the server on the current upstream socket since the last rebind.
    from_server: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Nat {
    fn start(server: SocketAddr) -> Nat {
        let inside = UdpSocket::bind("127.0.0.1:0").unwrap();
        inside.set_nonblocking(true).unwrap();
        let port = inside.local_addr().unwrap().port();
        let (rebind, from_server, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (rb, fs, halt) = (rebind.clone(), from_server.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let upstream = || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            };
            let (mut up, mut old) = (upstream(), Vec::new());
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_535];
            while !halt.load(Ordering::Acquire) {
                if rb.swap(false, Ordering::AcqRel) {
                    // Keep the old socket open (no ICMP errors), but read nothing from it.
                    old.push(std::mem::replace(&mut up, upstream()));
                    fs.store(0, Ordering::Release);
                }
                let mut idle = true;
                while let Ok((n, from)) = inside.recv_from(&mut buf) {
                    idle = false;
                    client = Some(from);
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
            port,
            rebind,
            from_server,
            stop,
            thread: Some(thread),
        }
    }

    fn rebind(&self) {
        self.rebind.store(true, Ordering::Release);
        while self.rebind.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.take().map(std::thread::JoinHandle::join);
    }
}

type Held = Arc<Mutex<Vec<(crate::DeferredReply, Vec<u8>)>>>;

/// A server with `echo/say` and `gate/wait` (replies held until the test answers them).
fn server(ca: &Ca, migration: bool, held: &Held) -> Engine {
    let h = held.clone();
    let gate = Service::new("gate", "1.0.0")
        .unwrap()
        .unary_deferred("wait", move |req, reply| {
            h.lock().unwrap().push((reply, req.payload().to_vec()));
        });
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.migration = migration;
    Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(super::echo())
        .service(gate)
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap()
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
    let s = server(&ca, true, &held);
    let nat = Nat::start(quic_addr(&s));
    let c = Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default()
                .with_quic_client(ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]))),
        )
        .build()
        .unwrap();
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", nat.port))
        .unwrap();
    assert_eq!(
        ch.call("echo@1.0.0", "say", &b"before"[..], DL).unwrap(),
        b"before"
    );
    let waiting = {
        let ch = ch.clone();
        std::thread::spawn(move || ch.call("gate@1.0.0", "wait", &b"held"[..], DL))
    };
    let until = Instant::now() + Duration::from_secs(10);
    while held.lock().unwrap().is_empty() {
        assert!(Instant::now() < until, "the held call did not arrive");
        std::thread::sleep(Duration::from_millis(2));
    }
    nat.rebind();
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
    for (reply, payload) in held.lock().unwrap().drain(..) {
        reply.answer(Ok(Bytes::from(payload)));
    }
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
    let s = server(&ca, false, &held);
    let nat = Nat::start(quic_addr(&s));
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.settings.idle_timeout = Duration::from_secs(2);
    let c = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .unwrap();
    let ch = c
        .client()
        .connect(&format!("quic://127.0.0.1:{}", nat.port))
        .unwrap();
    assert_eq!(
        ch.call("echo@1.0.0", "say", &b"before"[..], DL).unwrap(),
        b"before"
    );
    nat.rebind();
    let got = ch.call(
        "echo@1.0.0",
        "say",
        &b"after"[..],
        Some(Duration::from_secs(5)),
    );
    assert!(got.is_err(), "a call over the new port succeeded: {got:?}");
}
