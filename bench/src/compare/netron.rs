//! Netron's side of the comparison: a one-core engine server pinned to cpu1 and a client core
//! driven by this thread (cpu0), in three idle policies; and a codec-built client for the
//! traceparent byte count (the engine's call API has no per-call metadata yet).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netron_codec::handshake::{ClientConfig, ClientHandshake, ClientProgress};
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameIter, FrameKind};
use netron_engine::{CallSlot, Core, CoreConfig, Endpoint, IdlePolicy, RuntimeConfig};

use super::{DEADLINE, DEPTHS, Overhead, Rpc, SIZE, Workload, cpu_ns, proxy, traceparent};
use crate::engine_section::{METHOD, SERVICE, server};
use crate::stats::Samples;

const MODES: [(&str, IdlePolicy); 3] = [
    (
        "adaptive (default: spin 50 µs)",
        IdlePolicy::Adaptive {
            spin: Duration::from_micros(50),
        },
    ),
    ("busy-poll", IdlePolicy::BusyPoll),
    (
        "spin 0 (parks like the peers)",
        IdlePolicy::Adaptive {
            spin: Duration::ZERO,
        },
    ),
];

fn endpoint_of(engine: &netron_engine::Engine) -> Endpoint {
    engine.endpoints()[0].clone()
}

/// Round trips with a deadline on every call, and the CPU time (both sides) they took.
fn round_trips(endpoint: &str, idle: IdlePolicy, n: usize) -> (Samples, f64) {
    let engine = server(endpoint, idle);
    let mut core = Core::new(RuntimeConfig::default().with_idle(idle)).expect("client core");
    let conn = core
        .connect(&endpoint_of(&engine), Duration::from_secs(5))
        .expect("connect");
    let mut slot = CallSlot::new();
    let msg = [0x5au8; SIZE];
    let mut s = Samples::with_capacity(n);
    for _ in 0..n / 10 {
        core.call(conn, SERVICE, METHOD, &msg, Some(DEADLINE), &mut slot)
            .expect("call");
    }
    let cpu0 = cpu_ns();
    for _ in 0..n {
        let t = Instant::now();
        let r = core
            .call(conn, SERVICE, METHOD, &msg, Some(DEADLINE), &mut slot)
            .expect("call");
        debug_assert_eq!(r.len(), SIZE);
        s.push(t.elapsed().as_nanos() as u64);
    }
    let cpu = (cpu_ns() - cpu0) as f64 / n as f64;
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    (s, cpu)
}

/// Calls/s with `depth` calls in flight on one TCP connection.
fn pipelined(idle: IdlePolicy, depth: usize, window: Duration) -> f64 {
    let engine = server("tcp://127.0.0.1:0", idle);
    let mut core = Core::new(RuntimeConfig::default().with_idle(idle)).expect("core");
    let conn = core
        .connect(&endpoint_of(&engine), Duration::from_secs(5))
        .expect("connect");
    let mut slots: Vec<CallSlot> = (0..depth).map(|_| CallSlot::new()).collect();
    let msg = [0x5au8; SIZE];
    let mut run = |core: &mut Core, dur: Duration| -> u64 {
        // The calls in flight at the end landed too: count them.
        crate::engine_section::pipelined_calls(
            core,
            conn,
            (SERVICE, METHOD, &msg, Some(DEADLINE)),
            &mut slots,
            dur,
        ) + depth as u64
    };
    run(&mut core, window / 4);
    let t = Instant::now();
    let calls = run(&mut core, window);
    let rate = calls as f64 / t.elapsed().as_secs_f64();
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    rate
}

/// The TCP rows: default adaptive, busy-poll, spin 0.
pub(crate) fn tcp_rows(wl: &Workload) -> Vec<Rpc> {
    MODES
        .iter()
        .map(|&(mode, idle)| {
            let (lat, cpu_ns) = round_trips("tcp://127.0.0.1:0", idle, wl.n);
            let mut rates = [0f64; 3];
            for (r, depth) in rates.iter_mut().zip(DEPTHS) {
                *r = pipelined(idle, depth, wl.window);
            }
            Rpc {
                system: "Netron",
                mode,
                lat,
                cpu_ns,
                rates,
            }
        })
        .collect()
}

/// Netron over unix:// (busy-poll and spin 0), for the IPC table.
pub(crate) fn unix_rows(wl: &Workload) -> Vec<(String, Samples)> {
    [("busy-poll", IdlePolicy::BusyPoll), ("spin 0", MODES[2].1)]
        .into_iter()
        .map(|(name, idle)| {
            let ep = format!(
                "unix:///tmp/netron-bench-compare-{}-{}.sock",
                std::process::id(),
                name.replace(' ', "")
            );
            let (s, _) = round_trips(&ep, idle, wl.n);
            (format!("Netron unary call over unix://, {name}"), s)
        })
        .collect()
}

/// Overhead bytes per call: the engine's client with a deadline, and a codec-built client
/// with a deadline and a fresh traceparent per call, both counted on a proxy.
pub(crate) fn overhead(wl: &Workload) -> Option<Overhead> {
    let engine = server("tcp://127.0.0.1:0", IdlePolicy::default());
    let Endpoint::Tcp(addr) = endpoint_of(&engine) else {
        return None;
    };
    let proxy = proxy::Proxy::start(addr);
    let calls = wl.byte_calls;

    let mut core = Core::new(CoreConfig::default()).expect("core");
    let conn = core
        .connect(&Endpoint::Tcp(proxy.addr), Duration::from_secs(5))
        .expect("connect through the proxy");
    let mut slot = CallSlot::new();
    let msg = [0x5au8; SIZE];
    let mut call = |core: &mut Core| {
        core.call(conn, SERVICE, METHOD, &msg, Some(DEADLINE), &mut slot)
            .map(|_| ())
            .expect("call");
    };
    (0..calls).for_each(|_| call(&mut core));
    let before = proxy.bytes();
    (0..calls).for_each(|_| call(&mut core));
    let deadline = (proxy.bytes() - before) as f64 / calls as f64 - 2.0 * SIZE as f64;
    core.close(conn);
    drop(core);

    let traced = match RawClient::connect(proxy.addr) {
        Ok(mut c) => {
            let mut ok = true;
            for i in 0..calls {
                ok &= c.call(Some(i as u64)).is_ok();
            }
            let before = proxy.bytes();
            for i in 0..calls {
                ok &= c.call(Some((calls + i) as u64)).is_ok();
            }
            let per = (proxy.bytes() - before) as f64 / calls as f64 - 2.0 * SIZE as f64;
            ok.then_some(per)
        }
        Err(e) => {
            eprintln!("netron-bench compare: codec client: {e}");
            None
        }
    };
    drop(proxy);
    engine.shutdown(Duration::from_millis(200));
    Some(Overhead {
        deadline,
        traceparent: traced.unwrap_or(f64::NAN),
    })
}

/// A Netron client built from `netron-codec` alone (what a third party would write): blocking
/// socket, handshake, one Request at a time with service, method, deadline and traceparent.
struct RawClient {
    sock: TcpStream,
    batch: BatchEncoder,
    headers: HeaderEncoder,
    limits: netron_codec::Limits,
    inbuf: Vec<u8>,
    next_id: u32,
}

impl RawClient {
    fn connect(addr: SocketAddr) -> Result<Self, String> {
        let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut hs = ClientHandshake::new(ClientConfig::default());
        let mut out = Vec::new();
        hs.start(&mut out).map_err(|e| e.to_string())?;
        sock.write_all(&out).map_err(|e| e.to_string())?;
        let mut inbuf = Vec::new();
        let mut chunk = [0u8; 4096];
        let settings = loop {
            let n = sock.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("server closed during the handshake".into());
            }
            inbuf.extend_from_slice(&chunk[..n]);
            match hs.handle(&inbuf).map_err(|e| e.to_string())? {
                ClientProgress::NeedMore { .. } => {}
                ClientProgress::Done { settings, consumed } => {
                    inbuf.drain(..consumed);
                    break settings;
                }
            }
        };
        Ok(Self {
            sock,
            batch: BatchEncoder::new(settings.limits),
            headers: HeaderEncoder::new(settings.header_table_size),
            limits: settings.limits,
            inbuf,
            // The connection's initiator uses odd request ids (docs/protocol.md).
            next_id: 1,
        })
    }

    fn call(&mut self, trace: Option<u64>) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 2;
        let tp = trace.map(traceparent);
        let mut hs = vec![Header::service(SERVICE), Header::method(METHOD)];
        if let Some(tp) = &tp {
            hs.push(Header::new(b"traceparent", tp.as_bytes()));
        }
        self.batch.clear();
        self.batch
            .request(id, Some(DEADLINE))
            .and_then(|b| b.headers(&mut self.headers, &hs))
            .map(|b| b.payload(&[0x5a; SIZE]))
            .and_then(|b| b.finish())
            .map_err(|e| e.to_string())?;
        self.sock
            .write_all(self.batch.as_slice())
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 4096];
        loop {
            let mut answered = None;
            let mut it = FrameIter::new(&self.inbuf, &self.limits);
            for f in it.by_ref() {
                let f = f.map_err(|e| e.to_string())?;
                if f.id() == id && matches!(f.kind(), FrameKind::Response | FrameKind::Error) {
                    answered = Some(f.kind());
                }
            }
            let used = it.consumed();
            self.inbuf.drain(..used);
            match answered {
                Some(FrameKind::Response) => return Ok(()),
                Some(_) => return Err("the server answered with an Error".into()),
                None => {}
            }
            let n = self.sock.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            self.inbuf.extend_from_slice(&chunk[..n]);
        }
    }
}
