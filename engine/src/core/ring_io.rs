//! The core's use of the driver: starting operations (inbox read, multishot receive,
//! send/send-zc), entering the kernel (submit, busy-poll or park), reaping completions and
//! handing each to its connection, and flushing one batch per connection per turn.

use super::*;
use crate::transport::{Tx, TxPolicy, Update, Written};

/// A flush with at most this many connections to write sends each directly (`send(2)`, no
/// SQE): measured, see docs/architecture.md "Direct sends".
const DIRECT_SEND_MAX_CONNS: usize = 2;

impl Core {
    pub(super) fn arm_inbox(&mut self) {
        let Some(buf) = self.inbox_buf.take() else {
            // Armed already: the read owns the buffer.
            return;
        };
        let tag = Token::new(Op::Inbox, 0, 0);
        self.driver.eventfd_read(&self.inbox_fd, buf, tag);
    }

    pub(super) fn arm_recv(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.closing {
            return;
        }
        let owner = Owner {
            key,
            generation: en.generation,
        };
        en.link.start_recv(&mut self.driver, owner);
    }

    pub(super) fn enter(&mut self, work: bool) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if self
            .cfg
            .runtime
            .fail_enter_after_turns
            .is_some_and(|n| self.stats.driver.turns > n)
        {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let to_submit = self.driver.queued();
        let park = match self.cfg.runtime.idle {
            _ if self.no_park => {
                // Not parking here, but a turn with work still restarts the idle spin.
                if work {
                    self.idle_since = None;
                }
                false
            }
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
            if !self.driver.kernel_has_work(!self.hot.is_empty()) {
                if self.hot.is_empty() {
                    // A pure memory poll: ease off the sibling hyperthread and the bus. (With
                    // hot connections the turn already made its system calls.)
                    std::hint::spin_loop();
                }
                return Ok(());
            }
        }
        self.stats.driver.submits += 1;
        // Announce sleep first, then look at both queues: a producer pushes before it checks
        // the flag, so either we see its work or it sees us asleep and rings the doorbell.
        let r = if park
            && self.inbox.prepare_sleep()
            && (!self.executor.has_ready() || {
                self.inbox.woke();
                false
            }) {
            self.stats.driver.parks += 1;
            let r = self.driver.submit_and_wait(TIMER_TICK);
            self.inbox.woke();
            // Parked for up to a tick: the next turn reads the clock.
            self.clock_reuses = 0;
            r
        } else {
            self.driver.submit_nowait(to_submit)
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

    pub(super) fn reap(&mut self, now: Instant) -> bool {
        let mut cqes = std::mem::take(&mut self.cqes);
        self.driver.drain(&mut cqes);
        let work = !cqes.is_empty();
        for c in &cqes {
            if let Some(done) = self.driver.complete(*c) {
                let (op, key) = (done.tag.op, done.tag.key as usize);
                self.on_completion(done, now);
                if op == Op::Recv {
                    self.write_early(key);
                }
            }
        }
        self.cqes = cqes;
        work
    }

    pub(super) fn on_completion(&mut self, c: crate::driver::Completion, now: Instant) {
        let t = c.tag;
        match (t.op, c.event) {
            (Op::Inbox, Event::EventfdRead { buf, .. }) => {
                self.inbox_buf = Some(buf);
                self.arm_inbox();
            }
            (Op::Accept, Event::Accepted { fd, more }) => {
                self.on_accept(t.key as usize, fd, more, now)
            }
            (Op::Recv | Op::Send, event) => self.on_link(t, event, now),
            // Nothing else is started by the core.
            _ => {}
        }
    }

    /// A completion of a connection's link: input for the connection, EOF, a failure, or a
    /// write's progress.
    pub(super) fn on_link(&mut self, t: Token, event: Event, now: Instant) {
        let key = t.key as usize;
        let Some(en) = live(&mut self.conns, t) else {
            crate::transport::discard(&mut self.driver, event);
            return;
        };
        let closing = en.closing;
        // `quic://` only (None elsewhere): one reference-count increment per completion.
        let certs = en.link.peer_certificates();
        let conn = &mut en.conn;
        let (registry, stats, inbox) = (&self.registry, &mut self.stats, &self.inbox);
        let origin = crate::dispatch::Origin {
            inbox,
            conn: ConnRef {
                key: key as u32,
                generation: en.generation,
            },
            cred: en.link.peer_cred(),
            certs: certs.as_ref(),
        };
        let update = en.link.on_completion(&mut self.driver, event, |input| {
            // A closing connection's input is not looked at.
            if !closing {
                let mut env = Env {
                    registry,
                    now,
                    stats,
                    origin: Some(origin),
                };
                let _ = crate::transport::feed(conn, input, &mut env);
            }
        });
        match update {
            Update::Input => {
                self.after_event(key);
                self.maybe_promote(key, now);
            }
            // Orderly EOF from the peer: finish and answer what is in flight first.
            Update::Eof => self.on_eof(key, now),
            Update::Quiet(counter) => {
                if let Some(c) = counter {
                    self.stats.count_error(c);
                }
            }
            end @ (Update::RecvFailed { .. } | Update::Ended { .. } | Update::TlsFailed { .. }) => {
                self.end_link(key, end, now);
                return;
            }
            Update::Sent {
                wrote,
                blocked,
                done,
            } => {
                self.on_sent(key, wrote, blocked, done);
                return;
            }
        }
        if self.conns.get(key).is_some_and(|en| {
            !en.link.receiving() && !en.closing && en.hot.is_none() && !en.link.read_done()
        }) {
            self.arm_recv(key);
        }
    }

    /// The end of a link's input, from a completion or a direct read: EOF (what is in flight
    /// is answered first), a failure (counted), a clean end, or a failed TLS handshake (a
    /// connect waiting for it fails with `ConnectError::Tls`). Other updates are not ends
    /// and change nothing here.
    pub(super) fn end_link(&mut self, key: usize, update: Update, now: Instant) {
        match update {
            Update::Eof => self.on_eof(key, now),
            Update::RecvFailed { counter, why } => {
                self.stats.count_error(counter);
                self.begin_close(key, &why);
            }
            Update::Ended { why } => self.begin_close(key, &why),
            Update::TlsFailed { why } => {
                self.stats.count_error("quic_tls_failed");
                if let Some(en) = self.conns.get_mut(key) {
                    en.conn.handshake_failure.get_or_insert_with(|| {
                        crate::Status::unavailable(why.clone())
                            .with_origin(crate::status::Origin::Tls)
                    });
                }
                self.begin_close(key, &why);
            }
            Update::Input | Update::Quiet(_) | Update::Sent { .. } => {}
        }
    }

    /// A write progressed: bytes written (a short write's rest is still being written), a
    /// failure, and at the end the batch buffer back.
    fn on_sent(
        &mut self,
        key: usize,
        wrote: Option<io::Result<usize>>,
        blocked: bool,
        done: Option<Vec<u8>>,
    ) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        match wrote {
            Some(Err(e)) => {
                if !en.closing {
                    self.stats.count_error("send_failed");
                }
                // The buffer comes back once outstanding notifications arrived.
                let why = format!("send failed: {e}");
                self.begin_close(key, &why);
            }
            Some(Ok(n)) => {
                self.stats.bytes_out += n as u64;
                if blocked {
                    // Short write: the peer's window is full; the link writes the rest. If the
                    // peer takes nothing for the stall timeout the connection closes.
                    if n > 0 || en.conn.write_blocked_since.is_none() {
                        en.conn.write_blocked_since = Some(Instant::now());
                    }
                    self.reschedule(key);
                }
            }
            None => {}
        }
        if let Some(buf) = done {
            self.finish_send(key, buf);
        }
    }

    /// Completes the write in progress, whose buffer is back (all written or failed, and the
    /// kernel released it), then schedules the next batch.
    pub(super) fn finish_send(&mut self, key: usize, buf: Vec<u8>) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        let Some((frames, how)) = en.link.end_write() else {
            return;
        };
        en.conn.write_blocked_since = None;
        if !en.closing {
            self.stats.driver.writes += 1;
            self.stats.frames_out += frames as u64;
            match how {
                Written::ZeroCopy => self.stats.driver.zero_copy_writes += 1,
                Written::InPlace => self.stats.driver.in_place_writes += 1,
                Written::Copied => {}
            }
        }
        en.conn.recycle(buf);
        self.after_event(key);
    }

    /// Early writes (`RuntimeConfig::early_write`): if `key` holds at least the threshold of
    /// queued output, hands its next batch to the kernel now, directly (`send(2)`; what the
    /// socket does not take goes on through a `Send` SQE), rather than at the end of the turn,
    /// so a peer that parks starts waking while this core goes on. Only `key` is written:
    /// other connections keep their one write per turn. Counted in
    /// `DriverStats::early_writes` (and `writes`).
    pub(super) fn write_early(&mut self, key: usize) {
        let Some(at) = self.early_write else {
            return;
        };
        let due = self.conns.get(key).is_some_and(|en| {
            en.dirty && !en.closing && !en.link.writing() && en.conn.backlog_bytes() >= at
        });
        if !due {
            return;
        }
        // `key` stays on the dirty list: the turn's flush writes whatever is queued after.
        if self.transmit(key, true) == Transmit::Started {
            self.stats.driver.early_writes += 1;
        }
        self.finish_sent();
    }

    /// Hands one batch per connection to the kernel (one send each).
    pub(super) fn flush(&mut self) -> bool {
        if self.dirty.is_empty() {
            // Called several times a turn; most find nothing to do.
            return false;
        }
        let mut work = false;
        let mut dirty = std::mem::take(&mut self.dirty);
        // Few connections to write this turn: each is written directly (one send(2)), which
        // costs less than a Send SQE, its CQE and the wake-up that CQE causes on a core that
        // waits; many: their sends share one io_uring_enter.
        let few = dirty.len() <= DIRECT_SEND_MAX_CONNS;
        for key in dirty.drain(..) {
            let Some(en) = self.conns.get_mut(key) else {
                continue;
            };
            en.dirty = false;
            work |= self.transmit(key, few) != Transmit::Nothing;
        }
        self.dirty = dirty;
        self.finish_sent();
        work
    }

    /// Hands `key`'s next batch to the kernel: directly (`send(2)`) if `direct` or the
    /// connection is hot, else as a `Send` SQE. Nothing while a write of it is in flight
    /// (byte order), and a connection whose backlog is past every allowance is closed.
    fn transmit(&mut self, key: usize, direct: bool) -> Transmit {
        let Some(en) = self.conns.get_mut(key) else {
            return Transmit::Nothing;
        };
        if en.closing {
            return Transmit::Nothing;
        }
        // New messages are refused above `max_backlog_bytes` (that message only, see
        // `Connection::check_outgoing`); only small control frames can pass it. A peer that
        // takes no bytes is closed by the write-stall timer; this hard cap is the last line
        // should control frames ever pile up.
        let backlog = en.conn.backlog_bytes();
        if backlog
            > self
                .cfg
                .protocol
                .max_backlog_bytes
                .saturating_add(BACKLOG_SLACK)
        {
            self.stats.count_error("slow_consumer");
            let why = format!(
                "{backlog} bytes of output waiting for a peer that does not read, above \
                 ProtocolConfig::max_backlog_bytes ({}) and its control-frame allowance",
                self.cfg.protocol.max_backlog_bytes
            );
            self.begin_close(key, &why);
            return Transmit::Nothing;
        }
        if en.link.writing() {
            // Output waits behind a write the peer has not taken yet: from now on the peer
            // has the stall timeout to take bytes.
            if en.conn.write_blocked_since.is_none() {
                en.conn.write_blocked_since = Some(Instant::now());
                self.reschedule(key);
            }
            return Transmit::Nothing;
        }
        let owner = Owner {
            key,
            generation: en.generation,
        };
        let policy = TxPolicy {
            zero_copy_at: self.cfg.runtime.send_zc_threshold,
            // A hot connection is written the way it is read: directly.
            direct: en.hot.is_some() || direct,
            hot: en.hot.is_some(),
        };
        match en
            .link
            .transmit(&mut self.driver, owner, &mut en.conn, policy)
        {
            Tx::Started { direct, complete } => {
                if let Some(n) = direct {
                    self.stats.driver.direct_sends += 1;
                    self.stats.bytes_out += n as u64;
                }
                if complete {
                    // Finished by `finish_sent`, as a send completion would be (finishing
                    // schedules the next batch, which must not land in a dirty list being
                    // walked).
                    self.sent.push(key);
                }
                Transmit::Started
            }
            Tx::Failed(e) => {
                self.stats.driver.direct_sends += 1;
                self.stats.count_error("send_failed");
                self.begin_close(key, &format!("send failed: {e}"));
                Transmit::Failed
            }
            Tx::Nothing => {
                if en.conn.is_closing() {
                    self.begin_close(key, "closed");
                }
                Transmit::Nothing
            }
        }
    }

    /// Finishes the writes that completed at once (direct sends the socket took whole).
    fn finish_sent(&mut self) {
        let mut sent = std::mem::take(&mut self.sent);
        for key in sent.drain(..) {
            let buf = self
                .conns
                .get_mut(key)
                .and_then(|en| en.link.take_written());
            if let Some(buf) = buf {
                self.finish_send(key, buf);
            }
        }
        self.sent = sent;
    }
}

/// What [`Core::transmit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transmit {
    /// A write started (directly or as an SQE).
    Started,
    /// The send failed; the connection is closing.
    Failed,
    /// Nothing to write, or nothing now.
    Nothing,
}
