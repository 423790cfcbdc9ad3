//! The rendezvous: a Unix socket per server name; each client that connects gets its own
//! segment and doorbells, passed with `SCM_RIGHTS`. The socket then stays open as the
//! liveness signal (see `liveness.rs`).
//!
//! Wire messages (native-endian `u64` words):
//! - hello, client → server, 32 bytes: `HELLO_MAGIC`, `VERSION`, requested client → server
//!   capacity, requested server → client capacity (0 = server default);
//! - reply, server → client, 32 bytes: `REPLY_MAGIC`, `VERSION`, status (0 = ok), 0; with one
//!   `SCM_RIGHTS` message carrying `[memfd, doorbell to server, doorbell to client]`;
//! - refusal, server → client, 32 bytes: `REPLY_MAGIC`, `VERSION`, status
//!   `STATUS_REFUSED_UID` (1: the client's user id is not in the server's `allow_uids`), 0;
//!   no descriptors. The server sends it as soon as it accepted the socket (before reading the
//!   hello) and closes; the client reads it even if sending its hello failed.

use std::io::{IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::config::Config;
use crate::connection::{Role, ShmConnection};
use crate::doorbell::EventBell;
use crate::error::{Error, Result};
use crate::layout::{SegmentLayout, VERSION};
use crate::liveness::timespec;
use crate::segment::Segment;

const HELLO_MAGIC: u64 = u64::from_le_bytes(*b"NTRNHELO");
const REPLY_MAGIC: u64 = u64::from_le_bytes(*b"NTRNSEGM");
const MSG_LEN: usize = 32;
/// Reply status: the client's user id is not in the server's `allow_uids`.
const STATUS_REFUSED_UID: u64 = 1;

/// Resolves a server name: `/abs/path` or `./rel/path` is a filesystem socket; anything else
/// (optionally written `shm://name`) is the Linux abstract socket `netron-shm/<name>`, which
/// needs no file and vanishes with the process that bound it.
fn resolve(name: &str) -> Result<(SocketAddr, Option<PathBuf>)> {
    let name = name.strip_prefix("shm://").unwrap_or(name);
    let bad = |e| Error::io("resolving the shared-memory socket name", e);
    if name.starts_with('/') || name.starts_with("./") {
        Ok((
            SocketAddr::from_pathname(name).map_err(bad)?,
            Some(name.into()),
        ))
    } else {
        let addr = SocketAddr::from_abstract_name(format!("netron-shm/{name}")).map_err(bad)?;
        Ok((addr, None))
    }
}

fn to_words(b: &[u8; MSG_LEN]) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8])))
}

fn to_bytes(w: [u64; 4]) -> [u8; MSG_LEN] {
    let mut b = [0u8; MSG_LEN];
    for (i, w) in w.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
    }
    b
}

fn handshake_io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout,
        std::io::ErrorKind::UnexpectedEof => Error::Handshake { what },
        _ => Error::io("shared-memory rendezvous", e),
    }
}

fn set_timeouts(s: &UnixStream, t: Option<std::time::Duration>) -> Result<()> {
    s.set_read_timeout(t)
        .and_then(|()| s.set_write_timeout(t))
        .map_err(|e| Error::io("setting socket timeouts", e))
}

/// A socket file this listener created: removed on drop only if the path still names it
/// (same device and inode), so a file someone else bound there since is left alone.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Takes an exclusive `flock` on `path`'s directory while the returned file lives (best
/// effort), so two processes binding the same path never both find it stale.
fn lock_dir(path: &Path) -> Option<std::fs::File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let f = std::fs::File::open(dir).ok()?;
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive) {
            Ok(()) => return Some(f),
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Whether something listens on the socket file `path`: `Some(true)` if a connection is
/// accepted or queued (or the backlog is full), `Some(false)` if it is refused (stale: the
/// listener is gone), `None` if the probe says neither.
fn listening(path: &Path) -> Option<bool> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let s = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    let addr = SocketAddrUnix::new(path).ok()?;
    match rustix::net::connect(&s, &addr) {
        Ok(()) | Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INPROGRESS) => Some(true),
        Err(rustix::io::Errno::CONNREFUSED) => Some(false),
        Err(_) => None,
    }
}

/// Binds a filesystem socket with the engine's stale-endpoint rule: an existing socket file is
/// replaced only if connecting to it is refused (nothing listens: its owner was killed or
/// exited without removing it); a live one, or a file that is not a socket, is refused.
fn bind_path(name: &str, addr: &SocketAddr, path: &Path) -> Result<(UnixListener, SocketFile)> {
    let in_use = |what| Error::AddrInUse {
        name: name.to_owned(),
        what,
    };
    let _lock = lock_dir(path);
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(in_use("a file that is not a socket"));
        }
        match listening(path) {
            Some(true) => return Err(in_use("another listener")),
            Some(false) => {
                let _ = std::fs::remove_file(path);
            }
            None => {} // bind says what is wrong
        }
    }
    let listener = UnixListener::bind_addr(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            in_use("another listener")
        } else {
            Error::io("bind", e)
        }
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("stat of the socket", e))?;
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

/// A server endpoint: accepts clients on a name, one segment per client.
#[derive(Debug)]
pub struct ShmListener {
    listener: UnixListener,
    config: Config,
    /// The socket file (filesystem names), removed on drop if still ours.
    file: Option<SocketFile>,
}

impl ShmListener {
    /// Listens on `name` with the default configuration (see [`bind_with`](Self::bind_with)).
    pub fn bind(name: &str) -> Result<Self> {
        Self::bind_with(name, Config::default())
    }

    /// Listens on `name`: `/path` or `./path` for a filesystem socket (removed again when the
    /// listener drops), otherwise an abstract socket name, optionally written `shm://name`.
    ///
    /// A name something listens on is refused with [`Error::AddrInUse`]. A socket file whose
    /// listener is gone (connecting to it is refused: its owner was killed, say) is replaced.
    pub fn bind_with(name: &str, config: Config) -> Result<Self> {
        config.validate()?;
        let (addr, path) = resolve(name)?;
        let (listener, file) = match &path {
            Some(p) => {
                let (l, f) = bind_path(name, &addr, p)?;
                if let Some(mode) = config.socket_mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| Error::io("chmod of the socket", e))?;
                }
                (l, Some(f))
            }
            // Abstract names vanish with their socket: never stale, and the kernel refuses a
            // second bind atomically.
            None => (
                UnixListener::bind_addr(&addr).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        Error::AddrInUse {
                            name: name.to_owned(),
                            what: "another listener",
                        }
                    } else {
                        Error::io("bind", e)
                    }
                })?,
                None,
            ),
        };
        Ok(Self {
            listener,
            config,
            file,
        })
    }

    /// Waits for the next client and completes its rendezvous.
    ///
    /// An error concerns that client only; the listener stays usable.
    pub fn accept(&self) -> Result<ShmConnection> {
        self.accept_timeout(None)
    }

    /// Like [`accept`](Self::accept), giving up with `Timeout` at `deadline`: waiting for a
    /// client and its rendezvous together (a client that connects and stays silent costs the
    /// caller what is left of its deadline, at most the handshake timeout, not the handshake
    /// timeout past it: fresh user R11's finding 7, 5.15 s for a 200 ms deadline).
    ///
    /// # Errors
    /// As [`accept_pending`](Self::accept_pending) and
    /// [`PendingRendezvous::complete`].
    pub fn accept_timeout(&self, deadline: Option<Instant>) -> Result<ShmConnection> {
        self.accept_pending(deadline)?.complete_by(deadline)
    }

    /// Accepts the next client on the listening socket (waiting until `deadline`) and checks
    /// its user id against `allow_uids`, without running its rendezvous: the caller runs
    /// [`PendingRendezvous::complete`] where a slow client cannot hold up the next one (a
    /// thread of its own, say), so that accepting stays quick whatever the clients do.
    ///
    /// # Errors
    /// `Timeout` at `deadline`; `Refused` for a user id not in `allow_uids` (the client is
    /// told so before the socket closes); the OS error of `poll`, `accept` or `SO_PEERCRED`.
    /// An error concerns that client only.
    pub fn accept_pending(&self, deadline: Option<Instant>) -> Result<PendingRendezvous> {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout);
            }
            let ts = timespec(left);
            let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(Error::io("poll on the listener", e)),
            }
            let (stream, _) = self.listener.accept().map_err(|e| Error::io("accept", e))?;
            if let Some(uids) = &self.config.allow_uids {
                let cred = rustix::net::sockopt::socket_peercred(&stream)
                    .map_err(|e| Error::io("SO_PEERCRED", e))?;
                if !uids.contains(&cred.uid.as_raw()) {
                    // Tell the client why before closing (best effort, never blocking: a
                    // fresh socket's buffer holds 32 bytes).
                    let refusal = to_bytes([REPLY_MAGIC, VERSION, STATUS_REFUSED_UID, 0]);
                    let _ = rustix::net::send(
                        &stream,
                        &refusal,
                        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
                    );
                    return Err(Error::Refused {
                        what: "the client's user id is not in the listener's allow_uids",
                    });
                }
            }
            return Ok(PendingRendezvous {
                stream,
                config: self.config.clone(),
            });
        }
    }

    /// The listening socket (readable when a client is waiting), for event loops.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        // Removed while the socket still listens, so nobody can have replaced it legitimately.
        self.file.take();
    }
}

/// A client accepted by [`ShmListener::accept_pending`] whose rendezvous has not run yet.
#[derive(Debug)]
pub struct PendingRendezvous {
    stream: UnixStream,
    config: Config,
}

impl PendingRendezvous {
    /// Runs the server side of the rendezvous: reads the client's hello (the whole of it within
    /// the configured `handshake_timeout`, however the client spreads its bytes), makes the
    /// segment and sends it.
    ///
    /// # Errors
    /// `Timeout` when the hello did not arrive in time; `Handshake` for a bad hello or a client
    /// that closed; the OS error of making or sending the segment.
    pub fn complete(self) -> Result<ShmConnection> {
        self.complete_by(None)
    }

    /// Like [`complete`](Self::complete), also giving up at `deadline` if that comes before
    /// the handshake timeout.
    ///
    /// # Errors
    /// As [`complete`](Self::complete).
    pub fn complete_by(self, deadline: Option<Instant>) -> Result<ShmConnection> {
        // A timeout too large for the clock (`Duration::MAX`) means no bound.
        let own = Instant::now().checked_add(self.config.handshake_timeout);
        let by = match (deadline, own) {
            (Some(d), Some(o)) => Some(d.min(o)),
            (d, o) => d.or(o),
        };
        serve(self.stream, &self.config, by)
    }
}

/// Runs `f` again while a signal interrupts it (`EINTR`: nothing was transferred).
fn retry_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Reads all of `buf` from `stream` by `deadline` (`Timeout` after it, whatever the pace of
/// the bytes: a per-read timeout alone lets a peer that sends a byte now and then hold the
/// rendezvous for ever; `None`: no bound); `Handshake { what: closed }` if the peer closes
/// first.
fn read_by(
    mut stream: &UnixStream,
    buf: &mut [u8],
    deadline: Option<Instant>,
    closed: &'static str,
) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout);
                }
                Some(left)
            }
            None => None,
        };
        stream
            .set_read_timeout(left)
            .map_err(|e| Error::io("setting socket timeouts", e))?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(Error::Handshake { what: closed }),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(handshake_io(closed)(e)),
        }
    }
    Ok(())
}

/// Server side of one rendezvous, all of it by `deadline` (`None`: no bound).
fn serve(stream: UnixStream, cfg: &Config, deadline: Option<Instant>) -> Result<ShmConnection> {
    set_timeouts(&stream, Some(cfg.handshake_timeout))?;
    let mut hello = [0u8; MSG_LEN];
    // The whole hello by the deadline: a per-read timeout alone would let a client that
    // sends a byte now and then hold the rendezvous for ever.
    read_by(
        &stream,
        &mut hello,
        deadline,
        "the client closed before sending its hello",
    )?;
    let [magic, version, to_server, to_client] = to_words(&hello);
    if magic != HELLO_MAGIC || version != VERSION {
        return Err(Error::Handshake {
            what: "the client's hello has the wrong magic or version",
        });
    }
    let pick = |req: u64, default: usize| -> Result<usize> {
        let req = if req == 0 { default as u64 } else { req };
        let cap = req.min(cfg.max_capacity as u64) as usize;
        crate::layout::check_capacity(cap).map_err(|_| Error::Handshake {
            what: "the client asked for a ring capacity that is not a power of two from 64 bytes",
        })?;
        Ok(cap)
    };
    let layout = SegmentLayout::new(
        pick(to_server, cfg.to_server)?,
        pick(to_client, cfg.to_client)?,
    )?;
    let (segment, memfd) = Segment::create(layout)?;
    let bell_to_server = EventBell::new()?;
    let bell_to_client = EventBell::new()?;

    let reply = to_bytes([REPLY_MAGIC, VERSION, 0, 0]);
    let fds = [
        memfd.as_fd(),
        bell_to_server.as_fd(),
        bell_to_client.as_fd(),
    ];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Error::Handshake {
            what: "could not build the SCM_RIGHTS message",
        });
    }
    let sent = retry_intr(|| {
        rustix::net::sendmsg(
            &stream,
            &[IoSlice::new(&reply)],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        )
    })
    .map_err(|e| Error::io("sendmsg(SCM_RIGHTS)", e))?;
    if sent != MSG_LEN {
        return Err(Error::Handshake {
            what: "the reply was cut short",
        });
    }
    drop(memfd);
    set_timeouts(&stream, None)?;
    Ok(ShmConnection::assemble(
        segment,
        stream,
        bell_to_server,
        bell_to_client,
        Role::Server,
        cfg.spin,
    ))
}

/// Connects to the listener at `addr` by `deadline` (`None`: no bound). A blocking connect
/// to a Unix socket whose listen backlog is full waits without limit, whatever the socket's
/// timeouts (fresh user R12's finding 2: a connect with a 300 ms timeout still waiting after
/// 20 s): the connect is non-blocking and retried, with growing naps (100 µs to 10 ms), while
/// the backlog is full (`EAGAIN`), until the deadline (`Timeout`). Returns a blocking stream.
fn connect_by(addr: &SocketAddr, deadline: Option<Instant>) -> Result<UnixStream> {
    let target = if let Some(name) = addr.as_abstract_name() {
        rustix::net::SocketAddrUnix::new_abstract_name(name)
    } else if let Some(path) = addr.as_pathname() {
        rustix::net::SocketAddrUnix::new(path)
    } else {
        Err(rustix::io::Errno::INVAL)
    }
    .map_err(|e| {
        Error::io(
            "resolving the shared-memory socket name",
            std::io::Error::from(e),
        )
    })?;
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| Error::io("connect", std::io::Error::from(e)))?;
    let mut nap = std::time::Duration::from_micros(100);
    loop {
        match retry_intr(|| rustix::net::connect(&fd, &target)) {
            Ok(()) => break,
            Err(rustix::io::Errno::AGAIN) => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(Error::Timeout);
                }
                let left = deadline.map_or(nap, |d| d.saturating_duration_since(now));
                std::thread::sleep(nap.min(left));
                nap = (nap * 2).min(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(Error::io("connect", std::io::Error::from(e))),
        }
    }
    let stream = UnixStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| Error::io("connect", e))?;
    Ok(stream)
}

/// Client side of one rendezvous.
pub(crate) fn connect(name: &str, cfg: &Config) -> Result<ShmConnection> {
    cfg.validate()?;
    let (addr, _) = resolve(name)?;
    // The whole rendezvous within the handshake timeout: a per-read timeout alone let a
    // server that sends its reply a byte at a time hold a connect for 32 times it (fresh
    // user R11's finding 6: 8 s for a 300 ms timeout).
    // A timeout too large for the clock (`Duration::MAX`) means no bound.
    let deadline = Instant::now().checked_add(cfg.handshake_timeout);
    let stream = connect_by(&addr, deadline)?;
    set_timeouts(&stream, Some(cfg.handshake_timeout))?;
    let hello = to_bytes([
        HELLO_MAGIC,
        VERSION,
        cfg.to_server as u64,
        cfg.to_client as u64,
    ]);
    // A server that refused us wrote its refusal and closed: the hello may then fail
    // (`EPIPE`, `ECONNRESET`), but the refusal is still there to read and says why.
    let sent = retry_intr(|| rustix::net::send(&stream, &hello, SendFlags::NOSIGNAL));
    let hello_failed = match sent {
        Ok(MSG_LEN) => None,
        Ok(_) => {
            return Err(Error::Handshake {
                what: "the hello was cut short",
            });
        }
        Err(e @ (rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET)) => Some(e),
        Err(e) => return Err(Error::io("sending the hello", e)),
    };

    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| Error::io("setting socket timeouts", e))?;
    }
    let mut reply = [0u8; MSG_LEN];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let msg = retry_intr(|| {
        rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut reply)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        )
    })
    .map_err(|e| match hello_failed {
        Some(sent) => Error::io("sending the hello", sent),
        None => handshake_io("the server closed before replying")(e.into()),
    })?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if msg.bytes == 0 {
        if let Some(e) = hello_failed {
            return Err(Error::io("sending the hello", e));
        }
        return Err(Error::Handshake {
            what: "the server closed the connection instead of replying",
        });
    }
    read_by(
        &stream,
        &mut reply[msg.bytes..],
        deadline,
        "the server closed during its reply",
    )?;
    let [magic, version, status, _] = to_words(&reply);
    if magic == REPLY_MAGIC && version == VERSION && status == STATUS_REFUSED_UID {
        return Err(Error::Refused {
            what: "this process's user id is not in the server's allow_uids list \
                   (allow_uid=... on the endpoint it listens on)",
        });
    }
    if magic != REPLY_MAGIC || version != VERSION || status != 0 {
        return Err(Error::Handshake {
            what: "the server's reply has the wrong magic, version or status",
        });
    }
    let [memfd, to_server, to_client]: [OwnedFd; 3] =
        fds.try_into().map_err(|_| Error::Handshake {
            what: "the server did not send exactly three descriptors",
        })?;
    let segment = Segment::open(memfd)?;
    let bell_to_server = EventBell::from_peer(to_server)?;
    let bell_to_client = EventBell::from_peer(to_client)?;
    set_timeouts(&stream, None)?;
    Ok(ShmConnection::assemble(
        segment,
        stream,
        bell_to_server,
        bell_to_client,
        Role::Client,
        cfg.spin,
    ))
}
