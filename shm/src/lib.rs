//! netron-shm: shared-memory duplex rings with doorbells, rendezvous and crash-safe liveness.
//!
//! The local-IPC transport of Netron. A server [`ShmListener::bind`]s a name; each client that
//! [`ShmConnection::connect`]s gets its own segment (a sealed memfd) holding two
//! single-producer single-consumer rings, and two eventfd doorbells, passed over the Unix
//! socket with `SCM_RIGHTS`. The socket then stays open as the liveness signal: if either
//! process dies, every wait on the other side returns [`Error::PeerGone`].
//!
//! Writing is zero-copy: [`Producer::reserve`] lends space in the ring, the caller writes
//! the record in place and commits it, and [`Producer::publish`] makes a whole batch visible
//! with one store (and at most one doorbell ring, only if the consumer sleeps). Reading lends
//! each record as one `&[u8]` in place ([`Consumer::read`]) until [`Consumer::release`] hands
//! the space back with one store. [`Consumer::wait`] spins briefly, then sleeps on the
//! doorbell and the liveness socket together.
//!
//! The peer is untrusted: every index, length and offset read from shared memory is validated;
//! a violation closes the connection with [`Error::Corrupt`]. See `docs/shm.md` for the byte
//! layout, the memory orderings and what is validated.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use netron_shm::{ShmConnection, ShmListener};
//!
//! let name = format!("doc-example-{}", std::process::id());
//! let listener = ShmListener::bind(&name)?;
//! let client = std::thread::spawn(move || -> netron_shm::Result<()> {
//!     let mut conn = ShmConnection::connect(&name)?;
//!     let p = conn.producer();
//!     let mut r = p.reserve(5)?; // space in the ring, written in place
//!     r.copy_from_slice(b"hello");
//!     r.commit();
//!     p.publish()?; // one store for the whole batch
//!     let deadline = Some(Instant::now() + Duration::from_secs(5));
//!     conn.consumer().wait(deadline)?;
//!     assert_eq!(conn.consumer().read()?, Some(&b"HELLO"[..]));
//!     Ok(())
//! });
//! let mut conn = listener.accept_timeout(Some(Instant::now() + Duration::from_secs(5)))?;
//! let deadline = Some(Instant::now() + Duration::from_secs(5));
//! conn.consumer().wait(deadline)?;
//! let upper = conn.consumer().read()?.unwrap().to_ascii_uppercase();
//! conn.consumer().release();
//! conn.producer().send(&upper)?;
//! conn.producer().publish()?;
//! client.join().unwrap()?;
//! # Ok::<(), netron_shm::Error>(())
//! ```
//!
//! For threads in one process, [`channel`] gives the same ring on the heap, and
//! [`testing::TamperedChannel`] one whose peer side a test or fuzz target controls.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod config;
#[cfg(not(loom))]
mod connection;
mod doorbell;
mod error;
pub mod layout;
mod liveness;
#[cfg(not(loom))]
mod rendezvous;
pub mod ring;
#[cfg(not(loom))]
mod segment;
mod sync;
#[cfg(not(loom))]
pub mod testing;

pub use config::Config;
#[cfg(not(loom))]
pub use connection::ShmConnection;
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use rendezvous::{PendingRendezvous, ShmListener};
#[cfg(not(loom))]
pub use ring::channel_with_doorbell;
pub use ring::{Consumer, LentSpace, Producer, Records, Reservation, channel};
