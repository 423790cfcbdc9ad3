//! The io_uring driver: the only code in the engine that touches `io_uring`.
//!
//! [`Uring`] owns one ring, its provided-buffer ring ([`buf_ring`]) and a slab of operation
//! states ([`lifecycle`]). Callers start typed operations ([`op`]: accept, multishot receive,
//! send and zero-copy send, eventfd read, poll, timeout) that take ownership of their
//! descriptors and buffers, name them with an [`OpId`], and get [`Completion`]s back carrying
//! the [`Token`] they gave (who asked) and a typed [`Event`]. There is no safe way to push an
//! arbitrary submission: every entry is built by an operation from resources the slab holds
//! until the final completion, so an owner that loses interest ([`Uring::forget`], or just
//! closing) cannot free memory under the kernel. Slots are recycled, so the hot path neither
//! allocates nor locks.
//!
//! The layers above see only operations and completions, which is what lets a readiness
//! (epoll) backend be added beside this one later.

pub(crate) mod buf_ring;
pub(crate) mod op;
pub(crate) mod setup;
mod wait;

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use io_uring::{IoUring, types};
use slab::Slab;

use self::buf_ring::BufRing;
use self::op::Op;
pub use self::setup::RingError;
use crate::driver::lifecycle::{Lifecycle, OpId, PROBE, Slot};
use crate::driver::token::Token;
use crate::driver::{Completion, Cqe, SetupError};

/// `IORING_ENTER_GETEVENTS` (linux/io_uring.h): run deferred completions in this enter.
const IORING_ENTER_GETEVENTS: u32 = 1;
/// Buffer group id of the receive buffer ring.
const BGID: u16 = 0;

/// One core's ring, receive buffers and operations.
pub(crate) struct Uring {
    ring: IoUring,
    bufs: BufRing,
    ops: Slab<Slot<Op>>,
    next_gen: u32,
    /// `io_uring_enter` calls made because the submission queue was full.
    full_submits: u64,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("ops", &self.ops.len())
            .field("bufs", &self.bufs)
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// A ring of `entries` submissions (see [`setup::build`]), proven usable by one NOP, with
    /// `recv_buffers` provided receive buffers of `recv_buffer_size` bytes.
    pub(crate) fn new(
        entries: u32,
        recv_buffers: u16,
        recv_buffer_size: usize,
    ) -> Result<Uring, SetupError> {
        let mut ring = setup::build(entries).map_err(SetupError::Ring)?;
        // Setup can succeed where submitting cannot (a seccomp filter on io_uring_enter):
        // one NOP through the ring now turns that into a setup error instead of a core that
        // dies on its first turn.
        setup::probe_enter(&mut ring).map_err(SetupError::Ring)?;
        let bufs = BufRing::new(&ring.submitter(), recv_buffers, recv_buffer_size, BGID)
            .map_err(SetupError::Io)?;
        Ok(Uring {
            ring,
            bufs,
            // Room for an accept, a receive and a send per connection of a busy core, so the
            // slab rarely grows (it never shrinks: slots are recycled).
            ops: Slab::with_capacity(entries as usize * 2),
            next_gen: 0,
            full_submits: 0,
        })
    }

    /// Operations in the kernel (including ignored ones).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// `io_uring_enter` calls made because the submission queue was full.
    pub(crate) fn full_submits(&self) -> u64 {
        self.full_submits
    }

    // ---- operations ----------------------------------------------------------------------

    fn start(&mut self, tag: Token, op: Op, state: Lifecycle) -> OpId {
        self.next_gen = self.next_gen.wrapping_add(1);
        let generation = self.next_gen;
        let index = self.ops.insert(Slot {
            generation,
            state,
            tag,
            op,
        });
        let id = OpId {
            index: index as u32,
            generation,
        };
        self.submit(id);
        id
    }

    /// Builds the submission of operation `id` from its slot and pushes it.
    fn submit(&mut self, id: OpId) {
        let bgid = self.bufs.bgid();
        let Some(slot) = self.ops.get_mut(id.index as usize) else {
            return;
        };
        let entry = slot.op.sqe(bgid).user_data(id.user_data());
        loop {
            // SAFETY: `entry` was built by one of our typed operations from the resources of
            // its slot: descriptors (`Rc<OwnedFd>`) and buffers (`Vec`, `Box`) that the slot
            // owns and that move or drop only when the slot is removed on the operation's
            // final completion (or are leaked when the driver drops first); receive buffers
            // belong to the registered buffer ring, unregistered only in `Drop`.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            // Queue full: hand what we have to the kernel and retry.
            let _ = self.ring.submit();
            self.full_submits += 1;
        }
    }

    /// Accepts one connection on `listener`.
    pub(crate) fn accept(&mut self, listener: &Rc<OwnedFd>, tag: Token) -> OpId {
        let op = Op::Accept(op::Accept::new(listener.clone()));
        self.start(tag, op, Lifecycle::Submitted)
    }

    /// Receives on `fd` into the buffer ring until cancelled, failed or at EOF.
    pub(crate) fn recv_multi(&mut self, fd: &Rc<OwnedFd>, tag: Token) -> OpId {
        let op = Op::RecvMulti(op::RecvMulti::new(fd.clone()));
        self.start(tag, op, Lifecycle::Submitted)
    }

    /// Writes `buf[off..]` (not empty) to `fd`, with `SendZc` if `zero_copy`; the buffer
    /// comes back in the final [`Event::Sent`].
    pub(crate) fn send(
        &mut self,
        fd: &Rc<OwnedFd>,
        buf: Vec<u8>,
        off: usize,
        zero_copy: bool,
        tag: Token,
    ) -> OpId {
        let op = Op::Send(op::Send::new(fd.clone(), buf, off, zero_copy));
        self.start(tag, op, Lifecycle::Submitted)
    }

    /// Reads the counter of the eventfd `fd` into `buf` (returned in [`Event::EventfdRead`]).
    pub(crate) fn eventfd_read(&mut self, fd: &Rc<OwnedFd>, buf: Box<[u8; 8]>, tag: Token) -> OpId {
        let op = Op::EventfdRead(op::EventfdRead::new(fd.clone(), buf));
        self.start(tag, op, Lifecycle::Submitted)
    }

    /// Waits (once) for one of `events` (`libc::POLLIN`, ...) on `fd`.
    #[cfg_attr(not(test), allow(dead_code))] // the shm doorbells and the epoll bridge use it
    pub(crate) fn poll(&mut self, fd: &Rc<OwnedFd>, events: u32, tag: Token) -> OpId {
        let op = Op::Poll(op::Poll::new(fd.clone(), events));
        self.start(tag, op, Lifecycle::Submitted)
    }

    /// Completes after `after` (with `-ETIME`). The core's timers run on its own wheel; the
    /// record link uses this for its write retries.
    pub(crate) fn timeout(&mut self, after: Duration, tag: Token) -> OpId {
        let op = Op::Timeout(op::Timeout::new(after));
        self.start(tag, op, Lifecycle::Submitted)
    }

    /// Asks the kernel to cancel `op` (a no-op if it already finished). Its final completion
    /// still arrives, and releases its resources.
    pub(crate) fn cancel(&mut self, op: OpId) {
        if !self.is_live(op) {
            return;
        }
        let cancel = Op::Cancel(op::Cancel::new(op.user_data()));
        let tag = self.ops[op.index as usize].tag;
        self.start(tag, cancel, Lifecycle::Ignored);
    }

    /// The owner lost interest in `op`: its completions are consumed here, and its resources
    /// dropped at the final one (a receive's buffers are recycled). Does not cancel it.
    #[cfg_attr(not(test), allow(dead_code))] // closes wait for their operations for now
    pub(crate) fn forget(&mut self, op: OpId) {
        if self.is_live(op) {
            self.ops[op.index as usize].state = Lifecycle::Ignored;
        }
    }

    fn is_live(&self, op: OpId) -> bool {
        self.ops
            .get(op.index as usize)
            .is_some_and(|s| s.generation == op.generation)
    }

    // ---- receive buffers -----------------------------------------------------------------

    /// The first `len` bytes of receive buffer `bid`, lent by a [`Event::Received`] until
    /// [`Uring::recycle`]. `None` for an id or length the kernel could not have produced.
    pub(crate) fn recv_data(&self, bid: u16, len: usize) -> Option<&[u8]> {
        self.bufs.get(bid, len)
    }

    /// Gives receive buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.bufs.recycle(bid);
    }

    // ---- completions ---------------------------------------------------------------------

    /// Moves every completion the ring holds into `out` (cleared first).
    pub(crate) fn drain(&mut self, out: &mut Vec<Cqe>) {
        out.clear();
        out.extend(self.ring.completion().map(|c| Cqe {
            user_data: c.user_data(),
            result: c.result(),
            flags: c.flags(),
        }));
    }

    /// Applies one completion to its operation: `Some` with what to tell the owner, `None`
    /// if there is nothing to tell (an ignored operation, a cancellation, the probe).
    pub(crate) fn complete(&mut self, c: Cqe) -> Option<Completion> {
        if c.user_data == PROBE {
            return None;
        }
        let id = OpId::from_user_data(c.user_data);
        let slot = self
            .ops
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)?;
        let state = slot.state;
        let tag = slot.tag;
        let step = slot.op.complete(state, c.result, c.flags);
        if state == Lifecycle::Ignored {
            if let Some(bid) = io_uring::cqueue::buffer_select(c.flags) {
                if matches!(slot.op, Op::RecvMulti(_)) {
                    self.bufs.recycle(bid);
                }
            }
        }
        if step.finished {
            self.ops.remove(id.index as usize);
        } else if step.resubmit {
            self.submit(id);
        }
        step.event.map(|event| Completion { tag, op: id, event })
    }

    // ---- entering the kernel ---------------------------------------------------------------

    /// Submissions queued and not yet handed to the kernel.
    pub(crate) fn queued(&mut self) -> u32 {
        self.ring.submission().len() as u32
    }

    /// Whether the kernel flagged completions to run (`IORING_SQ_TASKRUN`) or the completion
    /// queue overflowed: a polling core must enter even with nothing to submit.
    pub(crate) fn kernel_has_work(&mut self) -> bool {
        let sq = self.ring.submission();
        sq.taskrun() || sq.cq_overflow()
    }

    /// Submits what is queued and runs completions, without waiting (one `io_uring_enter`).
    pub(crate) fn submit_nowait(&mut self, to_submit: u32) -> io::Result<()> {
        // SAFETY: a plain io_uring_enter: submit what is queued and run completions without
        // waiting; no argument pointer is passed.
        unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
                IORING_ENTER_GETEVENTS,
                None,
            )
        }
        .map(|_| ())
    }

    /// Submits what is queued and waits up to `timeout` for one completion.
    pub(crate) fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        self.ring.submitter().submit_with_args(1, &args).map(|_| ())
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Operations that never completed may still be read or written by the kernel, which
        // tears the ring down later, in a worker: leak their memory rather than free it.
        for slot in self.ops.drain() {
            slot.op.leak_memory();
        }
        self.bufs.unregister(&self.ring);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::driver::Event;
    use crate::driver::token::Op as Kind;

    fn tag(key: usize) -> Token {
        Token::new(Kind::Recv, key, 1)
    }

    /// Runs the ring until `want` completions were reported or nothing is in flight.
    fn run(u: &mut Uring, want: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        let mut cqes = Vec::new();
        for _ in 0..1000 {
            match u.submit_and_wait(Duration::from_millis(5)) {
                Err(e) if e.raw_os_error() != Some(libc::ETIME) => panic!("{e}"),
                _ => {}
            }
            u.drain(&mut cqes);
            out.extend(cqes.iter().filter_map(|c| u.complete(*c)));
            if out.len() >= want || u.in_flight() == 0 {
                break;
            }
        }
        out
    }

    #[test]
    fn send_and_receive_through_the_ops() {
        let mut u = Uring::new(8, 8, 4096).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (Rc::new(OwnedFd::from(a)), Rc::new(OwnedFd::from(b)));
        let r = u.recv_multi(&b, tag(2));
        u.send(&a, b"hello".to_vec(), 1, false, tag(1));
        let got = run(&mut u, 2);
        let mut bytes = Vec::new();
        for c in got {
            match c.event {
                Event::Sent { wrote, done, .. } => {
                    assert_eq!(c.tag, tag(1));
                    assert_eq!(wrote, Some(4));
                    assert_eq!(done.as_deref(), Some(&b"hello"[..]));
                }
                Event::Received { result, buf, more } => {
                    assert_eq!((c.op, c.tag, more), (r, tag(2), true));
                    let bid = buf.unwrap();
                    bytes.extend_from_slice(u.recv_data(bid, result as usize).unwrap());
                    u.recycle(bid);
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(bytes, b"ello");
        // Cancelled: the final completion arrives and frees the slot.
        u.cancel(r);
        let got = run(&mut u, 1);
        assert!(matches!(got[0].event, Event::Received { more: false, .. }));
        assert_eq!(u.in_flight(), 0);
    }

    #[test]
    fn a_forgotten_op_keeps_its_resources_until_its_completion() {
        let mut u = Uring::new(8, 8, 4096).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let b = Rc::new(OwnedFd::from(b));
        let r = u.recv_multi(&b, tag(3));
        u.forget(r);
        drop(b); // the operation keeps the descriptor open
        assert_eq!(u.in_flight(), 1);
        (&a).write_all(b"x").unwrap();
        drop(a); // EOF ends the receive
        let got = run(&mut u, 1);
        assert!(got.is_empty(), "an ignored operation reports nothing");
        assert_eq!(u.in_flight(), 0);
    }

    #[test]
    fn poll_timeout_and_eventfd_read() {
        let mut u = Uring::new(8, 8, 4096).unwrap();
        let t = u.timeout(Duration::from_millis(1), tag(4));
        let got = run(&mut u, 1);
        assert_eq!(got[0].op, t);
        assert!(matches!(got[0].event, Event::TimedOut { result } if result == -libc::ETIME));
        let (a, b) = UnixStream::pair().unwrap();
        let b = Rc::new(OwnedFd::from(b));
        u.poll(&b, libc::POLLIN as u32, tag(5));
        (&a).write_all(b"x").unwrap();
        let got = run(&mut u, 1);
        assert!(
            matches!(got[0].event, Event::Polled { result, more: false } if result & libc::POLLIN as i32 != 0)
        );
        let inbox = crate::inbox::Inbox::new().unwrap();
        let efd = Rc::new(inbox.eventfd().try_clone().unwrap());
        u.eventfd_read(&efd, Box::new([0; 8]), tag(6));
        // The eventfd is non-blocking (EFD_NONBLOCK), yet the read waits in the kernel for
        // the counter (eventfd supports NOWAIT, so io_uring polls instead of returning
        // EAGAIN): the inbox and the record links' doorbells rely on it to park.
        let mut cqes = Vec::new();
        for _ in 0..3 {
            let _ = u.submit_and_wait(Duration::from_millis(2));
            u.drain(&mut cqes);
            assert!(
                cqes.iter().all(|c| u.complete(*c).is_none()),
                "the read completed with nothing written"
            );
        }
        let ring = std::fs::File::from(efd.try_clone().unwrap());
        (&ring).write_all(&1u64.to_ne_bytes()).unwrap();
        let got = run(&mut u, 1);
        match &got[0].event {
            Event::EventfdRead { result, buf } => {
                assert_eq!(*result, 8);
                assert_eq!(u64::from_ne_bytes(**buf), 1);
            }
            e => panic!("unexpected {e:?}"),
        }
    }
}
