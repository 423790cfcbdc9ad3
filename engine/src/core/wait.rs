//! Driving a caller-driven core from the caller's own event loop (poll(2), epoll, libuv):
//! the descriptor to watch, the longest a wait may last, and the turn after it.
//!
//! An engine core parks in `io_uring_enter` after announcing its sleep to its inbox (so that
//! other threads' commands ring the eventfd doorbell, whose read is armed in the ring). A
//! caller's loop does the same in three steps: [`Core::prepare_wait`] (submit what is queued,
//! announce the sleep, say how long the sleep may last), its own wait on [`Core::wait_fd`],
//! then [`Core::woke`] and [`Core::poll_once`]. Nothing here runs on a core's normal turn.

use std::os::fd::RawFd;

use super::*;

impl Core {
    /// The descriptor that becomes readable when this core has work: a completion, a
    /// command from another thread (the doorbell), data on a connection. On io_uring an
    /// eventfd registered with the ring on the first call (from then on each batch of
    /// completions signals it, a small cost only such cores pay); on the epoll driver its
    /// epoll descriptor. Owned by the core: valid until it is dropped; do not close it.
    ///
    /// # Errors
    /// The OS error when the eventfd cannot be created or registered.
    pub fn wait_fd(&mut self) -> io::Result<RawFd> {
        self.driver.wait_fd(&mut self.wait_fd)
    }

    /// Prepares to wait on [`Core::wait_fd`]: submits the queued operations, announces the
    /// sleep (other threads' commands ring the doorbell from now on), and returns how long the
    /// wait may last at most: `Some(Duration::ZERO)` when work is already waiting (run a turn
    /// now), `Some(d)` until the next timer (a call's deadline, a keepalive, the core's
    /// periodic checks), `None` without any (wait until the descriptor is readable). After
    /// the wait call [`Core::woke`], then [`Core::poll_once`].
    ///
    /// A busy-poll core with hot connections (read directly, not through the ring) always
    /// gets zero: it cannot sleep.
    ///
    /// # Errors
    /// The OS error of the submission, or of [`Core::wait_fd`].
    pub fn prepare_wait(&mut self) -> io::Result<Option<Duration>> {
        self.wait_fd()?;
        self.arm_inbox();
        let queued = self.driver.queued();
        if queued > 0 {
            match self.driver.submit_nowait(queued) {
                Err(e)
                    if !matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) =>
                {
                    return Err(e);
                }
                _ => {}
            }
        }
        // Announce first, then look at every queue: a producer pushes before it checks the
        // flag, so either we see its work or it rings the doorbell.
        if !self.inbox.prepare_sleep() {
            return Ok(Some(Duration::ZERO));
        }
        if self.executor.has_ready()
            || Inbox::has_local()
            || !self.dirty.is_empty()
            || !self.closing.is_empty()
            || !self.hot.is_empty()
        {
            self.inbox.woke();
            return Ok(Some(Duration::ZERO));
        }
        let now = Instant::now();
        let mut until: Option<Instant> = None;
        let mut sooner = |at: Instant| until = Some(until.map_or(at, |u| u.min(at)));
        for (_, en) in self.conns.iter() {
            if en.closing {
                sooner(self.next_tick);
            } else if let Some(at) = en.scheduled {
                // The wheel fires an entry at the end of its tick.
                sooner(self.wheel.fires_at(at));
            }
        }
        if self.executor.len() > 0 || self.drain_until.is_some() {
            // Async handlers' deadlines and the drain are checked once per tick.
            sooner(self.next_tick);
        }
        let timers = until.map(|u| u.saturating_duration_since(now));
        Ok(match (self.driver.wait_bound(now), timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Ends a wait prepared by [`Core::prepare_wait`] (whether or not it slept): other
    /// threads stop ringing the doorbell, and the wait descriptor is emptied.
    pub fn woke(&mut self) {
        self.inbox.woke();
        if let Some(fd) = &self.wait_fd {
            crate::driver::clear_eventfd(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallSlot, Service, StatusCode};

    /// Waits on the core's descriptor with poll(2) as `prepare_wait` says, then runs a turn,
    /// until `done`; returns how many waits slept (poll with a non-zero timeout).
    fn drive(core: &mut Core, mut done: impl FnMut(&mut Core) -> bool) -> (u32, u32) {
        let fd = core.wait_fd().expect("wait fd");
        let (mut turns, mut slept) = (0u32, 0u32);
        while !done(core) {
            turns += 1;
            assert!(turns < 100_000, "the loop spins: the wait never sleeps");
            let timeout = core.prepare_wait().expect("prepare_wait");
            if timeout != Some(Duration::ZERO) {
                slept += 1;
                // No limit: 200 ms, as `done` may hang on another thread's progress, which
                // need not wake this core.
                let ms = timeout.map_or(200, |d| {
                    i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                });
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let r = unsafe { libc::poll(&mut p, 1, ms.min(30_000)) };
                assert!(r >= 0, "poll: {}", io::Error::last_os_error());
            }
            core.woke();
            core.poll_once().expect("turn");
        }
        (turns, slept)
    }

    #[test]
    fn poll_once_never_parks_where_run_once_would() {
        let cfg = crate::RuntimeConfig::default().with_idle(crate::IdlePolicy::Adaptive {
            spin: Duration::ZERO,
        });
        let mut core = Core::new(cfg).expect("core");
        // Idle with no spin: each run_once parks (up to a tick).
        core.run_once().expect("turn");
        core.run_once().expect("turn");
        let parked = core.stats().driver().parks;
        assert!(parked >= 1, "an idle adaptive core parks in run_once");
        for _ in 0..100 {
            core.poll_once().expect("turn");
        }
        assert_eq!(core.stats().driver().parks, parked, "poll_once never waits");
    }

    fn serving_core() -> (Core, Endpoint) {
        let svc = Service::new("w", "1.0.0")
            .expect("service")
            .unary_deferred("later", |req, reply| {
                // Answered from another thread: the answer reaches the core through its
                // inbox and the doorbell.
                let payload = req.payload().to_vec();
                std::thread::spawn(move || reply.send(bytes::Bytes::from(payload)));
            })
            .unary_deferred("never", |_, reply| {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(3));
                    drop(reply);
                });
            });
        let mut core = Core::with_services(CoreConfig::default(), [svc]).expect("core");
        let ep = core
            .listen(&"tcp://127.0.0.1:0".parse().expect("endpoint"))
            .expect("listen")
            .remove(0);
        (core, ep)
    }

    #[test]
    fn a_core_driven_from_poll_serves_calls_answered_from_other_threads() {
        let (mut core, ep) = serving_core();
        let caller = std::thread::spawn(move || {
            let engine = crate::Engine::builder().cores(1).build().expect("engine");
            let ch = engine.client().connect(&ep.to_string()).expect("connect");
            for i in 0..20u8 {
                let r = ch
                    .call("w@1.0.0", "later", vec![i], Some(Duration::from_secs(10)))
                    .expect("call");
                assert_eq!(r, [i]);
            }
            engine.shutdown(Duration::from_secs(1));
        });
        let (_, slept) = drive(&mut core, |_| caller.is_finished());
        caller.join().expect("caller");
        assert!(slept > 0, "the core never waited on its descriptor");
    }

    #[test]
    fn a_core_driven_from_poll_ends_its_own_calls_at_their_deadline() {
        // The server runs on its own thread (a core stays on the thread that made it), with
        // its own poll loop.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            let (mut server, ep) = serving_core();
            tx.send(ep).expect("send the endpoint");
            drive(&mut server, |_| {
                stop2.load(std::sync::atomic::Ordering::SeqCst)
            });
        });
        let ep = rx.recv().expect("endpoint");
        let mut core = Core::new(CoreConfig::default()).expect("core");
        let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
        let mut slot = CallSlot::new();
        core.start(
            conn,
            b"w@1.0.0",
            b"never",
            b"",
            Some(Duration::from_millis(50)),
            &mut slot,
        );
        let (_, slept) = drive(&mut core, |_| slot.is_done());
        let err = slot.reply().expect("done").expect_err("no answer");
        assert_eq!(err.code(), StatusCode::DeadlineExceeded);
        assert!(slept > 0, "the core never waited on its descriptor");
        // And a call answered from the server's other thread completes.
        core.start(
            conn,
            b"w@1.0.0",
            b"later",
            b"x",
            Some(Duration::from_secs(10)),
            &mut slot,
        );
        drive(&mut core, |_| slot.is_done());
        assert_eq!(slot.reply().expect("done").expect("reply"), b"x");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // The server's loop wakes for the close.
        core.close(conn);
        drive(&mut core, |c| c.connections() == 0);
        server.join().expect("server");
    }
}
