//! The core's local executor for async handlers.
//!
//! Futures run only on their core's thread (they need not be `Send`). Their wakers are
//! `Send + Sync`: waking queues the task on a lock-free queue and rings the core's doorbell if
//! the core sleeps, so a future may be completed from any thread. A task whose call is
//! cancelled, whose deadline passes, or whose connection closes is dropped, which cancels it.

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_queue::{ArrayQueue, SegQueue};
use rustc_hash::FxHashMap;
use slab::Slab;

use crate::Status;
use crate::inbox::{ConnRef, Inbox};
use crate::service::HandlerFuture;

struct Task {
    /// `None`: a deferred call, answered through the inbox (never polled).
    future: Option<HandlerFuture>,
    /// A deferred call's token (tells it from a later call that reuses the id).
    token: u32,
    conn: ConnRef,
    call: u32,
    deadline: Option<Instant>,
    generation: u32,
    waker: Waker,
}

/// Tasks woken and not yet polled (task key, generation), pushed from any thread.
///
/// A bounded ring first ([`READY_RING`] entries, allocated once with the executor), an
/// unbounded queue only when the ring is full: a `SegQueue` alone allocates a block every 31
/// pushes, which made a stream writer woken once per WindowUpdate allocate in steady state.
struct ReadyQueue {
    ring: ArrayQueue<(usize, u32)>,
    overflow: SegQueue<(usize, u32)>,
}

/// Wake-ups the ready ring holds before spilling into the overflow queue.
const READY_RING: usize = 1024;

impl ReadyQueue {
    fn new() -> ReadyQueue {
        ReadyQueue {
            ring: ArrayQueue::new(READY_RING),
            overflow: SegQueue::new(),
        }
    }
    fn push(&self, v: (usize, u32)) {
        if let Err(v) = self.ring.push(v) {
            self.overflow.push(v);
        }
    }
    fn pop(&self) -> Option<(usize, u32)> {
        self.ring.pop().or_else(|| self.overflow.pop())
    }
    fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.overflow.is_empty()
    }
    fn len(&self) -> usize {
        self.ring.len() + self.overflow.len()
    }
}

struct TaskWaker {
    key: usize,
    generation: u32,
    ready: Arc<ReadyQueue>,
    inbox: Arc<Inbox>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.push((self.key, self.generation));
        self.inbox.nudge();
    }
}

/// A finished or abandoned call, for the core to answer.
pub(crate) enum Outcome {
    /// The future resolved.
    Done(ConnRef, u32, Result<Bytes, Status>),
}

/// What became of a deferred call when its answer arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// It waited for the answer: deliver it.
    Live,
    /// Its deadline passed before the answer came (not yet noticed): answer DeadlineExceeded.
    Expired,
    /// It ended already (deadline, cancel, connection closed): drop the answer.
    Gone,
}

pub(crate) struct Executor {
    tasks: Slab<Task>,
    ready: Arc<ReadyQueue>,
    by_call: FxHashMap<(u32, u32), usize>,
    next_gen: u32,
    inbox: Arc<Inbox>,
}

impl Executor {
    pub(crate) fn new(inbox: Arc<Inbox>) -> Executor {
        Executor {
            tasks: Slab::new(),
            ready: Arc::new(ReadyQueue::new()),
            by_call: FxHashMap::default(),
            next_gen: 0,
            inbox,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether a woken task waits to be polled.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Starts a task for call `call` on `conn`; it is first polled on the next `run`.
    pub(crate) fn spawn(
        &mut self,
        conn: ConnRef,
        call: u32,
        future: HandlerFuture,
        deadline: Option<Instant>,
    ) {
        self.next_gen = self.next_gen.wrapping_add(1);
        let entry = self.tasks.vacant_entry();
        let key = entry.key();
        let waker = Waker::from(Arc::new(TaskWaker {
            key,
            generation: self.next_gen,
            ready: self.ready.clone(),
            inbox: self.inbox.clone(),
        }));
        entry.insert(Task {
            future: Some(future),
            token: 0,
            conn,
            call,
            deadline,
            generation: self.next_gen,
            waker,
        });
        self.by_call.insert((conn.key, call), key);
        self.ready.push((key, self.next_gen));
    }

    /// Tracks deferred call `call` on `conn` (its deadline, cancel and connection close are
    /// handled like a task's; it is never polled: the answer comes through the inbox).
    pub(crate) fn spawn_deferred(
        &mut self,
        conn: ConnRef,
        call: u32,
        token: u32,
        deadline: Option<Instant>,
    ) {
        let waker = Waker::noop().clone();
        let key = self.tasks.insert(Task {
            future: None,
            token,
            conn,
            call,
            deadline,
            generation: 0,
            waker,
        });
        self.by_call.insert((conn.key, call), key);
    }

    /// A deferred call was answered at `now`: whether it still waits for that answer (it is
    /// then no longer tracked), and if so whether its deadline passed meanwhile.
    pub(crate) fn answer_deferred(
        &mut self,
        conn: ConnRef,
        call: u32,
        token: u32,
        now: Instant,
    ) -> Answered {
        let Some(&key) = self.by_call.get(&(conn.key, call)) else {
            return Answered::Gone;
        };
        let live = self.tasks.get(key).is_some_and(|t| {
            t.future.is_none() && t.token == token && t.conn.generation == conn.generation
        });
        if !live {
            return Answered::Gone;
        }
        let t = self.tasks.remove(key);
        self.by_call.remove(&(conn.key, call));
        if t.deadline.is_some_and(|d| now >= d) {
            Answered::Expired
        } else {
            Answered::Live
        }
    }

    /// Polls the tasks that were woken (at most as many as were queued when it started, so a
    /// task that wakes itself cannot starve the loop). Returns the finished ones.
    pub(crate) fn run(&mut self, out: &mut Vec<Outcome>) -> bool {
        let n = self.ready.len();
        let mut work = false;
        for _ in 0..n {
            let Some((key, generation)) = self.ready.pop() else {
                break;
            };
            let Some(task) = self
                .tasks
                .get_mut(key)
                .filter(|t| t.generation == generation && t.future.is_some())
            else {
                continue;
            };
            let Some(future) = task.future.as_mut() else {
                continue;
            };
            work = true;
            // Work whose deadline passed (while queued, or while it ran) is dropped and
            // answered DeadlineExceeded, never answered late with a normal reply.
            let expired = || task.deadline.is_some_and(|d| Instant::now() >= d);
            let polled = if expired() {
                Poll::Ready(Err(Status::deadline_exceeded(
                    "the deadline passed before the handler finished",
                )))
            } else {
                let waker = task.waker.clone();
                let mut cx = Context::from_waker(&waker);
                // A panicking handler future fails its call, not the core.
                let _in_task = InTask::enter();
                let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    future.as_mut().poll(&mut cx)
                }))
                .unwrap_or_else(|_| Poll::Ready(Err(Status::internal("the handler panicked"))));
                match p {
                    Poll::Ready(Ok(_)) if expired() => Poll::Ready(Err(Status::deadline_exceeded(
                        "the deadline passed before the handler finished",
                    ))),
                    p => p,
                }
            };
            if let Poll::Ready(result) = polled {
                let t = self.tasks.remove(key);
                self.by_call.remove(&(t.conn.key, t.call));
                out.push(Outcome::Done(t.conn, t.call, result));
            }
        }
        work
    }

    /// Drops the task of `call` on connection slot `conn_key` (a Cancel arrived).
    pub(crate) fn cancel(&mut self, conn_key: u32, call: u32) -> bool {
        match self.by_call.remove(&(conn_key, call)) {
            Some(key) => {
                self.tasks.remove(key);
                true
            }
            None => false,
        }
    }

    /// Drops every task of connection slot `conn_key` (it closed).
    pub(crate) fn drop_conn(&mut self, conn_key: u32) {
        let keys: Vec<usize> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.conn.key == conn_key)
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            let t = self.tasks.remove(k);
            self.by_call.remove(&(t.conn.key, t.call));
        }
    }

    /// Drops tasks whose deadline passed; returns their calls, to answer DeadlineExceeded.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(ConnRef, u32)> {
        let keys: Vec<usize> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        keys.into_iter()
            .map(|k| {
                let t = self.tasks.remove(k);
                self.by_call.remove(&(t.conn.key, t.call));
                (t.conn, t.call)
            })
            .collect()
    }
}

thread_local! {
    /// Whether this thread is polling one of its core's tasks right now.
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as polling a task of its core until dropped.
struct InTask(bool);

impl InTask {
    fn enter() -> InTask {
        InTask(IN_TASK.replace(true))
    }
}

impl Drop for InTask {
    fn drop(&mut self) {
        IN_TASK.set(self.0);
    }
}

/// Whether the calling thread is polling one of its core's tasks (an async handler's future)
/// right now, as opposed to running a sync handler or other code of the core's turn: a
/// future that needs the core to make progress may wait only in the former.
pub(crate) fn in_task() -> bool {
    IN_TASK.get()
}
