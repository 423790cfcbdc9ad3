//! The core's use of the driver: starting operations (inbox read, multishot receive,
//! send/send-zc), entering the kernel (submit, busy-poll or park), reaping completions and
//! handing each to its connection, and flushing one batch per connection per turn.

use super::*;

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
        if en.recv.is_some() || en.closing {
            return;
        }
        let tag = Token::new(Op::Recv, key, en.generation);
        en.recv = Some(self.driver.recv_multi(&en.fd, tag));
    }

    pub(super) fn enter(&mut self, work: bool) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if self
            .cfg
            .fail_enter_after_turns
            .is_some_and(|n| self.stats.turns > n)
        {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let to_submit = self.driver.queued();
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
            if !self.driver.kernel_has_work() {
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
            let r = self.driver.submit_and_wait(TIMER_TICK);
            self.inbox.woke();
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
                self.on_completion(done, now);
            }
        }
        self.cqes = cqes;
        work
    }

    pub(super) fn on_completion(&mut self, c: crate::driver::uring::Completion, now: Instant) {
        let t = c.tag;
        match c.event {
            Event::EventfdRead { buf, .. } => {
                self.inbox_buf = Some(buf);
                self.arm_inbox();
            }
            Event::Accepted { fd, more } => self.on_accept(t.key as usize, fd, more, now),
            Event::Received { result, buf, more } => self.on_recv(t, result, buf, more, now),
            Event::Sent { wrote, more, done } => self.on_send(t, wrote, more, done),
            // Not started by the core.
            Event::Polled { .. } | Event::TimedOut { .. } => {}
        }
    }

    pub(super) fn on_recv(
        &mut self,
        t: Token,
        result: i32,
        bid: Option<u16>,
        more: bool,
        now: Instant,
    ) {
        let key = t.key as usize;
        let Some(en) = live(&mut self.conns, t) else {
            if let Some(b) = bid {
                self.driver.recycle(b);
            }
            return;
        };
        if !more {
            en.recv = None;
        }
        if result > 0 {
            let Some(b) = bid else {
                // The kernel always names the buffer of a successful provided-buffer receive;
                // if it ever does not, the bytes are lost: close rather than guess.
                self.stats.count_error("recv_without_buffer");
                self.begin_close(key, "the kernel reported a receive without a buffer");
                return;
            };
            if !en.closing {
                if let Some(data) = self.driver.recv_data(b, result as usize) {
                    let mut env = Env {
                        registry: &self.registry,
                        now,
                        stats: &mut self.stats,
                    };
                    let _ = en.conn.handle_input(data, &mut env);
                }
            }
            self.driver.recycle(b);
            self.after_event(key);
            self.maybe_promote(key, now);
        } else {
            if let Some(b) = bid {
                self.driver.recycle(b);
            }
            match -result {
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
            .is_some_and(|en| en.recv.is_none() && !en.closing && en.hot.is_none() && !en.read_done)
        {
            self.arm_recv(key);
        }
    }

    /// A completion of a connection's send: bytes written (a short write was resubmitted by
    /// the driver), a failure, and at the end the batch buffer back.
    pub(super) fn on_send(
        &mut self,
        t: Token,
        wrote: Option<i32>,
        more: bool,
        done: Option<Vec<u8>>,
    ) {
        let key = t.key as usize;
        let Some(en) = live(&mut self.conns, t) else {
            return;
        };
        match wrote {
            Some(r) if r < 0 => {
                if !en.closing {
                    self.stats.count_error("send_failed");
                }
                // The buffer comes back once outstanding notifications arrived.
                let why = format!("send failed: {}", io::Error::from_raw_os_error(-r));
                self.begin_close(key, &why);
            }
            Some(r) => {
                self.stats.bytes_out += r as u64;
                if more {
                    // Short write: the peer's window is full; the driver sends the rest. If the
                    // peer takes nothing for the stall timeout the connection closes.
                    if r > 0 || en.conn.write_blocked_since.is_none() {
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

    /// Completes the in-flight send, whose buffer is back (all written or failed, and the
    /// kernel released it), then schedules the next batch.
    pub(super) fn finish_send(&mut self, key: usize, buf: Vec<u8>) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        let Some(f) = en.send.take() else { return };
        en.conn.write_blocked_since = None;
        if !en.closing {
            self.stats.writes += 1;
            self.stats.frames_out += f.frames as u64;
            if f.zero_copy {
                self.stats.zero_copy_writes += 1;
            }
        }
        en.conn.recycle(buf);
        self.after_event(key);
    }

    /// Hands one batch per connection to the kernel (one send each).
    pub(super) fn flush(&mut self) -> bool {
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
            if let Some((buf, frames)) = en.conn.poll_transmit() {
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
                let written = if off == buf.len() {
                    // Finished after the loop, as a send completion would be (finishing
                    // schedules the next batch, which must not land in the list taken here).
                    self.sent.push(key);
                    Some(buf)
                } else {
                    let tag = Token::new(Op::Send, key, en.generation);
                    self.driver.send(&en.fd, buf, off, zero_copy, tag);
                    None
                };
                en.send = Some(InFlight {
                    written,
                    frames,
                    zero_copy,
                });
            } else if en.conn.is_closing() {
                self.begin_close(key, "closed");
            }
        }
        self.dirty = dirty;
        let mut sent = std::mem::take(&mut self.sent);
        for key in sent.drain(..) {
            let buf = self
                .conns
                .get_mut(key)
                .and_then(|en| en.send.as_mut())
                .and_then(|f| f.written.take());
            if let Some(buf) = buf {
                self.finish_send(key, buf);
            }
        }
        self.sent = sent;
        work
    }
}
