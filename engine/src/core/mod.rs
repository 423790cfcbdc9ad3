//! A core: one thread's `io_uring`, its listeners, connections, timers and inbox.
//!
//! One loop turn ([`Core::run_once`]): reap completions (decode and dispatch frames straight
//! from the kernel-filled buffers; sync handlers write replies into the connection's batch) →
//! read hot connections directly (busy-poll cores, `hot.rs`) → drain the inbox → timers →
//! flush one batch per connection (one send per batch) → submit and, depending on the idle
//! policy, poll or park.

mod hot;
mod listener;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;

use crate::config::{CoreConfig, IdlePolicy};
use crate::conn::{ConnConfig, Connection, Env, Role};
use crate::driver::buf_ring::BufRing;
use crate::driver::ring::{self, RingError};
use crate::driver::sock;
use crate::driver::token::{Op, Token};
use crate::executor::{Executor, Outcome};
use crate::inbox::{Command, ConnRef, Inbox};
use crate::service::Registry;
use crate::slot::{CallSlot, Completion};
use crate::stats::CoreStats;
use crate::timer::TimerWheel;
use crate::{Endpoint, Status, StatusCode};

/// Buffer group id of the receive buffer ring.
const BGID: u16 = 0;
/// `IORING_ENTER_GETEVENTS` (linux/io_uring.h): run deferred completions in this enter.
const IORING_ENTER_GETEVENTS: u32 = 1;
/// Turns in a row that may end right after the reads because the awaited call completed.
const MAX_SHORT_TURNS: u32 = 8;
/// Output a connection may hold above `max_backlog_bytes` before it is closed: room for the
/// control frames (Pong, Error, GoAway, Cancel) that are never refused.
const BACKLOG_SLACK: usize = 1 << 20;
/// How often timers run.
const TIMER_TICK: Duration = Duration::from_millis(5);

/// A client connection on a core, as returned by [`Core::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(pub(crate) ConnRef);

struct InFlight {
    buf: Vec<u8>,
    off: usize,
    frames: u32,
    /// Sent with `SendZc`: the kernel reads `buf` until its notification completion.
    zero_copy: bool,
    /// Zero-copy notifications still to come; `buf` may not be reused before they arrive.
    notifs: u32,
}

struct Entry {
    fd: OwnedFd,
    conn: Connection,
    generation: u32,
    recv_armed: bool,
    /// Nothing more is read: the peer sent EOF, or the connection is closing.
    read_done: bool,
    send: Option<InFlight>,
    /// Closing: no new operations; the entry goes when its operations completed.
    closing: bool,
    shut: bool,
    dirty: bool,
    /// A cross-thread connect waiting for the handshake.
    adopt: Option<Arc<Completion>>,
    /// Generation of this connection's live timer-wheel entry (older entries are stale).
    timer_gen: u32,
    /// When its live timer fires, if one is scheduled.
    scheduled: Option<Instant>,
    /// Hot (read directly, see `hot.rs`): when data last arrived.
    hot: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Cqe {
    user_data: u64,
    result: i32,
    flags: u32,
}

/// The connection a completion is for, unless its slot was recycled since (a stale completion).
fn live(conns: &mut Slab<Entry>, t: Token) -> Option<&mut Entry> {
    conns
        .get_mut(t.key as usize)
        .filter(|en| en.generation == t.generation)
}

/// One core. Create it on the thread that will drive it (the ring is single-issuer).
pub struct Core {
    ring: IoUring,
    bufs: BufRing,
    conns: Slab<Entry>,
    next_gen: u32,
    listeners: listener::Listeners,
    registry: Arc<Registry>,
    inbox: Arc<Inbox>,
    inbox_buf: Box<[u8; 8]>,
    inbox_armed: bool,
    cfg: CoreConfig,
    conn_cfg: ConnConfig,
    stats: CoreStats,
    cqes: Vec<Cqe>,
    executor: Executor,
    outcomes: Vec<Outcome>,
    wheel: TimerWheel,
    fired: Vec<(usize, u32)>,
    /// Ids of calls whose deadline passed in a timer run (reused buffer).
    expired: Vec<u32>,
    dirty: Vec<usize>,
    closing: Vec<usize>,
    last_timer: Instant,
    idle_since: Option<Instant>,
    drain_until: Option<Instant>,
    stopped: bool,
    /// Hot connections (busy-poll cores), read directly every turn.
    hot: Vec<usize>,
    /// The other half of `hot`'s double buffer (`poll_hot` swaps them).
    hot_spare: Vec<usize>,
    /// Connections whose batch `flush` wrote directly this turn.
    sent: Vec<usize>,
    /// Turns in a row that ended early (see `turn`).
    short_turns: u32,
    /// Buffer of the direct reads (allocated when the first connection gets hot).
    scratch: Box<[u8]>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("connections", &self.conns.len())
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

/// A core could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// `io_uring` is unavailable; the message says why.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Another setup step failed.
    #[error("core setup failed: {0}")]
    Io(#[from] io::Error),
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Core {
    /// A core serving no services (a pure client, or add services with
    /// [`crate::Engine`]).
    pub fn new(cfg: CoreConfig) -> Result<Core, CoreError> {
        Self::with_registry(cfg, Arc::new(Registry::default()), Inbox::new()?)
    }

    /// A core serving `services`.
    pub fn with_services(
        cfg: CoreConfig,
        services: impl IntoIterator<Item = crate::Service>,
    ) -> Result<Core, crate::EngineError> {
        let mut r = Registry::default();
        for s in services {
            r.add(s)?;
        }
        Ok(Self::with_registry(
            cfg,
            Arc::new(r),
            Inbox::new().map_err(CoreError::Io)?,
        )?)
    }

    pub(crate) fn with_registry(
        cfg: CoreConfig,
        registry: Arc<Registry>,
        inbox: Arc<Inbox>,
    ) -> Result<Core, CoreError> {
        cfg.validate()?;
        let mut ring = ring::build(cfg.ring_entries)?;
        // Setup can succeed where submitting cannot (a seccomp filter on io_uring_enter):
        // one NOP through the ring now turns that into a build error instead of a core that
        // dies on its first turn.
        ring::probe_enter(&mut ring)?;
        let bufs = BufRing::new(
            &ring.submitter(),
            cfg.recv_buffers,
            cfg.recv_buffer_size,
            BGID,
        )?;
        let conn_cfg = ConnConfig {
            server: cfg.server.clone(),
            client: cfg.client.clone(),
            keepalive: cfg.keepalive,
            dead_after: cfg.dead_after,
            stall_timeout: cfg.stall_timeout,
            close_linger: cfg.close_linger,
            max_backlog_bytes: cfg.max_backlog_bytes,
            idle_frames: cfg.idle_frame_budget,
            buffers: std::rc::Rc::new(crate::conn::BufferBudget::new(cfg.max_buffer_bytes)),
        };
        let mut core = Core {
            ring,
            bufs,
            conns: Slab::new(),
            next_gen: 0,
            listeners: listener::Listeners::default(),
            registry,
            inbox: inbox.clone(),
            inbox_buf: Box::new([0; 8]),
            inbox_armed: false,
            cfg,
            conn_cfg,
            stats: CoreStats::default(),
            cqes: Vec::with_capacity(256),
            executor: Executor::new(inbox.clone()),
            outcomes: Vec::new(),
            wheel: TimerWheel::new(Instant::now(), Duration::from_millis(1), 1024),
            fired: Vec::with_capacity(64),
            expired: Vec::with_capacity(64),
            dirty: Vec::new(),
            closing: Vec::new(),
            last_timer: Instant::now(),
            idle_since: None,
            drain_until: None,
            stopped: false,
            hot: Vec::new(),
            hot_spare: Vec::new(),
            sent: Vec::new(),
            short_turns: 0,
            scratch: Box::default(),
        };
        core.arm_inbox();
        Ok(core)
    }

    pub(crate) fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// A copy of this core's statistics (counters, and gauges as of now).
    pub fn stats(&self) -> CoreStats {
        let mut s = self.stats.clone();
        s.buffer_bytes = self.conn_cfg.buffers.used() as u64;
        s
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether a shutdown finished draining.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    // ---- submissions -------------------------------------------------------------------

    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: every entry built by this core points only at memory that outlives the
        // operation: receive buffers belong to the registered buffer ring (unregistered only in
        // Drop), send buffers are owned by the connection's `InFlight` until the send's
        // completion, and the inbox buffer is a Box owned by the core. Descriptors stay open
        // until their operations complete (see `finish_close`).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            // Queue full: hand what we have to the kernel and retry.
            let _ = self.ring.submit();
            self.stats.submits += 1;
        }
    }

    fn arm_inbox(&mut self) {
        if self.inbox_armed {
            return;
        }
        let e = opcode::Read::new(
            types::Fd(self.inbox.eventfd().as_raw_fd()),
            self.inbox_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(Token::new(Op::Inbox, 0, 0).encode());
        self.push(e);
        self.inbox_armed = true;
    }

    fn arm_recv(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.recv_armed || en.closing {
            return;
        }
        en.recv_armed = true;
        let e = opcode::RecvMulti::new(types::Fd(en.fd.as_raw_fd()), self.bufs.bgid())
            .build()
            .user_data(Token::new(Op::Recv, key, en.generation).encode());
        self.push(e);
    }

    fn submit_send(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        let Some(f) = &en.send else { return };
        let rest = &f.buf[f.off..];
        let fd = types::Fd(en.fd.as_raw_fd());
        let token = Token::new(Op::Send, key, en.generation).encode();
        let e = if f.zero_copy {
            opcode::SendZc::new(fd, rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(token)
        } else {
            opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(token)
        };
        self.push(e);
    }

    // ---- connections -------------------------------------------------------------------

    fn add_conn(&mut self, fd: OwnedFd, role: Role, now: Instant) -> Option<usize> {
        if self.conns.len() >= self.cfg.max_connections || self.drain_until.is_some() {
            self.stats.refused += 1;
            return None;
        }
        self.next_gen = self.next_gen.wrapping_add(1) & 0x00ff_ffff;
        let conn = Connection::new(role, &self.conn_cfg, now);
        let key = self.conns.insert(Entry {
            fd,
            conn,
            generation: self.next_gen,
            recv_armed: false,
            read_done: false,
            send: None,
            closing: false,
            shut: false,
            dirty: false,
            adopt: None,
            timer_gen: 0,
            scheduled: None,
            hot: None,
        });
        self.arm_recv(key);
        self.mark_dirty(key);
        self.reschedule(key);
        Some(key)
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(en) = self.conns.get_mut(key) {
            if !en.dirty {
                en.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts closing `key`: no new operations; shuts the socket down so pending ones finish.
    /// Calls still in flight fail with `why` (unless the connection already knows a reason).
    fn begin_close(&mut self, key: usize, why: &str) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.closing {
            return;
        }
        en.closing = true;
        en.conn.on_closed(why);
        let was_hot = en.hot.take().is_some();
        self.executor.drop_conn(key as u32);
        if let Some(slot) = en.adopt.take() {
            let why = en
                .conn
                .close_reason
                .clone()
                .unwrap_or_else(|| format!("connection closed during the handshake: {why}"));
            slot.complete(Err(Status::unavailable(why)));
        }
        if en.recv_armed || en.send.is_some() {
            en.shut = true;
            sock::shutdown(&en.fd);
        }
        self.closing.push(key);
        if was_hot {
            self.hot.retain(|&k| k != key);
        }
    }

    fn finish_closes(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let key = self.closing[i];
            let done = self
                .conns
                .get(key)
                .is_none_or(|en| !en.recv_armed && en.send.is_none());
            if done {
                self.closing.swap_remove(i);
                if self.conns.try_remove(key).is_some() {
                    self.stats.closed += 1;
                }
            } else {
                i += 1;
            }
        }
    }

    // ---- the loop ----------------------------------------------------------------------

    /// Runs one loop turn. Returns whether any work was done.
    pub fn run_once(&mut self) -> io::Result<bool> {
        self.turn(None)
    }

    /// One loop turn; with `awaited`, the turn ends as soon as that slot is complete after the
    /// reads (a caller-driven call returns its reply without waiting for the rest of the turn,
    /// which the next turn does).
    fn turn(&mut self, awaited: Option<&Completion>) -> io::Result<bool> {
        let _running = self.inbox.enter();
        let now = Instant::now();
        self.stats.turns += 1;
        let mut work = self.reap(now);
        if self.poll_hot(now) {
            // Replies to what just arrived go out before the rest of the turn.
            self.flush();
            work = true;
        }
        if awaited.is_some_and(Completion::is_done) && self.short_turns < MAX_SHORT_TURNS {
            // Bounded, so a caller whose calls all complete in their first turn still gets
            // timers, the inbox and closes run every few calls.
            self.short_turns += 1;
            return Ok(true);
        }
        self.short_turns = 0;
        work |= self.drain_inbox(now);
        work |= self.run_tasks(now);
        work |= self.drain_local(now);
        // Replies go out before timer work: the latency of this turn's calls comes first.
        work |= self.flush();
        self.fire_timers(now);
        if now.duration_since(self.last_timer) >= TIMER_TICK {
            self.last_timer = now;
            self.expire_tasks(now);
            self.retry_accepts(now);
        }
        work |= self.flush();
        self.finish_closes();
        if let Some(until) = self.drain_until {
            let idle = self.conns.iter().all(|(_, en)| {
                !en.conn.wants_write()
                    && en.send.is_none()
                    && en.conn.inflight.is_empty()
                    && en.conn.calls.len() == 0
            });
            if (idle || now >= until) && !self.stopped {
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.begin_close(k, "the engine shut down");
                }
                self.stopped = self.conns.is_empty() && self.listeners.all_closed();
            }
        }
        self.enter(work)?;
        Ok(work)
    }

    /// Runs turns until `done()` or `timeout`.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Core) -> bool,
    ) -> io::Result<bool> {
        let end = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            self.run_once()?;
        }
    }

    fn enter(&mut self, work: bool) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if self
            .cfg
            .fail_enter_after_turns
            .is_some_and(|n| self.stats.turns > n)
        {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let to_submit = self.ring.submission().len() as u32;
        let park = match self.cfg.idle {
            IdlePolicy::BusyPoll => false,
            IdlePolicy::Adaptive { spin } => {
                if work {
                    self.idle_since = None;
                    false
                } else {
                    let since = *self.idle_since.get_or_insert_with(Instant::now);
                    since.elapsed() >= spin
                }
            }
        };
        if !park && to_submit == 0 {
            // Polling with nothing to submit: enter only if the kernel flagged completions to
            // run (IORING_SQ_TASKRUN) or the completion queue overflowed. Completions posted
            // directly are already visible in the ring. This turns an idle poll from a system
            // call into a memory load.
            let sq = self.ring.submission();
            if !sq.taskrun() && !sq.cq_overflow() {
                if self.hot.is_empty() {
                    // A pure memory poll: ease off the sibling hyperthread and the bus. (With
                    // hot connections the turn already made its system calls.)
                    std::hint::spin_loop();
                }
                return Ok(());
            }
        }
        self.stats.submits += 1;
        // Announce sleep first, then look at both queues: a producer pushes before it checks
        // the flag, so either we see its work or it sees us asleep and rings the doorbell.
        let r = if park
            && self.inbox.prepare_sleep()
            && (!self.executor.has_ready() || {
                self.inbox.woke();
                false
            }) {
            let ts = types::Timespec::new().nsec(TIMER_TICK.as_nanos() as u32);
            let args = types::SubmitArgs::new().timespec(&ts);
            let r = self.ring.submitter().submit_with_args(1, &args);
            self.inbox.woke();
            r.map(|_| ())
        } else {
            // SAFETY: a plain io_uring_enter: submit what is queued and run completions
            // without waiting; no argument pointer is passed.
            unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    to_submit,
                    0,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            }
            .map(|_| ())
        };
        match r {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn reap(&mut self, now: Instant) -> bool {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion().map(|c| Cqe {
            user_data: c.user_data(),
            result: c.result(),
            flags: c.flags(),
        }));
        let work = !cqes.is_empty();
        for c in &cqes {
            self.on_cqe(*c, now);
        }
        self.cqes = cqes;
        work
    }

    fn on_cqe(&mut self, c: Cqe, now: Instant) {
        let Some(t) = Token::decode(c.user_data) else {
            return;
        };
        match t.op {
            Op::Inbox => {
                self.inbox_armed = false;
                self.arm_inbox();
            }
            Op::Accept => self.on_accept(t.key as usize, c, now),
            Op::Recv => self.on_recv(t, c, now),
            Op::Send => self.on_send(t, c),
            Op::Cancel => {}
        }
    }

    fn on_recv(&mut self, t: Token, c: Cqe, now: Instant) {
        let bid = cqueue::buffer_select(c.flags);
        let key = t.key as usize;
        let Some(en) = live(&mut self.conns, t) else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        if !cqueue::more(c.flags) {
            en.recv_armed = false;
        }
        if c.result > 0 {
            let Some(b) = bid else {
                // The kernel always names the buffer of a successful provided-buffer receive;
                // if it ever does not, the bytes are lost: close rather than guess.
                self.stats.count_error("recv_without_buffer");
                self.begin_close(key, "the kernel reported a receive without a buffer");
                return;
            };
            if !en.closing {
                if let Some(data) = self.bufs.get(b, c.result as usize) {
                    let mut env = Env {
                        registry: &self.registry,
                        now,
                        stats: &mut self.stats,
                    };
                    let _ = en.conn.on_recv(data, &mut env);
                }
            }
            self.bufs.recycle(b);
            self.after_event(key);
            self.maybe_promote(key, now);
        } else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            match -c.result {
                0 => {
                    // Orderly EOF from the peer: finish and answer what is in flight first.
                    self.on_eof(key, now);
                }
                libc::ENOBUFS => {
                    // All receive buffers are lent out this turn; re-arm after they return.
                    self.stats.count_error("recv_no_buffers");
                }
                // Cancelled because the connection got hot (or is closing).
                libc::ECANCELED => {}
                e => {
                    self.stats.count_error("recv_failed");
                    let why = format!("receive failed: {}", io::Error::from_raw_os_error(e));
                    self.begin_close(key, &why);
                }
            }
        }
        if self
            .conns
            .get(key)
            .is_some_and(|en| !en.recv_armed && !en.closing && en.hot.is_none() && !en.read_done)
        {
            self.arm_recv(key);
        }
    }

    fn on_send(&mut self, t: Token, c: Cqe) {
        let key = t.key as usize;
        let Some(en) = live(&mut self.conns, t) else {
            return;
        };
        let Some(f) = en.send.as_mut() else { return };
        if f.zero_copy && cqueue::notif(c.flags) {
            // The kernel no longer reads the buffer for one earlier zero-copy send.
            f.notifs = f.notifs.saturating_sub(1);
        } else {
            if f.zero_copy && cqueue::more(c.flags) {
                f.notifs += 1;
            }
            if c.result < 0 {
                if !en.closing {
                    self.stats.count_error("send_failed");
                }
                // Keep the buffer until outstanding notifications arrive (begin_close waits).
                f.off = f.buf.len();
                let why = format!("send failed: {}", io::Error::from_raw_os_error(-c.result));
                self.begin_close(key, &why);
                self.maybe_finish_send(key);
                return;
            }
            f.off += c.result as usize;
            self.stats.bytes_out += c.result as u64;
            if f.off < f.buf.len() && !en.closing {
                // Short write: the peer's window is full. Send the rest; if the peer takes
                // nothing for the stall timeout the connection closes.
                if c.result > 0 || en.conn.write_blocked_since.is_none() {
                    en.conn.write_blocked_since = Some(Instant::now());
                }
                self.submit_send(key);
                self.reschedule(key);
                return;
            }
        }
        self.maybe_finish_send(key);
    }

    /// Completes the in-flight send once everything is written and the kernel released the
    /// buffer (zero-copy notifications), then schedules the next batch.
    fn maybe_finish_send(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        let Some(f) = en.send.as_ref() else { return };
        if f.off < f.buf.len() || f.notifs > 0 {
            return;
        }
        let f = en.send.take().expect("checked above");
        en.conn.write_blocked_since = None;
        if !en.closing {
            self.stats.writes += 1;
            self.stats.frames_out += f.frames as u64;
            if f.zero_copy {
                self.stats.zero_copy_writes += 1;
            }
        }
        en.conn.recycle(f.buf);
        self.after_event(key);
    }

    /// After a connection changed: start async work it queued, schedule a flush, and close
    /// it once it is closing (or drained after the peer's EOF/GoAway) and its output is out.
    fn after_event(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if !en.conn.spawns.is_empty() || !en.conn.cancels.is_empty() {
            let conn = ConnRef {
                key: key as u32,
                generation: en.generation,
            };
            for sp in en.conn.spawns.drain(..) {
                self.executor.spawn(conn, sp.id, sp.future, sp.deadline);
            }
            let cancels = std::mem::take(&mut en.conn.cancels);
            for &id in &cancels {
                self.executor.cancel(conn.key, id);
                en.conn
                    .abandon_async(id, StatusCode::Cancelled, "cancelled by the caller");
            }
        }
        if en.adopt.is_some() && (en.conn.is_open() || en.conn.is_closing()) {
            let slot = en.adopt.take().expect("checked");
            if en.conn.is_open() {
                let r = ConnRef {
                    key: key as u32,
                    generation: en.generation,
                };
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&r.key.to_le_bytes());
                b[4..].copy_from_slice(&r.generation.to_le_bytes());
                slot.complete(Ok(&b));
                if slot.was_abandoned() {
                    // The connecting thread gave up (timeout) and may never see this handle.
                    self.begin_close(key, "the connecting caller gave up");
                    return;
                }
            } else {
                let why = en
                    .conn
                    .close_reason
                    .clone()
                    .unwrap_or_else(|| "handshake failed".to_owned());
                slot.complete(Err(Status::unavailable(why)));
            }
        }
        if !en.closing && (en.conn.is_closing() || en.conn.drained()) {
            // Nothing more is read from a connection that is closing: its input after an
            // error is not looked at, and the closing bound runs from now.
            if !en.conn.is_closing() {
                en.conn.close_with(crate::conn::ConnError {
                    counter: "drained",
                    status: StatusCode::Unavailable,
                    message: "the peer ended the connection".to_owned(),
                });
            }
            en.conn.closing_at(Instant::now());
            if !en.read_done {
                en.read_done = true;
                sock::shutdown_read(&en.fd);
            }
            if en.hot.take().is_some() {
                self.hot.retain(|&k| k != key);
            }
        }
        if en.conn.wants_write() {
            self.mark_dirty(key);
        } else if en.conn.is_closing() && en.send.is_none() {
            self.begin_close(key, "closed");
            return;
        }
        self.reschedule(key);
    }

    /// The peer sent EOF: nothing more to read; answer what is in flight, then close.
    fn on_eof(&mut self, key: usize, now: Instant) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        en.read_done = true;
        en.conn.on_peer_eof(now);
        if en.hot.take().is_some() {
            self.hot.retain(|&k| k != key);
        }
        self.after_event(key);
    }

    /// Hands one batch per connection to the kernel (one send each).
    fn flush(&mut self) -> bool {
        if self.dirty.is_empty() {
            // Called several times a turn; most find nothing to do.
            return false;
        }
        let mut work = false;
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(en) = self.conns.get_mut(key) else {
                continue;
            };
            en.dirty = false;
            if en.closing {
                continue;
            }
            // New messages are refused above `max_backlog_bytes` (that message only, see
            // `Connection::check_outgoing`); only small control frames can pass it. A peer
            // that takes no bytes is closed by the write-stall timer; this hard cap is the
            // last line should control frames ever pile up.
            let backlog = en.conn.backlog_bytes();
            if backlog > self.cfg.max_backlog_bytes.saturating_add(BACKLOG_SLACK) {
                self.stats.count_error("slow_consumer");
                let why = format!(
                    "{backlog} bytes of output waiting for a peer that does not read, above \
                     CoreConfig::max_backlog_bytes ({}) and its control-frame allowance",
                    self.cfg.max_backlog_bytes
                );
                self.begin_close(key, &why);
                continue;
            }
            if en.send.is_some() {
                // Output waits behind a send the peer has not taken yet: from now on the
                // peer has the stall timeout to take bytes.
                if en.conn.write_blocked_since.is_none() {
                    en.conn.write_blocked_since = Some(Instant::now());
                    self.reschedule(key);
                }
                continue;
            }
            if let Some((buf, frames)) = en.conn.take_batch() {
                work = true;
                let zero_copy = self.cfg.send_zc_threshold.is_some_and(|t| buf.len() >= t);
                let mut off = 0;
                if en.hot.is_some() && !zero_copy {
                    // A hot connection is written the way it is read: directly, without a
                    // submission and a completion to reap; only what the socket does not take
                    // now goes through the ring.
                    self.stats.direct_sends += 1;
                    match sock::send_now(&en.fd, &buf) {
                        Ok(n) => {
                            self.stats.bytes_out += n as u64;
                            off = n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            self.stats.count_error("send_failed");
                            en.conn.recycle(buf);
                            self.begin_close(key, &format!("send failed: {e}"));
                            continue;
                        }
                    }
                }
                let whole = off == buf.len();
                en.send = Some(InFlight {
                    buf,
                    off,
                    frames,
                    zero_copy,
                    notifs: 0,
                });
                if whole {
                    // Finished after the loop, as a send completion would be (finishing
                    // schedules the next batch, which must not land in the list taken here).
                    self.sent.push(key);
                } else {
                    self.submit_send(key);
                }
            } else if en.conn.is_closing() {
                self.begin_close(key, "closed");
            }
        }
        self.dirty = dirty;
        let mut sent = std::mem::take(&mut self.sent);
        for key in sent.drain(..) {
            self.maybe_finish_send(key);
        }
        self.sent = sent;
        work
    }

    /// Drops async handlers past their deadline and answers DeadlineExceeded.
    fn expire_tasks(&mut self, now: Instant) {
        if self.executor.len() > 0 {
            for (conn, call) in self.executor.expire(now) {
                self.stats.deadline_exceeded += 1;
                let key = conn.key as usize;
                if let Some(en) = self
                    .conns
                    .get_mut(key)
                    .filter(|en| en.generation == conn.generation)
                {
                    en.conn.abandon_async(
                        call,
                        StatusCode::DeadlineExceeded,
                        "the deadline passed before the handler finished",
                    );
                    self.mark_dirty(key);
                }
            }
        }
    }

    /// (Re)schedules `key`'s timer if it now needs one earlier than the one scheduled.
    fn reschedule(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.closing {
            return;
        }
        let Some(next) = en.conn.next_timer() else {
            return;
        };
        if en.scheduled.is_some_and(|s| s <= next) {
            return; // the earlier timer fires first and reschedules
        }
        en.timer_gen = en.timer_gen.wrapping_add(1);
        en.scheduled = Some(next);
        self.wheel.schedule(next, key, en.timer_gen);
    }

    /// Runs the connection timers that are due: call deadlines, stalls (handshake, frame,
    /// blocked output), keepalive and dead peers, and the linger bound of closing connections.
    fn fire_timers(&mut self, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel.advance(now, &mut fired);
        let mut expired = std::mem::take(&mut self.expired);
        for &(key, timer_gen) in &fired {
            let Some(en) = self
                .conns
                .get_mut(key)
                .filter(|en| en.timer_gen == timer_gen && !en.closing)
            else {
                continue; // stale entry, or the connection is gone
            };
            en.scheduled = None;
            let mut env = Env {
                registry: &self.registry,
                now,
                stats: &mut self.stats,
            };
            let before = en.conn.wants_write();
            if let Err(e) = en.conn.on_timer(&mut env, &mut expired) {
                if matches!(e.counter, "close_linger" | "write_stalled") {
                    // The peer takes no bytes: close now, whatever is still queued.
                    if e.counter == "close_linger" {
                        self.stats.count_error(e.counter);
                    }
                    self.begin_close(key, &e.message);
                } else {
                    self.after_event(key);
                }
                continue;
            }
            if !before && en.conn.wants_write() {
                self.mark_dirty(key);
            }
            self.reschedule(key);
        }
        self.expired = expired;
        self.fired = fired;
    }

    /// Polls woken async handlers and answers the calls that finished.
    fn run_tasks(&mut self, now: Instant) -> bool {
        if !self.executor.has_ready() {
            return false;
        }
        let mut outcomes = std::mem::take(&mut self.outcomes);
        let work = self.executor.run(&mut outcomes);
        for Outcome::Done(conn, call, result) in outcomes.drain(..) {
            let key = conn.key as usize;
            if let Some(en) = self
                .conns
                .get_mut(key)
                .filter(|en| en.generation == conn.generation && !en.closing)
            {
                let mut env = Env {
                    registry: &self.registry,
                    now,
                    stats: &mut self.stats,
                };
                en.conn.complete_async(call, result, &mut env);
                self.after_event(key);
            }
        }
        self.outcomes = outcomes;
        work
    }

    /// Commands this core's own tasks sent directly (e.g. a handler calling another service on a
    /// connection of this core): handled in this turn, so the request goes out in this flush.
    fn drain_local(&mut self, now: Instant) -> bool {
        let mut work = false;
        loop {
            let mut local = Vec::new();
            Inbox::take_local(&mut local);
            if local.is_empty() {
                return work;
            }
            work = true;
            for cmd in local {
                self.on_command(cmd, now);
            }
            // Completions may have woken tasks that send more.
            self.run_tasks(now);
        }
    }

    fn drain_inbox(&mut self, now: Instant) -> bool {
        let mut work = false;
        while let Some(cmd) = self.inbox.pop() {
            work = true;
            self.on_command(cmd, now);
        }
        work
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Adopt { fd, slot } => match self.add_conn(fd, Role::Client, now) {
                Some(key) => self.conns[key].adopt = Some(slot),
                None => slot.complete(Err(Status::new(
                    StatusCode::ResourceExhausted,
                    "core is at its connection limit",
                ))),
            },
            Command::Call {
                conn,
                service,
                method,
                payload,
                deadline,
                idempotent,
                slot,
            } => {
                let spec = crate::conn::CallSpec {
                    service: &service,
                    method: &method,
                    payload: &payload,
                    deadline,
                    idempotent,
                };
                self.start_call(conn, &spec, slot, now);
            }
            Command::CancelSlot { conn, slot, code } => {
                let key = conn.key as usize;
                if let Some(en) = self
                    .conns
                    .get_mut(key)
                    .filter(|en| en.generation == conn.generation)
                {
                    if en.conn.cancel_slot(&slot, code) && code == StatusCode::DeadlineExceeded {
                        self.stats.deadline_exceeded += 1;
                    }
                    self.mark_dirty(key);
                }
            }
            Command::Close { conn } => {
                if self
                    .conns
                    .get(conn.key as usize)
                    .is_some_and(|en| en.generation == conn.generation)
                {
                    self.begin_close(conn.key as usize, "the channel was closed");
                }
            }
            Command::Shutdown { drain } => self.shutdown(drain),
            Command::Stats(tx) => {
                let _ = tx.send(self.stats());
            }
        }
    }

    fn start_call(
        &mut self,
        conn: ConnRef,
        spec: &crate::conn::CallSpec<'_>,
        slot: Arc<Completion>,
        now: Instant,
    ) -> Option<u32> {
        let key = conn.key as usize;
        match self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing)
        {
            Some(en) => match en.conn.start_call(spec, slot.clone(), now) {
                Ok(id) => {
                    self.mark_dirty(key);
                    if spec.deadline.is_some() {
                        self.reschedule(key);
                    }
                    Some(id)
                }
                Err(s) => {
                    slot.complete(Err(s));
                    None
                }
            },
            None => {
                slot.complete(Err(Status::unavailable("connection is closed")));
                None
            }
        }
    }

    /// Graceful shutdown: stop accepting, send GoAway on every connection, let in-flight work
    /// finish for up to `drain`, then close everything.
    pub fn shutdown(&mut self, drain: Duration) {
        if self.drain_until.is_some() {
            return;
        }
        self.drain_until = Some(Instant::now() + drain);
        self.close_listeners();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            if let Some(en) = self.conns.get_mut(k) {
                en.conn.go_away("the engine is shutting down");
            }
            self.mark_dirty(k);
        }
    }

    // ---- embedded client -------------------------------------------------------------------

    /// Connects to `endpoint` as a client and completes the handshake, driving this core from
    /// the calling thread.
    pub fn connect(&mut self, endpoint: &Endpoint, timeout: Duration) -> Result<ConnId, Status> {
        let fd = sock::connect(endpoint, timeout)
            .map_err(|e| Status::unavailable(format!("connect to {endpoint}: {e}")))?;
        let key = self
            .add_conn(fd, Role::Client, Instant::now())
            .ok_or_else(|| {
                Status::new(
                    StatusCode::ResourceExhausted,
                    "core is at its connection limit",
                )
            })?;
        let generation = self.conns[key].generation;
        let done = |c: &Core| {
            c.conns
                .get(key)
                .is_none_or(|en| en.generation != generation || en.conn.is_open() || en.closing)
        };
        self.run_until(timeout, done)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        match self.conns.get(key).filter(|en| en.generation == generation) {
            Some(en) if en.conn.is_open() => Ok(ConnId(ConnRef {
                key: key as u32,
                generation,
            })),
            Some(_) => {
                self.begin_close(key, "handshake failed or timed out");
                Err(Status::unavailable(format!(
                    "handshake with {endpoint} failed or timed out"
                )))
            }
            None => Err(Status::unavailable(format!(
                "{endpoint} closed the connection during the handshake"
            ))),
        }
    }

    /// Starts a unary call on `conn` and returns its id; the outcome arrives in `slot` while
    /// this core runs (check [`CallSlot::is_done`], read it with [`CallSlot::reply`]).
    ///
    /// If `slot` still waits for an earlier call, that call is cancelled first (its reply
    /// could never be read). Returns `None` if the call could not start; the slot then holds
    /// the failure (e.g. `ResourceExhausted` for a payload above the negotiated frame size,
    /// `Unavailable` for a closed connection).
    pub fn start(
        &mut self,
        conn: ConnId,
        service: &[u8],
        method: &[u8],
        payload: &[u8],
        deadline: Option<Duration>,
        slot: &mut CallSlot,
    ) -> Option<u32> {
        if slot.inner.is_pending() {
            if let Some((c, id)) = slot.last.take() {
                self.cancel(ConnId(c), id);
            }
        }
        Completion::rearm(&mut slot.inner);
        let spec = crate::conn::CallSpec {
            service,
            method,
            payload,
            deadline,
            idempotent: false,
        };
        let id = self.start_call(conn.0, &spec, slot.inner.clone(), Instant::now());
        slot.last = id.map(|id| (conn.0, id));
        id
    }

    /// Cancels call `id` on `conn`: the slot is completed with `Cancelled` and a Cancel frame
    /// tells the server to stop.
    pub fn cancel(&mut self, conn: ConnId, id: u32) {
        let key = conn.0.key as usize;
        if let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.0.generation)
        {
            en.conn
                .cancel_call(id, StatusCode::Cancelled, "cancelled by the caller");
            self.mark_dirty(key);
        }
    }

    /// A unary call driven by the calling thread: starts it, runs this core until the reply,
    /// and lends the reply from `slot` (the borrow keeps `slot` from starting another call
    /// while the reply is read). Allocates nothing in steady state.
    ///
    /// `deadline` is honoured by this loop itself: the call fails with `DeadlineExceeded` (and
    /// a Cancel goes to the server) once it passes, whatever the connection does.
    ///
    /// # Errors
    /// The call's failure: the server's status, `DeadlineExceeded`, `ResourceExhausted` for a
    /// request above the negotiated limits (refused before anything is sent; the connection
    /// and its other calls are untouched), `Unavailable` if the connection or the ring failed.
    pub fn call<'s>(
        &mut self,
        conn: ConnId,
        service: &[u8],
        method: &[u8],
        payload: &[u8],
        deadline: Option<Duration>,
        slot: &'s mut CallSlot,
    ) -> Result<&'s [u8], Status> {
        let until = deadline.and_then(|d| Instant::now().checked_add(d));
        let id = self.start(conn, service, method, payload, deadline, slot);
        // Send now rather than after the next turn's reads: a hot connection writes directly,
        // others queue their send for the next enter.
        self.flush();
        while !slot.inner.is_done() {
            if let Err(e) = self.turn(Some(&slot.inner)) {
                if let Some(id) = id {
                    self.expire_call(conn, id, StatusCode::Unavailable, "the core's ring failed");
                }
                return Err(Status::unavailable(format!(
                    "the core's io_uring failed: {e}"
                )));
            }
            if let (Some(until), Some(id)) = (until, id) {
                if !slot.inner.is_done() && Instant::now() >= until {
                    self.expire_call(
                        conn,
                        id,
                        StatusCode::DeadlineExceeded,
                        "the deadline passed before a reply arrived",
                    );
                }
            }
        }
        slot.last = None;
        let s: &'s CallSlot = slot;
        s.inner
            .result()
            .unwrap_or_else(|| Err(Status::internal("call slot not completed")))
    }

    /// Ends call `id` locally with `code` (a Cancel goes to the peer).
    fn expire_call(&mut self, conn: ConnId, id: u32, code: StatusCode, why: &'static str) {
        let key = conn.0.key as usize;
        if let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.0.generation)
        {
            en.conn.cancel_call(id, code, why);
            self.mark_dirty(key);
            self.flush();
        }
    }

    /// Closes a client connection.
    pub fn close(&mut self, conn: ConnId) {
        if self
            .conns
            .get(conn.0.key as usize)
            .is_some_and(|en| en.generation == conn.0.generation)
        {
            self.begin_close(
                conn.0.key as usize,
                "the connection was closed by this side",
            );
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // Commands sent from now on are answered at once; then fail whatever waits on us, and
        // make sure the kernel is done with our memory before it is freed: close the sockets
        // (ending their operations) and wait for completions.
        self.inbox.close("the core stopped".to_owned(), false);
        let why = self
            .inbox
            .stopped()
            .map_or("the core stopped", |(r, _)| r)
            .to_owned();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.begin_close(k, &why);
        }
        self.close_listeners();
        let end = Instant::now() + Duration::from_secs(2);
        while !(self.conns.is_empty() && self.listeners.all_closed()) && Instant::now() < end {
            // Wait up to 1 ms for completions, running deferred ones (GETEVENTS).
            let ts = types::Timespec::new().nsec(1_000_000);
            let _ = self
                .ring
                .submitter()
                .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
            let now = Instant::now();
            self.reap(now);
            self.finish_closes();
        }
        // Operations that never completed may still reference their send buffers: leak those
        // rather than free memory the kernel might touch.
        for en in self.conns.drain() {
            if let Some(f) = en.send {
                std::mem::forget(f.buf);
            }
        }
        // The inbox's eventfd read stays armed until the ring itself is torn down, which the
        // kernel finishes later: leak its 8-byte buffer rather than free it under the kernel.
        if self.inbox_armed {
            std::mem::forget(std::mem::replace(&mut self.inbox_buf, Box::new([0; 8])));
        }
        self.bufs.unregister(&self.ring);
    }
}
