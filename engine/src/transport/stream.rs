//! The byte-stream link: a connected TCP or Unix socket.
//!
//! Receives with one multishot receive into the driver's provided buffers; writes each batch
//! with one send operation (zero-copy above the policy's threshold) that owns the buffer
//! until the kernel is done with it. On busy-poll cores a hot connection is read with one
//! non-blocking `recv(2)` per turn and written with one non-blocking `send(2)` per batch
//! ([`Link::read_direct`], [`TxPolicy::direct`]; docs/architecture.md, "Hot connections"),
//! and only what the socket does not take goes through the driver.

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use super::{Direct, Input, Link, Owner, Tx, TxPolicy, Update, sock};
use crate::conn::{Caller, Connection};
use crate::driver::token::{Op, Token};
use crate::driver::{Driver, Event, OpId};

/// A batch being written.
#[derive(Debug)]
struct Writing {
    /// The batch, when the direct send took all of it (the driver never saw it); otherwise
    /// the driver's send operation owns it until the kernel is done with it.
    written: Option<Vec<u8>>,
    frames: u32,
    zero_copy: bool,
}

/// A connected socket.
#[derive(Debug)]
pub(crate) struct StreamLink {
    /// Shared with the link's operations, which keep it open until their final completion.
    fd: Rc<OwnedFd>,
    /// The multishot receive in the driver, if armed.
    recv: Option<OpId>,
    write: Option<Writing>,
    /// Nothing more is read: the peer sent EOF, or the connection is closing.
    read_done: bool,
    /// The socket can send zero-copy (`SendZc`): TCP. Unix sockets refuse it (the kernel
    /// answers `EOPNOTSUPP`), so the zero-copy threshold does not apply to them.
    zero_copy_ok: bool,
}

impl StreamLink {
    /// A link over the connected socket `fd` (blocking mode, as io_uring expects).
    pub(crate) fn new(fd: OwnedFd) -> StreamLink {
        let zero_copy_ok = socket2::SockRef::from(&fd)
            .local_addr()
            .is_ok_and(|a| a.is_ipv4() || a.is_ipv6());
        StreamLink {
            fd: Rc::new(fd),
            recv: None,
            write: None,
            read_done: false,
            zero_copy_ok,
        }
    }
}

impl Link for StreamLink {
    fn start_recv(&mut self, io: &mut Driver, owner: Owner) {
        if self.recv.is_none() {
            let tag = Token::new(Op::Recv, owner.key, owner.generation);
            self.recv = Some(io.recv_multi(&self.fd, tag));
        }
    }

    fn receiving(&self) -> bool {
        self.recv.is_some()
    }

    fn stop_recv(&mut self, io: &mut Driver) {
        if let Some(op) = self.recv {
            io.cancel(op);
        }
    }

    fn on_completion(
        &mut self,
        io: &mut Driver,
        event: Event,
        mut deliver: impl FnMut(Input<'_>),
    ) -> Update {
        match event {
            Event::Received { result, buf, more } => {
                if !more {
                    self.recv = None;
                }
                if result > 0 {
                    let Some(b) = buf else {
                        // The kernel always names the buffer of a successful provided-buffer
                        // receive; if it ever does not, the bytes are lost: close rather than
                        // guess.
                        return Update::RecvFailed {
                            counter: "recv_without_buffer",
                            why: "the kernel reported a receive without a buffer".to_owned(),
                        };
                    };
                    if let Some(data) = io.recv_data(b, result as usize) {
                        deliver(Input::Bytes(data));
                    }
                    io.recycle(b);
                    return Update::Input;
                }
                if let Some(b) = buf {
                    io.recycle(b);
                }
                match -result {
                    // Orderly EOF from the peer.
                    0 => Update::Eof,
                    // All receive buffers are lent out this turn; re-armed after they return.
                    libc::ENOBUFS => Update::Quiet(Some("recv_no_buffers")),
                    // Cancelled because the connection got hot (or is closing).
                    libc::ECANCELED => Update::Quiet(None),
                    e => Update::RecvFailed {
                        counter: "recv_failed",
                        why: format!("receive failed: {}", io::Error::from_raw_os_error(e)),
                    },
                }
            }
            Event::Sent { wrote, more, done } => Update::Sent {
                wrote: wrote.map(|r| {
                    if r < 0 {
                        Err(io::Error::from_raw_os_error(-r))
                    } else {
                        Ok(r as usize)
                    }
                }),
                blocked: more,
                done,
            },
            // Not started by this link.
            _ => Update::Quiet(None),
        }
    }

    fn read_direct(&mut self, scratch: &mut [u8], mut deliver: impl FnMut(Input<'_>)) -> Direct {
        loop {
            return match sock::recv_now(&self.fd, scratch) {
                Ok(0) => Direct::Eof,
                Ok(n) => {
                    deliver(Input::Bytes(&scratch[..n]));
                    Direct::Got {
                        maybe_more: n == scratch.len(),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Direct::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => Direct::Failed("recv_failed"),
            };
        }
    }

    fn recv_appending(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        Some(sock::recv_appending(&self.fd, buf))
    }

    fn end_reading(&mut self, shut: bool) {
        if !self.read_done {
            self.read_done = true;
            if shut {
                sock::shutdown_read(&self.fd);
            }
        }
    }

    fn read_done(&self) -> bool {
        self.read_done
    }

    fn writing(&self) -> bool {
        self.write.is_some()
    }

    fn transmit<C: Caller>(
        &mut self,
        io: &mut Driver,
        owner: Owner,
        conn: &mut Connection<C>,
        policy: TxPolicy,
    ) -> Tx {
        let Some((buf, frames)) = conn.poll_transmit() else {
            return Tx::Nothing;
        };
        let zero_copy = self.zero_copy_ok && policy.zero_copy_at.is_some_and(|t| buf.len() >= t);
        let mut off = 0;
        let mut direct = None;
        if policy.direct && !zero_copy {
            // Written the way a hot connection is read: directly, without a submission and a
            // completion to reap; only what the socket does not take now goes to the driver.
            match sock::send_now(&self.fd, &buf) {
                Ok(n) => off = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    conn.recycle(buf);
                    return Tx::Failed(e);
                }
            }
            direct = Some(off);
        }
        let complete = off == buf.len();
        let written = if complete {
            Some(buf)
        } else {
            let tag = Token::new(Op::Send, owner.key, owner.generation);
            io.send(&self.fd, buf, off, zero_copy, tag);
            None
        };
        self.write = Some(Writing {
            written,
            frames,
            zero_copy,
        });
        Tx::Started { direct, complete }
    }

    fn take_written(&mut self) -> Option<Vec<u8>> {
        self.write.as_mut().and_then(|w| w.written.take())
    }

    fn end_write(&mut self) -> Option<(u32, super::Written)> {
        self.write.take().map(|w| {
            let how = if w.zero_copy {
                super::Written::ZeroCopy
            } else {
                super::Written::Copied
            };
            (w.frames, how)
        })
    }

    fn close(&mut self) {
        if self.receiving() || self.writing() {
            // Pending receives and sends complete, and the peer sees EOF.
            sock::shutdown(&self.fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    const OWNER: Owner = Owner {
        key: 3,
        generation: 9,
    };

    /// Runs the driver until one completion for the link arrives and applies it.
    fn next_update(io: &mut Driver, link: &mut StreamLink, got: &mut Vec<u8>) -> Update {
        let mut cqes = Vec::new();
        for _ in 0..1000 {
            let _ = io.submit_and_wait(Duration::from_millis(5));
            io.drain(&mut cqes);
            for c in &cqes {
                if let Some(done) = io.complete(*c) {
                    assert_eq!(
                        (done.tag.key as usize, done.tag.generation),
                        (OWNER.key, OWNER.generation)
                    );
                    return link
                        .on_completion(io, done.event, |i| got.extend_from_slice(i.bytes()));
                }
            }
        }
        panic!("no completion");
    }

    #[test]
    fn bytes_in_order_through_the_ring_and_directly_then_eof() {
        let mut io = Driver::new(crate::DriverChoice::IoUring, 8, 8, 4096).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let mut link = StreamLink::new(b.into());
        link.start_recv(&mut io, OWNER);
        link.start_recv(&mut io, OWNER); // idempotent
        assert!(link.receiving());
        (&a).write_all(b"ring").unwrap();
        let mut got = Vec::new();
        assert!(matches!(
            next_update(&mut io, &mut link, &mut got),
            Update::Input
        ));
        assert_eq!(got, b"ring");
        // Stop receiving through the ring, then read directly.
        link.stop_recv(&mut io);
        assert!(matches!(
            next_update(&mut io, &mut link, &mut got),
            Update::Quiet(None)
        ));
        assert!(!link.receiving());
        let mut scratch = [0u8; 16];
        assert!(matches!(
            link.read_direct(&mut scratch, |_| panic!("nothing waits")),
            Direct::Empty
        ));
        (&a).write_all(b"direct").unwrap();
        assert!(matches!(
            link.read_direct(&mut scratch, |i| got.extend_from_slice(i.bytes())),
            Direct::Got { maybe_more: false }
        ));
        assert_eq!(got, b"ringdirect");
        drop(a);
        assert!(matches!(
            link.read_direct(&mut scratch, |_| panic!("EOF carries no bytes")),
            Direct::Eof
        ));
        link.end_reading(false);
        assert!(link.read_done() && link.quiescent());
    }
}
