//! The record link: a connection over two single-producer single-consumer record rings with
//! eventfd doorbells (the in-process rings of [`super::inproc`], or an `shm://` segment's
//! rings, [`super::shm`]). Input is one record at a time ([`Input::Record`], docs/protocol.md §26); output is
//! the connection's batches cut into records ([`crate::conn::record::for_each_record`]).
//!
//! Receiving: a core that may sleep announces it in the ring and waits on the doorbell with
//! one eventfd read in the driver (which also empties the counter); the peer's publish then
//! writes the eventfd (at most once per announcement). A busy-poll core reads hot record
//! links directly, with no system call at all: the ring is memory (`read_direct`), about one
//! record group ([`crate::conn::record::GROUP_BYTES`]) per loop turn, whose replies go out
//! before the next.
//!
//! Peer death (`shm://`): beside the doorbell read, a one-shot poll on the connection's
//! liveness socket stays in the driver. When it fires the peer process is gone (or closed):
//! the link records it in the rings (`check_peer`), so the reads end after what the peer
//! published (EOF: in-flight calls fail Unavailable) and writes fail; a pending doorbell read
//! is made to complete so that happens now. Closing shuts the socket down, which ends the
//! poll and tells the peer at once.
//!
//! Writing: a batch that the ring cannot take whole (the peer is slow) keeps its place, and a
//! driver timeout retries it with a backoff from 20 µs to 1 ms, the way netron-shm's
//! `wait_room` naps (the rings have no "room" doorbell); a hot connection of a busy-poll core
//! retries every microsecond instead (its peer frees space that fast). The connection's
//! write-stall timer still bounds how long a peer may take nothing.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use netron_codec::TxBuf;

use super::inproc::{ReadEnd, RecordPipe, WriteEnd};
use super::{Direct, Input, Link, Owner, Tx, TxPolicy, Update};
use crate::conn::{Caller, Connection};
use crate::driver::token::{Op, Token};
use crate::driver::{Driver, Event, OpId};

/// First retry of a write the ring could not take.
const RETRY_MIN: Duration = Duration::from_micros(20);
/// Longest wait between retries.
const RETRY_MAX: Duration = Duration::from_millis(1);
/// The wait between retries on a hot connection of a busy-poll core: the peer is most likely
/// busy-polling too and frees ring space within microseconds (a 4 MiB echo over `shm://` in
/// fragments: 371–403 MiB/s with the backoff, 520–600 MiB/s retrying every microsecond;
/// docs/shm.md "Record groups"). One timer SQE per retry; the write-stall timer still bounds
/// how long the peer may take nothing.
const RETRY_HOT: Duration = Duration::from_micros(1);

/// Batches of at least this many bytes make the link lend ring space for the next one
/// (docs/protocol.md §26.6): in-place encoding pays for large batches (a 64 KiB echo over
/// `shm://` between two processes: 1.40x `unix://` in place, 1.24x copied) and costs small
/// ones, whose copy is one burst of stores from a hot buffer (64-byte calls: p50 0.97 µs in
/// place against 0.80 µs copied, 16 in flight 2.9 M against 3.8 M calls/s; docs/benchmarks.md
/// "batches encoded in place").
pub(crate) const LEND_AFTER: usize = 16 << 10;

/// A batch being written.
#[derive(Debug)]
struct Writing {
    /// The batch (kept until all of it is in the ring).
    buf: Option<Vec<u8>>,
    frames: u32,
    /// The ring was full: a retry timer is in the driver.
    retry: Option<OpId>,
    backoff: Duration,
    /// Hot on a busy-poll core: retries every [`RETRY_HOT`], no backoff.
    hot: bool,
    /// The whole batch is in the ring (`take_written` hands it back).
    complete: bool,
    /// How the batch reached the ring: copied, or encoded in lent ring space and committed
    /// there (`buf` is then an empty `Vec`, allocating nothing).
    how: super::Written,
}

/// A connection's two rings and doorbell.
#[derive(Debug)]
pub(crate) struct RecordLink {
    /// `None` once closed (dropping it ends the peer's side: EOF to its reads, `PeerGone` to
    /// its writes).
    pipe: Option<RecordPipe>,
    /// Our doorbell (a duplicate of the ring's eventfd, so a poll in the driver keeps it
    /// open until its completion, whatever happens to the pipe).
    bell: Rc<OwnedFd>,
    /// The same eventfd, to ring it ourselves (so a pending read completes now).
    bell_io: File,
    /// The doorbell read's buffer while no read is in the driver (the read owns it).
    bell_buf: Option<Box<[u8; 8]>>,
    /// Whose link this is (for the tokens of operations started from a completion).
    owner: Owner,
    /// The doorbell read in the driver, if armed.
    recv: Option<OpId>,
    write: Option<Writing>,
    read_done: bool,
    /// `shm://`: the liveness socket (a duplicate, so the poll in the driver keeps it open)
    /// and the poll on it, if armed; `None` in process.
    live: Option<Live>,
    /// `shm://`: the peer process's credentials, taken once when the link is made.
    cred: Option<crate::shm::PeerCred>,
}

/// The liveness socket of an `shm://` link.
#[derive(Debug)]
struct Live {
    fd: Rc<OwnedFd>,
    /// The poll in the driver, if armed.
    poll: Option<OpId>,
    /// The poll fired: the peer is gone (never re-armed).
    fired: bool,
}

impl Live {
    /// Arms the poll on the liveness socket for `events`, tagged as the link's receive (so
    /// the core routes its completion to the link).
    fn arm(&mut self, io: &mut Driver, owner: Owner, events: i16) {
        let events = u32::from(events.unsigned_abs());
        let tag = Token::new(Op::Recv, owner.key, owner.generation);
        self.poll = Some(io.poll(&self.fd, events, tag));
    }
}

impl RecordLink {
    /// `shm://`: the peer process's credentials (`None` in process).
    pub(crate) fn peer_cred(&self) -> Option<crate::shm::PeerCred> {
        self.cred
    }

    /// A link over `pipe`.
    ///
    /// # Errors
    /// The OS error if the doorbell's descriptor cannot be duplicated (`EMFILE`).
    pub(crate) fn new(pipe: RecordPipe) -> io::Result<RecordLink> {
        let bell = Rc::new(pipe.doorbell().try_clone_to_owned()?);
        let bell_io = File::from(pipe.doorbell().try_clone_to_owned()?);
        let live = match pipe.liveness() {
            Some(fd) => Some(Live {
                fd: Rc::new(fd.try_clone_to_owned()?),
                poll: None,
                fired: false,
            }),
            None => None,
        };
        let cred = pipe.liveness().and_then(crate::shm::PeerCred::of);
        Ok(RecordLink {
            cred,
            pipe: Some(pipe),
            bell,
            bell_io,
            bell_buf: Some(Box::new([0; 8])),
            owner: Owner {
                key: usize::MAX,
                generation: 0,
            },
            recv: None,
            write: None,
            read_done: false,
            live,
        })
    }

    /// Arms the poll on the liveness socket (`shm://` only), unless armed, fired or closed.
    fn watch_peer(&mut self, io: &mut Driver, owner: Owner) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.poll.is_some() || live.fired || self.pipe.is_none() {
            return;
        }
        live.arm(
            io,
            owner,
            libc::POLLIN | libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR,
        );
    }

    /// Makes a pending doorbell read complete now (records are waiting, or the link closes).
    fn ring_own_bell(&self) {
        // A full counter (EAGAIN) means the poll fires anyway.
        let _ = (&self.bell_io).write(&1u64.to_ne_bytes());
    }

    /// Delivers waiting records, about `budget` bytes of them at most.
    fn read(&mut self, budget: usize, mut deliver: impl FnMut(Input<'_>)) -> ReadEnd {
        let Some(pipe) = self.pipe.as_mut() else {
            return ReadEnd::Empty;
        };
        let limit = pipe.limit_in();
        pipe.read_some(budget, |bytes| deliver(Input::Record { bytes, limit }))
    }

    /// After a batch of `wrote` bytes: lends the ring's free space to `conn`'s encoder if the
    /// batch was bulk ([`LEND_AFTER`]) and nothing is queued, so its next batch is encoded in
    /// place (docs/protocol.md §26.6).
    fn lend_to<C: Caller>(&mut self, conn: &mut Connection<C>, wrote: usize) {
        if wrote < LEND_AFTER {
            return;
        }
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        if !conn.can_lend() {
            return;
        }
        if let Some(buf) = pipe.lend() {
            if conn.lend_tx(buf).is_err() {
                pipe.cancel_lend();
            }
        }
    }

    /// Commits a batch the connection encoded in lent ring space (one record, no copy), then
    /// lends the space after it.
    fn write_lent<C: Caller>(&mut self, buf: TxBuf, frames: u32, conn: &mut Connection<C>) -> Tx {
        let written = match self.pipe.as_mut() {
            Some(p) => p.write_lent(buf),
            None => Err("the link is closed".to_owned()),
        };
        let n = match written {
            Ok(n) => n,
            Err(why) => return Tx::Failed(io::Error::new(io::ErrorKind::BrokenPipe, why)),
        };
        self.write = Some(Writing {
            // Empty: `take_written` hands it back for the core's accounting.
            buf: Some(Vec::new()),
            frames,
            retry: None,
            backoff: RETRY_MIN,
            hot: false,
            complete: true,
            how: super::Written::InPlace,
        });
        self.lend_to(conn, n);
        Tx::Started {
            direct: Some(n),
            complete: true,
        }
    }

    /// Writes (the rest of) the current batch; arms a retry if the ring is full.
    fn push(&mut self, io: &mut Driver) -> Update {
        let owner = self.owner;
        let Some(w) = self.write.as_mut() else {
            return Update::Quiet(None);
        };
        let buf = w.buf.as_deref().unwrap_or_default();
        let end = match self.pipe.as_mut() {
            Some(p) => p.write(buf),
            None => WriteEnd::Failed("the link is closed".to_owned()),
        };
        match end {
            WriteEnd::Done(n) => {
                w.complete = true;
                w.backoff = RETRY_MIN;
                Update::Sent {
                    wrote: Some(Ok(n)),
                    blocked: false,
                    done: w.buf.take(),
                }
            }
            WriteEnd::Blocked(n) => {
                let tag = Token::new(Op::Send, owner.key, owner.generation);
                if w.hot {
                    w.retry = Some(io.timeout(RETRY_HOT, tag));
                } else {
                    w.retry = Some(io.timeout(w.backoff, tag));
                    w.backoff = (w.backoff * 2).min(RETRY_MAX);
                }
                Update::Sent {
                    wrote: Some(Ok(n)),
                    blocked: true,
                    done: None,
                }
            }
            WriteEnd::Failed(why) => Update::Sent {
                wrote: Some(Err(io::Error::new(io::ErrorKind::BrokenPipe, why))),
                blocked: false,
                done: w.buf.take(),
            },
        }
    }
}

impl Link for RecordLink {
    fn start_recv(&mut self, io: &mut Driver, owner: Owner) {
        self.owner = owner;
        self.watch_peer(io, owner);
        if self.recv.is_some() || self.read_done {
            return;
        }
        let Some(pipe) = self.pipe.as_ref() else {
            return;
        };
        let Some(buf) = self.bell_buf.take() else {
            return;
        };
        // Announce the sleep in the ring, then wait on the doorbell. If records arrived
        // meanwhile (or the peer is gone), the read is made to complete at once instead.
        if pipe.announce_sleep() != Ok(true) {
            self.ring_own_bell();
        }
        let tag = Token::new(Op::Recv, owner.key, owner.generation);
        self.recv = Some(io.eventfd_read(&self.bell, buf, tag));
    }

    fn receiving(&self) -> bool {
        self.recv.is_some()
    }

    fn stop_recv(&mut self, _io: &mut Driver) {
        // The read completes at once; records are then read directly.
        if self.recv.is_some() {
            self.ring_own_bell();
        }
    }

    fn on_completion(
        &mut self,
        io: &mut Driver,
        event: Event,
        deliver: impl FnMut(Input<'_>),
    ) -> Update {
        match event {
            Event::EventfdRead { result, buf } => {
                self.recv = None;
                self.bell_buf = Some(buf);
                if let Some(p) = self.pipe.as_ref() {
                    p.cancel_sleep();
                }
                if self.read_done {
                    return Update::Quiet(None);
                }
                if result < 0 && result != -libc::ECANCELED {
                    return Update::RecvFailed {
                        counter: "recv_failed",
                        why: format!(
                            "waiting on the ring's doorbell failed: {}",
                            io::Error::from_raw_os_error(-result)
                        ),
                    };
                }
                match self.read(usize::MAX, deliver) {
                    ReadEnd::Got(_) => Update::Input,
                    ReadEnd::Empty => Update::Quiet(None),
                    ReadEnd::Eof => Update::Eof,
                    ReadEnd::Failed { counter, why } => Update::RecvFailed { counter, why },
                }
            }
            Event::Polled { result, .. } => {
                // The liveness socket. Both directions shut (HUP: the peer process exited,
                // was killed, or closed the connection), an error or stray bytes: the peer
                // is gone. Only its writing side shut (RDHUP without HUP): a half-close, as
                // a FIN on a stream: reads end, replies still go out, and the watch goes on
                // for HUP. A cancellation (closing) ends the watch.
                let half = result >= 0
                    && result & i32::from(libc::POLLRDHUP) != 0
                    && result & i32::from(libc::POLLHUP | libc::POLLERR) == 0;
                let owner = self.owner;
                if let Some(live) = self.live.as_mut() {
                    live.poll = None;
                    live.fired = !half || self.pipe.is_none();
                }
                if result == -libc::ECANCELED {
                    return Update::Quiet(None);
                }
                if half {
                    if let Some(p) = self.pipe.as_mut() {
                        p.end_input();
                    }
                    if let Some(live) = self.live.as_mut().filter(|l| !l.fired) {
                        live.arm(io, owner, libc::POLLHUP | libc::POLLERR);
                    }
                } else if let Some(p) = self.pipe.as_ref() {
                    p.check_peer();
                }
                if self.recv.is_some() {
                    // The doorbell read completes now: its read drains what the peer
                    // published, then reports the end.
                    self.ring_own_bell();
                }
                Update::Quiet(None)
            }
            Event::TimedOut { .. } => {
                // A write's retry timer.
                let Some(w) = self.write.as_mut() else {
                    return Update::Quiet(None);
                };
                w.retry = None;
                if w.complete || self.pipe.is_none() {
                    // Closed meanwhile: the batch comes back without being written.
                    self.pipe = None;
                    return Update::Sent {
                        wrote: None,
                        blocked: false,
                        done: w.buf.take(),
                    };
                }
                self.push(io)
            }
            _ => Update::Quiet(None),
        }
    }

    fn read_direct(&mut self, _scratch: &mut [u8], deliver: impl FnMut(Input<'_>)) -> Direct {
        if self.read_done {
            return Direct::Empty;
        }
        // A turn's share: about one sender's record group, then the turn answers what it
        // read before reading on (the link stays hot; the next turn goes on), so a large
        // batch of calls is served in a pipeline rather than read whole first.
        match self.read(crate::conn::record::GROUP_BYTES, deliver) {
            ReadEnd::Got(_) => Direct::Got { maybe_more: false },
            ReadEnd::Empty => Direct::Empty,
            ReadEnd::Eof => Direct::Eof,
            ReadEnd::Failed { counter, .. } => Direct::Failed(counter),
        }
    }

    fn end_reading(&mut self, shut: bool) {
        self.read_done = true;
        if shut && self.recv.is_some() {
            self.ring_own_bell();
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
        self.owner = owner;
        let Some((buf, frames)) = conn.poll_transmit_buf() else {
            return Tx::Nothing;
        };
        if buf.is_lent() {
            return self.write_lent(buf, frames, conn);
        }
        if let Some(p) = self.pipe.as_mut().filter(|_| !conn.holds_lent()) {
            // Lent space the encoder left (a large frame moved its batch to the heap).
            p.cancel_lend();
        }
        self.write = Some(Writing {
            buf: Some(buf.into_vec()),
            frames,
            retry: None,
            backoff: RETRY_MIN,
            hot: policy.hot,
            complete: false,
            how: super::Written::Copied,
        });
        match self.push(io) {
            Update::Sent {
                wrote: Some(Ok(n)),
                blocked: false,
                done: Some(buf),
            } => {
                if let Some(w) = self.write.as_mut() {
                    w.buf = Some(buf);
                }
                self.lend_to(conn, n);
                Tx::Started {
                    direct: Some(n),
                    complete: true,
                }
            }
            Update::Sent {
                wrote: Some(Err(e)),
                done,
                ..
            } => {
                self.write = None;
                if let Some(buf) = done {
                    conn.recycle(buf);
                }
                Tx::Failed(e)
            }
            Update::Sent {
                wrote: Some(Ok(n)), ..
            } => Tx::Started {
                direct: Some(n),
                complete: false,
            },
            _ => Tx::Started {
                direct: None,
                complete: false,
            },
        }
    }

    fn take_written(&mut self) -> Option<Vec<u8>> {
        self.write
            .as_mut()
            .filter(|w| w.complete)
            .and_then(|w| w.buf.take())
    }

    fn end_write(&mut self) -> Option<(u32, super::Written)> {
        self.write.take().map(|w| (w.frames, w.how))
    }

    fn close(&mut self) {
        // Dropping the rings tells the peer (EOF, PeerGone); a pending doorbell read is made
        // to complete, and a retry timer completes by itself within RETRY_MAX.
        self.pipe = None;
        if self.recv.is_some() {
            self.ring_own_bell();
        }
        // `shm://`: our duplicate keeps the socket open, so shut it down: the peer sees us
        // gone now and the liveness poll completes.
        if let Some(live) = &self.live {
            let _ = rustix::net::shutdown(&*live.fd, rustix::net::Shutdown::Both);
        }
    }

    fn quiescent(&self) -> bool {
        !self.receiving() && !self.writing() && self.live.as_ref().is_none_or(|l| l.poll.is_none())
    }
}
