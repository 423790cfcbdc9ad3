//! The readiness (epoll) driver: the io_uring driver's operations and completions, for hosts
//! where io_uring is blocked (the default seccomp profiles of recent container runtimes, the
//! `kernel.io_uring_disabled` sysctl).
//!
//! Each operation waits for readiness of its descriptor (one level-triggered epoll
//! registration per descriptor, whose interest is the union of its operations') and then does
//! its non-blocking system call; the outcome becomes the same [`Event`] the io_uring driver
//! reports, queued until the core drains completions. A send is tried at once (one `send(2)`
//! per batch, as the core hands over one batch per connection) and waits for `EPOLLOUT` only
//! when the socket is full; a receive reads into [`pool`] buffers while data is there, as a
//! multishot receive fills provided buffers. Timeouts are a deadline heap checked on every
//! enter. System calls go through `rustix` (safe wrappers, no libc indirection; it is
//! already in the workspace for netron-shm), so this module holds no `unsafe`.
//!
//! "Entering the kernel" is one `epoll_wait`: with a zero timeout when polling, with the park
//! timeout (or the next timer) when parking. Zero-copy sends are plain sends here.

pub(crate) mod pool;
mod wait;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketFlags};
use slab::Slab;

use self::pool::Pool;
use crate::driver::lifecycle::{Lifecycle, OpId, Slot};
use crate::driver::token::Token;
use crate::driver::{Completion, Cqe, Event};

/// Most receive buffers one readiness event fills before the connection waits for its next
/// turn (level-triggered: unread data is reported again), so one busy peer cannot starve the
/// others of a turn.
const READS_PER_EVENT: usize = 16;
/// Most readiness events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;
/// Most polling turns a busy core with hot connections lets pass between two `epoll_wait(0)`
/// calls once they keep finding nothing (see [`Epoll::should_poll`]).
pub(crate) const MAX_POLL_BACKOFF: u32 = 8;

/// An operation and the resources it holds until its final completion.
enum Op {
    Accept {
        fd: Rc<OwnedFd>,
    },
    Recv {
        fd: Rc<OwnedFd>,
    },
    Send {
        fd: Rc<OwnedFd>,
        buf: Vec<u8>,
        off: usize,
    },
    EventfdRead {
        fd: Rc<OwnedFd>,
        buf: Option<Box<[u8; 8]>>,
    },
    Poll {
        fd: Rc<OwnedFd>,
        events: EventFlags,
    },
    Timeout,
}

impl Op {
    fn fd(&self) -> Option<RawFd> {
        op_fd(self).map(|fd| fd.as_raw_fd())
    }

    /// The readiness this operation waits for.
    fn interest(&self) -> EventFlags {
        match self {
            Op::Accept { .. } | Op::Recv { .. } | Op::EventfdRead { .. } => EventFlags::IN,
            Op::Send { .. } => EventFlags::OUT,
            Op::Poll { events, .. } => *events,
            Op::Timeout => EventFlags::empty(),
        }
    }
}

/// An operation's slot: the shared lifecycle plus whether its final completion is queued
/// (it then waits for nothing and cannot be cancelled any more).
struct EpSlot {
    slot: Slot<Op>,
    done: bool,
}

/// One descriptor's registration: the operations waiting on it and the interest registered
/// (empty: not registered). Kept when the last operation leaves, so re-arming a descriptor
/// (the inbox's doorbell after every wake-up) allocates nothing.
#[derive(Default)]
struct Registration {
    ops: Vec<OpId>,
    mask: EventFlags,
}

/// One core's epoll instance, receive buffers and operations.
pub(crate) struct Epoll {
    ep: OwnedFd,
    ops: Slab<EpSlot>,
    next_gen: u32,
    /// Registrations by descriptor number (small integers: a vector, grown to the highest).
    fds: Vec<Registration>,
    pool: Pool,
    /// Outcomes waiting for the core's next drain, oldest first: operation, event, final.
    ready: VecDeque<(OpId, Event, bool)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    events: Vec<epoll::Event>,
    /// Operation ids of one descriptor, copied out while their steps run.
    scratch: Vec<OpId>,
    /// Zero-timeout waits in a row that found nothing (reset by any readiness or timer).
    empty_polls: u32,
    /// Polling turns still to let pass before the next zero-timeout wait.
    skip: u32,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll")
            .field("ops", &self.ops.len())
            .field(
                "fds",
                &self.fds.iter().filter(|r| !r.ops.is_empty()).count(),
            )
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

fn errno(e: Errno) -> i32 {
    e.raw_os_error()
}

impl Epoll {
    /// An epoll instance with `recv_buffers` receive buffers of `recv_buffer_size` bytes.
    ///
    /// # Errors
    /// `epoll_create1` failing (descriptor limit).
    pub(crate) fn new(recv_buffers: u16, recv_buffer_size: usize) -> io::Result<Epoll> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Epoll {
            ep,
            ops: Slab::with_capacity(64),
            next_gen: 0,
            fds: Vec::new(),
            pool: Pool::new(recv_buffers, recv_buffer_size),
            ready: VecDeque::with_capacity(64),
            timers: BinaryHeap::new(),
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            scratch: Vec::new(),
            empty_polls: 0,
            skip: 0,
        })
    }

    /// Operations not yet finished (including ignored ones).
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    // ---- operations ----------------------------------------------------------------------

    fn start(&mut self, tag: Token, op: Op) -> OpId {
        self.next_gen = self.next_gen.wrapping_add(1);
        let generation = self.next_gen;
        let index = self.ops.insert(EpSlot {
            slot: Slot {
                generation,
                state: Lifecycle::Submitted,
                tag,
                op,
            },
            done: false,
        });
        OpId {
            index: index as u32,
            generation,
        }
    }

    /// Adds `id` to its descriptor's registration.
    fn register(&mut self, id: OpId) {
        let Some(s) = self.ops.get(id.index as usize) else {
            return;
        };
        let (Some(fd), interest) = (s.slot.op.fd(), s.slot.op.interest()) else {
            return;
        };
        let i = fd as usize;
        if self.fds.len() <= i {
            self.fds.resize_with(i + 1, Registration::default);
        }
        let reg = &mut self.fds[i];
        if reg.ops.contains(&id) {
            return;
        }
        reg.ops.push(id);
        let mask = reg.mask | interest;
        if mask != reg.mask {
            let fresh = reg.mask.is_empty();
            reg.mask = mask;
            let r = self.ctl(fd, mask, fresh);
            if let Err(e) = r {
                // Not pollable (EPERM for regular files) or out of memory: the operation
                // fails now instead of waiting for ever.
                self.unregister(id);
                self.fail(id, errno(e));
            }
        }
    }

    fn ctl(&self, fd: RawFd, mask: EventFlags, fresh: bool) -> rustix::io::Result<()> {
        let s = self
            .fds
            .get(fd as usize)
            .and_then(|r| r.ops.first())
            .and_then(|id| self.ops.get(id.index as usize));
        let Some(src) = s.and_then(|s| op_fd(&s.slot.op)) else {
            return Ok(());
        };
        let data = EventData::new_u64(fd as u64);
        if fresh {
            epoll::add(&self.ep, src, data, mask)
        } else {
            epoll::modify(&self.ep, src, data, mask)
        }
    }

    /// Removes `id` from its descriptor's registration (deregistering the descriptor when no
    /// operation waits on it any more).
    fn unregister(&mut self, id: OpId) {
        let Some(fd) = self.ops.get(id.index as usize).and_then(|s| s.slot.op.fd()) else {
            return;
        };
        let Some(reg) = self.fds.get_mut(fd as usize) else {
            return;
        };
        reg.ops.retain(|o| *o != id);
        let mask = reg
            .ops
            .iter()
            .filter_map(|o| self.ops.get(o.index as usize))
            .fold(EventFlags::empty(), |m, s| m | s.slot.op.interest());
        if reg.ops.is_empty() || mask.is_empty() {
            let src = self
                .ops
                .get(id.index as usize)
                .and_then(|s| op_fd(&s.slot.op));
            if let Some(src) = src {
                let _ = epoll::delete(&self.ep, src);
            }
            // Operations left with no interest (none today) would wait for nothing.
            let reg = &mut self.fds[fd as usize];
            reg.ops.clear();
            reg.mask = EventFlags::empty();
        } else if mask != reg.mask {
            reg.mask = mask;
            let _ = self.ctl(fd, mask, false);
        }
    }

    /// Queues an outcome of `id`; `last`: its final one.
    fn push(&mut self, id: OpId, event: Event, last: bool) {
        if last {
            self.unregister(id);
            if let Some(s) = self.ops.get_mut(id.index as usize) {
                s.done = true;
            }
        }
        self.ready.push_back((id, event, last));
    }

    /// Ends `id` with `-err` (its resources go back in the final event).
    fn fail(&mut self, id: OpId, err: i32) {
        let Some(s) = self.ops.get_mut(id.index as usize) else {
            return;
        };
        if s.done {
            return;
        }
        let event = match &mut s.slot.op {
            Op::Accept { .. } => Event::Accepted {
                fd: Err(err),
                more: false,
            },
            Op::Recv { .. } => Event::Received {
                result: -err,
                buf: None,
                more: false,
            },
            Op::Send { buf, .. } => Event::Sent {
                wrote: Some(-err),
                more: false,
                done: Some(std::mem::take(buf)),
            },
            Op::EventfdRead { buf, .. } => Event::EventfdRead {
                result: -err,
                buf: buf.take().unwrap_or_default(),
            },
            Op::Poll { .. } => Event::Polled {
                result: -err,
                more: false,
            },
            Op::Timeout => Event::TimedOut { result: -err },
        };
        self.push(id, event, true);
    }

    /// Accepts one connection on `listener`.
    pub(crate) fn accept(&mut self, listener: &Rc<OwnedFd>, tag: Token) -> OpId {
        // Readiness can be stale by the time accept(2) runs (the peer reset the connection):
        // a non-blocking listener then says EAGAIN instead of blocking the core.
        let _ = rustix::io::ioctl_fionbio(&**listener, true);
        let id = self.start(
            tag,
            Op::Accept {
                fd: listener.clone(),
            },
        );
        self.register(id);
        id
    }

    /// Receives on `fd` into the buffer pool until cancelled, failed or at EOF.
    pub(crate) fn recv_multi(&mut self, fd: &Rc<OwnedFd>, tag: Token) -> OpId {
        let id = self.start(tag, Op::Recv { fd: fd.clone() });
        self.register(id);
        id
    }

    /// Writes `buf[off..]` to `fd`: tried at once, then on `EPOLLOUT` until all is written.
    pub(crate) fn send(&mut self, fd: &Rc<OwnedFd>, buf: Vec<u8>, off: usize, tag: Token) -> OpId {
        let id = self.start(
            tag,
            Op::Send {
                fd: fd.clone(),
                buf,
                off,
            },
        );
        if !self.step_send(id) {
            self.register(id);
        }
        id
    }

    /// Reads the counter of the eventfd `fd` into `buf` once it is non-zero.
    pub(crate) fn eventfd_read(&mut self, fd: &Rc<OwnedFd>, buf: Box<[u8; 8]>, tag: Token) -> OpId {
        let id = self.start(
            tag,
            Op::EventfdRead {
                fd: fd.clone(),
                buf: Some(buf),
            },
        );
        self.register(id);
        id
    }

    /// Waits (once) for one of `events` (`libc::POLLIN`, ... : the same bits as epoll's).
    pub(crate) fn poll(&mut self, fd: &Rc<OwnedFd>, events: u32, tag: Token) -> OpId {
        let events = EventFlags::from_bits_truncate(events);
        let id = self.start(
            tag,
            Op::Poll {
                fd: fd.clone(),
                events,
            },
        );
        self.register(id);
        id
    }

    /// Completes after `after` with `-ETIME`.
    pub(crate) fn timeout(&mut self, after: Duration, tag: Token) -> OpId {
        let id = self.start(tag, Op::Timeout);
        let at = Instant::now()
            .checked_add(after)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        self.timers.push(Reverse((at, id.user_data())));
        id
    }

    /// Cancels `op`: its final completion (`-ECANCELED`, resources returned) is queued now,
    /// unless it already finished.
    pub(crate) fn cancel(&mut self, op: OpId) {
        if self.is_live(op) {
            self.fail(op, libc::ECANCELED);
        }
    }

    /// The owner lost interest in `op`: its completions are consumed here.
    pub(crate) fn forget(&mut self, op: OpId) {
        if self.is_live(op) {
            self.ops[op.index as usize].slot.state = Lifecycle::Ignored;
        }
    }

    fn is_live(&self, op: OpId) -> bool {
        self.ops
            .get(op.index as usize)
            .is_some_and(|s| s.slot.generation == op.generation)
    }

    // ---- steps: one non-blocking system call each ------------------------------------------

    /// Tries to write the rest of send `id`; `true` if it is over (written or failed).
    fn step_send(&mut self, id: OpId) -> bool {
        let Some(s) = self.ops.get_mut(id.index as usize) else {
            return true;
        };
        let Op::Send { fd, buf, off } = &mut s.slot.op else {
            return true;
        };
        loop {
            let rest = &buf[(*off).min(buf.len())..];
            match rustix::net::send(&**fd, rest, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) => {
                    *off += n;
                    if *off >= buf.len() || n == 0 {
                        let done = Some(std::mem::take(buf));
                        self.push(
                            id,
                            Event::Sent {
                                wrote: Some(n as i32),
                                more: false,
                                done,
                            },
                            true,
                        );
                        return true;
                    }
                    // A short write: reported like a resubmitted io_uring send, then the
                    // rest waits for room.
                    self.ready.push_back((
                        id,
                        Event::Sent {
                            wrote: Some(n as i32),
                            more: true,
                            done: None,
                        },
                        false,
                    ));
                    return false;
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return false,
                Err(e) => {
                    self.fail(id, errno(e));
                    return true;
                }
            }
        }
    }

    /// Reads what `id` (a receive) can now read: data into pool buffers, EOF or an error.
    fn step_recv(&mut self, id: OpId) {
        for _ in 0..READS_PER_EVENT {
            let Some(s) = self.ops.get(id.index as usize) else {
                return;
            };
            let Op::Recv { fd } = &s.slot.op else {
                return;
            };
            let fd = fd.clone();
            let Some(bid) = self.pool.take() else {
                // No buffer free: the receive ends, as a multishot receive does on an empty
                // buffer ring; its owner re-arms it once buffers come back.
                self.fail(id, libc::ENOBUFS);
                return;
            };
            match rustix::net::recv(&*fd, self.pool.buf_mut(bid), RecvFlags::DONTWAIT) {
                Ok((0, _)) => {
                    self.pool.recycle(bid);
                    let eof = Event::Received {
                        result: 0,
                        buf: None,
                        more: false,
                    };
                    self.push(id, eof, true);
                    return;
                }
                Ok((n, _)) => {
                    let event = Event::Received {
                        result: n as i32,
                        buf: Some(bid),
                        more: true,
                    };
                    self.ready.push_back((id, event, false));
                }
                Err(e) => {
                    self.pool.recycle(bid);
                    match e {
                        Errno::INTR => continue,
                        Errno::AGAIN => return,
                        e => {
                            self.fail(id, errno(e));
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Runs the step of every operation on `fd` that `ready` concerns.
    fn on_ready(&mut self, fd: RawFd, ready: EventFlags) {
        let Some(reg) = self.fds.get(fd as usize) else {
            return;
        };
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend_from_slice(&reg.ops);
        let broken = ready.intersects(EventFlags::ERR | EventFlags::HUP);
        for &id in &ids {
            let Some(s) = self.ops.get_mut(id.index as usize) else {
                continue;
            };
            if s.done || !(broken || ready.intersects(s.slot.op.interest())) {
                continue;
            }
            match &mut s.slot.op {
                Op::Accept { fd } => match rustix::net::accept_with(&**fd, SocketFlags::CLOEXEC) {
                    Ok(conn) => self.push(
                        id,
                        Event::Accepted {
                            fd: Ok(conn),
                            more: false,
                        },
                        true,
                    ),
                    Err(Errno::AGAIN | Errno::INTR) => {}
                    Err(e) => self.fail(id, errno(e)),
                },
                Op::Recv { .. } => self.step_recv(id),
                Op::Send { .. } => {
                    self.step_send(id);
                }
                Op::EventfdRead { fd, buf } => {
                    let mut b = buf.take().unwrap_or_default();
                    match rustix::io::read(&**fd, &mut b[..]) {
                        Ok(n) => self.push(
                            id,
                            Event::EventfdRead {
                                result: n as i32,
                                buf: b,
                            },
                            true,
                        ),
                        Err(Errno::AGAIN | Errno::INTR) => *buf = Some(b),
                        Err(e) => {
                            *buf = Some(b);
                            self.fail(id, errno(e));
                        }
                    }
                }
                Op::Poll { events, .. } => {
                    let got = ready & (*events | EventFlags::ERR | EventFlags::HUP);
                    let polled = Event::Polled {
                        result: got.bits() as i32,
                        more: false,
                    };
                    self.push(id, polled, true);
                }
                Op::Timeout => {}
            }
        }
        self.scratch = ids;
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, ud))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = OpId::from_user_data(ud);
            if self.is_live(id) && !self.ops[id.index as usize].done {
                self.push(
                    id,
                    Event::TimedOut {
                        result: -libc::ETIME,
                    },
                    true,
                );
            }
        }
    }

    // ---- receive buffers -----------------------------------------------------------------

    /// The first `len` bytes of receive buffer `bid`, lent until [`Epoll::recycle`].
    pub(crate) fn recv_data(&self, bid: u16, len: usize) -> Option<&[u8]> {
        self.pool.get(bid, len)
    }

    /// Gives receive buffer `bid` back to the pool.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.pool.recycle(bid);
    }

    // ---- completions ---------------------------------------------------------------------

    /// One placeholder per queued outcome (in order): [`Epoll::complete`] takes the outcomes
    /// themselves, oldest first, so the caller's loop is the io_uring one.
    pub(crate) fn drain(&mut self, out: &mut Vec<Cqe>) {
        out.clear();
        out.extend((0..self.ready.len()).map(|_| Cqe {
            user_data: 0,
            result: 0,
            flags: 0,
        }));
    }

    /// The oldest queued outcome, for its owner: `None` if the owner forgot the operation.
    pub(crate) fn complete(&mut self, _c: Cqe) -> Option<Completion> {
        let (id, event, last) = self.ready.pop_front()?;
        let s = self
            .ops
            .get(id.index as usize)
            .filter(|s| s.slot.generation == id.generation)?;
        let (tag, state) = (s.slot.tag, s.slot.state);
        if last {
            self.ops.remove(id.index as usize);
        }
        if state == Lifecycle::Ignored {
            if let Event::Received { buf: Some(bid), .. } = event {
                self.pool.recycle(bid);
            }
            return None;
        }
        Some(Completion { tag, op: id, event })
    }

    // ---- entering the kernel ---------------------------------------------------------------

    /// Whether a polling core whose turn already made system calls of its own (direct reads
    /// of hot connections) should look for readiness with `epoll_wait(0)` this turn.
    ///
    /// Readiness can only be learnt from the kernel, but on a busy-poll core serving hot
    /// connections most zero-timeout waits find nothing: the hot sockets are read directly,
    /// and what epoll still watches (the listener, cold connections, the doorbell) is rare.
    /// So the waits back off linearly: after `k` empty waits in a row the next `min(k, 7)`
    /// turns skip it, and any readiness or timer found resets the backoff. A cold event then
    /// waits at most [`MAX_POLL_BACKOFF`] turns (each a few hundred ns of direct reads);
    /// the hot path loses a system call on most turns, which on a Unix socket ping-pong is a
    /// tenth of the round trip (docs/benchmarks.md, the epoll rows).
    pub(crate) fn should_poll(&mut self) -> bool {
        if self.skip > 0 && self.ready.is_empty() {
            self.skip -= 1;
            false
        } else {
            true
        }
    }

    /// Waits up to `timeout` (zero: just looks) for readiness, runs the ready operations'
    /// steps and fires due timers: one `epoll_wait`.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let queued = self.ready.len();
        // No timeout operation pending (a busy core's usual state): no clock reads.
        let timers = !self.timers.is_empty();
        if timers {
            self.fire_timers(Instant::now());
        }
        let timeout = match self.timers.peek() {
            _ if !self.ready.is_empty() => Duration::ZERO,
            Some(Reverse((at, _))) => timeout.min(at.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        let ts = rustix::event::Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let r = epoll::wait(
            &self.ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&ts),
        );
        for e in &events {
            self.on_ready(e.data.u64() as RawFd, e.flags);
        }
        let found = !events.is_empty();
        self.events = events;
        if timers || !self.timers.is_empty() {
            self.fire_timers(Instant::now());
        }
        if found || self.ready.len() > queued || !timeout.is_zero() {
            self.empty_polls = 0;
            self.skip = 0;
        } else {
            self.empty_polls = self.empty_polls.saturating_add(1);
            self.skip = self.empty_polls.min(MAX_POLL_BACKOFF - 1);
        }
        match r {
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `op`'s descriptor, borrowed.
fn op_fd(op: &Op) -> Option<std::os::fd::BorrowedFd<'_>> {
    use std::os::fd::AsFd;
    match op {
        Op::Accept { fd }
        | Op::Recv { fd }
        | Op::Send { fd, .. }
        | Op::EventfdRead { fd, .. }
        | Op::Poll { fd, .. } => Some(fd.as_fd()),
        Op::Timeout => None,
    }
}

#[cfg(test)]
mod tests;
