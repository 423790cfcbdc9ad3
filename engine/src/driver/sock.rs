//! Sockets: listeners (one per core with `SO_REUSEPORT` for TCP), outgoing connections, socket
//! options, and the direct I/O of hot connections on busy-poll cores: a non-blocking receive
//! per turn ([`recv_now`]) and a non-blocking send per batch ([`send_now`]).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::Endpoint;

/// A listening socket for `endpoint`. TCP listeners set `SO_REUSEPORT`, so each core binds its
/// own and the kernel spreads connections across them. A Unix socket path can be bound only
/// once: the engine binds it once and gives every core a duplicate of the descriptor.
pub(crate) fn listen(endpoint: &Endpoint, backlog: i32) -> io::Result<OwnedFd> {
    let (socket, addr) = match endpoint {
        Endpoint::Tcp(a) => {
            let s = Socket::new(Domain::for_address(*a), Type::STREAM.cloexec(), None)?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.set_tcp_nodelay(true)?;
            (s, SockAddr::from(*a))
        }
        Endpoint::Unix(p) => {
            // A stale socket file from a previous run would make bind fail.
            if let Ok(meta) = std::fs::symlink_metadata(p) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(p);
                }
            }
            (
                Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?,
                SockAddr::unix(p)?,
            )
        }
    };
    socket.bind(&addr)?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// The address a listener is bound to (for `tcp://127.0.0.1:0`).
pub(crate) fn local_endpoint(fd: &OwnedFd, requested: &Endpoint) -> Endpoint {
    match requested {
        Endpoint::Tcp(_) => {
            let s = socket2::SockRef::from(fd);
            s.local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or_else(|| requested.clone(), Endpoint::Tcp)
        }
        Endpoint::Unix(_) => requested.clone(),
    }
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

/// Shuts the receiving side down: a connection that is closing reads nothing more (its
/// pending receive completes with EOF), while what it still has to send goes out.
pub(crate) fn shutdown_read(fd: &OwnedFd) {
    // SAFETY: `fd` is a valid open descriptor owned by the caller for the whole call.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
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
