//! The core's io_uring traffic: building and pushing SQEs (inbox read, multishot receive,
//! send/send-zc), entering the kernel (submit, busy-poll or park), reaping CQEs and handing
//! each completion to its connection, and flushing one batch per connection per turn.

use super::*;

impl Core {
    pub(super) fn push(&mut self, entry: squeue::Entry) {
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

    pub(super) fn arm_inbox(&mut self) {
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

    pub(super) fn arm_recv(&mut self, key: usize) {
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

    pub(super) fn submit_send(&mut self, key: usize) {
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

    pub(super) fn enter(&mut self, work: bool) -> io::Result<()> {
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

    pub(super) fn reap(&mut self, now: Instant) -> bool {
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

    pub(super) fn on_cqe(&mut self, c: Cqe, now: Instant) {
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

    pub(super) fn on_recv(&mut self, t: Token, c: Cqe, now: Instant) {
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
                    let _ = en.conn.handle_input(data, &mut env);
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

    pub(super) fn on_send(&mut self, t: Token, c: Cqe) {
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
    pub(super) fn maybe_finish_send(&mut self, key: usize) {
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
}
