//! The shared-memory record transport, `shm://name`: connections between processes of one
//! host over a netron-shm segment (two SPSC rings, two eventfd doorbells, and the rendezvous
//! socket kept open as the liveness signal; docs/shm.md).
//!
//! After the rendezvous a connection is the same [`RecordPipe`] as an `inproc://` one, over
//! the segment's rings instead of heap rings, so the record link ([`super::record`]) serves
//! both; it also polls the liveness socket beside the doorbell read, so a peer that exits or
//! is killed ends the connection (in-flight calls fail Unavailable).
//!
//! **Accepting.** netron-shm's rendezvous is blocking (a hello read and an `SCM_RIGHTS` reply,
//! each bounded by the handshake timeout), so it never runs on a core: each `shm://` listener
//! has one accept thread (`netron-shm-accept`) that polls the listening socket together with
//! a stop eventfd and accepts; each client's rendezvous then runs on a short-lived thread of
//! its own (`netron-shm-hello`: the whole hello within [`HANDSHAKE_TIMEOUT`], however the
//! client spreads its bytes; at most 64 at once per name, a client beyond that is dropped),
//! which hands the server half to the cores through their inboxes exactly as an `inproc://`
//! acceptor does. A client that connects and stays silent or trickles its hello therefore
//! delays nobody else, and never stalls a core. Dropping the binding stops the accept thread
//! and unbinds the name before it returns (rendezvous in progress finish or time out on
//! their own; their connections are refused if the engine is gone).
//!
//! **Connecting** runs the client side of the rendezvous on the caller's thread (blocking,
//! bounded by the connect timeout), like a socket connect.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netron_shm::{Config, Error as ShmError, ShmConnection, ShmListener};

use super::inproc::{Acceptor, RecordPipe};
use crate::ShmOptions;
use crate::conn::Role;

/// The credentials of the process at the other end of an `shm://` connection, as the kernel
/// recorded them when the rendezvous socket connected (`SO_PEERCRED`): on the server, the
/// client's at `connect`; on the client, the server's at `listen`. They cannot be forged by
/// the peer (the kernel fills them in), but a process may have changed its ids since, and a
/// pid may be reused once the process is gone: decide on `uid`/`gid`, log `pid`.
///
/// Handlers read them with [`crate::Request::peer_cred`], interceptors with
/// [`crate::Before::peer_cred`]; `None` on other transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCred {
    /// The peer process's effective user id.
    pub uid: u32,
    /// The peer process's effective group id.
    pub gid: u32,
    /// The peer process's id (in this process's pid namespace; 0 if it has none there).
    pub pid: i32,
}

impl PeerCred {
    /// The credentials of the peer of the Unix socket `fd` (`None` if the kernel gives none).
    pub(crate) fn of(fd: std::os::fd::BorrowedFd<'_>) -> Option<PeerCred> {
        let c = rustix::net::sockopt::socket_peercred(fd).ok()?;
        Some(PeerCred {
            uid: c.uid.as_raw(),
            gid: c.gid.as_raw(),
            pid: c.pid.as_raw_nonzero().get(),
        })
    }
}

/// How long the server side of one rendezvous waits for a client's hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Rendezvous of one listened name that may run at once (each on a short-lived thread, at
/// most [`HANDSHAKE_TIMEOUT`]); a client arriving beyond that is dropped (it sees the
/// connection close and may retry).
const MAX_HANDSHAKES: usize = 64;

/// The netron-shm settings of the engine's `shm://` connections: the core spins and sleeps
/// itself (netron-shm's own spin only serves its blocking waits, which the engine never
/// calls), rings of netron-shm's default size (1 MiB each way).
fn config(handshake: Duration) -> Config {
    let mut c = Config::default();
    c.spin(Duration::ZERO)
        .handshake_timeout(handshake.max(Duration::from_millis(1)));
    c
}

/// A listener's netron-shm settings: [`config`] plus the endpoint's `allow_uid` and `mode`.
fn listen_config(options: &ShmOptions) -> Config {
    let mut c = config(HANDSHAKE_TIMEOUT);
    if let Some(uids) = &options.allow_uids {
        c.allow_uids(uids);
    }
    if let Some(mode) = options.mode {
        c.socket_mode(mode);
    }
    c
}

/// netron-shm's error as an `io::Error` that names the endpoint.
fn io_err(name: &str, e: ShmError) -> io::Error {
    let kind = match &e {
        ShmError::AddrInUse { .. } => io::ErrorKind::AddrInUse,
        ShmError::Timeout => io::ErrorKind::TimedOut,
        ShmError::Config { .. } => io::ErrorKind::InvalidInput,
        ShmError::Io { source, .. } => source.kind(),
        ShmError::Handshake { .. } => io::ErrorKind::ConnectionAborted,
        ShmError::Refused { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    let hint = match (&e, kind) {
        (ShmError::Io { .. }, io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => {
            " (nothing listens on that name)"
        }
        _ => "",
    };
    io::Error::new(kind, format!("shm://{name}: {e}{hint}"))
}

/// A bound `shm://` name and its accept thread; dropping it stops the thread and unbinds the
/// name (open connections are not affected).
#[derive(Debug)]
pub(crate) struct Binding {
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Binding {
    fn drop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where an `shm://` listener reports the clients it refused by its rules (the counter's
/// name, `shm_refused_uid`, and how many: summed over at most
/// [`crate::transport::COUNT_EVERY`], so a flood of refused connects costs the
/// core a few commands a second, not one per client), to be counted in a core's stats.
pub(crate) type Refusals = Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// Binds `name` (the part after `shm://`, without options) and hands every accepted
/// connection's server half to `acceptor`, from an accept thread; `options` say whom to
/// accept and whether to trust the clients' records; a client refused by `allow_uid` is told
/// so and reported to `refused`.
///
/// # Errors
/// `AddrInUse` if something listens on the name; `InvalidInput` if it is empty; the OS error
/// if the socket, the stop eventfd or the thread cannot be made.
pub(crate) fn bind(
    name: &str,
    options: &ShmOptions,
    acceptor: Acceptor,
    refused: Refusals,
) -> io::Result<Binding> {
    if name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an shm:// endpoint needs a name (shm://name)",
        ));
    }
    if options.mode.is_some() && !(name.starts_with('/') || name.starts_with("./")) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "shm://{name}: mode sets a socket file's permissions, and this name is an \
                 abstract socket (no file, no permissions: use allow_uid, or a name starting \
                 with / or ./)"
            ),
        ));
    }
    let listener =
        ShmListener::bind_with(name, listen_config(options)).map_err(|e| io_err(name, e))?;
    let trust_peer = options.trust_peer;
    let stop = Arc::new(
        rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )
        .map_err(io::Error::from)?,
    );
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("netron-shm-accept".to_owned())
        .spawn(move || accept_loop(&listener, &stop2, (&acceptor, &refused), trust_peer))?;
    Ok(Binding {
        stop,
        thread: Some(thread),
    })
}

/// Accepts until `stop` is written. A failed rendezvous concerns that client only.
fn accept_loop(
    listener: &ShmListener,
    stop: &OwnedFd,
    (acceptor, refused): (&Acceptor, &Refusals),
    trust_peer: bool,
) {
    use crate::transport::COUNT_EVERY;
    use rustix::event::{PollFd, PollFlags};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let lfd = listener.as_fd();
    let handshakes = Arc::new(AtomicUsize::new(0));
    // Refusals not yet reported, and when the last report went.
    let (mut unreported, mut reported_at) = (0u64, Instant::now());
    loop {
        let mut fds = [
            PollFd::new(&lfd, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        // With refusals to report, wake up in time to report them.
        let wait = (unreported > 0).then(|| {
            let left = COUNT_EVERY.saturating_sub(reported_at.elapsed());
            rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        let failed = !matches!(
            rustix::event::poll(&mut fds, wait.as_ref()),
            Ok(_) | Err(rustix::io::Errno::INTR)
        );
        let stopping = failed || !fds[1].revents().is_empty();
        if unreported > 0 && (stopping || reported_at.elapsed() >= COUNT_EVERY) {
            refused("shm_refused_uid", unreported);
            (unreported, reported_at) = (0, Instant::now());
        }
        if stopping {
            return;
        }
        if fds[0].revents().is_empty() {
            continue;
        }
        // A client is waiting: accept it here (quick), run its rendezvous on a thread of its
        // own (bounded by the handshake timeout), so a slow or silent client never holds up
        // the next one; at most MAX_HANDSHAKES run at once, beyond that a client is dropped.
        let pending = match listener.accept_pending(Some(Instant::now() + HANDSHAKE_TIMEOUT)) {
            Ok(p) => p,
            Err(ShmError::Refused { .. }) => {
                // netron-shm told the client why (a refusal reply) before closing; counted
                // with the others of the next report.
                if unreported == 0 {
                    reported_at = Instant::now();
                }
                unreported += 1;
                continue;
            }
            Err(e) => {
                tracing::debug!("shm:// accept failed: {e}");
                continue;
            }
        };
        if handshakes.fetch_add(1, Ordering::AcqRel) >= MAX_HANDSHAKES {
            handshakes.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(
                "shm:// client dropped: {MAX_HANDSHAKES} rendezvous already in progress"
            );
            continue;
        }
        let (acceptor, count) = (acceptor.clone(), handshakes.clone());
        let spawned = std::thread::Builder::new()
            .name("netron-shm-hello".to_owned())
            .spawn(move || {
                let r = pending.complete();
                count.fetch_sub(1, Ordering::AcqRel);
                match r {
                    // A refusal drops the rings: the client sees the connection close.
                    Ok(conn) => {
                        let _ = acceptor(RecordPipe::from_shm(conn, Role::Server, trust_peer));
                    }
                    Err(e) => tracing::debug!("shm:// rendezvous failed: {e}"),
                }
            });
        if spawned.is_err() {
            handshakes.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Connects to the listener on `shm://name` (the client side of the rendezvous, on the
/// calling thread, within `timeout`).
///
/// # Errors
/// `ConnectionRefused` (or `NotFound` for a path name) if nothing listens; `TimedOut` if the
/// server did not answer within `timeout`; the OS error otherwise; every message names the
/// endpoint.
pub(crate) fn connect(name: &str, trust_peer: bool, timeout: Duration) -> io::Result<RecordPipe> {
    connect_conn(name, timeout).map(|c| RecordPipe::from_shm(c, Role::Client, trust_peer))
}

fn connect_conn(name: &str, timeout: Duration) -> io::Result<ShmConnection> {
    ShmConnection::connect_with(name, &config(timeout)).map_err(|e| io_err(name, e))
}

/// The raw rings of a new connection to `shm://name`, for tests and tools that speak the
/// protocol by hand (docs/protocol.md §26, as for [`crate::inproc::connect_raw`]). The
/// connection's liveness socket is shared by both halves: dropping both closes it.
///
/// # Errors
/// As connecting an engine to the name (`ConnectionRefused` if nothing listens).
pub fn connect_raw(name: &str) -> io::Result<(netron_shm::Producer, netron_shm::Consumer)> {
    Ok(connect_conn(name, Duration::from_secs(5))?.split())
}

/// A raw `shm://` listener for hand-written servers (see [`listen_raw`]).
#[derive(Debug)]
pub struct RawListener {
    listener: ShmListener,
    name: String,
}

impl RawListener {
    /// The next connection's raw rings: the producer writes to the client, the consumer
    /// reads its records (the preface first, then its Hello).
    ///
    /// # Errors
    /// `TimedOut` if no client completed a rendezvous within `timeout` (`None`: no bound);
    /// the rendezvous' error otherwise.
    pub fn accept(
        &self,
        timeout: Option<Duration>,
    ) -> io::Result<(netron_shm::Producer, netron_shm::Consumer)> {
        // A timeout too large for the clock (`Duration::MAX`) means no bound.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let conn = self
            .listener
            .accept_timeout(deadline)
            .map_err(|e| io_err(&self.name, e))?;
        Ok(conn.split())
    }
}

/// Binds `shm://name` for a hand-written server: engines connecting to the name reach
/// [`RawListener::accept`].
///
/// # Errors
/// `AddrInUse` if something listens on the name.
pub fn listen_raw(name: &str) -> io::Result<RawListener> {
    let listener =
        ShmListener::bind_with(name, config(HANDSHAKE_TIMEOUT)).map_err(|e| io_err(name, e))?;
    Ok(RawListener {
        listener,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_bound_name_hands_connections_to_its_acceptor_and_unbinds_on_drop() {
        let name = format!("netron-engine-shm-unit-{}", std::process::id());
        let got: Arc<Mutex<Vec<RecordPipe>>> = Arc::default();
        let sink = got.clone();
        let b = bind(
            &name,
            &ShmOptions::default(),
            Arc::new(move |p| {
                sink.lock().unwrap().push(p);
                Ok(())
            }),
            Arc::new(|_, _| {}),
        )
        .unwrap();
        let none = ShmOptions::default();
        let e = bind(&name, &none, Arc::new(|_| Ok(())), Arc::new(|_, _| {})).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains(&name), "{e}");
        let client = connect(&name, false, Duration::from_secs(5)).unwrap();
        assert!(client.is_remote() && client.liveness().is_some());
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the acceptor got nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(b);
        let e = connect(&name, false, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert!(e.to_string().contains("nothing listens"), "{e}");
        // The name is free again at once.
        drop(bind(&name, &none, Arc::new(|_| Ok(())), Arc::new(|_, _| {})).unwrap());
        assert_eq!(
            bind("", &none, Arc::new(|_| Ok(())), Arc::new(|_, _| {}))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }

    /// Clients that connect and never speak, or send their hello a byte at a time, do not
    /// hold up a client that follows them (each rendezvous runs on its own, the whole hello
    /// within the handshake timeout). On a single accept thread with a per-read timeout, the
    /// tricklers held the name for ever and the good client timed out.
    #[test]
    fn silent_and_trickling_clients_do_not_hold_up_others() {
        use std::io::Write;
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixStream};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let name = format!("netron-engine-shm-slow-{}", std::process::id());
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        let b = bind(
            &name,
            &ShmOptions::default(),
            Arc::new(move |_| {
                a.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }),
            Arc::new(|_, _| {}),
        )
        .unwrap();
        let addr = SocketAddr::from_abstract_name(format!("netron-shm/{name}")).unwrap();
        // Queued first: three silent clients, then three that trickle (a byte per 100 ms,
        // each read well inside a per-read timeout of 2 s).
        let silent: Vec<UnixStream> = (0..3)
            .map(|_| UnixStream::connect_addr(&addr).unwrap())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let tricklers: Vec<_> = (0..3)
            .map(|_| {
                let mut s = UnixStream::connect_addr(&addr).unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && s.write_all(&[0]).is_ok() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();
        let good = connect(&name, false, Duration::from_secs(5));
        assert!(
            good.is_ok(),
            "a client behind slow ones was not served: {:?}",
            good.err()
        );
        stop.store(true, Ordering::Relaxed);
        for t in tricklers {
            t.join().unwrap();
        }
        drop(silent);
        // The acceptor runs on the good client's rendezvous thread just after its reply.
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepted.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(b);
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "only the good client gets a connection"
        );
    }

    #[test]
    fn options_that_would_do_nothing_are_refused_naming_why() {
        let mode = ShmOptions {
            mode: Some(0o600),
            ..ShmOptions::default()
        };
        let e = bind(
            "netron-engine-shm-mode",
            &mode,
            Arc::new(|_| Ok(())),
            Arc::new(|_, _| {}),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("abstract socket"), "{e}");
        assert!(!e.to_string().contains("  "), "runs of spaces in {e}");
        for ep in ["shm://x?allow_uid=0", "shm://x?mode=600"] {
            let ep: crate::Endpoint = ep.parse().unwrap();
            let Err(e) = crate::transport::connect(&ep, Duration::from_secs(1), None) else {
                panic!("{ep}: connected");
            };
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{ep}");
            assert!(e.to_string().contains("apply to listening"), "{e}");
        }
    }

    #[test]
    fn a_client_whose_uid_is_not_allowed_is_refused_before_any_segment() {
        let name = format!("netron-engine-shm-uid-{}", std::process::id());
        let me = rustix::process::getuid().as_raw();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a1, a2) = (accepted.clone(), accepted.clone());
        let others = ShmOptions {
            allow_uids: Some(vec![me.wrapping_add(1)]),
            ..ShmOptions::default()
        };
        let refusals: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        let r = refusals.clone();
        let b = bind(
            &name,
            &others,
            Arc::new(move |_| {
                a1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }),
            Arc::new(move |label, n| {
                let mut got = r.lock().unwrap();
                (0..n).for_each(|_| got.push(label));
            }),
        )
        .unwrap();
        // The client is told why (not a bare "Broken pipe"), and the server counts it.
        let e = connect(&name, false, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains(&name), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(e.to_string().contains("allow_uid"), "{e}");
        drop(b); // joins the accept thread
        assert_eq!(a2.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(*refusals.lock().unwrap(), ["shm_refused_uid"]);
        let mine = ShmOptions {
            allow_uids: Some(vec![me]),
            ..ShmOptions::default()
        };
        let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let g = got.clone();
        let b = bind(
            &name,
            &mine,
            Arc::new(move |_| {
                g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }),
            Arc::new(|_, _| {}),
        )
        .unwrap();
        connect(&name, false, Duration::from_secs(5)).unwrap();
        // The acceptor runs on the rendezvous's own thread, after the client has its reply:
        // wait for it (the accept thread's join does not cover that thread).
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while got.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < until, "the acceptor never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(b);
        assert_eq!(got.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
