//! A core's listeners: one accept in the ring per listening descriptor, a backoff when
//! accepting keeps failing, and a close that lets the kernel finish with the descriptor first.
//!
//! Lifecycle of one listener: `Idle` → `Armed` (an accept in the ring) → back to `Idle` on its
//! completion, re-armed at once or, after a persistent error, when its backoff expires. Closing
//! cancels an armed accept (`AsyncCancel` by its `user_data`) and keeps the descriptor open
//! until the accept's final completion: while the accept is armed the kernel holds the
//! listening socket open, so closing the descriptor first would leave the port accepting
//! connections nobody serves.
//!
//! **One-shot, not multishot, accepts.** The engine's cores share one listening socket, each
//! with an accept armed on its duplicate. The kernel queues accept waiters exclusively and wakes
//! the first in line. A multishot accept never leaves that line, so the first core got every
//! connection (measured: 40 of 40 on two cores). A one-shot accept leaves the line when it
//! fires and rejoins at its end when re-armed, so the cores take turns (20 and 20), and a busy
//! core, which re-arms later, takes fewer. The price is one submission per accepted connection,
//! nothing next to a connection's handshake. (The completion handling below is written for
//! either kind.)

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Core;
use crate::Endpoint;
use crate::conn::Role;
use crate::driver::OpId;
use crate::driver::token::{Op, Token};
use crate::transport::sock::{self, SocketFile};

/// First delay before re-arming an accept that failed with a persistent error (EMFILE and
/// the like). Doubles on every failure of the same episode up to [`ACCEPT_BACKOFF_MAX`].
pub(super) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest delay between accept retries: accepting resumes at most this long after the
/// resource that ran out (descriptors, memory) is available again.
pub(super) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No accept in the ring.
    Idle,
    /// An accept is in the ring.
    Armed,
    /// Closing: the accept's cancellation is submitted, its final completion not yet seen.
    Cancelling,
    /// Closed: the descriptor is released (the entry stays so indices remain stable).
    Closed,
}

/// One listening descriptor of this core.
pub(super) struct Listener {
    /// The listening descriptor (an armed accept holds it open too, until its completion).
    fd: Option<Rc<OwnedFd>>,
    /// The armed accept (states `Armed` and `Cancelling`).
    op: Option<OpId>,
    endpoint: Endpoint,
    state: State,
    /// In an episode of persistent accept errors: the current delay.
    backoff: Option<Duration>,
    /// When to re-arm after a persistent error (`None` if not waiting).
    retry_at: Option<Instant>,
    /// The socket file this listener created (a Unix `Core::listen`), removed when it closes.
    file: Option<SocketFile>,
}

/// The listeners of a core.
#[derive(Default)]
pub(super) struct Listeners {
    /// Indexed by the `key` of the accept's token; entries are never reused.
    list: Vec<Listener>,
    /// The earliest `retry_at` of any listener (a quick check for the timer tick).
    retry_at: Option<Instant>,
    /// Closing (shutdown or drop): nothing is armed again.
    closing: bool,
    /// `inproc://` names this core listens on itself (`Core::listen`); dropped on close.
    inproc: Vec<crate::transport::inproc::Binding>,
    /// `shm://` names this core listens on itself (their accept threads); dropped on close.
    shm: Vec<crate::transport::shm::Binding>,
    /// `quic://` addresses this core listens on itself (their rendezvous threads).
    quic: Vec<crate::transport::quic_listen::Binding>,
}

impl Listeners {
    /// Whether the core stopped listening (shutdown or drop).
    pub(super) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Listeners not closed yet.
    pub(super) fn len(&self) -> usize {
        self.list
            .iter()
            .filter(|l| l.state != State::Closed)
            .count()
    }

    /// Whether every listener is closed (descriptor released, no accept in the kernel).
    pub(super) fn all_closed(&self) -> bool {
        self.list.iter().all(|l| l.state == State::Closed)
    }
}

/// Accept errors that concern one connection (it was reset before it was accepted, a firewall
/// rule refused it): the next connection may well succeed, so the accept is re-armed at once.
/// Each consumes one pending connection, so they cannot repeat without new connections.
fn per_connection(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNABORTED | libc::EPERM | libc::EPROTO | libc::EINTR | libc::EAGAIN
    )
}

impl Core {
    /// Listens on `endpoint` with sockets of this core's own and returns the bound endpoints
    /// (port 0 resolved; a host name binds, and returns, every address it resolved to). A
    /// live endpoint, listened on by anyone else, is refused with
    /// [`io::ErrorKind::AddrInUse`]; a stale Unix socket file (nothing listens) is replaced,
    /// and the file this core created is removed when the core shuts down or drops.
    pub fn listen(&mut self, endpoint: &Endpoint) -> io::Result<Vec<Endpoint>> {
        // Record transports: connections reach this core's inbox from any thread (an
        // `inproc://` connect, or an `shm://` name's rendezvous thread).
        let inbox = self.inbox.clone();
        let to_inbox: crate::transport::inproc::Acceptor = std::sync::Arc::new(move |pipe| {
            inbox.push(crate::inbox::Command::AcceptRecord(Box::new(pipe)));
            Ok(())
        });
        match endpoint {
            Endpoint::Inproc(name) => {
                let binding = crate::transport::inproc::bind(name, to_inbox)?;
                self.listeners.inproc.push(binding);
                return Ok(vec![endpoint.clone()]);
            }
            Endpoint::Shm { name, options } => {
                let inbox = self.inbox.clone();
                let refused: crate::transport::shm::Refusals =
                    std::sync::Arc::new(move |label, n| {
                        inbox.push(crate::inbox::Command::CountError(label, n));
                    });
                let binding = crate::transport::shm::bind(name, options, to_inbox, refused)?;
                self.listeners.shm.push(binding);
                return Ok(vec![endpoint.clone()]);
            }
            Endpoint::Quic { host, addrs } => {
                let inbox = self.inbox.clone();
                use crate::transport::quic_listen::Handed;
                let acceptor: crate::transport::quic_listen::Acceptor =
                    std::sync::Arc::new(move |handed| {
                        inbox.push(match handed {
                            Handed::Pipe(pipe) => crate::inbox::Command::AcceptQuic(pipe),
                            Handed::Count(label, n) => crate::inbox::Command::CountError(label, n),
                        });
                    });
                let (bindings, bound) = crate::transport::quic_listen::bind_all(
                    host,
                    addrs,
                    self.cfg.protocol.quic_server_in_use().as_ref(),
                    &acceptor,
                )?;
                self.listeners.quic.extend(bindings);
                return Ok(vec![Endpoint::Quic {
                    host: host.clone(),
                    addrs: bound,
                }]);
            }
            _ => {}
        }
        let bound = sock::listen(endpoint, 1024)?;
        let mut eps = Vec::with_capacity(bound.len());
        for b in bound {
            eps.push(b.endpoint.clone());
            self.add_listener(b.fd, b.endpoint, b.file);
        }
        Ok(eps)
    }

    /// Adds a listening descriptor (the engine gives each core a duplicate of one socket per
    /// endpoint) and arms its accept. `file` is removed when the listener closes.
    pub(crate) fn add_listener(
        &mut self,
        fd: OwnedFd,
        endpoint: Endpoint,
        file: Option<SocketFile>,
    ) {
        self.listeners.list.push(Listener {
            fd: Some(Rc::new(fd)),
            op: None,
            endpoint,
            state: State::Idle,
            backoff: None,
            retry_at: None,
            file,
        });
        let idx = self.listeners.list.len() - 1;
        if self.listeners.closing {
            self.close_listener(idx);
        } else {
            self.arm_accept(idx);
        }
    }

    pub(super) fn arm_accept(&mut self, idx: usize) {
        let closing = self.listeners.closing;
        let Some(l) = self.listeners.list.get_mut(idx) else {
            return;
        };
        if l.state != State::Idle || closing || l.retry_at.is_some() {
            return;
        }
        let Some(fd) = &l.fd else { return };
        l.state = State::Armed;
        l.op = Some(self.driver.accept(fd, Token::new(Op::Accept, idx, 0)));
    }

    /// An accept completed: `accepted` is the new connection or the `errno`; `more`: the
    /// accept stays armed (a multishot one).
    pub(super) fn on_accept(
        &mut self,
        idx: usize,
        accepted: Result<OwnedFd, i32>,
        more: bool,
        now: Instant,
    ) {
        let (accepted, errno) = match accepted {
            Ok(fd) => (Some(fd), 0),
            Err(e) => (None, e),
        };
        let closing = self.listeners.closing;
        let Some(l) = self.listeners.list.get_mut(idx) else {
            // Not one of ours: a connection accepted for it is closed (dropped), not leaked.
            return;
        };
        if !more {
            l.op = None;
            match l.state {
                State::Armed => l.state = State::Idle,
                State::Cancelling => {
                    // The kernel is done with the descriptor: now it may close.
                    l.state = State::Closed;
                    l.fd = None;
                }
                State::Idle | State::Closed => {}
            }
        }
        let tcp = matches!(l.endpoint, Endpoint::Tcp(_) | Endpoint::TcpHost { .. });
        if let Some(fd) = accepted {
            if closing || matches!(l.state, State::Cancelling | State::Closed) {
                // Accepted while the listener closes: close the connection (`fd` drops).
                drop(fd);
                return;
            }
            // A success ends an episode of accept errors.
            l.backoff = None;
            if tcp {
                sock::set_nodelay(&fd);
            }
            if self.add_socket(fd, Role::Server, now).is_some() {
                self.stats.accepted += 1;
            }
        } else if errno == libc::ECANCELED {
            // Our own cancellation (closing).
        } else if per_connection(errno) {
            self.stats.count_error("accept_aborted");
        } else {
            // Persistent (out of descriptors or memory, ...): re-arming at once would fail
            // again at once and spin the core. Back off, counting the episode once.
            let delay = match l.backoff {
                None => {
                    self.stats.count_error("accept_failed");
                    ACCEPT_BACKOFF_MIN
                }
                Some(d) => (d * 2).min(ACCEPT_BACKOFF_MAX),
            };
            l.backoff = Some(delay);
            let at = now + delay;
            l.retry_at = Some(at);
            self.listeners.retry_at = Some(self.listeners.retry_at.map_or(at, |r| r.min(at)));
        }
        if self
            .listeners
            .list
            .get(idx)
            .is_some_and(|l| l.state == State::Idle)
        {
            self.arm_accept(idx);
        }
    }

    /// Re-arms the accepts whose backoff expired (called on the timer tick).
    pub(super) fn retry_accepts(&mut self, now: Instant) {
        if self.listeners.retry_at.is_none_or(|r| r > now) {
            return;
        }
        self.listeners.retry_at = None;
        for idx in 0..self.listeners.list.len() {
            let l = &mut self.listeners.list[idx];
            match l.retry_at {
                Some(at) if at <= now => {
                    l.retry_at = None;
                    self.stats.accept_retries += 1;
                    self.arm_accept(idx);
                }
                Some(at) => {
                    self.listeners.retry_at =
                        Some(self.listeners.retry_at.map_or(at, |r| r.min(at)));
                }
                None => {}
            }
        }
    }

    /// Stops accepting on every listener: removes the socket files this core created, cancels
    /// armed accepts and closes each descriptor once the kernel released it (at once if no
    /// accept is armed). [`Listeners::all_closed`] says when all are done.
    pub(super) fn close_listeners(&mut self) {
        self.listeners.closing = true;
        self.listeners.retry_at = None;
        // New inproc connects are refused from now on.
        self.listeners.inproc.clear();
        self.listeners.shm.clear();
        // Routing for migrated clients goes on while the connections drain; the bindings
        // go with the core.
        for b in &self.listeners.quic {
            b.stop_accepting();
        }
        for idx in 0..self.listeners.list.len() {
            self.close_listener(idx);
        }
    }

    fn close_listener(&mut self, idx: usize) {
        let Some(l) = self.listeners.list.get_mut(idx) else {
            return;
        };
        // Removed while the socket still listens, so nobody can have replaced the file yet
        // (and the inode check leaves a replaced one alone).
        l.file = None;
        l.retry_at = None;
        match l.state {
            State::Idle => {
                l.state = State::Closed;
                l.fd = None;
            }
            State::Armed => {
                l.state = State::Cancelling;
                if let Some(op) = l.op {
                    self.driver.cancel(op);
                }
            }
            State::Cancelling | State::Closed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::config::CoreConfig;

    /// Whether the peer of `b` was closed (EOF), without blocking.
    fn peer_closed(b: &mut UnixStream) -> bool {
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        matches!(b.read(&mut buf), Ok(0))
    }

    fn accepted(core: &mut Core, idx: usize, more: bool) -> UnixStream {
        let (a, b) = UnixStream::pair().unwrap();
        // `more`: the accept stays armed (as a multishot one would).
        core.on_accept(idx, Ok(a.into()), more, Instant::now());
        b
    }

    #[test]
    fn a_connection_accepted_for_a_gone_or_closing_listener_is_closed() {
        let mut core = Core::new(CoreConfig::default()).unwrap();
        // No such listener.
        let mut b = accepted(&mut core, 7, false);
        assert!(peer_closed(&mut b), "leaked the accepted descriptor");
        assert_eq!(core.connections(), 0);
        // A listener whose accept is being cancelled.
        let path = format!("/tmp/netron-listener-unit-{}.sock", std::process::id());
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        core.add_listener(l.into(), Endpoint::Unix(path.clone().into()), None);
        core.close_listeners();
        let mut b = accepted(&mut core, 0, true);
        assert!(peer_closed(&mut b), "leaked the accepted descriptor");
        assert_eq!(core.connections(), 0);
        let _ = std::fs::remove_file(&path);
    }
}
