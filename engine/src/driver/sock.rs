//! Sockets: listeners (one listening socket per endpoint; the engine's cores share it
//! through duplicates of its descriptor), outgoing connections, socket options, and the direct I/O of hot connections on busy-poll
//! cores: a non-blocking receive per turn ([`recv_now`]) and a non-blocking send per batch
//! ([`send_now`]).
//!
//! A second listener on a live endpoint is refused with "address in use" on every transport:
//! TCP sockets do not set `SO_REUSEPORT`, so the kernel refuses the second bind atomically; a
//! Unix socket file is replaced only when nothing listens on it (connecting to it is refused),
//! and the check-remove-bind sequence runs under an exclusive `flock` of the socket's
//! directory, so two Netron processes never both decide a file is stale.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::Endpoint;

/// A listening socket as bound.
#[derive(Debug)]
pub(crate) struct Bound {
    /// The listening descriptor.
    pub fd: OwnedFd,
    /// The address it is bound to (port 0 resolved; a host name replaced by one address).
    pub endpoint: Endpoint,
    /// The socket file it created (Unix), removed when this is dropped.
    pub file: Option<SocketFile>,
}

/// A Unix socket file this process created. Dropping it removes the file, but only if the
/// path still names the very socket that was bound (same device and inode): a file someone
/// else bound there since is left alone.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<SocketFile> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
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

/// The error for a second listener on a live endpoint.
pub(crate) fn in_use(endpoint: &Endpoint, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "address in use: {what} already listens on {endpoint}; stop it or use another endpoint"
        ),
    )
}

/// Binds and listens on `endpoint`: one socket per address (a host name binds every address it
/// resolved to; port 0 is resolved by the first and reused by the others). A second listener on
/// a live endpoint fails with [`io::ErrorKind::AddrInUse`] and a message that names it.
pub(crate) fn listen(endpoint: &Endpoint, backlog: i32) -> io::Result<Vec<Bound>> {
    match endpoint {
        Endpoint::Tcp(a) => Ok(vec![listen_tcp(*a, false, backlog)?]),
        Endpoint::Unix(p) => listen_unix(endpoint, p, backlog).map(|b| vec![b]),
    }
}

fn listen_tcp(a: SocketAddr, only_v6: bool, backlog: i32) -> io::Result<Bound> {
    let s = Socket::new(Domain::for_address(a), Type::STREAM.cloexec(), None)?;
    // SO_REUSEADDR lets a restarted engine bind while its old connections sit in TIME_WAIT; it
    // does not let a second listener in (only SO_REUSEPORT would, and it is never set).
    s.set_reuse_address(true)?;
    if a.is_ipv6() && only_v6 {
        // A host name that resolves to both families binds each one separately.
        s.set_only_v6(true)?;
    }
    s.set_tcp_nodelay(true)?;
    s.bind(&SockAddr::from(a)).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            in_use(&Endpoint::Tcp(a), "another engine or process")
        } else {
            e
        }
    })?;
    s.listen(backlog)?;
    let actual = s.local_addr().ok().and_then(|l| l.as_socket()).unwrap_or(a);
    Ok(Bound {
        fd: s.into(),
        endpoint: Endpoint::Tcp(actual),
        file: None,
    })
}

/// Takes an exclusive `flock` on `path`'s directory for as long as the returned descriptor
/// lives (best effort: `None` if the directory cannot be opened).
pub(crate) fn lock_dir(path: &Path) -> Option<std::fs::File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let f = std::fs::File::open(dir).ok()?;
    loop {
        // SAFETY: `f` is an open descriptor for the whole call; flock has no memory arguments.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Some(f);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Whether something listens on the Unix socket file `p`: `Some(true)` if a connection is
/// accepted or queued (or the backlog is full), `Some(false)` if it is refused (a stale file
/// whose listener is gone), `None` if the probe says neither (permissions, a vanished file).
pub(crate) fn unix_listening(p: &Path) -> Option<bool> {
    let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).ok()?;
    s.set_nonblocking(true).ok()?;
    match s.connect(&SockAddr::unix(p).ok()?) {
        Ok(()) => Some(true),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINPROGRESS) => Some(true),
            Some(libc::ECONNREFUSED) => Some(false),
            _ => None,
        },
    }
}

fn listen_unix(endpoint: &Endpoint, p: &Path, backlog: i32) -> io::Result<Bound> {
    // Held until the socket listens: another Netron process probing the same path waits, and
    // then finds this socket live.
    let _lock = lock_dir(p);
    if let Ok(meta) = std::fs::symlink_metadata(p) {
        if !meta.file_type().is_socket() {
            return Err(in_use(endpoint, "a file that is not a socket"));
        }
        match unix_listening(p) {
            Some(true) => return Err(in_use(endpoint, "another engine or process")),
            // Stale: its listener is gone (killed, or exited without removing it).
            Some(false) => {
                let _ = std::fs::remove_file(p);
            }
            None => {} // bind says what is wrong
        }
    }
    let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    s.bind(&SockAddr::unix(p)?).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            in_use(endpoint, "another engine or process")
        } else {
            e
        }
    })?;
    let file = SocketFile::of(p)?;
    s.listen(backlog)?;
    Ok(Bound {
        fd: s.into(),
        endpoint: endpoint.clone(),
        file: Some(file),
    })
}

/// Connects to `endpoint` (blocking, on the caller's thread), with `TCP_NODELAY` on.
pub(crate) fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<OwnedFd> {
    let (socket, addr) = match endpoint {
        Endpoint::Tcp(a) => (
            Socket::new(Domain::for_address(*a), Type::STREAM.cloexec(), None)?,
            SockAddr::from(*a),
        ),
        Endpoint::Unix(p) => (
            Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?,
            SockAddr::unix(p)?,
        ),
    };
    socket.connect_timeout(&addr, timeout)?;
    if matches!(endpoint, Endpoint::Tcp(_)) {
        socket.set_tcp_nodelay(true)?;
    }
    Ok(socket.into())
}

/// Turns Nagle off on an accepted TCP connection (no-op error on Unix sockets is ignored).
pub(crate) fn set_nodelay(fd: &OwnedFd) {
    let _ = socket2::SockRef::from(fd).set_tcp_nodelay(true);
}

/// Shuts both directions down, so pending receives and sends complete and the peer sees EOF.
pub(crate) fn shutdown(fd: &OwnedFd) {
    // SAFETY: `fd` is a valid open descriptor owned by the caller for the whole call.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}

/// One non-blocking receive into `buf` (`MSG_DONTWAIT`; the descriptor itself stays blocking,
/// as io_uring expects). `Ok(0)` is an orderly EOF; `WouldBlock` means nothing is queued.
pub(crate) fn recv_now(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call and `fd` is an
    // open descriptor borrowed for the call; recv writes at most `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One non-blocking send of `buf` (`MSG_DONTWAIT | MSG_NOSIGNAL`: a closed peer is `EPIPE`, not
/// a signal). Returns how many bytes the socket took; `WouldBlock` when it took none.
pub(crate) fn send_now(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call and `fd` is an
    // open descriptor borrowed for the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
