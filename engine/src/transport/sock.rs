//! Sockets: listeners (one listening socket per endpoint address; the engine's cores share it
//! through duplicates of its descriptor), outgoing connections (every resolved address tried,
//! Happy Eyeballs style), socket options, and the direct I/O of hot connections on busy-poll
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
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::Endpoint;

/// Delay between the starts of two connection attempts (RFC 8305's recommended "Connection
/// Attempt Delay").
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// How long one address may take to connect before it is given up (a black-holed address
/// costs at most this; 3 s covers a lost SYN and its first retransmission).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

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
        Endpoint::TcpHost { addrs, .. } => {
            let mut bound: Vec<Bound> = Vec::new();
            let mut skipped = None;
            for a in addrs {
                let mut a = *a;
                if a.port() == 0 {
                    if let Some(Endpoint::Tcp(first)) = bound.first().map(|b| &b.endpoint) {
                        a.set_port(first.port());
                    }
                }
                match listen_tcp(a, true, backlog) {
                    Ok(b) => bound.push(b),
                    // An address family this host cannot bind (no IPv6, say): the others serve.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
                        ) =>
                    {
                        skipped = Some(e);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        return Err(in_use(
                            endpoint,
                            &format!("another engine or process (on {a})"),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            match (bound.is_empty(), skipped) {
                (true, Some(e)) => Err(e),
                _ => Ok(bound),
            }
        }
        Endpoint::Unix(p) => listen_unix(endpoint, p, backlog).map(|b| vec![b]),
        Endpoint::Inproc(_) | Endpoint::Shm { .. } | Endpoint::Quic { .. } => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{endpoint} is not a socket endpoint"),
        )),
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

/// Connects to `endpoint` (blocking, on the caller's thread), with `TCP_NODELAY` on. A TCP
/// endpoint with several addresses is connected Happy Eyeballs style ([`connect_any`]).
pub(crate) fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<OwnedFd> {
    match endpoint {
        Endpoint::Unix(p) => {
            let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
            s.connect_timeout(&SockAddr::unix(p)?, timeout)?;
            Ok(s.into())
        }
        _ => connect_any(endpoint.tcp_addrs(), timeout),
    }
}

/// The order of connection attempts (RFC 8305 section 4): the resolver's order within each
/// family, families alternating, starting with the family of the resolver's first choice.
pub(crate) fn attempt_order(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut a, mut b): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|x| x.is_ipv6() == first.is_ipv6());
    a.reverse();
    b.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while !a.is_empty() || !b.is_empty() {
        out.extend(a.pop());
        out.extend(b.pop());
    }
    out
}

struct Attempt {
    sock: Socket,
    addr: SocketAddr,
    until: Instant,
}

/// Connects to the first of `addrs` that answers (RFC 8305 Happy Eyeballs): attempts start
/// [`ATTEMPT_DELAY`] apart in [`attempt_order`] (the next one at once when one fails), run
/// side by side, each for at most [`ATTEMPT_TIMEOUT`]; the first to complete wins and the
/// others are closed. Everything fails after `timeout`. Blocking: call it on the caller's
/// thread, never on a core thread.
pub(crate) fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> io::Result<OwnedFd> {
    let order = attempt_order(addrs);
    let start = Instant::now();
    // A timeout too long to represent means "no overall limit": an hour bounds the loop.
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(3600));
    let mut pending: Vec<Attempt> = Vec::new();
    let mut next = 0;
    let mut next_at = start;
    // Why each address failed, for the error message.
    let mut failures: Vec<(SocketAddr, io::Error)> = Vec::new();
    loop {
        let now = Instant::now();
        if next < order.len() && (now >= next_at || pending.is_empty()) {
            let addr = order[next];
            next += 1;
            next_at = now + ATTEMPT_DELAY;
            match start_attempt(addr) {
                Ok((sock, true)) => return finish(sock),
                Ok((sock, false)) => pending.push(Attempt {
                    sock,
                    addr,
                    until: (now + ATTEMPT_TIMEOUT).min(deadline),
                }),
                Err(e) => failures.push((addr, e)),
            }
            continue;
        }
        if pending.is_empty() || now >= deadline {
            // Every address failed, or time is up.
            for a in pending.drain(..) {
                failures.push((a.addr, io::Error::new(io::ErrorKind::TimedOut, "timed out")));
            }
            return Err(all_failed(failures));
        }
        let mut wake = pending
            .iter()
            .map(|a| a.until)
            .min()
            .unwrap_or(deadline)
            .min(deadline);
        if next < order.len() {
            wake = wake.min(next_at);
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|a| libc::pollfd {
                fd: a.sock.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let ms = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000)
            .min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
            continue;
        }
        let now = Instant::now();
        let mut i = 0;
        let mut winner = None;
        for pfd in &fds {
            let a = &pending[i];
            if pfd.revents != 0 {
                let err = match a.sock.take_error() {
                    Ok(None) => {
                        // POLLOUT without an error: connected.
                        winner = Some(i);
                        break;
                    }
                    Ok(Some(e)) | Err(e) => e,
                };
                failures.push((a.addr, err));
                pending.remove(i);
                continue;
            }
            if now >= a.until {
                let e = io::Error::new(io::ErrorKind::TimedOut, "timed out");
                failures.push((a.addr, e));
                pending.remove(i);
                continue;
            }
            i += 1;
        }
        if let Some(w) = winner {
            // The losers are closed when `pending` drops.
            return finish(pending.swap_remove(w).sock);
        }
    }
}

/// One error for a connect where every address failed: the last failure's kind, and what
/// happened to each address.
fn all_failed(failures: Vec<(SocketAddr, io::Error)>) -> io::Error {
    let Some(kind) = failures.last().map(|(_, e)| e.kind()) else {
        return io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    };
    if failures.len() == 1 {
        return failures
            .into_iter()
            .next()
            .map(|(_, e)| e)
            .expect("one failure");
    }
    let what: Vec<String> = failures.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    io::Error::new(kind, what.join("; "))
}

/// Starts a non-blocking connect to `addr`: the socket and whether it connected already.
fn start_attempt(addr: SocketAddr) -> io::Result<(Socket, bool)> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    s.set_nonblocking(true)?;
    match s.connect(&SockAddr::from(addr)) {
        Ok(()) => Ok((s, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((s, false)),
        Err(e) => Err(e),
    }
}

fn finish(s: Socket) -> io::Result<OwnedFd> {
    // io_uring expects blocking descriptors (it polls them itself).
    s.set_nonblocking(false)?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

/// Turns Nagle off on an accepted TCP connection (no-op error on Unix sockets is ignored).
pub(crate) fn set_nodelay(fd: &OwnedFd) {
    let _ = socket2::SockRef::from(fd).set_tcp_nodelay(true);
}

/// What one [`recv_udp`] returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpRecv {
    /// Bytes received: one datagram, or a GRO train of datagrams of `stride` bytes each (the
    /// last may be shorter).
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// The segment size of a GRO train (`UDP_GRO` control message); `len` otherwise.
    pub stride: usize,
}

/// `UDP_GRO` from linux/udp.h (not in every libc version).
const UDP_GRO: libc::c_int = 104;

/// A control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 256]);

/// One non-blocking `recvmsg` on a UDP socket into `buf`, with the GRO segment size from its
/// control messages (a `quic://` link's receive while GRO is on: transport/udp.rs). One
/// system call and a 256-byte control buffer (quinn-udp's `recvmmsg` path zeroes a 2 KiB
/// header array per call).
///
/// # Errors
/// The OS error (`WouldBlock` when nothing is queued, `ConnectionRefused` for an ICMP error
/// of an earlier send); `Interrupted` is retried. A datagram or train larger than `buf`, or
/// whose control messages did not fit, is consumed and reported as `InvalidData`.
pub(crate) fn recv_udp(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<UdpRecv> {
    // SAFETY: all-zero bytes are a valid value of these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = Control([0; 256]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    let n = loop {
        // SAFETY: `msg` points at `name`, `iov` (which points at `buf`) and `control`, all
        // live and writable for the call with the lengths given; `fd` is open for the call.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a UDP datagram or its control messages did not fit the receive buffers",
        ));
    }
    let mut stride = n;
    // `msg` was filled by recvmsg: its control pointer and length describe the control
    // messages the kernel wrote into `control`, which CMSG_FIRSTHDR / CMSG_NXTHDR walk within
    // `msg_controllen` (each returns a header inside the buffer or null).
    // SAFETY: as above; `msg` is a valid msghdr.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !c.is_null() {
        // SAFETY: `c` is a non-null header inside `control` (above), aligned by the kernel.
        let header = unsafe { &*c };
        if (header.cmsg_level, header.cmsg_type) == (libc::SOL_UDP, UDP_GRO) {
            // SAFETY: `c` is a valid header (above): CMSG_DATA is its data's address.
            let data = unsafe { libc::CMSG_DATA(c) };
            // SAFETY: a UDP_GRO message holds one int, inside `control`; read unaligned.
            let size = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>()) };
            stride = size.max(1) as usize;
        }
        // SAFETY: `msg` is valid and `c` one of its headers (above).
        c = unsafe { libc::CMSG_NXTHDR(&raw const msg, c) };
    }
    let from = sockaddr_to_std(&name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a UDP datagram from a non-IP address",
        )
    })?;
    Ok(UdpRecv {
        len: n,
        from,
        stride,
    })
}

/// The IPv4 or IPv6 address in `s`.
fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says `s` holds a sockaddr_in, which fits in the storage.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says `s` holds a sockaddr_in6, which fits in the storage.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Turns UDP generic receive offload (`UDP_GRO`, Linux 5.0+) on or off on a UDP socket.
///
/// # Errors
/// The OS error (`ENOPROTOOPT` on a kernel without it).
pub(crate) fn set_udp_gro(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, UDP_GRO, libc::c_int::from(on))
}

/// Sets an integer socket option (`setsockopt(level, name, &value)`).
///
/// # Errors
/// The OS error (`ENOPROTOOPT` for an option the kernel lacks).
pub(crate) fn set_int_option(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor borrowed for the call; the option value points to a
    // live c_int whose size is passed, and setsockopt only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// One non-blocking receive onto the end of `buf`, at most its spare capacity (no
/// allocation): the number of bytes appended, `Ok(0)` for an orderly EOF, `WouldBlock` when
/// nothing is queued (or `buf` has no spare capacity); `Interrupted` is retried.
pub(crate) fn recv_appending(fd: &OwnedFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() == buf.capacity() {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    loop {
        match rustix::net::recv(
            fd,
            rustix::buffer::spare_capacity(buf),
            rustix::net::RecvFlags::DONTWAIT,
        ) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn attempts_alternate_families_starting_with_the_first() {
        let a = addrs(&[
            "[::1]:1",
            "[::2]:1",
            "[::3]:1",
            "127.0.0.1:1",
            "127.0.0.2:1",
        ]);
        assert_eq!(
            attempt_order(&a),
            addrs(&[
                "[::1]:1",
                "127.0.0.1:1",
                "[::2]:1",
                "127.0.0.2:1",
                "[::3]:1"
            ])
        );
        let b = addrs(&["127.0.0.1:1", "[::1]:1", "127.0.0.2:1"]);
        assert_eq!(
            attempt_order(&b),
            addrs(&["127.0.0.1:1", "[::1]:1", "127.0.0.2:1"])
        );
        assert!(attempt_order(&[]).is_empty());
    }

    #[test]
    fn a_refused_first_address_falls_through_to_the_next() {
        // Listening only on IPv4; the first address (IPv6, same port) refuses.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4 = l.local_addr().unwrap();
        let v6 = SocketAddr::new("::1".parse().unwrap(), v4.port());
        let fd = connect_any(&[v6, v4], Duration::from_secs(5)).expect("connect");
        let s = socket2::SockRef::from(&fd);
        assert_eq!(s.peer_addr().unwrap().as_socket(), Some(v4));
        assert!(
            !s.nonblocking().unwrap(),
            "io_uring gets a blocking descriptor"
        );
        assert!(s.tcp_nodelay().unwrap());
        let (_, peer) = l.accept().unwrap();
        assert_eq!(Some(peer), s.local_addr().unwrap().as_socket());
    }

    #[test]
    fn a_host_name_listens_on_every_address_with_one_port() {
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let ep = Endpoint::tcp_host("both:0", [v6, v4]).unwrap();
        let bound = listen(&ep, 16).expect("listen");
        let addrs: Vec<SocketAddr> = bound
            .iter()
            .flat_map(|b| b.endpoint.tcp_addrs().to_vec())
            .collect();
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        assert!(addrs[0].is_ipv6() && addrs[1].is_ipv4(), "{addrs:?}");
        assert_ne!(addrs[0].port(), 0);
        assert_eq!(addrs[0].port(), addrs[1].port());
        for a in &addrs {
            std::net::TcpStream::connect(a).expect("each address accepts");
        }
        // The same name again: refused, naming the endpoint.
        let again = Endpoint::tcp_host("both:0", addrs.clone()).unwrap();
        let e = listen(&again, 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(
            e.to_string().contains("address in use") && e.to_string().contains("tcp://both:0"),
            "{e}"
        );
    }

    #[test]
    fn when_every_address_fails_the_error_names_each() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4 = l.local_addr().unwrap();
        drop(l);
        let v6 = SocketAddr::new("::1".parse().unwrap(), v4.port());
        let e = connect_any(&[v6, v4], Duration::from_secs(5)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&v4.to_string()) && text.contains(&v6.to_string()),
            "{text}"
        );
        // A single address keeps the OS error as it is.
        let e = connect_any(&[v4], Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
