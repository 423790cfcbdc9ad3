//! A duplex shared-memory connection: one ring each way, plus the liveness socket.

use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::doorbell::{Bell, EventBell};
use crate::error::Result;
use crate::layout::{RING_TO_CLIENT, RING_TO_SERVER};
use crate::liveness::Link;
use crate::ring::{Consumer, Producer};
use crate::segment::Segment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Client,
}

/// One side of a shared-memory connection: a [`Producer`] for the outgoing ring and a
/// [`Consumer`] for the incoming one.
///
/// Dropping both halves unmaps the segment and closes the socket, which the peer sees as
/// `PeerGone`.
#[derive(Debug)]
pub struct ShmConnection {
    producer: Producer,
    consumer: Consumer,
    link: Arc<Link>,
    segment: Arc<Segment>,
}

impl ShmConnection {
    /// Connects to the server listening on `name` with the default configuration.
    pub fn connect(name: &str) -> Result<Self> {
        Self::connect_with(name, &Config::default())
    }

    /// Connects to the server listening on `name` (see [`crate::ShmListener::bind_with`] for
    /// the name forms), requesting the ring capacities in `config`.
    pub fn connect_with(name: &str, config: &Config) -> Result<Self> {
        crate::rendezvous::connect(name, config)
    }

    pub(crate) fn assemble(
        segment: Arc<Segment>,
        sock: UnixStream,
        bell_to_server: EventBell,
        bell_to_client: EventBell,
        role: Role,
        spin: Duration,
    ) -> Self {
        let link = Arc::new(Link::with_socket(sock));
        let to_server: Arc<dyn Bell> = Arc::new(bell_to_server);
        let to_client: Arc<dyn Bell> = Arc::new(bell_to_client);
        let (tx, rx, tx_bell, rx_bell) = match role {
            Role::Client => (RING_TO_SERVER, RING_TO_CLIENT, to_server, to_client),
            Role::Server => (RING_TO_CLIENT, RING_TO_SERVER, to_client, to_server),
        };
        let producer = Producer::new(segment.ring(tx), tx_bell, Arc::clone(&link), spin);
        let consumer = Consumer::new(segment.ring(rx), rx_bell, Arc::clone(&link), spin);
        Self {
            producer,
            consumer,
            link,
            segment,
        }
    }

    /// The outgoing ring.
    pub fn producer(&mut self) -> &mut Producer {
        &mut self.producer
    }

    /// The incoming ring.
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// Both rings, to use from different threads. They keep sharing the liveness state.
    pub fn split(self) -> (Producer, Consumer) {
        (self.producer, self.consumer)
    }

    /// The liveness socket: readable (EOF/HUP) once the peer is gone. For event loops.
    pub fn liveness_fd(&self) -> BorrowedFd<'_> {
        self.link
            .fd()
            .expect("shared-memory connections have a socket")
    }

    /// Checks, without blocking, whether the peer is still there (one `poll` system call).
    pub fn check_peer(&self) -> Result<()> {
        self.link.poll_peer(Duration::ZERO)
    }

    /// Closes the connection: later operations fail with `Closed` and the peer sees
    /// `PeerGone`.
    pub fn close(&self) {
        self.link.close();
    }
}

impl ShmConnection {
    /// The mapped segment's base address and length, for tests that play a malicious peer.
    /// Not part of the API.
    #[doc(hidden)]
    pub fn raw_segment(&self) -> (*mut u8, usize) {
        self.segment.span()
    }
}
