//! `quic://` connecting and listening (docs/quic.md "In the engine").
//!
//! **Client**: the QUIC handshake (TLS 1.3, ALPN `netron/1`) runs on the caller's thread, as a
//! TCP connect does, within the connect timeout; the connected socket and endpoint then go to
//! a core ([`QuicPipe`]), which runs the Netron handshake on the control stream.
//!
//! **Server, step 3**: a rendezvous thread per listened address receives on the listening UDP
//! socket. A datagram from an address it has not seen makes a new UDP socket bound to the same
//! address (`SO_REUSEPORT`) and *connected* to the client (the kernel then delivers that
//! client's datagrams to it, not to the listening socket), and a server [`QuicEndpoint`] for
//! that one connection, which takes the datagram; the pair goes to the core's inbox like an
//! `shm://` connection. Before that, the thread's *gate* endpoint decides what a new client
//! gets from the handshakes in progress across the whole listener ([`PendingHandshake`]): a
//! Retry (address validation, RFC 9000 §8.1.2) as the server's `RetryPolicy` says, a refusal
//! at `max_pending_handshakes`, or admission (docs/quic.md, "Address validation"); the
//! connection's own endpoint then accepts the gate's tokens. The thread also bounds new
//! connections to [`MAX_NEW_PER_SEC`] a second.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use netron_quic::{Admission, QuicEndpoint, QuicEvent};
use socket2::{Domain, Socket, Type};

use super::quic::{HANDSHAKE_POLL, MAX_DATAGRAM, QuicPipe};

/// New connections a listener hands to the cores per second at most (each keeps a socket and
/// an endpoint until its handshake ends, so an Initial flood is bounded here; datagrams that
/// open no connection keep nothing and do not count).
pub(crate) const MAX_NEW_PER_SEC: u32 = 1000;
/// How long an address handed to a connection socket is remembered, with the Destination
/// Connection ID of its first Initial: datagrams of that connection that reached the listening
/// socket before its own socket was connected are then posted to the connection (its mail,
/// as a migrated client's are: a client's 0-RTT packets follow its Initial at once, and
/// dropping them cost a retransmission timeout and put its Hello behind its calls), while a
/// new connection from the same address and port (another DCID) is served at once (fresh
/// user R8's finding 4: a client reusing its port within this time stalled ~3 s).
const HANDED_FOR: Duration = Duration::from_secs(2);

/// A client address just handed to a connection socket ([`HANDED_FOR`]).
struct Handoff {
    at: Instant,
    /// The Destination Connection ID of its first Initial.
    dcid: Vec<u8>,
    /// Where its datagrams that still reach the listening socket go.
    mail: Option<Arc<super::quic_path::PathMail>>,
}

/// The Destination Connection ID of a long-header packet (RFC 8999 §5.1: the header form bit,
/// a 32-bit version, then the DCID's length byte and the DCID, in every QUIC version); `None`
/// for a short header or a truncated packet.
fn long_header_dcid(datagram: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = datagram.split_first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*rest.get(4)?);
    rest.get(5..5 + len)
}

/// Whether `datagram`, from an address handed to a connection whose first Initial had the
/// DCID `handed`, belongs to that connection (a short header, or a long header with that
/// DCID) rather than opening a new one.
fn of_handed_connection(datagram: &[u8], handed: &[u8]) -> bool {
    long_header_dcid(datagram).is_none_or(|dcid| dcid == handed)
}

fn quic_err(kind: io::ErrorKind, why: impl Into<String>) -> io::Error {
    io::Error::new(kind, why.into())
}

fn bind_udp(addr: SocketAddr, reuse_port: bool, only_v6: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), None)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && only_v6 {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s)
}

/// Connects to the first of `addrs` that answers, naming `server_name` for TLS, within
/// `timeout`: the QUIC handshake completes here.
///
/// # Errors
/// `InvalidInput` if `config` is missing (naming `ProtocolConfig::with_quic_client`) or
/// unusable; `TimedOut`; `ConnectionRefused` with the TLS or QUIC reason (a wrong CA, a
/// missing client certificate, ALPN refused).
pub(crate) fn connect(
    addrs: &[SocketAddr],
    server_name: &str,
    config: Option<&netron_quic::ClientConfig>,
    timeout: Duration,
) -> io::Result<QuicPipe> {
    let config = config.ok_or_else(|| {
        quic_err(
            io::ErrorKind::InvalidInput,
            "quic:// needs a QUIC client configuration (trusted CAs, optional client identity): \
             set ProtocolConfig::with_quic_client",
        )
    })?;
    // A huge timeout (Duration::MAX) means "no bound": a century is that here.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400));
    let mut last = quic_err(io::ErrorKind::InvalidInput, "the endpoint has no address");
    for &remote in addrs {
        // An unspecified address (what a wildcard listen reports: quic://0.0.0.0:p,
        // quic://[::]:p) means this host, as a TCP connect to it does on Linux: its loopback
        // address, which the certificate must then name (fresh user R9's finding 7: "invalid
        // remote address").
        let (remote, name) = if remote.ip().is_unspecified() {
            let lo: std::net::IpAddr = if remote.is_ipv6() {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            };
            (SocketAddr::new(lo, remote.port()), lo.to_string())
        } else {
            (remote, server_name.to_owned())
        };
        match connect_one(remote, &name, config, deadline) {
            Ok(p) => return Ok(p),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last)
}

/// A client's connection for a core (`early`: handed over in 0-RTT, see [`QuicPipe::early`]).
fn client_pipe(
    socket: UdpSocket,
    endpoint: QuicEndpoint,
    conn: netron_quic::ConnId,
    early: Option<u64>,
    memo: Option<(netron_quic::ClientConfig, String)>,
) -> QuicPipe {
    QuicPipe {
        socket,
        endpoint,
        conn: Some(conn),
        client: true,
        pending: None,
        mail: None,
        early,
        memo,
    }
}

fn connect_one(
    remote: SocketAddr,
    server_name: &str,
    config: &netron_quic::ClientConfig,
    deadline: Instant,
) -> io::Result<QuicPipe> {
    let any: SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let socket: UdpSocket = bind_udp(any, false, true)?.into();
    socket.connect(remote)?;
    let mut ep = QuicEndpoint::new(None, Some(config))
        .map_err(|e| quic_err(io::ErrorKind::InvalidInput, e.to_string()))?;
    let conn = ep
        .connect(Instant::now(), remote, server_name)
        .map_err(|e| quic_err(io::ErrorKind::InvalidInput, e.to_string()))?;
    let memo = Some((config.clone(), server_name.to_owned()));
    // What the last connections to this server taught of its header table (a
    // `conn::TableMemo`): 0-RTT calls are coded in the format the server will decode (QPACK,
    // or static-only HPACK when the negotiated size is 0), with no dynamic-table reference
    // (§27.3). Nothing remembered (never connected, or a 0-RTT connect built on it failed):
    // a full handshake, which learns it.
    let remembered = config.recall(server_name);
    if let (true, Some(table)) = (
        config.zero_rtt && ep.has_0rtt(conn).unwrap_or(false),
        remembered,
    ) {
        // A resumed session that allows 0-RTT: the core takes the connection now and writes
        // its Hello and idempotent calls in the first flight (docs/quic.md "0-RTT"); the
        // handshake completes there.
        let early = Some(table);
        return Ok(client_pipe(socket, ep, conn, early, memo));
    }
    let mut tx = Vec::new();
    let mut rx = vec![0u8; MAX_DATAGRAM];
    loop {
        let now = Instant::now();
        while let Some(t) = ep.poll_transmit(now, &mut tx) {
            let _ = socket.send(&tx[..t.len]);
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                QuicEvent::Connected { .. } => {
                    return Ok(client_pipe(socket, ep, conn, None, memo));
                }
                QuicEvent::Closed {
                    reason: netron_quic::CloseReason::Tls(why),
                    ..
                } => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        crate::error::TlsFailure(format!("with {remote}: {why}")),
                    ));
                }
                QuicEvent::Closed { reason, .. } => {
                    // `CloseReason::HandshakeRefused` says what a close without a reason
                    // means here (QUIC strips it during the handshake, RFC 9000 §10.2.3).
                    return Err(quic_err(
                        io::ErrorKind::ConnectionRefused,
                        format!("QUIC handshake with {remote} failed: {reason}"),
                    ));
                }
                _ => {}
            }
        }
        if now >= deadline {
            return Err(quic_err(
                io::ErrorKind::TimedOut,
                format!("no QUIC handshake with {remote} within the connect timeout"),
            ));
        }
        let wake = ep.poll_timeout().map_or(deadline, |t| t.min(deadline));
        let wait = wake
            .saturating_duration_since(now)
            .clamp(Duration::from_micros(100), HANDSHAKE_POLL);
        socket.set_read_timeout(Some(wait))?;
        match socket.recv(&mut rx) {
            Ok(n) => ep.handle_datagram(Instant::now(), remote, None, BytesMut::from(&rx[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(quic_err(
                    io::ErrorKind::ConnectionRefused,
                    format!("nothing listens on quic://{remote} (ICMP port unreachable)"),
                ));
            }
            Err(e) => return Err(e),
        }
        if ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            ep.handle_timeout(Instant::now());
        }
    }
}

/// A `quic://` listener's rendezvous thread; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct Binding {
    stop: Arc<AtomicBool>,
    /// New clients are taken (cleared when the engine starts draining).
    accepting: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Binding {
    /// Takes no new client from now on (a graceful shutdown's drain), while the datagrams of
    /// live connections whose clients moved are still routed to them (migration); new
    /// clients' datagrams are dropped until the binding is dropped and the port closes.
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a listener's thread hands to the engine.
pub(crate) enum Handed {
    /// A new connection for a core.
    Pipe(Box<QuicPipe>),
    /// Error counters to move, summed over at most [`super::COUNT_EVERY`] (so a flood costs the
    /// cores a few commands a second, not one per datagram): `quic_retry` (Retry packets sent
    /// to new clients while the listener was under load; a client whose first flight spans
    /// several datagrams gets one for each) or `quic_handshakes_refused` (refused at
    /// `ServerConfig::max_pending_handshakes` or `max_pending_handshakes_per_ip`).
    Count(&'static str, u64),
}

/// Where a listener's new connections and counts go.
pub(crate) type Acceptor = Arc<dyn Fn(Handed) + Send + Sync>;

/// The handshakes in progress of one `quic://` listen, across all its addresses: the total,
/// and per IP address those of clients that proved their address (Retry); and the routes of
/// its connections' IDs, for clients whose address changed (migration).
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    total: AtomicUsize,
    proven: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
    routes: Arc<super::quic_path::CidRoutes>,
}

impl Admissions {
    /// The handshakes in progress, and those of proven clients from `ip`.
    fn counts(&self, ip: std::net::IpAddr) -> (usize, usize) {
        let from_ip = self
            .proven
            .lock()
            .map_or(0, |m| m.get(&ip).copied().unwrap_or(0));
        (self.total.load(Ordering::Acquire), from_ip)
    }
}

/// One server-side QUIC handshake in progress, counted in its listener's [`Admissions`]
/// until the handshake completes or the connection ends (dropped then: by the link on
/// `Connected` or close, or with the link or the pipe). The gate's Retry and refusal
/// decisions read those counts.
#[derive(Debug)]
pub(crate) struct PendingHandshake {
    admissions: Arc<Admissions>,
    /// The client's IP address, if it proved it (counted per address).
    proven: Option<std::net::IpAddr>,
}

impl PendingHandshake {
    fn new(admissions: &Arc<Admissions>, proven: Option<std::net::IpAddr>) -> Self {
        admissions.total.fetch_add(1, Ordering::AcqRel);
        if let Some(ip) = proven {
            if let Ok(mut m) = admissions.proven.lock() {
                *m.entry(ip).or_insert(0) += 1;
            }
        }
        Self {
            admissions: admissions.clone(),
            proven,
        }
    }
}

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        self.admissions.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.proven {
            if let Ok(mut m) = self.admissions.proven.lock() {
                if let Some(n) = m.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&ip);
                    }
                }
            }
        }
    }
}

/// Binds every address of a `quic://` listen ([`bind`] each), all handing their connections
/// to `acceptor`; returns the bindings and the bound addresses (port 0 resolved), in order.
///
/// # Errors
/// As [`bind`], for the first address that fails (the ones bound before are dropped).
///
/// As for `tcp://`, an IP literal binds as the system does by default (`quic://[::]:p` takes
/// IPv4 clients too, as IPv4-mapped addresses: fresh user R8's finding 5), while a host name
/// binds each address it resolved to in its own family only (`IPV6_V6ONLY`), so its IPv4 and
/// IPv6 addresses can share the port.
pub(crate) fn bind_all(
    host: &str,
    addrs: &[SocketAddr],
    config: Option<&netron_quic::ServerConfig>,
    acceptor: &Acceptor,
) -> io::Result<(Vec<Binding>, Vec<SocketAddr>)> {
    let only_v6 = host.parse::<std::net::IpAddr>().is_err();
    let mut bindings = Vec::with_capacity(addrs.len());
    let mut bound = Vec::with_capacity(addrs.len());
    // One count for the whole listen: a host name that resolves to several addresses gets one
    // budget, not one per address.
    let admissions = Arc::new(Admissions::default());
    for &a in addrs {
        // Port 0: the first address picks the port, the others take the same one.
        let mut a = a;
        if let (0, Some(first)) = (a.port(), bound.first()) {
            a.set_port(SocketAddr::port(first));
        }
        let (b, local) = bind(a, only_v6, config, (acceptor.clone(), admissions.clone()))?;
        bindings.push(b);
        bound.push(local);
    }
    Ok((bindings, bound))
}

/// Binds `addr` (port 0: any; an IPv6 address with `IPV6_V6ONLY` if `only_v6`) and hands
/// every new client's connection to `acceptor`, counting handshakes in progress in
/// `admissions` (shared by the listen's addresses); returns the binding and the bound address.
///
/// # Errors
/// `InvalidInput` if `config` is missing (naming `ProtocolConfig::with_quic_server`) or
/// unusable; the socket's error (`AddrInUse`).
fn bind(
    addr: SocketAddr,
    only_v6: bool,
    config: Option<&netron_quic::ServerConfig>,
    (acceptor, admissions): (Acceptor, Arc<Admissions>),
) -> io::Result<(Binding, SocketAddr)> {
    let config = config.ok_or_else(|| {
        quic_err(
            io::ErrorKind::InvalidInput,
            "listening on quic:// needs a QUIC server configuration (certificate, key, client \
             authentication): set ProtocolConfig::with_quic_server",
        )
    })?;
    // Made now, so a bad certificate is the listen's error, not a silent thread's: the
    // listener's gate (see `rendezvous`).
    let gate = QuicEndpoint::new(Some(config), None)
        .map_err(|e| quic_err(io::ErrorKind::InvalidInput, e.to_string()))?;
    if addr.port() != 0 {
        // The listening socket must allow SO_REUSEPORT (each client's socket binds the same
        // address), which would also let a second listener of the same user bind the port
        // and silently take half the new clients: a plain bind first finds any socket there.
        drop(bind_udp(addr, false, only_v6).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                quic_err(
                    io::ErrorKind::AddrInUse,
                    "address in use: another engine or process already listens on this UDP port",
                )
            } else {
                e
            }
        })?);
    }
    let socket: UdpSocket = bind_udp(addr, true, only_v6)?.into();
    let local = socket.local_addr()?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let accepting = Arc::new(AtomicBool::new(true));
    let accepting2 = accepting.clone();
    let config = config.clone();
    let thread = std::thread::Builder::new()
        .name("netron-quic-accept".to_owned())
        .spawn(move || {
            rendezvous(
                &socket,
                (local, only_v6),
                (&config, gate, &admissions),
                (&stop2, &accepting2),
                &acceptor,
            )
        })?;
    Ok((
        Binding {
            stop,
            accepting,
            thread: Some(thread),
        },
        local,
    ))
}

/// `local`: the listening socket's address and whether it is IPv6-only (each client's
/// socket binds the same way); `gate`: the listener's endpoint that screens new clients
/// against the listen's `admissions`.
fn rendezvous(
    socket: &UdpSocket,
    local: (SocketAddr, bool),
    (config, mut gate, admissions): (&netron_quic::ServerConfig, QuicEndpoint, &Arc<Admissions>),
    (stop, accepting): (&AtomicBool, &AtomicBool),
    acceptor: &Acceptor,
) {
    let mut handed: HashMap<SocketAddr, Handoff> = HashMap::new();
    let mut rx = vec![0u8; MAX_DATAGRAM];
    let (mut window, mut taken) = (Instant::now(), 0u32);
    let mut tx = Vec::new();
    // The gate's counters as last handed over, and when.
    let (mut counted, mut counted_at) = (gate.stats(), Instant::now());
    while !stop.load(Ordering::Relaxed) {
        let got = socket.recv_from(&mut rx);
        let now = Instant::now();
        if now.duration_since(counted_at) >= super::COUNT_EVERY {
            let stats = gate.stats();
            for (label, n) in [
                ("quic_retry", stats.retries - counted.retries),
                ("quic_handshakes_refused", stats.refused - counted.refused),
            ] {
                if n > 0 {
                    acceptor(Handed::Count(label, n));
                }
            }
            (counted, counted_at) = (stats, now);
        }
        let Ok((n, from)) = got else {
            continue;
        };
        // A datagram of a live connection whose client's address changed (or that overtook
        // its connection's socket): to that connection, never to the gate, whose answer would
        // be a stateless reset (docs/quic.md "Connection migration").
        if let Some(mail) = admissions.routes.route(&rx[..n]) {
            mail.post(from, BytesMut::from(&rx[..n]));
            continue;
        }
        // Draining (a graceful shutdown): live connections are still routed, new clients
        // not taken.
        if !accepting.load(Ordering::Relaxed) {
            continue;
        }
        handed.retain(|_, h| now.duration_since(h.at) < HANDED_FOR);
        if let Some(h) = handed
            .get(&from)
            .filter(|h| of_handed_connection(&rx[..n], &h.dcid))
        {
            if let Some(mail) = &h.mail {
                mail.post(from, BytesMut::from(&rx[..n]));
            }
            continue;
        }
        if now.duration_since(window) >= Duration::from_secs(1) {
            (window, taken) = (now, 0);
        }
        if taken >= MAX_NEW_PER_SEC {
            continue;
        }
        let admitted = gate.screen(
            now,
            from,
            BytesMut::from(&rx[..n]),
            admissions.counts(from.ip()),
        );
        while let Some(t) = gate.poll_transmit(now, &mut tx) {
            let _ = socket.send_to(&tx[..t.len], t.destination);
        }
        let Admission::Admit { validated } = admitted else {
            continue;
        };
        let Some(mut pipe) = begin(socket, local, from, config, &rx[..n], &admissions.routes)
        else {
            continue;
        };
        pipe.pending = Some(PendingHandshake::new(
            admissions,
            validated.then(|| from.ip()),
        ));
        // Only a datagram that opened a connection spends the budget: junk (which keeps
        // nothing) cannot use it up and lock real clients out for the rest of the second.
        taken += 1;
        let dcid = long_header_dcid(&rx[..n]).unwrap_or_default().to_vec();
        let mail = pipe.mail.clone();
        handed.insert(
            from,
            Handoff {
                at: now,
                dcid,
                mail,
            },
        );
        acceptor(Handed::Pipe(Box::new(pipe)));
    }
}

/// A connection socket and endpoint for the client at `from` that the gate admitted, fed its
/// first datagram; `None` if the endpoint did not accept it after all (its answer goes out on
/// the listening `socket`), so junk costs no socket, no endpoint and no core (fresh user R8's
/// finding 1: each junk datagram held two descriptors for the handshake timeout). The
/// endpoint makes no Retry or pending-handshake decision of its own (the gate made it with
/// the listener's count) and accepts the token of the gate's Retry (the server's token key).
fn begin(
    socket: &UdpSocket,
    (local, only_v6): (SocketAddr, bool),
    from: SocketAddr,
    config: &netron_quic::ServerConfig,
    first: &[u8],
    routes: &Arc<super::quic_path::CidRoutes>,
) -> Option<QuicPipe> {
    let mail = Arc::new(super::quic_path::PathMail::default());
    let mut endpoint =
        QuicEndpoint::with_cid_hook(Some(config), None, Some(routes.hook(&mail))).ok()?;
    // One connection per connected socket: a later Initial from the same address and port
    // (a client restarted on that port, or a forged one) is refused, never served inside
    // this connection (fresh user R9's finding 1: it was, with the first client's identity).
    endpoint.limit_connections(1);
    endpoint.admit_all();
    let now = Instant::now();
    endpoint.handle_datagram(now, from, None, BytesMut::from(first));
    if endpoint.connection_count() == 0 {
        let mut buf = Vec::new();
        while let Some(t) = endpoint.poll_transmit(now, &mut buf) {
            let _ = socket.send_to(&buf[..t.len], t.destination);
        }
        return None;
    }
    let conn_socket: UdpSocket = bind_udp(local, true, only_v6).ok()?.into();
    conn_socket.connect(from).ok()?;
    Some(QuicPipe {
        socket: conn_socket,
        endpoint,
        conn: None,
        client: false,
        pending: None,
        mail: Some(mail),
        early: None,
        memo: None,
    })
}

#[cfg(test)]
#[path = "quic_tests.rs"]
mod tests;
