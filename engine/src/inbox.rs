//! Work sent to a core from other threads: a lock-free queue plus an eventfd doorbell that the
//! core's ring watches. The doorbell is rung only when the core announced that it sleeps, so a
//! busy core costs producers no syscall.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::SegQueue;

use crate::slot::Completion;
use crate::stats::CoreStats;

/// A connection on a core: slab key and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnRef {
    pub key: u32,
    pub generation: u32,
}

pub(crate) enum Command {
    /// Take over a connection made on another thread as a client connection; complete
    /// `slot` with the `ConnRef` (8 bytes) once the handshake is done, or with the failure.
    Adopt {
        link: crate::transport::Connected,
        slot: Arc<Completion>,
    },
    /// Serve a new in-process connection (an `inproc://` listener's acceptor sends it).
    AcceptRecord(Box<crate::transport::inproc::RecordPipe>),
    /// Count errors that happened off the cores (an `shm://` client refused by `allow_uid`,
    /// on the listener's accept thread; a `quic://` listener's Retries and refusals, summed
    /// over up to [`crate::transport::COUNT_EVERY`]) in this core's stats: the
    /// label, and how many.
    CountError(&'static str, u64),
    /// Serve a new QUIC connection (a `quic://` listener's rendezvous thread sends it).
    AcceptQuic(Box<crate::transport::quic::QuicPipe>),
    /// The listener posted datagrams for this `quic://` connection (its client's address
    /// changed: `transport::quic_path`).
    QuicMail(ConnRef),
    /// Start a call on a client connection.
    Call {
        conn: ConnRef,
        service: Arc<[u8]>,
        method: Arc<[u8]>,
        payload: Bytes,
        deadline: Option<Duration>,
        idempotent: bool,
        /// Request metadata (`None`: none; boxed so calls without it stay small).
        metadata: Option<Box<netron_codec::hpack::HeaderList>>,
        slot: Arc<Completion>,
    },
    /// End the call whose outcome goes to `slot` with `code` (its future was dropped, or its
    /// blocking caller's deadline passed first).
    CancelSlot {
        conn: ConnRef,
        slot: Arc<Completion>,
        code: crate::StatusCode,
    },
    /// Close a client connection.
    Close { conn: ConnRef },
    /// A deferred reply's answer to call `id` on `conn` (`token` tells this call from a later
    /// one that reused the id).
    Answer {
        conn: ConnRef,
        id: u32,
        token: u32,
        result: Result<Bytes, crate::Status>,
        /// Response metadata (`None`: none).
        metadata: Option<Box<netron_codec::hpack::HeaderList>>,
    },
    /// Open a stream on a client connection; `app` is its application side.
    OpenStream {
        conn: ConnRef,
        service: Box<[u8]>,
        method: Box<[u8]>,
        metadata: Option<Box<netron_codec::hpack::HeaderList>>,
        deadline: Option<Duration>,
        first: Option<Bytes>,
        end: bool,
        app: Arc<crate::streams::Shared>,
    },
    /// Stream `id` on `conn` has work (messages queued, credit to give back).
    StreamWork { conn: ConnRef, id: u32 },
    /// GoAway to every connection, drain, then stop.
    Shutdown { drain: Duration },
    /// Send a copy of the core's statistics.
    Stats(std::sync::mpsc::Sender<CoreStats>),
    /// An event published on the engine: fan it out on this core, then pass it to the next
    /// core while `hops` > 0 (a chain through the engine's cores, one message per core).
    /// `served`: queue groups an earlier core of the chain gave it to (skipped here).
    Publish {
        topic: Bytes,
        payload: Bytes,
        hops: u32,
        served: Vec<Box<[u8]>>,
    },
    /// Publish an event to the peer of a client connection.
    PublishTo {
        conn: ConnRef,
        topic: Bytes,
        payload: Bytes,
    },
    /// Subscribe at the peer of a client connection.
    Subscribe {
        conn: ConnRef,
        pattern: Box<str>,
        opts: crate::events::SubscribeOptions,
        app: Arc<crate::events::SubShared>,
    },
    /// End subscription `id` held at the peer of `conn`.
    Unsubscribe { conn: ConnRef, id: u32 },
    /// Subscribe in-process at this core.
    SubscribeLocal {
        pattern: Box<str>,
        opts: crate::events::SubscribeOptions,
        app: Arc<crate::events::SubShared>,
        key: u64,
    },
    /// End in-process subscription `key`.
    UnsubscribeLocal { key: u64 },
    /// Serve this set of services from now on (added or removed at run time); say so on
    /// `done`.
    Services {
        registry: Arc<crate::service::Registry>,
        done: std::sync::mpsc::Sender<()>,
    },
}

thread_local! {
    /// The inbox of the core this thread is running right now (0: none).
    static CURRENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Commands the running core's own tasks sent to it, each tagged with that core's inbox
    /// address: handled in the same loop turn, with no cross-thread queue and no atomics. A
    /// core takes only its own, so one left by a turn that ended early waits for its own
    /// core's next turn and never reaches another core run on this thread (a caller-driven
    /// core driven beside, or inside a handler of, another).
    static LOCAL: std::cell::RefCell<Vec<(usize, Command)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// Whether `LOCAL` may hold commands: a turn with none (nearly every busy-poll turn)
    /// checks this flag alone, one load, instead of borrowing and scanning the queue.
    static LOCAL_PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as running a core until dropped.
pub(crate) struct RunningCore {
    previous: usize,
}

impl Drop for RunningCore {
    fn drop(&mut self) {
        CURRENT.set(self.previous);
    }
}

pub(crate) struct Inbox {
    queue: SegQueue<Command>,
    eventfd: OwnedFd,
    sleeping: AtomicBool,
    /// The core no longer takes commands: whoever finds one in the queue answers it.
    closed: AtomicBool,
    /// Why the core stopped (set once, before `closed`).
    reason: std::sync::OnceLock<(String, bool)>,
    /// The `$sys` listings of this core's peers, by connection (`Peer::resolve`).
    pub(crate) peer_sys: crate::sys::PeerCache,
    /// Bytes of events queued in this inbox (`Publish`, `PublishTo`) and not yet taken: a
    /// publisher faster than this core is refused above [`MAX_QUEUED_EVENT_BYTES`] instead
    /// of growing the queue without bound.
    event_bytes: std::sync::atomic::AtomicUsize,
    /// The largest frame any connection of this core may carry (the larger of its server
    /// and client offers' `max_frame_size`): an event that cannot fit it is refused when
    /// published, not dropped on the way.
    max_frame: std::sync::atomic::AtomicUsize,
}

/// The status of a publish refused because the core's inbox holds too many events.
pub(crate) fn events_backlog() -> crate::Status {
    crate::Status::new(
        crate::StatusCode::ResourceExhausted,
        "64 MiB of published events wait for this core (MAX_QUEUED_EVENT_BYTES): the \
         publisher is faster than the engine; retry later",
    )
}

/// Most bytes of published events one core's inbox holds (64 MiB): above it a publish through
/// the inbox is refused (`ResourceExhausted`) or, for an event passed on from another core,
/// dropped and counted (`forward_dropped`).
pub(crate) const MAX_QUEUED_EVENT_BYTES: usize = 64 << 20;

/// What a queued event command costs beyond its topic and payload (the command itself in the
/// queue, and the two `Bytes` handles' shared blocks), counted by [`Inbox::reserve_event`]:
/// without it a burst of empty events counted 0 bytes each against the 64 MiB bound (fresh
/// user R11's finding 2).
const EVENT_COMMAND_BYTES: usize = std::mem::size_of::<Command>() + 64;

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Inbox {
    pub(crate) fn new() -> std::io::Result<Arc<Inbox>> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Inbox {
            queue: SegQueue::new(),
            eventfd,
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reason: std::sync::OnceLock::new(),
            peer_sys: crate::sys::PeerCache::default(),
            event_bytes: std::sync::atomic::AtomicUsize::new(0),
            max_frame: std::sync::atomic::AtomicUsize::new(usize::MAX),
        }))
    }

    pub(crate) fn eventfd(&self) -> &OwnedFd {
        &self.eventfd
    }

    /// Queues `cmd` and wakes the core if it sleeps. If the core has stopped, the command
    /// is answered at once (calls and connects fail with `Unavailable` saying why).
    pub(crate) fn push(&self, cmd: Command) {
        self.queue.push(cmd);
        // SeqCst pairs with `close`: either the closer's drain sees this command, or this
        // check sees `closed` and drains it here.
        if self.closed.load(Ordering::SeqCst) {
            self.refuse_queued();
            return;
        }
        self.nudge();
    }

    /// Counts `n` bytes of an event about to be queued here; `false` (nothing counted) when
    /// that would pass [`MAX_QUEUED_EVENT_BYTES`].
    /// Sets the largest frame this core's connections may carry (its configuration).
    pub(crate) fn set_max_frame(&self, bytes: usize) {
        self.max_frame.store(bytes, Ordering::Relaxed);
    }

    /// `ResourceExhausted` when an event of `topic` and `payload` bytes can never fit a frame
    /// of this core's connections (the frame header, the topic's header block at its longest,
    /// and the payload must fit `max_frame_size`).
    pub(crate) fn check_event_size(
        &self,
        topic: &str,
        payload: usize,
    ) -> Result<(), crate::Status> {
        let need = netron_codec::HEADER_LEN
            + netron_codec::hpack::HeaderEncoder::max_encoded_len(&[
                netron_codec::hpack::Header::topic(topic.as_bytes()),
            ])
            + payload;
        let max = self.max_frame.load(Ordering::Relaxed);
        if need > max {
            return Err(crate::Status::new(
                crate::StatusCode::ResourceExhausted,
                format!(
                    "event of {payload} payload bytes on subject {topic:?} needs a {need}-byte frame; max_frame_size is {max} bytes (ProtocolConfig limits): it can never be delivered"
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn reserve_event(&self, n: usize) -> bool {
        let n = n + EVENT_COMMAND_BYTES;
        let prev = self.event_bytes.fetch_add(n, Ordering::AcqRel);
        if prev.saturating_add(n) > MAX_QUEUED_EVENT_BYTES {
            self.event_bytes.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// The core took an event of `n` bytes counted by [`Inbox::reserve_event`].
    pub(crate) fn release_event(&self, n: usize) {
        self.event_bytes
            .fetch_sub(n + EVENT_COMMAND_BYTES, Ordering::AcqRel);
    }

    /// The core stops taking commands: every queued and later command is answered at once
    /// with `why`. `fatal` marks an abnormal stop (reported by `Engine::health`). The first
    /// reason given wins.
    pub(crate) fn close(&self, why: String, fatal: bool) {
        let _ = self.reason.set((why, fatal));
        self.closed.store(true, Ordering::SeqCst);
        self.refuse_queued();
    }

    /// Why the core stopped, if it did, and whether that was a failure.
    pub(crate) fn stopped(&self) -> Option<(&str, bool)> {
        if !self.closed.load(Ordering::SeqCst) {
            return None;
        }
        self.reason.get().map(|(r, f)| (r.as_str(), *f))
    }

    fn refuse_queued(&self) {
        let why = self
            .reason
            .get()
            .map_or("the core stopped", |(r, _)| r.as_str());
        while let Some(cmd) = self.queue.pop() {
            match cmd {
                Command::Call { slot, .. } | Command::Adopt { slot, .. } => {
                    slot.complete(Err(crate::Status::unavailable(format!(
                        "the engine core is not running: {why}"
                    ))
                    .with_origin(crate::status::Origin::EngineStopped)));
                }
                Command::OpenStream { app, .. } => {
                    let st = crate::Status::unavailable(format!(
                        "the engine core is not running: {why}"
                    ))
                    .with_origin(crate::status::Origin::EngineStopped);
                    crate::conn::fail_app(&mut crate::streams::AppHandle(app), &st);
                }
                Command::Subscribe { app, .. } | Command::SubscribeLocal { app, .. } => {
                    app.end(Err(crate::Status::unavailable(format!(
                        "the engine core is not running: {why}"
                    ))
                    .with_origin(crate::status::Origin::EngineStopped)));
                }
                // The dropped rings are the in-process client's refusal.
                Command::AcceptRecord(_)
                | Command::CountError(..)
                | Command::AcceptQuic(_)
                | Command::QuicMail(_)
                | Command::StreamWork { .. }
                | Command::CancelSlot { .. }
                | Command::Close { .. }
                | Command::Answer { .. }
                | Command::Shutdown { .. }
                | Command::Stats(_)
                | Command::Services { .. }
                | Command::Publish { .. }
                | Command::PublishTo { .. }
                | Command::Unsubscribe { .. }
                | Command::UnsubscribeLocal { .. } => {}
            }
        }
    }

    /// Whether the calling thread is this inbox's core, inside its loop turn.
    pub(crate) fn is_current(self: &Arc<Self>) -> bool {
        CURRENT.get() == Arc::as_ptr(self) as usize
    }

    /// Marks the calling thread as running this inbox's core.
    pub(crate) fn enter(self: &Arc<Self>) -> RunningCore {
        RunningCore {
            previous: CURRENT.replace(Arc::as_ptr(self) as usize),
        }
    }

    /// Sends `cmd` to the core: directly (same loop turn, no atomics) when called from the
    /// core's own thread, e.g. by one of its async handlers; through the queue otherwise.
    pub(crate) fn send(self: &Arc<Self>, cmd: Command) {
        if self.is_current() {
            let me = Arc::as_ptr(self) as usize;
            LOCAL.with_borrow_mut(|q| q.push((me, cmd)));
            LOCAL_PENDING.set(true);
        } else {
            self.push(cmd);
        }
    }

    /// Takes the commands this inbox's core's tasks sent directly (`into` is empty), leaving
    /// other cores' where they are.
    pub(crate) fn take_local(self: &Arc<Self>, into: &mut Vec<(usize, Command)>) {
        if !Self::has_local() {
            return;
        }
        let me = Arc::as_ptr(self) as usize;
        LOCAL.with_borrow_mut(|q| {
            if q.iter().all(|(owner, _)| *owner == me) {
                std::mem::swap(q, into);
            } else {
                let mut i = 0;
                while i < q.len() {
                    if q[i].0 == me {
                        into.push(q.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            LOCAL_PENDING.set(!q.is_empty());
        });
    }

    /// Whether this thread's direct-command queue may hold commands (of any core run on it):
    /// a single thread-local load, checked first by every turn.
    #[inline]
    pub(crate) fn has_local() -> bool {
        LOCAL_PENDING.get()
    }

    /// Drops the commands this inbox's core's tasks sent directly and that it will never
    /// take (the core is dropped), so a later core at the same address cannot take them.
    pub(crate) fn discard_local(self: &Arc<Self>) {
        let mut mine = Vec::new();
        self.take_local(&mut mine);
    }

    /// Wakes the core if it sleeps, without queueing a command (an async task was woken).
    pub(crate) fn nudge(&self) {
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    pub(crate) fn pop(&self) -> Option<Command> {
        self.queue.pop()
    }

    /// Core: announces it is about to sleep. Returns `false` (and stays awake) if work
    /// arrived meanwhile.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if !self.queue.is_empty() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Core: awake again.
    pub(crate) fn woke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}
