//! 0-RTT over `quic://` (docs/quic.md "0-RTT", docs/protocol.md §27.3): a client that
//! resumes a session sends its idempotent calls in the first flight; the server serves them
//! only for methods declared idempotent; other calls wait for the handshake; a server that
//! does not know the ticket rejects the early data and the client sends it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netron_quic::{ClientConfig, ServerConfig, Trust};
use rcgen::ExtendedKeyUsagePurpose;

use super::{Ca, DL, quic_addr, wait_stats};
use crate::{CallError, CallOptions, Engine, ProtocolConfig, Service, StatusCode};

/// `kv@1.0.0`: `get` (declared idempotent) answers `v`; `put` (not declared) counts its runs.
fn kv(puts: &Arc<AtomicUsize>) -> Service {
    let puts = puts.clone();
    Service::new("kv", "1.0.0")
        .unwrap()
        .unary("get", |_req, reply| {
            reply.write(b"v");
            Ok(())
        })
        .unary("put", move |_req, reply| {
            puts.fetch_add(1, Ordering::SeqCst);
            reply.write(b"ok");
            Ok(())
        })
        .idempotent("get")
}

fn server(ca: &Ca, puts: &Arc<AtomicUsize>) -> Engine {
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(kv(puts))
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap()
}

fn client(ca: &Ca, zero_rtt: bool) -> Engine {
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.zero_rtt = zero_rtt;
    Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .unwrap()
}

/// Connects `c` to `s` once and makes a call, so `c` holds a ticket of `s`'s (sent after the
/// handshake, before the reply).
fn prime(c: &Engine, s: &Engine) {
    let ch = c
        .client()
        .connect(&format!("quic://{}", quic_addr(s)))
        .unwrap();
    assert_eq!(ch.call("kv@1.0.0", "get", &b"k"[..], DL).unwrap(), b"v");
}

/// A UDP relay to `server` that holds every datagram from the server back `delay`: the
/// handshake then takes at least that long, so calls made right after the connect returns
/// surely leave before it completes (in 0-RTT).
struct Delayer {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delayer {
    fn start(server: std::net::SocketAddr, delay: Duration) -> Self {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            let mut client = None;
            let mut later: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
            while !halt.load(Ordering::Acquire) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if from == server {
                        later.push_back((Instant::now() + delay, buf[..n].to_vec()));
                    } else {
                        client = Some(from);
                        let _ = sock.send_to(&buf[..n], server);
                    }
                }
                while later.front().is_some_and(|(at, _)| *at <= Instant::now()) {
                    let (_, d) = later.pop_front().unwrap();
                    if let Some(c) = client {
                        let _ = sock.send_to(&d, c);
                    }
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("quic://127.0.0.1:{}", self.port)
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const SLOW: Duration = Duration::from_millis(150);

/// A server (`puts` counts its `put` runs), a client with 0-RTT on that holds its ticket,
/// and a channel connected through a relay slowing the server's datagrams by `delay` (so
/// the channel is in its 0-RTT phase when it is returned).
struct Resumed {
    puts: Arc<AtomicUsize>,
    s: Engine,
    c: Engine,
    ch: crate::Channel,
    _relay: Delayer,
}

impl Resumed {
    fn new(ca: &Ca, delay: Duration) -> Self {
        let puts = Arc::new(AtomicUsize::new(0));
        let s = server(ca, &puts);
        let c = client(ca, true);
        prime(&c, &s);
        let relay = Delayer::start(quic_addr(&s), delay);
        let ch = c.client().connect(&relay.endpoint()).unwrap();
        Self {
            puts,
            s,
            c,
            ch,
            _relay: relay,
        }
    }
}

/// Resumed with 0-RTT: an idempotent call to an idempotent method is served from the first
/// flight (counted by the server), a plain call made at the same moment waits for the
/// handshake and is served after it (not refused), and the client counts the accepted 0-RTT.
#[test]
fn a_resumed_client_sends_idempotent_calls_in_0rtt_and_holds_the_others() {
    let ca = Ca::new("ca");
    let Resumed {
        puts,
        s,
        c,
        ch,
        _relay,
    } = Resumed::new(&ca, SLOW);
    let get = ch.method("kv@1.0.0", "get").idempotent();
    let early = std::thread::spawn(move || get.call(&b"k"[..], DL));
    let put = ch.call("kv@1.0.0", "put", &b"x"[..], DL).unwrap();
    assert_eq!(put, b"ok");
    assert_eq!(early.join().unwrap().unwrap(), b"v");
    assert_eq!(puts.load(Ordering::SeqCst), 1);
    let st = s.total_stats();
    assert_eq!(st.zero_rtt_calls_in(), 1, "the get came in 0-RTT: {st:?}");
    assert_eq!(st.errors_of("zero_rtt_refused"), 0, "{st:?}");
    wait_stats(&c, |st| st.zero_rtt_accepted() == 1);
    assert_eq!(c.total_stats().zero_rtt_rejected(), 0);
}

/// A call marked idempotent to a method not declared so is refused in 0-RTT (Unavailable,
/// not run, counted); the same call after the handshake is served.
#[test]
fn a_call_to_a_method_not_declared_idempotent_is_refused_in_0rtt_and_served_after() {
    let ca = Ca::new("ca");
    let Resumed {
        puts,
        s,
        c: _c,
        ch,
        _relay,
    } = Resumed::new(&ca, SLOW);
    let opts = CallOptions::new()
        .idempotent()
        .deadline(Duration::from_secs(10));
    let r = ch.call_with("kv@1.0.0", "put", &b"x"[..], &opts);
    let Err(CallError::Status(st)) = r.result() else {
        panic!("served in 0-RTT: {:?}", r.result());
    };
    assert_eq!(st.code, StatusCode::Unavailable);
    assert!(st.message.contains("0-RTT"), "{}", st.message);
    assert_eq!(puts.load(Ordering::SeqCst), 0, "run although refused");
    assert_eq!(s.total_stats().errors_of("zero_rtt_refused"), 1);
    // The handshake is complete now: the same call is served.
    let r = ch.call_with("kv@1.0.0", "put", &b"x"[..], &opts);
    assert_eq!(r.result().unwrap(), b"ok");
    assert_eq!(puts.load(Ordering::SeqCst), 1);
    assert_eq!(s.total_stats().zero_rtt_calls_in(), 0);
}

/// A server that does not know the ticket (another process, an empty session cache) rejects
/// the early data: the client sends its Hello and calls again after the handshake and they
/// are served; the client counts the rejection.
#[test]
fn rejected_0rtt_data_is_sent_again_after_the_handshake() {
    let ca = Ca::new("ca");
    let puts = Arc::new(AtomicUsize::new(0));
    let first = server(&ca, &puts);
    let c = client(&ca, true);
    prime(&c, &first);
    // The same name and certificate authority, but a session cache that never saw the ticket.
    let other = server(&ca, &puts);
    let relay = Delayer::start(quic_addr(&other), SLOW);
    let ch = c.client().connect(&relay.endpoint()).unwrap();
    let get = ch.method("kv@1.0.0", "get").idempotent();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let get = get.clone();
            std::thread::spawn(move || get.call(&b"k"[..], DL))
        })
        .collect();
    for t in calls {
        assert_eq!(t.join().unwrap().unwrap(), b"v");
    }
    wait_stats(&c, |st| st.zero_rtt_rejected() == 1);
    assert_eq!(c.total_stats().zero_rtt_accepted(), 0);
    let st = other.total_stats();
    assert_eq!(st.zero_rtt_calls_in(), 0, "{st:?}");
    assert_eq!(st.calls_in(), 3);
}

/// A caller's deadline holds while its call waits for the handshake: a plain call with a
/// deadline shorter than the (slowed) handshake fails with DeadlineExceeded and is never
/// sent; 0-RTT off (the default) connects as before, with no 0-RTT counted.
#[test]
fn a_held_call_honours_its_deadline_and_0rtt_is_off_by_default() {
    let ca = Ca::new("ca");
    let Resumed {
        puts,
        s,
        c,
        ch,
        _relay,
    } = Resumed::new(&ca, Duration::from_secs(3));
    let f = ch
        .method("kv@1.0.0", "put")
        .call_async(&b"x"[..], Some(Duration::from_millis(50)));
    let r = futures_lite_block_on(f);
    let Err(CallError::Status(st)) = r else {
        panic!("{r:?}");
    };
    assert_eq!(st.code, StatusCode::DeadlineExceeded);
    // Failed while the handshake was still under way (the prime's is the only one done):
    // the core's timer, not the end of the handshake, ended the wait.
    assert_eq!(c.total_stats().handshakes(), 1, "{:?}", c.total_stats());
    // The connection goes on: a call after the handshake is served.
    assert_eq!(ch.call("kv@1.0.0", "get", &b"k"[..], DL).unwrap(), b"v");
    assert_eq!(puts.load(Ordering::SeqCst), 0, "the expired call was sent");

    let plain = client(&ca, false);
    prime(&plain, &s);
    prime(&plain, &s);
    let st = plain.total_stats();
    assert_eq!((st.zero_rtt_accepted(), st.zero_rtt_rejected()), (0, 0));
}

/// Polls `f` on this thread until it is ready.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// With mutual TLS, a call served from 0-RTT sees the client's certificate (restored from the
/// resumed session, known from the ClientHello before any request is read).
#[test]
fn a_0rtt_call_sees_the_resumed_client_certificate() {
    let ca = Ca::new("ca");
    let mut sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    sc.client_auth = netron_quic::ClientAuth::Required(vec![ca.cert.clone()]);
    let who = Service::new("who", "1.0.0")
        .unwrap()
        .unary("am_i", |req, reply| {
            let n = req.peer_certificates().map_or(0, |c| c.leaf().len());
            reply.write(&(n as u32).to_le_bytes());
            Ok(())
        })
        .idempotent("am_i");
    let s = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_server(sc))
        .service(who)
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let id = ca.leaf("alice", ExtendedKeyUsagePurpose::ClientAuth);
    let leaf = id.chain[0].len() as u32;
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.identity = Some(id);
    cc.zero_rtt = true;
    let c = Engine::builder()
        .cores(1)
        .config(ProtocolConfig::default().with_quic_client(cc))
        .build()
        .unwrap();
    let ask = |endpoint: &str| {
        let ch = c.client().connect(endpoint).unwrap();
        ch.method("who@1.0.0", "am_i")
            .idempotent()
            .call(&b""[..], DL)
            .unwrap()
    };
    assert_eq!(
        ask(&format!("quic://{}", quic_addr(&s))),
        leaf.to_le_bytes()
    );
    let relay = Delayer::start(quic_addr(&s), SLOW);
    assert_eq!(ask(&relay.endpoint()), leaf.to_le_bytes());
    assert_eq!(s.total_stats().zero_rtt_calls_in(), 1);
}

/// A client engine whose Hello offers a header table of `table` bytes, on a clone of `cc`
/// (clones share one session cache and what was learned of each server).
fn client_with_table(cc: &ClientConfig, table: u32) -> Engine {
    let offer = crate::handshake::ClientConfig::default().with_header_table_size(table);
    Engine::builder()
        .cores(1)
        .config(
            ProtocolConfig::default()
                .with_client(offer)
                .with_quic_client(cc.clone()),
        )
        .build()
        .unwrap()
}

/// Connects `c` to `server` through a relay that slows the server's datagrams (a resumed
/// session is then still in 0-RTT when the connect returns) and makes one idempotent `get`.
fn early_get(c: &Engine, server: std::net::SocketAddr) -> Result<Vec<u8>, CallError> {
    let relay = Delayer::start(server, SLOW);
    let ch = c.client().connect(&relay.endpoint()).unwrap();
    ch.method("kv@1.0.0", "get")
        .idempotent()
        .call(&b"k"[..], DL)
        .map(|b| b.to_vec())
}

/// Two client engines share one `ClientConfig` (its session cache and what it learned of
/// the server) but offer different header tables: each codes its 0-RTT calls in the format
/// its own connection negotiates (static-only HPACK for an offer of 0, QPACK otherwise), and
/// what one learns does not mislead the other (fresh user R17: the negotiated size was
/// remembered as such, so the other engine's early calls failed to decode).
#[test]
fn clients_of_one_configuration_with_different_table_offers_send_0rtt_calls_that_decode() {
    let ca = Ca::new("ca");
    let puts = Arc::new(AtomicUsize::new(0));
    let s = server(&ca, &puts);
    let mut cc = ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]));
    cc.zero_rtt = true;
    let with_table = client_with_table(&cc, 4096);
    let without = client_with_table(&cc, 0);
    for round in 0..2 {
        for (offer, c) in [(0, &without), (4096, &with_table)] {
            // A fresh ticket (an early get's connection ends before the server's tickets
            // arrive) and, from the first round on, what an offer of 4096 learns.
            prime(&with_table, &s);
            let before = s.total_stats().zero_rtt_calls_in();
            let r = early_get(c, quic_addr(&s));
            assert_eq!(r.unwrap(), b"v", "offer {offer}, round {round}");
            let st = s.total_stats();
            assert_eq!(st.zero_rtt_calls_in(), before + 1, "came in 0-RTT: {st:?}");
        }
    }
}

/// A server restarted with another header table size, on the same session cache: the
/// first 0-RTT connect's early calls (coded as the last connection taught) fail, the client
/// forgets what it assumed, and the next connects work (a full handshake, then 0-RTT again
/// in the new format).
#[test]
fn after_a_server_changes_its_table_one_0rtt_connect_fails_and_the_next_ones_work() {
    let ca = Ca::new("ca");
    let sc = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth));
    let puts = Arc::new(AtomicUsize::new(0));
    let serve = |table: u32| {
        let offer = crate::handshake::ServerConfig::default().with_header_table_size(table);
        Engine::builder()
            .cores(1)
            .config(
                ProtocolConfig::default()
                    .with_server(offer)
                    .with_quic_server(sc.clone()),
            )
            .service(kv(&puts))
            .listen("quic://127.0.0.1:0")
            .build()
            .unwrap()
    };
    let before = serve(4096);
    let after = serve(0);
    let c = client(&ca, true);
    prime(&c, &before);
    let first = early_get(&c, quic_addr(&after));
    let Err(CallError::Closed(st)) = first else {
        panic!("coded for a table the server no longer keeps, yet: {first:?}");
    };
    assert!(
        st.message.contains("header_table_size"),
        "names the setting: {st}"
    );
    assert!(st.message.contains("0-RTT"), "{st}");
    assert_eq!(early_get(&c, quic_addr(&after)).unwrap(), b"v");
    // A fresh ticket (the early gets' connections end before the server's tickets arrive).
    prime(&c, &after);
    let served = after.total_stats().zero_rtt_calls_in();
    assert_eq!(early_get(&c, quic_addr(&after)).unwrap(), b"v");
    assert_eq!(
        after.total_stats().zero_rtt_calls_in(),
        served + 1,
        "0-RTT again, in the new format"
    );
}
