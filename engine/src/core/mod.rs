//! A core: one thread's `io_uring`, its listeners, connections, timers and inbox.
//!
//! One loop turn ([`Core::run_once`]): reap completions (decode and dispatch frames straight
//! from the kernel-filled buffers; sync handlers write replies into the connection's batch) →
//! read hot connections directly (busy-poll cores, `hot.rs`) → drain the inbox → timers →
//! flush one batch per connection (one send per batch) → submit and, depending on the idle
//! policy, poll or park.

mod caller;
mod commands;
mod conns;
mod early;
#[cfg(test)]
mod early_write_tests;
mod events;
mod hot;
mod intercept;
mod listener;
mod ring_io;
#[cfg(test)]
mod spin_tests;
mod streams;
mod subjects;
mod timers;
mod wait;

pub(crate) use events::{check_pattern, check_topic, local_key};
pub use streams::CoreStream;

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::config::{CoreConfig, IdlePolicy};
use crate::conn::{ConnConfig, Connection, Env, Role};
use crate::driver::SetupError;
use crate::driver::token::{Op, Token};
use crate::driver::uring::RingError;
use crate::driver::{Cqe, Driver, Event};
use crate::executor::{Executor, Outcome};
use crate::inbox::{Command, ConnRef, Inbox};
use crate::service::Registry;
use crate::slot::{CallSlot, Completion};
use crate::stats::CoreStats;
use crate::timer::TimerWheel;
use crate::transport::{AnyLink, Link, Owner};
use crate::{Endpoint, Status, StatusCode};

/// Turns in a row that may end right after the reads because the awaited call completed.
const MAX_SHORT_TURNS: u32 = 8;
/// Output a connection may hold above `max_backlog_bytes` before it is closed: room for the
/// control frames (Pong, Error, GoAway, Cancel) that are never refused.
const BACKLOG_SLACK: usize = 1 << 20;
/// How often timers run.
const TIMER_TICK: Duration = Duration::from_millis(5);
/// Idle turns of a core's own loop that reuse the clock reading of the turn before instead of
/// reading it again. An idle turn does no work (no input, no handler, no command) and lasts
/// well under a microsecond to a few (its polls and system calls), while a clock read is a
/// sixth of an inproc busy-poll turn on a VM's clock source (`perf`, this host): reading it
/// every fourth idle turn makes a turn's `now` at most three idle turns old, a few µs,
/// against timers of millisecond resolution. A turn after work, after a park, and every
/// `Core::run_once` (the caller may have paused) read the clock.
const CLOCK_REUSES: u8 = 3;

/// A client connection on a core, as returned by [`Core::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(pub(crate) ConnRef);

/// A connection of the core: the link it travels on and its sans-IO state machine.
struct Entry {
    link: AnyLink,
    conn: Conn,
    generation: u32,
    /// Closing: no new operations; the entry goes when its link is quiescent.
    closing: bool,
    dirty: bool,
    /// A cross-thread connect waiting for the handshake.
    adopt: Option<Arc<Completion>>,
    /// Generation of this connection's live timer-wheel entry (older entries are stale).
    timer_gen: u32,
    /// When its live timer fires, if one is scheduled.
    scheduled: Option<Instant>,
    /// Hot (read directly, see `hot.rs`): when data last arrived.
    hot: Option<Instant>,
    /// Commands waiting for the end of the connection's 0-RTT phase (early.rs).
    parked: Option<Box<early::Parked>>,
}

/// A connection whose calls complete cross-thread slots.
pub(crate) type Conn = Connection<Arc<Completion>>;

/// The connection a completion is for, unless its slot was recycled since (a stale completion).
fn live(conns: &mut Slab<Entry>, t: Token) -> Option<&mut Entry> {
    conns
        .get_mut(t.key as usize)
        .filter(|en| en.generation == t.generation)
}

/// One core. Create it on the thread that will drive it (the ring is single-issuer).
pub struct Core {
    driver: Driver,
    conns: Slab<Entry>,
    next_gen: u32,
    listeners: listener::Listeners,
    registry: Arc<Registry>,
    inbox: Arc<Inbox>,
    /// The doorbell's eventfd (a duplicate the driver's read operations hold).
    inbox_fd: Rc<OwnedFd>,
    /// The doorbell read's buffer while no read is armed (the read owns it meanwhile).
    inbox_buf: Option<Box<[u8; 8]>>,
    cfg: CoreConfig,
    conn_cfg: Rc<ConnConfig>,
    /// The configuration of `quic://` connections (`ConnConfig::for_quic`), made on first use.
    quic_conn_cfg: Option<Rc<ConnConfig>>,
    /// The UDP counters of this core's QUIC links (added to [`CoreStats::driver`]).
    udp: Rc<crate::transport::udp::UdpCounters>,
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
    /// When the next coarse timer run is due (a comparison per turn, not a subtraction).
    next_tick: Instant,
    /// The clock as last read by a turn, and how many more idle turns of the same loop may
    /// use it instead of reading it again (see [`CLOCK_REUSES`]).
    clock: Instant,
    clock_reuses: u8,
    idle_since: Option<Instant>,
    /// The current turn must not park, whatever the idle policy ([`Core::poll_once`]).
    no_park: bool,
    /// Bytes of queued output at which a connection is written before the turn ends
    /// (`RuntimeConfig::early_write`, resolved against the idle policy once).
    early_write: Option<usize>,
    drain_until: Option<Instant>,
    stopped: bool,
    /// The core is being dropped: links close at once (no QUIC close linger).
    dropping: bool,
    /// Hot connections (busy-poll cores), read directly every turn.
    hot: Vec<usize>,
    /// Connections in their QUIC 0-RTT phase (entries with `parked`, early.rs): commands are
    /// looked at for parking only while there are some.
    early_conns: usize,
    /// The other half of `hot`'s double buffer (`poll_hot` swaps them).
    hot_spare: Vec<usize>,
    /// The other half of the direct-command buffer (`drain_local` swaps it with the
    /// thread's, so steady state allocates nothing).
    local: Vec<(usize, Command)>,
    /// Connections whose batch `flush` wrote directly this turn.
    sent: Vec<usize>,
    /// Turns in a row that ended early (see `turn`).
    short_turns: u32,
    /// Buffer of the direct reads (allocated when the first connection gets hot).
    scratch: Box<[u8]>,
    /// Peers' `$sys` listings, by connection (`Core::resolve`).
    sys: crate::sys::CoreCache,
    /// Around the calls this core makes (`Core::client_interceptor`).
    client_interceptors: crate::dispatch::ClientInterceptors,
    /// The subject index and fan-out state (core/events.rs).
    events: events::CoreEvents,
    /// The eventfd registered with the ring once the core is waited on from the caller's own
    /// loop (core/wait.rs); `None` until then.
    wait_fd: Option<OwnedFd>,
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

impl From<SetupError> for CoreError {
    fn from(e: SetupError) -> CoreError {
        match e {
            SetupError::Ring(e) => CoreError::Ring(e),
            SetupError::Io(e) => CoreError::Io(e),
            SetupError::Env(why) => CoreError::Config(crate::config::ConfigError {
                setting: crate::driver::DRIVER_ENV,
                value: std::env::var(crate::driver::DRIVER_ENV).unwrap_or_default(),
                why,
            }),
        }
    }
}

impl Core {
    /// A core serving no services (a pure client, or add services with
    /// [`crate::Engine`]).
    ///
    /// # Errors
    /// [`CoreError::Config`] for an unusable setting (named, with the rule);
    /// [`CoreError::Ring`] or [`CoreError::Io`] when the `io_uring` or the inbox's eventfd
    /// cannot be set up (e.g. io_uring disabled, or out of locked memory or descriptors).
    pub fn new(cfg: impl Into<CoreConfig>) -> Result<Core, CoreError> {
        let cfg = cfg.into();
        let mut r = Registry::default();
        r.set_features(cfg.protocol.server().features);
        Self::with_registry(cfg, Arc::new(r), Inbox::new()?)
    }

    /// A core serving `services`.
    ///
    /// # Errors
    /// [`crate::EngineError::Service`] for an invalid or duplicate service, otherwise the
    /// errors of [`Core::new`] as [`crate::EngineError::Core`].
    pub fn with_services(
        cfg: impl Into<CoreConfig>,
        services: impl IntoIterator<Item = crate::Service>,
    ) -> Result<Core, crate::EngineError> {
        let cfg = cfg.into();
        let mut r = Registry::default();
        r.set_features(cfg.protocol.server().features);
        for s in services {
            r.add(s)?;
        }
        Ok(Self::with_registry(
            cfg,
            Arc::new(r),
            Inbox::new().map_err(CoreError::Io)?,
        )?)
    }

    /// A core serving `services` with `interceptors` around every call, `before` hooks in
    /// the order given, `after` hooks in reverse (see [`crate::Interceptor`]).
    ///
    /// # Errors
    ///
    /// As [`Core::with_services`].
    pub fn with_dispatch(
        cfg: CoreConfig,
        services: impl IntoIterator<Item = crate::Service>,
        interceptors: impl IntoIterator<Item = Arc<dyn crate::Interceptor>>,
    ) -> Result<Core, crate::EngineError> {
        let mut r = Registry::default();
        r.set_features(cfg.protocol.server().features);
        for s in services {
            r.add(s)?;
        }
        for i in interceptors {
            r.interceptors.push(i);
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
        let rt = &cfg.runtime;
        let driver = Driver::new(
            rt.driver,
            rt.ring_entries,
            rt.recv_buffers,
            rt.recv_buffer_size,
        )?;
        let inbox_fd = Rc::new(inbox.eventfd().try_clone()?);
        inbox.set_max_frame(
            cfg.protocol
                .server()
                .limits
                .max_frame_size
                .max(cfg.protocol.client().limits.max_frame_size) as usize,
        );
        let conn_cfg = Rc::new(ConnConfig::new(&cfg.protocol));
        let early_write = cfg.runtime.early_write();
        let mut core = Core {
            driver,
            conns: Slab::new(),
            next_gen: 0,
            listeners: listener::Listeners::default(),
            registry,
            inbox: inbox.clone(),
            inbox_fd,
            inbox_buf: Some(Box::new([0; 8])),
            cfg,
            conn_cfg,
            quic_conn_cfg: None,
            udp: Rc::default(),
            stats: CoreStats::default(),
            cqes: Vec::with_capacity(256),
            executor: Executor::new(inbox.clone()),
            outcomes: Vec::new(),
            wheel: TimerWheel::new(Instant::now(), Duration::from_millis(1), 1024),
            fired: Vec::with_capacity(64),
            expired: Vec::with_capacity(64),
            dirty: Vec::new(),
            closing: Vec::new(),
            next_tick: Instant::now(),
            clock: Instant::now(),
            clock_reuses: 0,
            idle_since: None,
            no_park: false,
            early_write,
            drain_until: None,
            stopped: false,
            dropping: false,
            hot: Vec::new(),
            early_conns: 0,
            hot_spare: Vec::new(),
            local: Vec::new(),
            sent: Vec::new(),
            short_turns: 0,
            scratch: Box::default(),
            sys: crate::sys::CoreCache::default(),
            client_interceptors: crate::dispatch::ClientInterceptors::default(),
            events: events::CoreEvents::default(),
            wait_fd: None,
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
        s.driver.submits += self.driver.full_submits();
        self.udp.add_to(&mut s.driver);
        s.buffer_bytes = self.conn_cfg.buffers.used() as u64;
        (s.subscriptions, s.event_queue_bytes) = self.event_gauges();
        s
    }

    /// The I/O backend this core runs, and why if it fell back to epoll.
    pub fn driver(&self) -> crate::DriverInfo {
        self.driver.info()
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

    // ---- connections -------------------------------------------------------------------

    // ---- the loop ----------------------------------------------------------------------

    /// Runs one loop turn. Returns whether any work was done. Under
    /// [`crate::IdlePolicy::Adaptive`], a turn that finds nothing after the core has been idle
    /// for longer than the spin parks in the kernel until something arrives or for at most
    /// one timer tick (5 ms), so `loop { core.run_once()?; }` does not burn a CPU; a caller
    /// with a loop of its own uses [`Core::poll_once`], which never waits.
    ///
    /// # Errors
    /// The OS error of `io_uring_enter` when the ring fails at run time (e.g. a seccomp filter
    /// installed after setup); the core is then unusable and its calls fail
    /// [`crate::CallError::EngineStopped`].
    pub fn run_once(&mut self) -> io::Result<bool> {
        // The caller may have done anything since its last turn: read the clock.
        self.turn(None, false)
    }

    /// Runs one loop turn that never waits, whatever the idle policy: for a caller that
    /// waits in a loop of its own (on [`Core::wait_fd`] after [`Core::prepare_wait`], or on
    /// its own timers). Returns whether any work was done.
    ///
    /// # Errors
    /// As [`Core::run_once`].
    pub fn poll_once(&mut self) -> io::Result<bool> {
        self.no_park = true;
        let r = self.turn(None, false);
        self.no_park = false;
        r
    }

    /// One turn of an engine core's own loop, which turns without pause: idle turns may
    /// reuse the clock (see [`CLOCK_REUSES`]).
    pub(crate) fn run_looped(&mut self) -> io::Result<bool> {
        self.turn(None, true)
    }

    /// One loop turn; with `awaited`, the turn ends as soon as that slot is complete after the
    /// reads (a caller-driven call returns its reply without waiting for the rest of the turn,
    /// which the next turn does). `looped`: this turn follows the previous one of the same
    /// loop at once (so a clock read a few idle turns ago is still current).
    fn turn(&mut self, awaited: Option<&Completion>, looped: bool) -> io::Result<bool> {
        let _running = self.inbox.enter();
        self.turn_body(awaited, looped)
    }

    /// The time for this turn: read from the clock, or, on the next few turns of a loop after
    /// an idle turn, the last reading (at most [`CLOCK_REUSES`] idle turns old).
    fn turn_clock(&mut self, looped: bool) -> Instant {
        if looped && self.clock_reuses > 0 {
            self.clock_reuses -= 1;
        } else {
            self.clock = Instant::now();
            self.clock_reuses = CLOCK_REUSES;
        }
        self.clock
    }

    fn turn_body(&mut self, awaited: Option<&Completion>, looped: bool) -> io::Result<bool> {
        let now = self.turn_clock(looped);
        self.stats.driver.turns += 1;
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
            self.clock_reuses = 0;
            // The awaited completion is work: the adaptive spin starts again from here (left
            // set, the next call's first idle turn would find it long past and park).
            self.idle_since = None;
            return Ok(true);
        }
        self.short_turns = 0;
        work |= self.drain_inbox();
        work |= self.run_tasks(now);
        work |= self.drain_local(now);
        // Replies go out before timer work: the latency of this turn's calls comes first.
        work |= self.flush();
        self.fire_timers(now);
        if now >= self.next_tick {
            self.next_tick = now + TIMER_TICK;
            self.expire_tasks(now);
            self.retry_accepts(now);
        }
        work |= self.flush();
        self.finish_closes();
        if let Some(until) = self.drain_until {
            let idle = self.conns.iter().all(|(_, en)| {
                !en.conn.wants_write()
                    && !en.link.writing()
                    && en.conn.inflight.is_empty()
                    && en.conn.calls.len() == 0
                    && en.conn.stream_count() == 0
            });
            if (idle || now >= until) && !self.stopped {
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.begin_close(k, "the engine shut down");
                }
                self.stopped = self.conns.is_empty() && self.listeners.all_closed();
            }
        }
        if work {
            // Work takes time (handlers run): the next turn reads the clock.
            self.clock_reuses = 0;
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
        let end = Instant::now().checked_add(timeout);
        loop {
            if done(self) {
                return Ok(true);
            }
            if end.is_some_and(|end| Instant::now() >= end) {
                return Ok(false);
            }
            self.run_once()?;
        }
    }

    // ---- embedded client -------------------------------------------------------------------
}

impl Drop for Core {
    fn drop(&mut self) {
        // Commands sent from now on are answered at once; then fail whatever waits on us, and
        // make sure the kernel is done with our memory before it is freed: close the sockets
        // (ending their operations) and wait for completions.
        self.inbox.close("the core stopped".to_owned(), false);
        self.inbox.discard_local();
        let why = self
            .inbox
            .stopped()
            .map_or("the core stopped", |(r, _)| r)
            .to_owned();
        self.dropping = true;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.begin_close(k, &why);
            // One already waiting for its peer (a QUIC close linger) does not wait on.
            if let Some(en) = self.conns.get_mut(k) {
                en.link.abort_linger();
            }
        }
        // In-process subscriptions learn that no event will come any more.
        self.events
            .index
            .end_locals(&Status::unavailable(format!("the core stopped: {why}")));
        self.close_listeners();
        let end = Instant::now() + Duration::from_secs(2);
        while !(self.conns.is_empty() && self.listeners.all_closed()) && Instant::now() < end {
            // Wait up to 1 ms for completions, running deferred ones (GETEVENTS).
            let _ = self.driver.submit_and_wait(Duration::from_millis(1));
            let now = Instant::now();
            self.reap(now);
            self.finish_closes();
        }
        // Operations that never completed (the inbox's eventfd read always) stay in the
        // driver, which leaks their buffers when it drops rather than free memory the kernel
        // might touch; the ring itself is torn down by the kernel later.
    }
}

/// Services added and removed at run time, and `$sys` (engine/src/sys/).
impl Core {
    /// Serves `service` from now on (calls already dispatched are not affected); `$sys`
    /// lists it at once.
    ///
    /// # Errors
    /// [`crate::ServiceError::Duplicate`] if a service of the same `name@version` is served.
    pub fn add_service(&mut self, service: crate::Service) -> Result<(), crate::ServiceError> {
        Arc::make_mut(&mut self.registry).add(service)
    }

    /// Stops serving the service `key` (`name@version`): later calls to it get `NotFound`
    /// (naming the versions left); calls already dispatched to it finish normally (see
    /// docs/architecture.md, "Services at run time").
    ///
    /// # Errors
    /// [`crate::ServiceError::NotRegistered`], or [`crate::ServiceError::Reserved`] for `$sys`.
    pub fn remove_service(&mut self, key: &str) -> Result<(), crate::ServiceError> {
        Arc::make_mut(&mut self.registry).remove(key).map(drop)
    }

    /// Serves `registry` from now on (an engine's services changed).
    pub(crate) fn set_registry(&mut self, registry: Arc<Registry>) {
        self.registry = registry;
    }

    /// The inboxes of the engine's other cores (published events are forwarded to them).
    pub(crate) fn set_siblings(&mut self, siblings: Vec<Arc<Inbox>>) {
        self.events.siblings = siblings;
    }

    /// The cache of peers' `$sys` listings.
    pub(crate) fn sys_cache(&mut self) -> &mut crate::sys::CoreCache {
        &mut self.sys
    }

    /// The (key, generation) of every live connection.
    pub(crate) fn connection_keys(&self) -> Vec<(u32, u32)> {
        self.conns
            .iter()
            .map(|(k, en)| (k as u32, en.generation))
            .collect()
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    /// A loop's idle turns reuse a reading at most `CLOCK_REUSES` times; work, a park and
    /// every turn outside the loop (`run_once`) read the clock again.
    #[test]
    fn idle_turns_reuse_the_clock_a_bounded_number_of_times() {
        let mut core = Core::new(crate::RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll))
            .expect("core");
        let pause = || std::thread::sleep(Duration::from_millis(1));
        let first = core.turn_clock(true);
        for _ in 0..CLOCK_REUSES {
            pause();
            assert_eq!(
                core.turn_clock(true),
                first,
                "an idle turn of the loop reuses it"
            );
        }
        pause();
        let second = core.turn_clock(true);
        assert!(second > first, "read again after {CLOCK_REUSES} reuses");
        pause();
        assert!(
            core.turn_clock(false) > second,
            "a turn outside the loop reads it"
        );
        // A turn that worked (or parked) leaves no reuse for the next one.
        core.clock_reuses = 0;
        let third = core.clock;
        pause();
        assert!(core.turn_clock(true) > third);
    }
}
