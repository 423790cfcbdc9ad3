//! Connection configuration.

use std::time::Duration;

use crate::error::Result;
use crate::layout::check_capacity;

/// Settings for a listener or a connecting client.
///
/// ```
/// use std::time::{Duration, Instant};
/// use netron_shm::{Config, Error, ShmConnection, ShmListener};
///
/// // A client asks for a 64 KiB ring towards the server and 1 MiB back; this server grants
/// // at most 128 KiB per ring.
/// let mut client_cfg = Config::default();
/// client_cfg.spin(Duration::from_micros(20)).ring_capacities(1 << 16, 1 << 20);
/// let mut server_cfg = Config::default();
/// server_cfg.max_capacity(1 << 17);
///
/// let name = format!("doc-config-{}", std::process::id());
/// let listener = ShmListener::bind_with(&name, server_cfg)?;
/// let client = std::thread::spawn(move || ShmConnection::connect_with(&name, &client_cfg));
/// let mut server = listener.accept_timeout(Some(Instant::now() + Duration::from_secs(5)))?;
/// let mut client = client.join().unwrap()?;
/// assert_eq!(client.producer().capacity(), 1 << 16);
/// assert_eq!(server.consumer().capacity(), 1 << 16);
/// assert_eq!(server.producer().capacity(), 1 << 17, "clamped to max_capacity");
/// assert_eq!(client.consumer().capacity(), 1 << 17);
///
/// // Capacities must be powers of two (64 B to 1 GiB).
/// let mut bad = Config::default();
/// bad.ring_capacities(1000, 1 << 16);
/// assert!(matches!(ShmListener::bind_with("doc-config-bad", bad), Err(Error::Config { .. })));
/// # Ok::<(), netron_shm::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub(crate) spin: Duration,
    pub(crate) to_server: usize,
    pub(crate) to_client: usize,
    pub(crate) max_capacity: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) allow_uids: Option<Vec<u32>>,
    pub(crate) socket_mode: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            spin: Duration::from_micros(50),
            to_server: 1 << 20,
            to_client: 1 << 20,
            max_capacity: 64 << 20,
            handshake_timeout: Duration::from_secs(5),
            allow_uids: None,
            socket_mode: None,
        }
    }
}

impl Config {
    /// How long a waiting consumer (or a producer facing a full ring) busy-polls before it
    /// sleeps. Default 50 µs. Longer spins burn a core but avoid the ~25–30 µs cost of a
    /// cross-core wake-up on small VMs; `ZERO` sleeps at once.
    pub fn spin(&mut self, spin: Duration) -> &mut Self {
        self.spin = spin;
        self
    }

    /// Ring capacities in bytes requested by a client (`to_server`: client → server,
    /// `to_client`: server → client); powers of two from 64 B to 1 GiB. Default 1 MiB each.
    /// Each costs that much shared memory per connection; a record can be at most
    /// `capacity - 16` bytes. Bulk transfers go faster with rings bigger than a core's L2
    /// (docs/shm.md, "Benchmarks"). The server clamps requests to its `max_capacity`.
    pub fn ring_capacities(&mut self, to_server: usize, to_client: usize) -> &mut Self {
        self.to_server = to_server;
        self.to_client = to_client;
        self
    }

    /// The largest ring a server grants a client (default 64 MiB).
    pub fn max_capacity(&mut self, max: usize) -> &mut Self {
        self.max_capacity = max;
        self
    }

    /// How long each side waits for the other during the rendezvous (default 5 s).
    pub fn handshake_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Listener only: accept clients whose user id (`SO_PEERCRED`, taken by the kernel when
    /// they connected) is in `uids`; others are refused before any segment is made (their
    /// `accept` returns `Handshake`). Default: any user who can reach the socket; an abstract
    /// name (the default form) has no file permissions, so any local user can.
    pub fn allow_uids(&mut self, uids: &[u32]) -> &mut Self {
        self.allow_uids = Some(uids.to_vec());
        self
    }

    /// Listener only, filesystem names (`/path`, `./path`): the socket file's permission
    /// bits (e.g. `0o660`), set right after `bind` (connecting needs write permission on
    /// it). Default: the process umask's. Abstract names have no file and ignore this.
    pub fn socket_mode(&mut self, mode: u32) -> &mut Self {
        self.socket_mode = Some(mode);
        self
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn validate(&self) -> Result<()> {
        check_capacity(self.to_server)?;
        check_capacity(self.to_client)?;
        check_capacity(self.max_capacity)?;
        Ok(())
    }
}
